"""Modbus TCP frames for the four read functions, by hand: the request ADU, and the checks that
turn an answer PDU into register or bit values (Modbus Application Protocol V1.1b3 sections
4.1 and 6.1-6.4, Modbus Messaging on TCP/IP V1.0b section 3.1.3).

Why not pymodbus's PDU classes (the library stays for RTU and the test servers): measured on
the development machine (2026-12-06, load 6-7, `timeit`), decoding the answer to a read of 30
holding registers through `DecodePDU.decode` costs about 100 µs, the request through
`ReadHoldingRegistersRequest.encode` and the socket framer about 9 µs; the same work here is
about 4 µs and 0.7 µs. pymodbus decodes register by register and formats the PDU for a debug
line whether it is logged or not. At 500 requests/s that difference alone is several percent
of a core, for four fixed layouts that fit on a page. Hand-written also closes a gap: pymodbus
does not compare the byte count of an answer with the bytes that follow it (it reads
registers up to the byte count and ignores the rest; for bits it ignores the byte count), so
an answer whose byte count disagrees with its payload was taken as values.

What is checked, per answer, in this order: the function code (ours, or ours + 0x80 for an
exception answer), the byte count against the bytes sent, then the count against the request.
Only pure values here; the transport is protocols/modbus/tcp.py.
"""

from __future__ import annotations

import struct

from gateway.core.errors import BadResponse
from protocols.modbus.config import RegisterTable

FUNCTION_CODES: dict[RegisterTable, int] = {
    RegisterTable.COILS: 1,
    RegisterTable.DISCRETE: 2,
    RegisterTable.HOLDING: 3,
    RegisterTable.INPUT: 4,
}
READ_FUNCTIONS = frozenset(FUNCTION_CODES.values())

# Exception codes, Modbus Application Protocol V1.1b3 section 7.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

HEADER_SIZE = 7  # transaction id, protocol id, length, unit id
# The length field counts the unit id and the PDU; a PDU is at most 253 bytes (section 4.1).
MAX_LENGTH = 254

_REQUEST = struct.Struct(">HHHBBHH")
HEADER = struct.Struct(">HHHB")


class ExceptionAnswer(BadResponse):
    """The device answered a read with a Modbus exception (`code`, section 7): it is there
    and refuses this request (exception 2: the addresses are not mapped)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def exception_answer(code: int, count: int, where: str) -> ExceptionAnswer:
    """The error for an exception answer, worded the same whichever transport read it."""
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    return ExceptionAnswer(f"exception {code} ({name}) reading {count} at {where}", code)


class Undecodable(Exception):
    """The bytes are not a Modbus answer to a read: the device speaks something else, so
    nothing more on this connection can be trusted (the transport drops it)."""


def request_frame(
    transaction: int, unit: int, function_code: int, address: int, count: int
) -> bytes:
    """The ADU of one read request: MBAP header (length 6: unit id + 5 PDU bytes) and PDU."""
    return _REQUEST.pack(transaction, 0, 6, unit, function_code, address, count)


def answer_values(
    pdu: bytes | memoryview, function_code: int, table: RegisterTable, address: int, count: int
) -> list[int]:
    """The values of a read answer's PDU, checked against the request; raises ExceptionAnswer,
    BadResponse (a well-formed answer that does not answer what we asked, or whose byte count
    disagrees with its bytes) or Undecodable."""
    size = len(pdu)
    if size == 0:
        raise Undecodable("empty PDU")
    answered = pdu[0]
    if answered != function_code:
        return _not_our_function(pdu, answered, function_code, table, address, count)
    if size < 2:
        raise Undecodable(f"function {answered} answer without a byte count")
    byte_count = pdu[1]
    sent = size - 2
    where = f"{table} {address}"
    if byte_count > sent:
        # Fewer bytes than announced: what the announced bytes would be is unknown.
        raise Undecodable(f"byte count {byte_count} but {sent} bytes follow")
    if byte_count < sent:
        raise BadResponse(
            f"answer's byte count {byte_count} disagrees with the {sent} bytes sent,"
            f" reading {where}"
        )
    if table.is_bits:
        # Bits travel packed in whole bytes, low bit first; the padding past `count` is not
        # an answer (section 6.1).
        if byte_count != (count + 7) // 8:
            raise BadResponse(
                f"answer holds {8 * byte_count} bits, expected {count}, reading {where}"
            )
        return [(pdu[2 + k // 8] >> (k % 8)) & 1 for k in range(count)]
    if byte_count != 2 * count:
        raise BadResponse(
            f"answer holds {byte_count // 2} registers, expected {count}, reading {where}"
            if byte_count % 2 == 0
            else f"answer has an odd byte count ({byte_count}) for registers, reading {where}"
        )
    return list(struct.unpack_from(f">{count}H", pdu, 2))


def _not_our_function(
    pdu: bytes | memoryview,
    answered: int,
    function_code: int,
    table: RegisterTable,
    address: int,
    count: int,
) -> list[int]:
    where = f"{table} {address}"
    if answered == function_code | 0x80:
        if len(pdu) < 2:
            raise Undecodable("exception answer without an exception code")
        raise exception_answer(pdu[1], count, where)
    if answered & 0x7F in READ_FUNCTIONS:
        # An answer to another read (a gateway mixing up answers): well formed, not ours.
        raise BadResponse(
            f"answer has function code {answered}, expected {function_code}, reading {where}"
        )
    raise Undecodable(f"function code {answered} is no answer to a read")
