"""The pure parts of the student views: DmfA deadlines, year parsing, terms in words.

No broker, no database: these run in milliseconds.
"""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime

import pytest
from fastapi import HTTPException

from api.student import (
    dmfa_due_by,
    dmfa_status,
    employer_display,
    parse_year,
    year_detail,
)
from quota import (
    CancelPeriod,
    DeclarePeriod,
    QuotaRules,
    ReportWages,
    StudentLedger,
    apply,
    compute_balance,
    period_id_for,
)
from streams.health import BrokerProbe
from tests.support import EMPLOYER_A, STUDENT

ON_TIME = datetime(2026, 6, 1, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("year", "quarter", "due"),
    [
        (2026, 1, date(2026, 4, 30)),
        (2026, 2, date(2026, 7, 31)),
        (2026, 3, date(2026, 10, 31)),
        (2026, 4, date(2027, 1, 31)),
    ],
)
def test_the_dmfa_is_due_by_the_end_of_the_month_after_the_quarter(
    year: int, quarter: int, due: date
) -> None:
    assert dmfa_due_by(year, quarter) == due


def test_dmfa_status_follows_the_deadline() -> None:
    def status(today: date, *, received: bool = False, expected: bool = True) -> str:
        return dmfa_status(2026, 3, received=received, expected=expected, today=today)

    assert status(date(2026, 8, 15)) == "awaiting"  # quarter not over
    assert status(date(2026, 10, 31)) == "awaiting"  # over, DmfA due today
    assert status(date(2026, 11, 1)) == "missing"  # overdue
    assert status(date(2026, 11, 1), received=True) == "received"
    assert status(date(2026, 11, 1), expected=False) == "not_expected"


def test_years_from_2017_to_next_year_are_known() -> None:
    today = date(2026, 11, 26)
    assert parse_year("2017", today) == 2017
    assert parse_year("2027", today) == 2027
    for raw, reason in [
        ("2016", "2017 to 2027"),
        ("2028", "2017 to 2027"),
        ("-1", "whole number"),
        ("٢٠٢٦", "whole number"),  # Arabic-Indic digits: not ASCII
        ("", "whole number"),
    ]:
        with pytest.raises(HTTPException) as caught:
            parse_year(raw, today)
        assert caught.value.status_code == 400
        assert reason in caught.value.detail


def test_employers_are_shown_in_their_official_form() -> None:
    assert employer_display(EMPLOYER_A) == "0123.456.749"
    assert employer_display("NSSO1234567") == "NSSO 1234567"


def test_dmfa_above_planned_and_beyond_the_quota_are_explained() -> None:
    ledger = StudentLedger(STUDENT)
    rules = QuotaRules({2026: 100})
    apply(
        ledger,
        DeclarePeriod(
            "d1", EMPLOYER_A, EMPLOYER_A, date(2026, 7, 1), date(2026, 7, 31), 90, ON_TIME
        ),
        rules,
    )
    apply(
        ledger,
        ReportWages("w1", EMPLOYER_A, 2026, 3, 120, 150_000, datetime(2026, 10, 20, tzinfo=UTC)),
        rules,
    )
    detail = year_detail(ledger, compute_balance(ledger, 2026, rules), date(2026, 11, 26))
    assert (detail.used, detail.remaining, detail.ordinary_hours) == (120, 0, 20)
    assert detail.terms[0].text == (
        "Employer 0123.456.749, Q3: 120 hours worked (DmfA) replace 90 planned; gross wage "
        "EUR 1,500.00; 120 hours counted (100 at the reduced rate, 20 beyond the quota at "
        "ordinary contributions)"
    )
    assert [(c.kind, c.hours) for c in detail.checks] == [("actual_above_planned", 30)]
    assert detail.explanation == (
        "2026: quota 100 hours, 120 hours used, 0 hours remaining. 20 hours beyond the quota "
        "pay ordinary contributions."
    )


async def test_an_unreachable_broker_is_reported_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        probe = BrokerProbe(f"127.0.0.1:{port}", timeout=1.0)
        result = await probe.check()
    assert result.ok is False
    assert f"127.0.0.1:{port}" in result.detail
    await probe.close()


def test_neutralised_and_cancelled_hours_are_explained() -> None:
    ledger = StudentLedger(STUDENT)
    rules = QuotaRules()
    received = datetime(2021, 6, 1, 7, tzinfo=UTC)
    apply(
        ledger,
        DeclarePeriod(
            "n1", EMPLOYER_A, EMPLOYER_A, date(2021, 7, 1), date(2021, 7, 31), 50, received
        ),
        rules,
    )
    apply(
        ledger,
        DeclarePeriod(
            "c1", EMPLOYER_A, EMPLOYER_A, date(2021, 4, 1), date(2021, 4, 2), 16, received
        ),
        rules,
    )
    apply(ledger, CancelPeriod("c1-x", EMPLOYER_A, period_id_for("c1"), received), rules)
    detail = year_detail(ledger, compute_balance(ledger, 2021, rules), date(2021, 10, 15))
    texts = {t.quarter: t.text for t in detail.terms}
    assert texts == {
        2: "Employer 0123.456.749, Q2: nothing counted; 16 hours cancelled, not counted",
        3: "Employer 0123.456.749, Q3: 50 hours planned count until the DmfA arrives; "
        "50 hours neutralised (not counted); 0 hours counted",
    }
    statuses = {q.quarter: q.dmfa_status for q in detail.employers[0].quarters}
    assert statuses == {2: "not_expected", 3: "awaiting"}
    assert (detail.used, detail.remaining, detail.neutralised_hours) == (0, 475, 50)
    assert detail.checks == []


def _late_and_on_time_then_dmfa(rules: QuotaRules) -> StudentLedger:
    """The issue's example: 100 hours declared late, 50 on time, a DmfA of 150."""
    ledger = StudentLedger(STUDENT)
    late = datetime(2026, 7, 3, 7, tzinfo=UTC)
    apply(
        ledger,
        DeclarePeriod("l", EMPLOYER_A, EMPLOYER_A, date(2026, 7, 1), date(2026, 7, 31), 100, late),
        rules,
    )
    apply(
        ledger,
        DeclarePeriod(
            "o", EMPLOYER_A, EMPLOYER_A, date(2026, 8, 3), date(2026, 8, 28), 50, ON_TIME
        ),
        rules,
    )
    apply(
        ledger,
        ReportWages("w", EMPLOYER_A, 2026, 3, 150, 240_000, datetime(2026, 10, 20, tzinfo=UTC)),
        rules,
    )
    return ledger


def test_late_hours_taken_out_of_the_dmfa_are_explained() -> None:
    rules = QuotaRules()
    ledger = _late_and_on_time_then_dmfa(rules)
    detail = year_detail(ledger, compute_balance(ledger, 2026, rules), date(2026, 11, 26))
    assert (detail.used, detail.remaining, detail.late_hours) == (50, 600, 100)
    (term,) = detail.terms
    assert (term.hours, term.late_hours, term.late_deducted_hours, term.counted_hours) == (
        50,
        100,
        100,
        50,
    )
    assert term.text == (
        "Employer 0123.456.749, Q3: 150 hours worked (DmfA) replace 50 planned; 100 hours of "
        "them declared late, outside the quota (ordinary contributions); gross wage "
        "EUR 2,400.00; 50 hours counted"
    )
    assert detail.explanation == (
        "2026: quota 650 hours, 50 hours used, 600 hours remaining. 100 hours declared late "
        "are outside the quota."
    )


def test_the_literal_reading_says_the_late_hours_count_in_the_dmfa() -> None:
    rules = QuotaRules(dmfa_counts_late_hours=True)
    ledger = _late_and_on_time_then_dmfa(rules)
    detail = year_detail(ledger, compute_balance(ledger, 2026, rules), date(2026, 11, 26))
    assert (detail.used, detail.terms[0].late_deducted_hours) == (150, 0)
    assert detail.terms[0].text == (
        "Employer 0123.456.749, Q3: 150 hours worked (DmfA) replace 50 planned; the DmfA "
        "hours count as reported, the 100 hours declared late included; gross wage "
        "EUR 2,400.00; 150 hours counted"
    )
    assert detail.explanation == (
        "2026: quota 650 hours, 150 hours used, 500 hours remaining. 100 hours declared late "
        "count all the same: the DmfA hours that include them count as reported."
    )


def test_neutralised_hours_are_shown_per_declaration() -> None:
    ledger = StudentLedger(STUDENT)
    rules = QuotaRules()
    received = datetime(2020, 9, 1, 7, tzinfo=UTC)
    for event, start, end, hours, jc in [
        ("care", date(2020, 10, 5), date(2020, 10, 30), 10, "330"),
        ("shop", date(2020, 11, 2), date(2020, 11, 27), 400, "200"),
    ]:
        apply(
            ledger,
            DeclarePeriod(event, EMPLOYER_A, EMPLOYER_A, start, end, hours, received, "STU", jc),
            rules,
        )
    detail = year_detail(ledger, compute_balance(ledger, 2020, rules), date(2020, 12, 1))
    (quarter,) = detail.employers[0].quarters
    assert [
        (d.planned_hours, d.neutralised_hours, d.reduced_hours) for d in quarter.declarations
    ] == [
        (10, 10, 0),
        (400, 0, 400),
    ]
    assert detail.terms[0].text == (
        "Employer 0123.456.749, Q4: 410 hours planned count until the DmfA arrives; "
        "10 hours neutralised (not counted); 400 hours counted"
    )


def test_more_than_twelve_months_with_one_employer_is_shown() -> None:
    rules = QuotaRules()
    ledger = StudentLedger(STUDENT)
    quarters = [
        (date(2025, 1, 1), date(2025, 3, 31)),
        (date(2025, 4, 1), date(2025, 6, 30)),
        (date(2025, 7, 1), date(2025, 9, 30)),
        (date(2025, 10, 1), date(2025, 12, 31)),
        (date(2026, 1, 1), date(2026, 2, 15)),
    ]
    for number, (start, end) in enumerate(quarters):
        received = datetime(start.year - 1, 12, 1, tzinfo=UTC)
        apply(
            ledger,
            DeclarePeriod(f"q{number}", EMPLOYER_A, EMPLOYER_A, start, end, 20, received),
            rules,
        )
    history = list(ledger.periods.values())
    this_year = StudentLedger(STUDENT, {p.period_id: p for p in history if p.year == 2026})
    balance = compute_balance(this_year, 2026, rules)
    detail = year_detail(this_year, balance, date(2026, 3, 1), history=history)
    assert [(c.kind, c.quarter, c.hours, c.period_id) for c in detail.checks] == [
        ("twelve_months_in_a_row", 1, 20, int(period_id_for("q4")))
    ]
    assert detail.checks[0].message == (
        "Employer 0123.456.749 declared you without interruption from 1 January 2025 to "
        "15 February 2026, more than 12 months in a row: from 1 January 2026 you are no "
        "longer a student for this employer, and student contributions no longer apply to "
        "this job. Ask the employer about your contract."
    )
    # The year before holds exactly 12 months: nothing to say about them there.
    last_year = StudentLedger(STUDENT, {p.period_id: p for p in history if p.year == 2025})
    before = year_detail(
        last_year, compute_balance(last_year, 2025, rules), date(2026, 3, 1), history=history
    )
    assert "twelve_months_in_a_row" not in {c.kind for c in before.checks}
