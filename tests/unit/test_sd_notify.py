"""systemd's notify protocol: one datagram per state to NOTIFY_SOCKET, the watchdog interval from WATCHDOG_USEC."""

import os
import socket

from runtime.sd_notify import notify, watchdog_interval_s


def test_notify_sends_the_state_as_one_datagram(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        assert notify("READY=1", env={"NOTIFY_SOCKET": path})
        assert listener.recv(100) == b"READY=1"


def test_notify_outside_systemd_does_nothing():
    assert not notify("READY=1", env={})


def test_notify_to_a_vanished_socket_is_refused_without_raising(tmp_path):
    assert not notify("WATCHDOG=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})


def test_watchdog_pings_at_half_the_interval_for_this_process():
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0


def test_watchdog_meant_for_another_process_is_ignored():
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None
