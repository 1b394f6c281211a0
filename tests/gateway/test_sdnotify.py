import socket

from gateway.runtime.sdnotify import SystemdNotifier


def test_sends_ready_and_watchdog_datagrams_to_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
        notifier.ready("polling 1 device")
        assert server.recv(256) == b"READY=1\nSTATUS=polling 1 device"
        assert notifier.watchdog_interval_s == 10.0


def test_is_a_no_op_outside_systemd():
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready("x")  # must not raise
    assert notifier.watchdog_interval_s is None
