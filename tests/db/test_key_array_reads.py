"""The hot path's reads of a set of keys (students, periods, wage reports, applied event
ids) stay linear in the keys under any plan PostgreSQL caches for them.

asyncpg prepares every statement, and PostgreSQL may keep a generic plan for it after
five runs. Made while a table is small, the generic plan of ``column = ANY($1)`` is a
sequential scan whose filter compares every row with every element of the array: rows x
keys comparisons, 85 ms instead of 3 for 500 students in the benchmark. These tests force
the generic plan on a small table, show that the ``= ANY`` form gets that plan here, and
that none of the statements of ``db.store`` does.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from db import store

pytestmark = pytest.mark.integration

# Small, as the tables are when a replay or a new deployment starts: where the generic
# plan of `= ANY` is a sequential scan.
STUDENTS = [f"{n:011d}" for n in range(40)]


async def fill(conn: asyncpg.Connection) -> None:
    """40 students, 3 periods and a wage report each, with the planner's statistics."""
    await conn.copy_records_to_table("students", columns=["ssin"], records=[(s,) for s in STUDENTS])
    received = datetime(2025, 1, 1, tzinfo=UTC)
    await conn.copy_records_to_table(
        "periods",
        columns=[
            "period_id",
            "ssin",
            "employer",
            "declarant",
            "start_date",
            "end_date",
            "tranche_seqs",
            "tranche_hours",
            "planned_hours",
            "received_at",
            "late",
            "event_id",
        ],
        records=[
            (
                f"{s}-{k}",
                s,
                "0403170701",
                "0403170701",
                date(2025, k + 1, 1),
                date(2025, k + 1, 9),
                [k + 1],
                [8],
                8,
                received,
                False,
                f"ev-{s}-{k}",
            )
            for s in STUDENTS
            for k in range(3)
        ],
    )
    await conn.copy_records_to_table(
        "wage_reports",
        columns=[
            "ssin",
            "employer",
            "year",
            "quarter",
            "hours_worked",
            "gross_wage_cents",
            "received_at",
            "event_id",
            "seq",
        ],
        records=[(s, "0403170701", 2025, 1, 24, 36_000, received, f"wr-{s}", 9) for s in STUDENTS],
    )
    await conn.copy_records_to_table(
        "applied_events", columns=["event_id"], records=[(f"ev-{s}-0",) for s in STUDENTS]
    )
    await conn.execute("ANALYZE students, periods, wage_reports, applied_events")


def array_filters(plan: dict[str, Any]) -> list[str]:
    """The filters of the plan's nodes that test a row against a whole array."""
    found = [
        f"{plan['Node Type']}: {plan[key]}"
        for key in ("Filter", "Join Filter")
        if "ANY (" in plan.get(key, "")
    ]
    for child in plan.get("Plans", []):
        found += array_filters(child)
    return found


async def generic_plan(conn: asyncpg.Connection, sql: str, keys: list[str]) -> dict[str, Any]:
    """The plan PostgreSQL caches for ``sql`` once it goes generic (``$1`` unknown)."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE keyed (text[]) AS {sql}")
    # EXECUTE takes no bind parameters: the keys go in as a quoted literal.
    literal = await conn.fetchval("SELECT quote_literal($1::text[]::text)", keys)
    try:
        explained = json.loads(
            await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE keyed({literal}::text[])")
        )
    finally:
        await conn.execute("DEALLOCATE keyed")
        await conn.execute("RESET plan_cache_mode")
    plan: dict[str, Any] = explained[0]["Plan"]
    return plan


async def test_the_any_form_is_planned_as_a_scan_comparing_rows_with_the_array(
    conn: asyncpg.Connection,
) -> None:
    # The control: the hazard is real on this server, and the check sees it.
    await fill(conn)
    plan = await generic_plan(conn, "SELECT * FROM periods WHERE ssin = ANY($1::text[])", STUDENTS)
    assert array_filters(plan) == ["Seq Scan: (ssin = ANY ($1))"]


@pytest.mark.parametrize(
    ("statement", "keys"),
    [
        ("LOCK_STUDENTS", STUDENTS),
        ("PERIODS_OF_STUDENTS", STUDENTS),
        ("WAGE_REPORTS_OF_STUDENTS", STUDENTS),
        ("EXISTING_PERIODS", [f"{s}-1" for s in STUDENTS]),
        ("APPLIED_EVENTS", [f"ev-{s}-0" for s in STUDENTS]),
    ],
)
async def test_the_key_set_reads_never_compare_each_row_with_the_whole_array(
    conn: asyncpg.Connection, statement: str, keys: list[str]
) -> None:
    await fill(conn)
    sql = getattr(store, statement)
    async with conn.transaction():  # LOCK_STUDENTS locks its rows
        plan = await generic_plan(conn, sql, keys)
        rows = await conn.fetch(sql, keys)
    assert array_filters(plan) == []
    assert len(rows) == {"PERIODS_OF_STUDENTS": 120}.get(statement, 40)


async def test_read_ledgers_of_a_year_reads_only_that_years_rows(
    conn: asyncpg.Connection,
) -> None:
    await fill(conn)
    async with conn.transaction():
        ledgers = await store.load_ledgers(conn, STUDENTS[:2], year=2025)
        assert [sorted(ledgers[s].periods) for s in STUDENTS[:2]] == [
            [f"{s}-{k}" for k in range(3)] for s in STUDENTS[:2]
        ]
        assert [len(ledgers[s].wage_reports) for s in STUDENTS[:2]] == [1, 1]
        assert await store.load_ledgers(conn, STUDENTS[:2], year=2024) == {
            s: type(ledgers[s])(s, next_seq=1) for s in STUDENTS[:2]
        }
