"""All configuration, as one typed settings class read from the environment.

Every field has an environment name ``STUDENTWORK_<FIELD>``, except the two that point
at existing services and follow the usual conventions: ``KAFKA_BOOTSTRAP`` and
``DATABASE_URL``. Each secret can also be read from a file named by
``STUDENTWORK_<FIELD>_FILE`` (the Docker and Kubernetes secrets convention).
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from quota.rules import DEFAULT_QUOTA_HOURS, QuotaRules
from schemas.i18n import Language
from schemas.secrets import (
    DEVELOPMENT_ACCESS_CODE_SECRET,
    DEVELOPMENT_JWT_SECRET,
    DevelopmentSecretsError,
    read_secret_file,
)

#: Prefix of every environment variable of the settings.
ENV_PREFIX = "STUDENTWORK_"

#: The settings that hold secrets; each may instead be read from ``<field>_file``.
SECRET_FIELDS = ("jwt_secret", "jwt_public_key", "access_code_secret")


def env_name(field: str) -> str:
    """The environment variable of a settings field, as operators have to spell it."""
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    # Errors must not echo the input: a model-level error would print every secret set.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True
    )

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
    ledger_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Parts of each ledger batch applied at once, cut by partition, each in its own "
            "transaction: one is decided while another waits for PostgreSQL."
        ),
    )
    # 4,000: a replay's batches cost about a third less CPU per record than at 1,000
    # (bench/run.py, side by side); live traffic fills a batch only within batch_within.
    batch_size: int = Field(
        4000,
        ge=1,
        description="Most events applied in one transaction (a merged batch included).",
    )
    batch_within: float = Field(0.2, gt=0, description="Seconds to wait to fill a batch.")
    # Deciding a batch allocates millions of small objects, nearly none in cycles; at
    # Python's default of 700 the collector walks them (and every module, faust and
    # aiokafka object) again and again (bench/statements.py, side by side).
    gc_threshold: int = Field(
        50_000,
        ge=0,
        description=(
            "Allocations between two collections of the youngest generation of Python's "
            "cycle collector in the worker (the interpreter's default is 700; 0 keeps "
            "it). The objects alive once the worker has started are frozen out of every "
            "collection."
        ),
    )
    quota_recompute_chunk: int = Field(
        2000,
        ge=1,
        description=(
            "Students recomputed per transaction after a quota change: each chunk locks "
            "only its students, so declarations of the others are decided meanwhile."
        ),
    )
    merge_wait_seconds: float = Field(
        2.0,
        ge=0,
        description=(
            "Longest a worker holds a student's Dimona (or DmfA) records back while the "
            "partition of the other declaration topic has records on the broker that it "
            "has not fetched yet, so that both are applied in broker-timestamp order "
            "(deterministic replays). Past it, the held records are applied as they are "
            "and a warning is logged; 0 turns the wait off."
        ),
    )
    declaration_horizon_days: int = Field(
        731,
        ge=1,
        description=(
            "How far ahead of its reception a declared period may start (days); "
            "further is refused as DATE_OUT_OF_RANGE."
        ),
    )
    quota_hours: dict[int, int] = Field(
        default_factory=lambda: dict(DEFAULT_QUOTA_HOURS),
        description='Quota per year, JSON, e.g. {"2025": 650}; merged over the defaults.',
    )
    dmfa_counts_late_hours: bool = Field(
        False,
        description=(
            "The older, literal reading of the DmfA rule (DOMAIN.md section 3): a DmfA's "
            "hours count as reported, the hours of that employer's late declarations of the "
            "quarter included. Off by default: late hours stay outside the quota after the "
            "DmfA too, deducted from its hours (never below 0)."
        ),
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
    relay_shards: int = Field(
        1,
        ge=1,
        le=32,
        description=(
            "Shards of the outbox (at most 32, its buckets), each published by one relay at "
            "a time, every message of a key always in the same shard (its order kept). The "
            "relays running share the shards between them, evenly; 1 (default): one relay "
            "publishes everything, in outbox order. Give every relay the same value."
        ),
    )
    relay_poll_seconds: float = Field(1.0, gt=0, description="Fallback when NOTIFY is missed.")
    relay_keep_sent_hours: float = Field(
        0.0,
        ge=0,
        description=(
            "How long the relay keeps published outbox rows, marked sent and purged at "
            "most once a minute through the index on sent_at (for an audit that wants "
            "them in PostgreSQL too). 0 (default) deletes each row in the transaction "
            "that records its acknowledgement: the published message is on its topic, "
            "and the relay costs PostgreSQL a sixth of marking it."
        ),
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "studentwork",
        description="Where faust keeps its local files (nothing of record is kept there).",
    )
    web_host: str = Field("127.0.0.1", description="Address of the worker's /health server.")
    web_port: int = Field(6066, description="Port of the worker's /health server.")
    api_host: str = Field(
        "127.0.0.1", description="Address the HTTP API (`studentwork api`) listens on."
    )
    api_port: int = Field(8080, description="Port the HTTP API (`studentwork api`) listens on.")
    log_level: str = "info"

    # -- operations (docs/OPERATING.md)
    log_format: Literal["text", "json"] = Field(
        "text",
        description=(
            "Log lines as text, or one JSON object a line for log shippers (with topic, "
            "partition, offset and batch where known). SSINs are masked in both."
        ),
    )
    stuck_partition_seconds: float = Field(
        120.0,
        gt=0,
        description=(
            "A partition with lag whose committed offset has not moved for this long is "
            "stuck: /health/ready answers 503 naming it."
        ),
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of /metrics for processes without the worker's web."
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description=(
            "Port of /metrics (prometheus-client's own server) for the standalone relay and "
            "the eBox consumer; 0 turns it off. The worker serves /metrics on its web port."
        ),
    )
    development: bool = Field(
        False,
        description=(
            "Explicit development mode: the public development secrets of the repository "
            "are allowed (demo and tests). Outside it the worker refuses to start with them."
        ),
    )

    # -- time
    today: date | None = Field(
        None,
        description="Pin 'today' (Europe/Brussels) for demos and tests; unset in production.",
    )

    # -- tokens (the federal identity service signs them in production)
    jwt_algorithm: str = Field("HS256", description="HS256 with jwt_secret, or RS256/ES256.")
    jwt_secret: SecretStr = Field(
        SecretStr(DEVELOPMENT_JWT_SECRET),
        description="Shared secret for HS256 tokens (the default is public: development only).",
    )
    jwt_secret_file: Path | None = Field(None, description="File holding jwt_secret.")
    jwt_public_key: str | None = Field(
        None, description="PEM public key for RS256/ES256 tokens (production)."
    )
    jwt_public_key_file: Path | None = Field(None, description="File holding jwt_public_key.")
    jwt_jwks_url: str | None = Field(
        None,
        description=(
            "JWKS URL of the identity service: its public keys, chosen by the token's kid; "
            "takes precedence over jwt_public_key and jwt_secret."
        ),
    )
    jwt_jwks_refresh_cooldown_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "Least time between two fetches of the JWKS forced by an unknown kid, so that "
            "forged kids cannot make every request hit the identity service."
        ),
    )
    jwt_issuer: str = "studentwork"
    jwt_audience: str = "studentwork"
    token_ttl_minutes: int = Field(60, ge=1)

    # -- attestations, access codes, eBox
    access_code_secret: SecretStr = Field(
        SecretStr(DEVELOPMENT_ACCESS_CODE_SECRET),
        description="At least 32 bytes; keys the look-up digest and seals stored codes.",
    )
    access_code_secret_file: Path | None = Field(
        None, description="File holding access_code_secret."
    )
    access_code_validity_months: int = Field(3, ge=1)
    ebox_retention_months: int = Field(2, ge=1)
    lookup_failures_allowed: int = Field(
        5, ge=1, description="Failed code look-ups per employer and per address in a window."
    )
    lookup_failure_window_seconds: int = Field(900, ge=1)
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description=(
            'Reverse proxies (CIDRs, JSON list, e.g. ["10.0.0.0/8"]) whose X-Forwarded-For '
            "the API believes for the per-address look-up limit; empty: the peer address "
            "counts and X-Forwarded-For is ignored."
        ),
    )
    declarant_answer_topics: list[str] = Field(
        default_factory=list,
        description=(
            "Declarants (enterprise numbers, NSSO<number>; JSON list) that consume Kafka "
            "directly: each also gets its answers on its own topic dimona.acks.<declarant>, "
            "which a Kafka ACL lets it alone read (dimona.acks is internal)."
        ),
    )
    pdf_processes: int = Field(2, ge=1, description="Processes rendering attestation PDFs.")
    default_language: Language = Field(
        "en",
        description=(
            "Language of the texts when nothing chose one: an attestation requested without "
            "a language, a page without a language cookie or a usable Accept-Language."
        ),
    )

    # -- retention (docs/RETENTION.md): what `studentwork purge` and the worker's daily
    # purge on the leader delete
    lookup_audit_months: int = Field(
        24,
        ge=1,
        description="Months an employer's look-up of a student's remaining hours stays in "
        "the audit the student sees (access_code_lookups); older rows are deleted.",
    )
    applied_events_retention_days: int | None = Field(
        None,
        ge=1,
        description="Days an applied event id is kept against redelivery. Unset: derived "
        "from the consumed topics' retention.ms + segment.ms (plus a day). A value shorter "
        "than that is refused (nothing is pruned): a record still on a topic could then be "
        "applied twice. Ids are never pruned while a consumed topic keeps records forever.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Replace each ``<secret>_file`` by the content of that file.

        Runs before field validation, on the values merged from every source (keyword
        arguments, environment), so a secret read from a file is validated like one set
        directly. Setting both is refused: which one wins would be a guess. An empty
        ``_FILE`` variable counts as unset, as compose files often write them.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field in SECRET_FIELDS:
            path = data.get(f"{field}_file")
            if path is None or path == "":
                data[f"{field}_file"] = None
                continue
            if not isinstance(path, str | Path):
                continue  # field validation reports the wrong type
            if field in data:
                raise ValueError(
                    f"set {env_name(field)} or {env_name(field)}_FILE, not both "
                    f"({env_name(field)}_FILE={str(path)!r})"
                )
            data[field] = read_secret_file(Path(path))
        return data

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # PyJWKClient would refuse other schemes only at the first request.
        if url is not None and urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ValueError(f"the JWKS URL must be http:// or https:// (got {url!r})")
        return url

    @model_validator(mode="after")
    def _jwks_needs_public_key_algorithm(self) -> Settings:
        # A JWKS publishes public keys; left at HS256 every token would be refused.
        if self.jwt_jwks_url is not None and self.jwt_uses_shared_secret:
            raise ValueError(
                f"{env_name('jwt_jwks_url')} needs {env_name('jwt_algorithm')}=RS256 or ES256 "
                f"(the identity service's algorithm), not {self.jwt_algorithm}"
            )
        return self

    @property
    def jwt_uses_shared_secret(self) -> bool:
        """Whether tokens are signed with the shared ``jwt_secret`` (an HS algorithm)."""
        return self.jwt_algorithm.upper().startswith("HS")

    def require_production_secrets(self) -> None:
        """Refuse the public development secrets unless development mode is on.

        The JWT secret matters only when tokens are verified with it (HS256); the
        access-code secret always does. Raises
        :class:`~schemas.secrets.DevelopmentSecretsError` naming the variables to set.
        """
        if self.development:
            return
        problems: list[str] = []
        if (
            self.jwt_uses_shared_secret
            and self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
        ):
            problems.append(
                "the JWT secret is the public development one: set "
                f"{env_name('jwt_secret')} or {env_name('jwt_secret')}_FILE to a secret of "
                f"your own, or verify the identity service's tokens with "
                f"{env_name('jwt_algorithm')}=RS256 (or ES256) and "
                f"{env_name('jwt_public_key')}, {env_name('jwt_public_key')}_FILE or "
                f"{env_name('jwt_jwks_url')}"
            )
        if self.access_code_secret.get_secret_value() == DEVELOPMENT_ACCESS_CODE_SECRET:
            problems.append(
                "the access-code secret is the public development one: set "
                f"{env_name('access_code_secret')} or {env_name('access_code_secret')}_FILE "
                "to a secret of your own (at least 32 bytes)"
            )
        if problems:
            raise DevelopmentSecretsError(problems, env_name("development"))

    @cached_property
    def quota_rules(self) -> QuotaRules:
        return QuotaRules(
            {**DEFAULT_QUOTA_HOURS, **self.quota_hours},
            dmfa_counts_late_hours=self.dmfa_counts_late_hours,
        )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def today_in_brussels(self, now: datetime) -> date:
        """'Today' as every rule sees it: the pinned date, or Brussels' date at ``now``."""
        from quota.calendar import brussels_date

        return self.today or brussels_date(now)
