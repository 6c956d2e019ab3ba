"""Small helpers shared by the local Kafka and PostgreSQL launchers."""

from __future__ import annotations

import signal
import socket
from contextlib import ExitStack
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All sockets are held open until every port is picked, so the ports are distinct; they
    are then released for the service to bind, which leaves a small race that is
    acceptable for throwaway test services.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note if it cannot be read.

    Used in error messages, where a missing log must not hide the original problem.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM, so the caller's clean-up always runs."""
    stop = {signal.SIGINT, signal.SIGTERM}
    # Blocked first, so the signals queue for sigwait instead of killing the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
