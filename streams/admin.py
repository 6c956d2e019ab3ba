"""Creating, checking and reconciling the project's topics against :mod:`schemas.topics`.

Topics are declared in one place, but a declaration alone does not stop a topic from
drifting: one created by hand, by an older release or under other settings keeps its
configuration, because creating a topic never touches an existing one. The input topics
matter most, since lateness is judged on their record timestamps: an input topic left
on CreateTime while LogAppendTime is configured lets senders backdate declarations.
Hence three levels here: :func:`ensure_topics` creates what is missing,
:func:`verify_input_topics` refuses to run on misconfigured input topics, and
:func:`reconcile_topics` (``studentwork topics``) repairs what Kafka lets it repair and
reports the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from db.migrate import migrate
from schemas.settings import Settings
from schemas.topics import DEDUPLICATED, TopicSpec, topic_configs, topic_specs

log = logging.getLogger(__name__)

#: DescribeConfigs ``config_source`` of a value set on the topic itself.
_DYNAMIC_TOPIC_CONFIG = 1
#: Metadata errors a topic shows while a just-created topic spreads to every broker.
_UNKNOWN_TOPIC_OR_PARTITION = 3
_LEADER_NOT_AVAILABLE = 5
#: How long :func:`verify_input_topics` waits for just-created topics to show up.
_SETTLE_SECONDS = 5.0

_RECONCILE_HINT = "`studentwork topics` reconciles it"


class TopicConfigError(Exception):
    """The input topics do not match the settings, so the pipeline must not start.

    ``problems`` holds one sentence per difference, each naming the topic, the value
    found and the value expected.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"input topics do not match the settings:\n{lines}")


@dataclass(frozen=True)
class ConfigChange:
    """One topic configuration value that differs from the declaration."""

    topic: str
    key: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.key} {self.old} -> {self.new}"


@dataclass
class TopicReport:
    """What :func:`reconcile_topics` did, or with ``check`` would do.

    ``created`` and ``altered`` are done (or, in check mode, needed); ``problems`` are
    differences that cannot be fixed by changing configuration.
    """

    check: bool
    created: list[str] = field(default_factory=list)
    altered: list[ConfigChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        """Whether the topics as found differed from the declaration in any way."""
        return bool(self.created or self.altered or self.problems)


@dataclass(frozen=True)
class _TopicState:
    """One existing topic as the brokers describe it."""

    name: str
    partitions: int
    replication_factors: frozenset[int]
    #: Effective value of every configuration key, wherever it comes from.
    values: dict[str, str | None]
    #: Only the values set on the topic itself (what AlterConfigs replaces).
    overrides: dict[str, str | None]


def wanted_configs(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    """The configuration a topic must have under ``settings``.

    That is :func:`schemas.topics.topic_configs`, plus ``cleanup.policy=delete`` where
    the declaration says nothing: the pipeline relies on input and event topics keeping
    every record until retention, which a compacting broker default would break.
    """
    return {
        "cleanup.policy": "delete",
        **topic_configs(
            spec,
            timestamp_type=settings.input_timestamp_type,
            min_insync_replicas=settings.min_insync_replicas,
            dead_letter_retention_days=settings.dead_letter_retention_days,
        ),
    }


def _wanted_partitions(spec: TopicSpec, settings: Settings) -> int:
    return spec.partitions or settings.partitions


async def _create_missing(
    admin: AIOKafkaAdminClient, settings: Settings, existing: set[str]
) -> list[str]:
    wanted = [
        NewTopic(
            name=settings.topic(spec.name),
            num_partitions=_wanted_partitions(spec, settings),
            replication_factor=settings.replication_factor,
            topic_configs=wanted_configs(spec, settings),
        )
        for spec in topic_specs(settings.declarant_answer_topics)
        if settings.topic(spec.name) not in existing
    ]
    if not wanted:
        return []
    response = await admin.create_topics(wanted)
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        # Another worker may have created it between the listing and our request.
        if code not in (0, TopicAlreadyExistsError.errno):
            detail = entry[2] if len(entry) > 2 else ""
            raise RuntimeError(f"could not create topic {name}: error {code} {detail}")
    names = [t.name for t in wanted]
    log.info("created topics %s", ", ".join(names))
    return names


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return await _create_missing(admin, settings, set(await admin.list_topics()))
    finally:
        await admin.close()


async def _describe(
    admin: AIOKafkaAdminClient, names: list[str], *, settle_seconds: float = 0.0
) -> dict[str, _TopicState | None]:
    """Partitions, replication and configuration of ``names``; None for a missing topic.

    With ``settle_seconds``, a topic that is missing or has no leader yet is asked again
    for that long: a topic created a moment ago may not have reached the broker answering.
    """
    if not names:
        # An empty list would ask the brokers for every topic of the cluster.
        return {}
    deadline = time.monotonic() + settle_seconds
    while True:
        metadata = {t["topic"]: t for t in await admin.describe_topics(names)}
        unsettled = [
            name
            for name in names
            if name not in metadata
            or metadata[name]["error_code"] in (_UNKNOWN_TOPIC_OR_PARTITION, _LEADER_NOT_AVAILABLE)
            or not metadata[name]["partitions"]
        ]
        if not unsettled or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.2)
    present = [name for name in names if name not in unsettled]
    states: dict[str, _TopicState | None] = dict.fromkeys(unsettled)
    if not present:
        return states
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in present]
    )
    for response in responses:
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            if resource["error_code"] == _UNKNOWN_TOPIC_OR_PARTITION:
                # Deleted between the two requests: as missing as never created.
                states[name] = None
                continue
            if resource["error_code"] != 0:
                raise RuntimeError(
                    f"could not read the configuration of topic {name}: "
                    f"error {resource['error_code']} {resource['error_message'] or ''}"
                )
            entries: list[dict[str, Any]] = resource["config_entries"]
            partitions = metadata[name]["partitions"]
            states[name] = _TopicState(
                name=name,
                partitions=len(partitions),
                replication_factors=frozenset(len(p["replicas"]) for p in partitions),
                values={e["config_names"]: e["config_value"] for e in entries},
                overrides={
                    e["config_names"]: e["config_value"]
                    for e in entries
                    if e.get("config_source") == _DYNAMIC_TOPIC_CONFIG
                },
            )
    return states


def _partition_problem(name: str, found: int, wanted: int) -> str:
    return (
        f"topic {name}: {found} partitions, expected {wanted}; `studentwork topics` leaves "
        f"this alone, because Kafka cannot remove partitions and adding them would move "
        f"students' keys to other partitions and break per-student order: recreate the "
        f"topic with {wanted} partitions, or configure the count the topics have"
    )


def _plan(
    spec: TopicSpec, state: _TopicState, settings: Settings
) -> tuple[list[ConfigChange], list[str]]:
    """The configuration changes that make ``state`` match, and what no change can fix."""
    problems: list[str] = []
    wanted_partitions = _wanted_partitions(spec, settings)
    if state.partitions != wanted_partitions:
        problems.append(_partition_problem(state.name, state.partitions, wanted_partitions))
    if state.replication_factors != {settings.replication_factor}:
        found = ", ".join(str(n) for n in sorted(state.replication_factors))
        problems.append(
            f"topic {state.name}: replication factor {found}, expected "
            f"{settings.replication_factor}; not changed (reassign the partitions with "
            f"kafka-reassign-partitions)"
        )
    changes = [
        ConfigChange(state.name, key, state.values.get(key), value)
        for key, value in wanted_configs(spec, settings).items()
        if state.values.get(key) != value
    ]
    return changes, problems


async def _alter(
    admin: AIOKafkaAdminClient, spec: TopicSpec, state: _TopicState, settings: Settings
) -> str | None:
    """Apply the declared configuration to one topic; return a problem, or None."""
    hidden = sorted(key for key, value in state.overrides.items() if value is None)
    if hidden:
        # The legacy AlterConfigs replaces every topic-level value, and these cannot be
        # read back to be sent again: altering would silently drop them.
        return (
            f"topic {state.name}: not altered, because its sensitive settings "
            f"{', '.join(hidden)} cannot be read back and would be lost"
        )
    # AlterConfigs (aiokafka has no incremental variant) replaces the topic's whole set of
    # overrides, so the ones set by operators are sent again rather than dropped. Values
    # the declaration no longer names are kept too: removing retention.ms=-1 from an
    # input topic holding CreateTime records would let the broker delete them at once.
    configs = {
        **{key: value for key, value in state.overrides.items() if value is not None},
        **wanted_configs(spec, settings),
    }
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, state.name, configs)]
    )
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                return (
                    f"topic {state.name}: could not alter its configuration: error "
                    f"{resource['error_code']} {resource['error_message'] or ''}".rstrip()
                )
    return None


async def _await_configs(
    admin: AIOKafkaAdminClient, specs: dict[str, TopicSpec], settings: Settings
) -> list[str]:
    """Wait until the brokers show the altered configuration; return what never showed.

    An alteration is accepted by the controller and reaches the brokers a moment later.
    Waiting for it means that once ``studentwork topics`` has returned, a worker started
    next is verified against the new values, not the old ones.
    """
    deadline = time.monotonic() + _SETTLE_SECONDS
    pending = dict(specs)
    while pending:
        states = await _describe(admin, list(pending))
        for name, spec in list(pending.items()):
            state = states[name]
            if state is not None and not _plan(spec, state, settings)[0]:
                del pending[name]
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    return [
        f"topic {name}: altered, but the brokers did not show the new configuration within "
        f"{_SETTLE_SECONDS:.0f} s; run `studentwork topics --check` again"
        for name in pending
    ]


async def reconcile_topics(settings: Settings, *, check: bool = False) -> TopicReport:
    """Make every project topic match its declaration, as far as Kafka allows.

    Missing topics are created; configuration values that differ from
    :func:`wanted_configs` are altered. A partition count or replication factor that
    differs is reported in ``problems`` and left alone. With ``check`` nothing is
    changed: the report says what would be created and altered.
    """
    report = TopicReport(check=check)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if check:
            report.created = [
                settings.topic(s.name)
                for s in topic_specs(settings.declarant_answer_topics)
                if settings.topic(s.name) not in existing
            ]
        else:
            report.created = await _create_missing(admin, settings, existing)
        specs = {
            settings.topic(s.name): s
            for s in topic_specs(settings.declarant_answer_topics)
            if settings.topic(s.name) in existing
        }
        states = await _describe(admin, list(specs))
        for name, spec in specs.items():
            state = states[name]
            if state is None:
                report.problems.append(f"topic {name}: listed, but could not be described")
                continue
            changes, problems = _plan(spec, state, settings)
            report.problems.extend(problems)
            if not changes:
                continue
            failed = None if check else await _alter(admin, spec, state, settings)
            if failed is not None:
                report.problems.append(failed)
                continue
            report.altered.extend(changes)
            if not check:
                log.info("altered topic %s", "; ".join(str(c) for c in changes))
        if not check:
            altered = {change.topic for change in report.altered}
            report.problems.extend(
                await _await_configs(
                    admin, {n: s for n, s in specs.items() if n in altered}, settings
                )
            )
    finally:
        await admin.close()
    return report


async def verify_input_topics(settings: Settings) -> None:
    """Refuse input topics whose timestamp type, partitions or cleanup policy differ.

    Lateness is decided on the input records' timestamps and per-student order on their
    partitions, so a pipeline running on such a topic would accept backdated or
    reordered declarations. Raises :class:`TopicConfigError` listing every difference.
    """
    inputs = {settings.topic(s.name): s for s in topic_specs() if s.is_input}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # Usually called right after ensure_topics: give new topics time to spread.
        states = await _describe(admin, list(inputs), settle_seconds=_SETTLE_SECONDS)
    finally:
        await admin.close()
    problems: list[str] = []
    for name, spec in inputs.items():
        state = states[name]
        if state is None:
            problems.append(f"topic {name} does not exist; `studentwork topics` creates it")
            continue
        wanted = wanted_configs(spec, settings)
        for key in ("message.timestamp.type", "cleanup.policy"):
            found = state.values.get(key)
            if found != wanted[key]:
                problems.append(
                    f"topic {name}: {key} is {found}, expected {wanted[key]}; {_RECONCILE_HINT}"
                )
        wanted_partitions = _wanted_partitions(spec, settings)
        if state.partitions != wanted_partitions:
            problems.append(_partition_problem(name, state.partitions, wanted_partitions))
    if problems:
        raise TopicConfigError(problems)


async def record_lifetimes_ms(settings: Settings) -> dict[str, int | None]:
    """How long, at most, each topic of :data:`schemas.topics.DEDUPLICATED` keeps a
    record after its timestamp, as the brokers are configured: ``retention.ms`` plus
    ``segment.ms`` (a segment is deleted whole, once its newest record is past the
    retention, so a record can outlive ``retention.ms`` by up to a segment's age).
    None where records are kept forever (``retention.ms`` -1, or compaction) or the
    topic is missing. Keys are the logical names."""
    names = {settings.topic(name): name for name in DEDUPLICATED}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        states = await _describe(admin, list(names))
    finally:
        await admin.close()
    lifetimes: dict[str, int | None] = {}
    for full, name in names.items():
        state = states[full]
        if state is None or "delete" not in (state.values.get("cleanup.policy") or "delete"):
            lifetimes[name] = None
            continue
        retention = int(state.values.get("retention.ms") or "-1")
        segment = int(state.values.get("segment.ms") or "0")
        lifetimes[name] = None if retention < 0 else retention + segment
    return lifetimes


async def topic_partitions(admin: AIOKafkaAdminClient, names: list[str]) -> list[TopicPartition]:
    """Every partition of the topics ``names`` that exist, in the order of ``names``."""
    if not names:
        # An empty list would ask the brokers for every topic of the cluster.
        return []
    found = {
        str(t["topic"]): sorted(int(p["partition"]) for p in t["partitions"])
        for t in await admin.describe_topics(names)
        if not t.get("error_code")
    }
    return [TopicPartition(name, p) for name in names for p in found.get(name, [])]


async def read_to_end(bootstrap: str, topic: str, *, wait: float) -> list[ConsumerRecord[Any, Any]]:
    """Every record of ``topic`` up to its end offsets as they are when this is called,
    in each partition's order (no consumer group, nothing committed).

    Reading to the end offsets needs no expected count and no settling time: once the
    writers are known to be done, it sees every record, duplicates included. ``wait``
    bounds a broker that does not answer: past it, :class:`TimeoutError` says where
    the read stood.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[ConsumerRecord[Any, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # Without a group, the consumer takes every partition once it has the metadata.
        while not consumer.assignment():
            if loop.time() >= deadline:
                raise TimeoutError(f"{topic}: no partitions in the cluster metadata")
            await asyncio.sleep(0.1)
        tps = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if loop.time() >= deadline:
                raise TimeoutError(f"{topic}: read {len(out)} records, end offsets {ends}")
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def prepare(settings: Settings) -> None:
    """Migrate the database, create missing topics and verify the input topics.

    What every service does first. It only verifies, never alters: changing a topic's
    configuration under running services is an operator's decision
    (``studentwork topics``), so a mismatch raises :class:`TopicConfigError` instead.
    """
    applied = await migrate(settings.database_url)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    await ensure_topics(settings)
    await verify_input_topics(settings)
