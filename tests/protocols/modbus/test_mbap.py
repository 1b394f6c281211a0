"""The Modbus TCP frames of protocols/modbus/mbap.py, against the layouts of Modbus Application
Protocol V1.1b3 sections 6.1-6.4 and 7 and Modbus Messaging on TCP/IP V1.0b section 3.1.3."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from gateway.core.errors import BadResponse
from protocols.modbus.config import RegisterTable
from protocols.modbus.mbap import ExceptionAnswer, Undecodable, answer_values, request_frame
from tests.support.entropy import CASES, Entropy

H, IN = RegisterTable.HOLDING, RegisterTable.INPUT
C, D = RegisterTable.COILS, RegisterTable.DISCRETE


def test_request_frame_is_the_mbap_header_and_the_read_pdu():
    # Spec 6.3 example: read holding registers 108-110 (address 0x006B, 3 registers), unit 17.
    frame = request_frame(0x1234, 17, 3, 0x006B, 3)
    assert frame == bytes.fromhex("1234 0000 0006 11 03 006B 0003")


@pytest.mark.parametrize(
    ("pdu", "table", "count", "values"),
    [
        # Spec 6.3 example answer: 0x022B, 0x0000, 0x0064.
        ("03 06 022B 0000 0064", H, 3, [0x022B, 0, 0x64]),
        ("04 02 000A", IN, 1, [10]),
        # Spec 6.1 example: coils 20-38 (19 bits) in 3 bytes, low bit first: CD 6B 05.
        ("01 03 CD 6B 05", C, 19, [1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1]),
        ("02 01 80", D, 8, [0, 0, 0, 0, 0, 0, 0, 1]),
    ],
)
def test_answers_give_the_values_they_carry(pdu, table, count, values):
    function = {H: 3, IN: 4, C: 1, D: 2}[table]
    assert answer_values(bytes.fromhex(pdu), function, table, 0, count) == values


@pytest.mark.parametrize(
    ("pdu", "table", "count", "reason"),
    [
        # The byte count disagrees with the bytes sent (pymodbus took these as values).
        ("03 04 0001 0002 0003", H, 2, "byte count 4 disagrees with the 6 bytes sent"),
        ("01 00 FF", C, 8, "byte count 0 disagrees with the 1 bytes sent"),
        # Consistently framed, but not what was asked.
        ("03 02 0001", H, 2, "answer holds 1 registers, expected 2, reading holding 7"),
        ("03 03 000100", H, 2, r"odd byte count \(3\)"),
        ("01 02 FF01", C, 8, "answer holds 16 bits, expected 8"),
        ("01 01 FF", C, 9, "answer holds 8 bits, expected 9"),
        ("04 04 0001 0002", H, 2, "answer has function code 4, expected 3, reading holding 7"),
        ("84 02", H, 2, "answer has function code 132, expected 3"),
    ],
)
def test_answers_that_do_not_answer_the_request_are_bad_responses(pdu, table, count, reason):
    function = {H: 3, IN: 4, C: 1, D: 2}[table]
    with pytest.raises(BadResponse, match=reason) as raised:
        answer_values(bytes.fromhex(pdu), function, table, 7, count)
    assert not isinstance(raised.value, ExceptionAnswer)


def test_exception_answers_carry_their_code_and_name():
    with pytest.raises(ExceptionAnswer, match=r"exception 2 \(illegal data address\)") as raised:
        answer_values(bytes.fromhex("83 02"), 3, H, 50, 1)
    assert raised.value.code == 2
    with pytest.raises(ExceptionAnswer, match=r"exception 9 \(unknown exception\)"):
        answer_values(bytes.fromhex("81 09"), 1, C, 0, 1)


@pytest.mark.parametrize(
    ("pdu", "reason"),
    [
        ("", "empty PDU"),
        ("03", "without a byte count"),
        ("03 C8 0001", "byte count 200 but 2 bytes follow"),
        ("83", "without an exception code"),
        ("55 01 02 03", "function code 85 is no answer to a read"),
        ("06 0000 0001", "function code 6 is no answer to a read"),
    ],
)
def test_bytes_that_are_no_answer_to_a_read_do_not_decode(pdu, reason):
    with pytest.raises(Undecodable, match=reason):
        answer_values(bytes.fromhex(pdu), 3, H, 0, 2)


def well_formed(table: RegisterTable, values: list[int]) -> bytes:
    """The answer a device should send (spec 6.1-6.4), encoded here independently."""
    function = {H: 3, IN: 4, C: 1, D: 2}[table]
    if table.is_bits:
        data = bytes(
            sum(bit << k for k, bit in enumerate(values[i : i + 8]))
            for i in range(0, len(values), 8)
        )
    else:
        data = b"".join(v.to_bytes(2, "big") for v in values)
    return bytes([function, len(data)]) + data


@settings(max_examples=3000, derandomize=True)
@given(data=CASES)
def test_any_bytes_give_exactly_the_asked_values_or_a_refusal(data: bytes) -> None:
    """Whatever the device sends, the codec returns `count` values only for the one
    well-formed answer that holds them, else refuses with BadResponse or Undecodable: never
    an exception of another kind, never a value that was not sent."""
    e = Entropy(data)
    table = e.choice((H, IN, C, D))
    count = e.between(1, 20)
    values = [e.between(0, 1) if table.is_bits else e.word(()) for _ in range(count)]
    pdu = bytearray(well_formed(table, values))
    mangle = e.choice(("none", "byte", "cut", "grow", "random"))
    if mangle == "byte":
        pdu[e.below(len(pdu))] = e.byte()
    elif mangle == "cut":
        del pdu[e.below(len(pdu)) :]
    elif mangle == "grow":
        pdu += e.raw(e.between(1, 4))
    elif mangle == "random":
        pdu = bytearray(e.raw(e.between(0, 45)))
    function = {H: 3, IN: 4, C: 1, D: 2}[table]
    try:
        got = answer_values(bytes(pdu), function, table, 0, count)
    except (BadResponse, Undecodable) as exc:
        assert str(exc)
        assert bytes(pdu) != well_formed(table, values), "a well-formed answer refused"
    else:
        assert len(got) == count
        # Only the one well-formed answer to this request is taken; a changed padding bit of
        # the last coil byte is not part of the answer.
        assert well_formed(table, got)[:2] == bytes(pdu[:2])
        if table.is_bits:
            assert well_formed(table, got) == bytes(
                pdu[:-1] + bytes([pdu[-1] & ((1 << (count % 8 or 8)) - 1)])
            )
        else:
            assert well_formed(table, got) == bytes(pdu)
        if mangle == "none":
            assert got == values
