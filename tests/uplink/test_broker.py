"""The mosquitto fixture itself: a real broker that restarts on its port and leaves nothing."""

import os
import socket

import pytest

from tests.support import broker as broker_module
from tests.support.broker import MosquittoBroker


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_fixture_broker_accepts_connections_on_loopback(mosquitto):
    assert mosquitto.running and accepts(mosquitto.port)
    assert mosquitto.host == "127.0.0.1"


def test_restart_and_kill_keep_the_same_port_and_leave_no_process():
    with MosquittoBroker() as broker:
        port, first_pid = broker.port, broker.pid
        broker.restart()
        assert broker.port == port and broker.pid != first_pid and accepts(port)
        second_pid = broker.pid
        broker.kill()
        assert not broker.running and not accepts(port)
        broker.start()
        assert accepts(port) and broker.starts == 3
        last_pid = broker.pid
    assert first_pid is not None and second_pid is not None and last_pid is not None
    assert not any(alive(pid) for pid in (first_pid, second_pid, last_pid))
    assert not accepts(port)


def test_persistence_is_off_unless_asked():
    with MosquittoBroker() as plain, MosquittoBroker(persistence=True) as durable:
        plain.stop()
        durable.stop()
        assert not (plain.log_file.parent / "mosquitto.db").exists()
        assert (durable.log_file.parent / "mosquitto.db").exists()


def test_missing_mosquitto_fails_with_instructions_instead_of_skipping(monkeypatch):
    monkeypatch.setattr(broker_module, "MOSQUITTO_CANDIDATES", ("/nonexistent/mosquitto",))
    monkeypatch.setattr(broker_module.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=r"Run `\./dev test`"):
        MosquittoBroker()
