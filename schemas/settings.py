"""All configuration, as one typed settings class read from the environment.

Every field has an environment name ``STUDENTWORK_<FIELD>``, except the two that point
at existing services and follow the usual conventions: ``KAFKA_BOOTSTRAP`` and
``DATABASE_URL``.
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from quota.rules import DEFAULT_QUOTA_HOURS, QuotaRules


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDENTWORK_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "STUDENTWORK_KAFKA_BOOTSTRAP"),
        description="Kafka bootstrap servers, host:port[,host:port].",
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/studentwork",
        validation_alias=AliasChoices("DATABASE_URL", "STUDENTWORK_DATABASE_URL"),
        description="PostgreSQL DSN of the system of record.",
    )
    database_pool_size: int = Field(
        8, ge=2, description="Connections per worker: batches, the API and look-ups share them."
    )
    app_id: str = Field("studentwork", description="Faust app id and consumer group.")
    topic_prefix: str = Field("", description="Prefix for every topic name (isolation).")
    partitions: int = Field(8, ge=1, description="Partitions of the keyed topics.")
    replication_factor: int = Field(1, ge=1, description="1 locally, 3 in production.")
    min_insync_replicas: int = Field(1, ge=1)
    input_timestamp_type: Literal["LogAppendTime", "CreateTime"] = Field(
        "LogAppendTime",
        description=(
            "Timestamp type of the input topics. The broker's LogAppendTime in production "
            "(nobody can backdate a declaration); CreateTime for replays and the simulator."
        ),
    )
    dead_letter_retention_days: int = Field(90, ge=1)
    dead_letter_inline_bytes: int = Field(
        256 * 1024,
        ge=0,
        le=512 * 1024,
        description=(
            "Largest rejected message (raw bytes) a dead letter carries inline in base64. "
            "Larger ones are kept in PostgreSQL (dead_letter_payloads) and the dead letter "
            "carries their reference, size and SHA-256 instead, so it always fits the "
            "broker's message limit (base64 adds a third: 512 KiB becomes about 683 KiB, "
            "under the 1 MB default)."
        ),
    )
    batch_size: int = Field(1000, ge=1, description="Most events applied in one transaction.")
    batch_within: float = Field(0.2, gt=0, description="Seconds to wait to fill a batch.")
    quota_hours: dict[int, int] = Field(
        default_factory=lambda: dict(DEFAULT_QUOTA_HOURS),
        description='Quota per year, JSON, e.g. {"2025": 650}; merged over the defaults.',
    )
    session_timeout_seconds: float = Field(
        30.0,
        ge=6,
        description=(
            "How long the broker waits for a silent worker before handing its partitions "
            "to another (a killed worker's partitions stall this long)."
        ),
    )
    relay_in_worker: bool = Field(True, description="Run the outbox relay inside the worker.")
    relay_batch: int = Field(2000, ge=1)
    relay_poll_seconds: float = Field(1.0, gt=0, description="Fallback when NOTIFY is missed.")
    data_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "studentwork",
        description="Where faust keeps its local files (nothing of record is kept there).",
    )
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_level: str = "info"

    # -- time
    today: date | None = Field(
        None,
        description="Pin 'today' (Europe/Brussels) for demos and tests; unset in production.",
    )

    # -- tokens (the federal identity service signs them in production)
    jwt_algorithm: str = Field("HS256", description="HS256 with jwt_secret, or RS256/ES256.")
    jwt_secret: SecretStr = Field(
        SecretStr("dev-only-secret-do-not-use-in-production-0123456789"),
        description="Shared secret for HS256 tokens (development).",
    )
    jwt_public_key: str | None = Field(
        None, description="PEM public key for RS256/ES256 tokens (production)."
    )
    jwt_issuer: str = "studentwork"
    jwt_audience: str = "studentwork"
    token_ttl_minutes: int = Field(60, ge=1)

    # -- attestations, access codes, eBox
    access_code_secret: SecretStr = Field(
        SecretStr("dev-only-access-code-secret-0123456789abcdef"),
        description="At least 32 bytes; keys the look-up digest and seals stored codes.",
    )
    access_code_validity_months: int = Field(3, ge=1)
    ebox_retention_months: int = Field(2, ge=1)
    lookup_failures_allowed: int = Field(
        5, ge=1, description="Failed code look-ups per employer and per address in a window."
    )
    lookup_failure_window_seconds: int = Field(900, ge=1)
    pdf_processes: int = Field(2, ge=1, description="Processes rendering attestation PDFs.")

    @cached_property
    def quota_rules(self) -> QuotaRules:
        return QuotaRules({**DEFAULT_QUOTA_HOURS, **self.quota_hours})

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def today_in_brussels(self, now: datetime) -> date:
        """'Today' as every rule sees it: the pinned date, or Brussels' date at ``now``."""
        from quota.calendar import brussels_date

        return self.today or brussels_date(now)
