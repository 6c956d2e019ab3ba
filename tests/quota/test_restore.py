"""Periods and wage reports read back from the database equal the ones constructed."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any

import pytest

from quota.ledger import Period, Tranche, WageReport

RECEIVED = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
PERIOD: dict[str, Any] = {
    "period_id": "p-1",
    "employer": "0123456749",
    "declarant": "0123456749",
    "start": date(2025, 7, 1),
    "end": date(2025, 7, 31),
    "tranches": (Tranche(4, 100), Tranche(9, 20)),
    "received_at": RECEIVED,
    "late": False,
    "event_id": "e-1",
    "joint_commission": "302",
    "using_employer": None,
    "cancelled": False,
}
REPORT: dict[str, Any] = {
    "employer": "0123456749",
    "year": 2025,
    "quarter": 3,
    "hours_worked": 130,
    "gross_wage_cents": 190_000,
    "received_at": RECEIVED,
    "event_id": "d-1",
    "seq": 12,
    "tranches": (Tranche(4, 120), Tranche(12, 10)),
}


def test_a_restored_period_is_the_constructed_one_derived_fields_included() -> None:
    restored, built = Period.restore(**PERIOD), Period(**PERIOD)
    assert restored == built
    assert {f.name: getattr(restored, f.name) for f in fields(Period)} == {
        f.name: getattr(built, f.name) for f in fields(Period)
    }
    assert (restored.planned_hours, restored.accepted_seq, restored.year, restored.quarter) == (
        120,
        4,
        2025,
        3,
    )
    assert restored.counts is True
    with pytest.raises(AttributeError):
        restored.late = True  # type: ignore[misc]


def test_a_restored_wage_report_is_the_constructed_one() -> None:
    assert WageReport.restore(**REPORT) == WageReport(**REPORT)


@pytest.mark.parametrize("kind, given", [(Period, PERIOD), (WageReport, REPORT)])
def test_restoring_with_a_field_missing_or_unknown_is_an_error(
    kind: type[Period] | type[WageReport], given: dict[str, Any]
) -> None:
    missing = {k: v for k, v in given.items() if k != "received_at"}
    with pytest.raises(TypeError, match="fields"):
        kind.restore(**missing)
    with pytest.raises(TypeError, match="fields"):
        kind.restore(**given, extra=1)
