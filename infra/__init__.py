"""Local infrastructure for tests and demos: a Kafka broker and a PostgreSQL server.

`local_services()` is the usual entry point; `LocalKafka` and `LocalPostgres` run the
services from locally installed programs when Docker is not available.
"""

from infra.errors import MissingTool
from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.services import Services, local_services

__all__ = ["LocalKafka", "LocalPostgres", "MissingTool", "Services", "local_services"]
