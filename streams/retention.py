"""Retention: what the service stops keeping, and when (docs/RETENTION.md).

One purge, run daily by the worker on the leader (a faust crontab, like the monthly
access-code rotation) and on demand by ``studentwork purge [--dry-run]``:

* the stored PDF of an attestation whose eBox period ended, unless the student archived
  it in the eBox (:func:`db.attestations.purge_expired_pdfs`), and the eBox documents
  past their period (:func:`db.ebox.purge_expired`);
* employers' look-ups of remaining hours older than ``STUDENTWORK_LOOKUP_AUDIT_MONTHS``;
* applied event ids older than the longest time a consumed topic keeps a record
  (:func:`applied_ids_horizon`): a record older than the topic's retention cannot be
  delivered again, so its id protects against nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import faust
from aiokafka.errors import KafkaError

from db import attestations as attestation_queries
from db import ebox, store
from db.ebox import add_months_clamped
from quota.calendar import BRUSSELS
from schemas.settings import Settings
from streams.admin import record_lifetimes_ms
from streams.runtime import WorkerState

log = logging.getLogger(__name__)

#: Added to the topics' record lifetime before an applied id goes: the broker checks
#: retention every five minutes by default, and clocks differ.
APPLIED_IDS_MARGIN = timedelta(days=1)


class _DryRun(Exception):
    """Raised inside the purge's transaction to roll a dry run back."""


@dataclass
class PurgeReport:
    """What a purge deleted (or, in a dry run, would delete)."""

    pdfs: list[str] = field(default_factory=list)
    ebox_documents: int = 0
    lookups: int = 0
    applied_ids: int = 0
    #: Before this moment applied ids were pruned; None when they were all kept.
    applied_ids_before: datetime | None = None
    #: Why applied ids were kept, when they were.
    applied_ids_kept_because: str | None = None


def applied_ids_horizon(
    settings: Settings, lifetimes_ms: dict[str, int | None]
) -> tuple[timedelta | None, str | None]:
    """How long an applied id must be kept, from the consumed topics' record lifetimes
    (:func:`streams.admin.record_lifetimes_ms`), or None and the reason to keep them all.

    The argument: the worker applies a record after the broker appended it, so its id's
    ``applied_at`` is later than the record's timestamp on a LogAppendTime topic. A record
    leaves the topic at most ``retention.ms + segment.ms`` after that timestamp. An id
    older than that, plus a margin, can only be asked for by a record that no longer
    exists. ``STUDENTWORK_APPLIED_EVENTS_RETENTION_DAYS`` may keep ids longer, never
    shorter.
    """
    forever = sorted(name for name, lifetime in lifetimes_ms.items() if lifetime is None)
    if forever:
        return None, (
            f"topics {', '.join(forever)} keep records without time limit (or are missing): "
            "any applied id may be asked for again"
        )
    longest = max((lifetime or 0 for lifetime in lifetimes_ms.values()), default=0)
    needed = timedelta(milliseconds=longest) + APPLIED_IDS_MARGIN
    configured = settings.applied_events_retention_days
    if configured is None:
        return needed, None
    if timedelta(days=configured) < needed:
        return None, (
            f"STUDENTWORK_APPLIED_EVENTS_RETENTION_DAYS={configured} is shorter than the "
            f"{needed.days} days a consumed topic may keep a record; not pruning"
        )
    return timedelta(days=configured), None


async def purge(
    pool: asyncpg.Pool, settings: Settings, now: datetime, *, dry_run: bool = False
) -> PurgeReport:
    """Apply every retention rule in one transaction (rolled back with ``dry_run``)."""
    report = PurgeReport()
    horizon, kept_because = applied_ids_horizon(settings, await record_lifetimes_ms(settings))
    report.applied_ids_kept_because = kept_because
    today = settings.today_in_brussels(now)
    audit_from = add_months_clamped(today, -settings.lookup_audit_months)
    try:
        async with pool.acquire() as conn, conn.transaction():
            report.pdfs = await attestation_queries.purge_expired_pdfs(
                conn, today, settings.ebox_retention_months
            )
            report.ebox_documents = await ebox.purge_expired(conn, today)
            report.lookups = await attestation_queries.purge_lookups(
                conn, datetime.combine(audit_from, datetime.min.time(), BRUSSELS)
            )
            if horizon is not None:
                report.applied_ids_before = now - horizon
                report.applied_ids = await store.prune_applied_events(
                    conn, report.applied_ids_before
                )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return report


def register_purge(app: faust.App, state: WorkerState) -> None:
    """The daily purge at 03:30 Brussels time, on the leader only (one worker runs it)."""

    @app.crontab("30 3 * * *", timezone=BRUSSELS, on_leader=True)
    async def daily_purge() -> None:
        try:
            report = await purge(await state.pool(), state.settings, state.clock())
        except (OSError, asyncpg.PostgresError, KafkaError) as error:
            log.warning("the daily purge could not run: %s", error)
            return
        log.info(
            "purged %d attestation PDFs, %d eBox documents, %d look-ups, %d applied ids",
            len(report.pdfs),
            report.ebox_documents,
            report.lookups,
            report.applied_ids,
        )
        if report.applied_ids_kept_because:
            log.info("applied ids kept: %s", report.applied_ids_kept_because)
