"""One entry point that provides a Kafka broker and a PostgreSQL server for tests and demos.

Services already running elsewhere are named with the environment variables
`KAFKA_BOOTSTRAP` and `DATABASE_URL`. Whatever is not named is started: in Docker through
testcontainers when a Docker engine answers, otherwise from locally installed programs
(`LocalKafka`, `LocalPostgres`), so the same tests run on a laptop, in CI and in a
sandbox without Docker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres

# cp-kafka 7.9 (Apache Kafka 3.9) is the newest line that testcontainers' KafkaContainer
# is known to configure correctly in KRaft mode; it speaks the same client protocol the
# project uses against the local Kafka 4 broker.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
# Same major version as the Debian server that LocalPostgres uses.
POSTGRES_IMAGE = "postgres:15-alpine"
_QUOTE = "'"


@dataclass(frozen=True)
class Services:
    """Where the running services can be reached."""

    kafka_bootstrap: str
    """Kafka bootstrap servers, e.g. "127.0.0.1:9092"."""
    database_url: str
    """DSN of a PostgreSQL superuser, e.g. "postgresql://postgres@127.0.0.1:5432/postgres"."""


class _Service(Protocol):
    def start(self) -> str: ...
    def stop(self) -> None: ...


@contextmanager
def local_services(
    *, log: Callable[[str], object] = print, postgres_settings: Mapping[str, str] | None = None
) -> Iterator[Services]:
    """Provide Kafka and PostgreSQL for the duration of the `with` block.

    Both are started concurrently, since each takes seconds, and everything started here
    is stopped on exit, including after an error or Ctrl+C. ``postgres_settings`` are
    server settings for a PostgreSQL started here (``{"shared_buffers": "'4GB'"}``, as
    ``postgresql.conf`` writes them); a server named by `DATABASE_URL` keeps its own.
    """
    ready = {"kafka": os.environ.get("KAFKA_BOOTSTRAP"), "postgres": os.environ.get("DATABASE_URL")}
    for name, variable in (("kafka", "KAFKA_BOOTSTRAP"), ("postgres", "DATABASE_URL")):
        if ready[name]:
            log(f"{name}: using {variable}={ready[name]}")

    missing = [name for name, url in ready.items() if not url]
    use_docker = bool(missing) and _docker_answers()
    services: dict[str, _Service] = {
        name: _make(name, use_docker, log, postgres_settings or {}) for name in missing
    }
    previous_sigterm = _exit_on_sigterm()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                name: pool.submit(_timed_start, name, svc, log) for name, svc in services.items()
            }
            try:
                ready.update({name: future.result() for name, future in futures.items()})
            except BaseException:
                # Stop early so a service still starting (e.g. waiting for its broker)
                # fails fast instead of running to completion before clean-up.
                for svc in services.values():
                    svc.stop()
                raise
        yield Services(kafka_bootstrap=str(ready["kafka"]), database_url=str(ready["postgres"]))
    finally:
        for svc in services.values():
            svc.stop()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _exit_on_sigterm() -> signal._HANDLER | None:
    """Turn SIGTERM into SystemExit so the services are stopped, not orphaned.

    Only where nobody handles SIGTERM yet (the default kills without clean-up) and only
    in the main thread, where Python allows installing handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, _exit)


def _make(
    name: str, use_docker: bool, log: Callable[[str], object], postgres_settings: Mapping[str, str]
) -> _Service:
    if name == "kafka":
        return _KafkaContainer() if use_docker else LocalKafka(log=log)
    if use_docker:
        return _PostgresContainer(postgres_settings)
    return LocalPostgres(settings=postgres_settings)


def _timed_start(name: str, service: _Service, log: Callable[[str], object]) -> str:
    log(f"{name}: starting {type(service).__name__.lstrip('_')}...")
    started = time.monotonic()
    url = service.start()
    log(f"{name}: ready at {url} after {time.monotonic() - started:.1f}s")
    return url


def _docker_answers() -> bool:
    """Whether a Docker engine responds; a missing socket fails in well under a second."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class _KafkaContainer:
    """A KRaft Kafka broker in Docker, with the same start/stop shape as LocalKafka."""

    def __init__(self) -> None:
        self._container: Any = None

    def start(self) -> str:
        from testcontainers.community.kafka import KafkaContainer

        self._container = KafkaContainer(KAFKA_IMAGE).with_kraft()
        self._container.start()
        return str(self._container.get_bootstrap_server())

    def stop(self) -> None:
        _stop_container(self._container)


class _PostgresContainer:
    """A PostgreSQL server in Docker, with the same start/stop shape as LocalPostgres."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self._container: Any = None
        self._settings = dict(settings or {})

    def start(self) -> str:
        from testcontainers.community.postgres import PostgresContainer

        self._container = PostgresContainer(
            POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres"
        )
        if self._settings:
            # The image's command is `postgres`; `-c` takes the value without conf quotes.
            options = [f"-c {key}={value.strip(_QUOTE)}" for key, value in self._settings.items()]
            self._container.with_command(" ".join(["postgres", *options]))
        self._container.start()
        return str(self._container.get_connection_url(driver=None))

    def stop(self) -> None:
        _stop_container(self._container)


def _stop_container(container: Any) -> None:
    # stop() may run twice, or while another thread is still starting the container
    # (see local_services); removing a container that is already gone is not an error.
    if container is not None:
        with suppress(Exception):
            container.stop()
