"""The OPC UA driver silences only the two asyncua records it reports itself when a session is
lost; any other record of those loggers, an unexpected failure included, still shows."""

from __future__ import annotations

import logging

import pytest

import protocols.opcua.driver  # noqa: F401  (installs the filters, as importing the driver does)

SESSION_LOGGERS = ("asyncua.client.ua_session", "asyncua.client.ua_session.UaSession")


@pytest.mark.parametrize("logger_name", SESSION_LOGGERS)
def test_only_the_session_loss_noise_is_dropped(
    logger_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    library = logging.getLogger(logger_name)
    try:
        raise ConnectionError("connection reset")
    except ConnectionError:
        library.exception("Publish iteration crashed")
        library.exception("Unexpected failure while renewing the secure channel")
    library.warning("close_session was called but connection is closed")
    library.error("Error while processing a notification: %s", "bad encoding")

    shown = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger_name]
    assert shown == [
        (logging.ERROR, "Unexpected failure while renewing the secure channel"),
        (logging.ERROR, "Error while processing a notification: bad encoding"),
    ]
    unexpected = next(r for r in caplog.records if r.getMessage().startswith("Unexpected"))
    assert unexpected.exc_info is not None  # its traceback still shows
