"""``studentwork monitor``: what flows, read straight from Kafka and PostgreSQL.

Who uses it: an operator at a terminal (a view refreshing like ``top``) and scripts
(``--once --json``, one snapshot). It needs no worker's web port: end offsets and each
consumer group's committed offsets and members come from the Kafka admin API, the answers
of the last minute and the dead letters of the last hour from their topics (records
found by timestamp, at most :data:`RECENT_RECORDS` of each topic), the outbox from
PostgreSQL.

A snapshot samples the offsets twice, ``interval`` seconds apart, for the rates: *in* is
how fast a topic's end offset grows, *out* how fast a group's committed offset does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from db import reads
from schemas.settings import Settings
from schemas.topics import ACKS, REJECTED, TOPICS
from streams.admin import topic_partitions

#: How many of the newest dead letters a snapshot lists.
NEWEST_DEAD_LETTERS = 5
#: The most records of one topic a snapshot reads for its recent answers or dead
#: letters (the newest, spread over the partitions): a replay answers thousands a
#: second, and a snapshot must stay quick.
RECENT_RECORDS = 20_000

Offsets = dict[TopicPartition, int]


async def _groups(admin: AIOKafkaAdminClient, settings: Settings) -> list[str]:
    """This deployment's consumer groups: ``<app id>.<lane>`` and ``<app id>-ebox``."""
    listed = await admin.list_consumer_groups()
    prefixes = (f"{settings.app_id}.", f"{settings.app_id}-")
    return sorted({g[0] for g in listed if str(g[0]).startswith(prefixes)})


async def _committed(admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, Offsets]:
    out: dict[str, Offsets] = {}
    for group in groups:
        offsets = await admin.list_consumer_group_offsets(group)
        out[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    return out


class _DescribeGroups(
    Request[  # type: ignore[misc]
        DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2
    ]
):
    """DescribeGroups up to v2: aiokafka decodes a v3 answer with the v2 schema (its
    ``DescribeGroupsRequest_v3.RESPONSE_TYPE``), which fails on Kafka 4; v2 carries
    everything the monitor shows."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(self._groups)


async def _members(admin: AIOKafkaAdminClient, groups: list[str]) -> list[dict[str, Any]]:
    """Each group's state and members with the partitions assigned to them."""
    if not groups:
        return []
    by_node: dict[int, list[str]] = {}
    for group in groups:
        by_node.setdefault(await admin.find_coordinator(group), []).append(group)
    responses = [
        await admin._send_request(_DescribeGroups(names), node)  # the admin's own transport
        for node, names in by_node.items()
    ]
    out = []
    for response in responses:
        for _error, group_id, state, _ptype, _protocol, members, *_ in response.groups:
            described = []
            for _member_id, client_id, host, _meta, assignment in members:
                partitions: list[str] = []
                if assignment:
                    decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                    partitions = sorted(
                        f"{topic}[{p}]" for topic, parts in decoded.assignment for p in parts
                    )
                described.append({"clientId": client_id, "host": host, "partitions": partitions})
            out.append({"group": group_id, "state": state, "members": described})
    return sorted(out, key=lambda g: str(g["group"]))


async def _ends(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> tuple[Offsets, Offsets]:
    ends: Offsets = await consumer.end_offsets(tps)
    starts: Offsets = await consumer.beginning_offsets(tps)
    return ends, starts


async def _recent(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    seconds: float,
    limit: int = RECENT_RECORDS,
) -> list[dict[str, Any]]:
    """The JSON values of the records of ``tps`` (one topic's partitions) of the last
    ``seconds``, newest first (at most ``limit``; a value that is not a JSON object is
    skipped)."""
    if not tps:
        return []
    since = await consumer.offsets_for_times(
        {tp: int((time.time() - seconds) * 1000) for tp in tps}
    )
    ends = await consumer.end_offsets(tps)
    share = max(1, limit // len(tps))
    wanted = {
        tp: max(found.offset, ends[tp] - share)
        for tp, found in since.items()
        if found is not None and found.offset < ends[tp]
    }
    if not wanted:
        return []
    consumer.assign(list(wanted))
    for tp, offset in wanted.items():
        consumer.seek(tp, offset)
    found_records: list[tuple[int, int, Any]] = []
    left = set(wanted)
    while left:
        batches = await consumer.getmany(*left, timeout_ms=1000)
        if not batches:
            break  # the records are there (end offsets): a broker this slow gets a partial view
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    try:
                        value = json.loads(record.value or b"")
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        found_records.append((record.timestamp, record.offset, value))
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
    consumer.unsubscribe()
    found_records.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [value for _, _, value in found_records]


async def _recent_flow(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], settings: Settings
) -> dict[str, Any]:
    """The answers of the last minute by status and the dead letters of the last hour,
    read from their topics: what was published, whoever wrote it (the outbox does not
    keep published rows by default, ``STUDENTWORK_RELAY_KEEP_SENT_HOURS``)."""
    acks, rejected = settings.topic(ACKS), settings.topic(REJECTED)
    answers = await _recent(consumer, [tp for tp in tps if tp.topic == acks], 60)
    letters = await _recent(consumer, [tp for tp in tps if tp.topic == rejected], 3600)
    by_status: dict[str, int] = {}
    for answer in answers:
        status = answer.get("status")
        if isinstance(status, str) and status:
            by_status[status] = by_status.get(status, 0) + 1
    return {"answers": dict(sorted(by_status.items())), "letters": letters}


async def _recent_and_outbox(settings: Settings, flow: dict[str, Any]) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        outbox = await reads.outbox_state(conn)
    finally:
        await conn.close()
    by_reason: dict[str, int] = {}
    newest: list[dict[str, Any]] = []
    for letter in flow["letters"]:
        reason = str(letter.get("reason", ""))
        head = reason.split(":", 1)[0].strip()
        code = head if head.isupper() and " " not in head else "OTHER"
        by_reason[code] = by_reason.get(code, 0) + 1
        if len(newest) < NEWEST_DEAD_LETTERS:
            origin = str(letter.get("topic", ""))
            if letter.get("partition") is not None:
                origin += f"[{letter['partition']}]@{letter.get('offset')}"
            newest.append(
                {
                    "eventId": letter.get("eventId"),
                    "reasonCode": code,
                    "origin": origin,
                    "rejectedAt": letter.get("rejectedAt"),
                }
            )
    return {
        "answersLastMinute": flow["answers"],
        "deadLettersLastHour": {"byReason": by_reason, "newest": newest},
        "outbox": {
            "backlog": outbox.backlog,
            "failed": outbox.failed,
            "oldestAgeSeconds": round(outbox.oldest_age_seconds, 1),
        },
    }


async def snapshot(settings: Settings, interval: float = 1.0) -> dict[str, Any]:
    """One picture of the deployment (the ``--json`` document)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        # Every partition of the project's topics that exist, in declaration order.
        tps = await topic_partitions(admin, [settings.topic(spec.name) for spec in TOPICS])
        groups = await _groups(admin, settings)
        started = time.monotonic()
        ends_before, _ = await _ends(consumer, tps)
        committed_before = await _committed(admin, groups)
        await asyncio.sleep(interval)
        elapsed = time.monotonic() - started
        ends, starts = await _ends(consumer, tps)
        committed = await _committed(admin, groups)
        members = await _members(admin, groups)
        flow = await _recent_flow(consumer, tps, settings)
    finally:
        await consumer.stop()
        await admin.close()
    topics = []
    for name in dict.fromkeys(tp.topic for tp in tps):
        parts = [tp for tp in tps if tp.topic == name]
        lag: dict[str, int] = {}
        rate_out: dict[str, float] = {}
        for group, offsets in committed.items():
            if not any(tp in offsets for tp in parts):
                continue
            lag[group] = sum(ends[tp] - offsets.get(tp, starts[tp]) for tp in parts)
            moved = sum(
                offsets.get(tp, 0) - committed_before.get(group, {}).get(tp, offsets.get(tp, 0))
                for tp in parts
            )
            rate_out[group] = round(moved / elapsed, 1)
        topics.append(
            {
                "topic": name,
                "partitions": len(parts),
                "endOffset": sum(ends[tp] for tp in parts),
                "rateIn": round(sum(ends[tp] - ends_before[tp] for tp in parts) / elapsed, 1),
                "lag": lag,
                "rateOut": rate_out,
            }
        )
    return {
        "takenAt": datetime.now(UTC).isoformat(),
        "intervalSeconds": round(elapsed, 2),
        "topics": topics,
        "groups": members,
        **await _recent_and_outbox(settings, flow),
    }


def render(snap: dict[str, Any]) -> RenderableType:
    """The terminal view of a snapshot."""
    flows = Table(title="topics", expand=True)
    for column in ("topic", "end offset", "in /s", "group", "lag", "out /s"):
        flows.add_column(column, justify="left" if column in ("topic", "group") else "right")
    for topic in snap["topics"]:
        groups = sorted(topic["lag"]) or [""]
        for index, group in enumerate(groups):
            lag = topic["lag"].get(group)
            flows.add_row(
                topic["topic"] if index == 0 else "",
                str(topic["endOffset"]) if index == 0 else "",
                f"{topic['rateIn']:.1f}" if index == 0 else "",
                group,
                Text(str(lag), style="bold red" if lag else "green") if lag is not None else "",
                f"{topic['rateOut'].get(group, 0.0):.1f}" if group else "",
            )
    answers = snap["answersLastMinute"]
    letters = snap["deadLettersLastHour"]
    outbox = snap["outbox"]
    summary = Table.grid(padding=(0, 2))
    summary.add_row(
        "answers (last minute):",
        "  ".join(f"{s} {answers.get(s, 0)}" for s in ("A", "W", "B")),
    )
    summary.add_row(
        "dead letters (last hour):",
        "  ".join(f"{code} {n}" for code, n in sorted(letters["byReason"].items())) or "none",
    )
    summary.add_row(
        "outbox:",
        f"backlog {outbox['backlog']}  failed {outbox['failed']}  "
        f"oldest {outbox['oldestAgeSeconds']:.1f} s",
    )
    newest = Table(title="newest dead letters", expand=True)
    for column in ("rejected at", "reason", "from", "event id"):
        newest.add_column(column)
    for letter in letters["newest"]:
        newest.add_row(
            str(letter["rejectedAt"]), letter["reasonCode"], letter["origin"], letter["eventId"]
        )
    workers = Table(title="workers", expand=True)
    for column in ("group", "state", "client", "host", "partitions"):
        workers.add_column(column)
    for group in snap["groups"]:
        for member in group["members"] or [{"clientId": "-", "host": "-", "partitions": []}]:
            workers.add_row(
                group["group"],
                group["state"],
                member["clientId"],
                member["host"],
                ", ".join(member["partitions"]),
            )
    return Group(
        Text(f"Student@work monitor, {snap['takenAt']}", style="bold"),
        flows,
        summary,
        newest,
        workers,
    )


async def run_live(
    settings: Settings, interval: float, *, live: Callable[..., Live] = Live
) -> None:
    """Refresh the view every ``interval`` seconds until interrupted."""
    first = await snapshot(settings, interval)
    with live(render(first), auto_refresh=False, screen=False) as view:
        while True:
            view.update(render(await snapshot(settings, interval)), refresh=True)
