"""``studentwork worker`` refuses to start on the public development secrets.

A real subprocess, as operators start it. Kafka and PostgreSQL are two listening sockets
of the test that nothing ever answers: the worker must exit before connecting to either.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO


class Listener:
    """A listening socket that records whether anyone connected (never accepted)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])

    def connected(self) -> bool:
        # The kernel completes and queues a connection even when the client hangs up.
        self.sock.setblocking(False)
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def services() -> Iterator[tuple[Listener, Listener]]:
    kafka, postgres = Listener(), Listener()
    try:
        yield kafka, postgres
    finally:
        kafka.sock.close()
        postgres.sock.close()


def run_worker(
    services: tuple[Listener, Listener], extra_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    kafka, postgres = services
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDENTWORK_")}
    env |= {
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka.port}",
        "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{postgres.port}/nothing",
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "infra", "worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_worker_refuses_the_development_secrets(
    services: tuple[Listener, Listener],
) -> None:
    result = run_worker(services, {})
    assert result.returncode == 2, result.stdout + result.stderr
    for variable in [
        "STUDENTWORK_JWT_SECRET_FILE",
        "STUDENTWORK_JWT_JWKS_URL",
        "STUDENTWORK_ACCESS_CODE_SECRET_FILE",
        "STUDENTWORK_DEVELOPMENT=true",
    ]:
        assert variable in result.stderr, variable
    assert "Traceback" not in result.stderr
    assert not any(listener.connected() for listener in services)


def test_the_worker_refuses_a_development_secret_left_over(
    services: tuple[Listener, Listener], tmp_path: Path
) -> None:
    (tmp_path / "jwt").write_text("a-jwt-secret-of-our-own-0123456789abcdef0123\n")
    result = run_worker(services, {"STUDENTWORK_JWT_SECRET_FILE": str(tmp_path / "jwt")})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "access-code secret" in result.stderr
    assert "JWT secret" not in result.stderr
    assert not any(listener.connected() for listener in services)


def test_the_worker_reports_a_missing_secret_file(
    services: tuple[Listener, Listener], tmp_path: Path
) -> None:
    missing = tmp_path / "run" / "secrets" / "jwt"
    result = run_worker(
        services, {"STUDENTWORK_DEVELOPMENT": "true", "STUDENTWORK_JWT_SECRET_FILE": str(missing)}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(listener.connected() for listener in services)
