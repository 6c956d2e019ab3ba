"""Dimona STU declarations, updates and cancellations: the worked examples of DOMAIN.md."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import pytest

from quota import (
    Anomaly,
    AnomalyCode,
    Command,
    Decision,
    Period,
    PeriodShare,
    Status,
    Tranche,
    period_id_for,
)
from tests.quota.builders import (
    EMPLOYER_A,
    EMPLOYER_B,
    EMPLOYER_C,
    RULES_475,
    Student,
    brussels,
    cancel,
    declare,
    dmfa,
    update,
    utc,
)

APRIL_1, APRIL_30 = date(2021, 4, 1), date(2021, 4, 30)
MAY_1, MAY_31 = date(2021, 5, 1), date(2021, 5, 31)
JULY_1, JULY_31 = date(2026, 7, 1), date(2026, 7, 31)


def only_anomaly(decision: Decision) -> Anomaly:
    assert len(decision.anomalies) == 1, decision.anomalies
    return decision.anomalies[0]


# ------------------------------------------------------------- first come, first served


def test_first_come_first_served_with_a_quota_of_475() -> None:
    student = Student(RULES_475)

    a = student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    assert a == Decision(Status.ACCEPTED, (), period_id_for("a"), 300, 0, frozenset({2021}))

    b = student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 200))
    assert b.status is Status.WARNING
    assert (b.period_id, b.reduced_hours, b.ordinary_hours) == (period_id_for("b"), 175, 25)
    anomaly = only_anomaly(b)
    assert anomaly.code is AnomalyCode.QUOTA_EXCEEDED
    assert anomaly.hours == 25
    assert "exceeding 25 hours" in anomaly.text
    assert "175 hours were left" in anomaly.text

    balance = student.balance(2021)
    assert (balance.quota, balance.used, balance.remaining) == (475, 500, 0)
    assert (balance.reduced_hours, balance.ordinary_hours) == (475, 25)
    assert student.balance(2021).share_of(period_id_for("a")) == PeriodShare(
        period_id_for("a"), 300, False, False, 300, 0, True
    )
    assert student.balance(2021).share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 200, False, False, 175, 25, True
    )


def test_two_hundred_hours_with_thirty_above_the_remaining_quota() -> None:
    # DOMAIN.md: 200 hours declared with 30 above the remaining quota = 170 reduced + 30.
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 305))
    decision = student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 200))
    assert (decision.status, decision.reduced_hours, decision.ordinary_hours) == (
        Status.WARNING,
        170,
        30,
    )
    assert only_anomaly(decision).hours == 30


def test_a_declaration_filling_the_quota_exactly_is_accepted_without_warning() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    decision = student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 175))
    assert (decision.status, decision.anomalies) == (Status.ACCEPTED, ())
    assert (decision.reduced_hours, decision.ordinary_hours) == (175, 0)
    assert student.balance(2021).remaining == 0


def test_once_the_quota_is_used_up_every_new_hour_is_ordinary() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 475))
    decision = student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 8))
    assert (decision.status, decision.reduced_hours, decision.ordinary_hours) == (
        Status.WARNING,
        0,
        8,
    )
    assert only_anomaly(decision).hours == 8


def test_the_quota_is_per_calendar_year() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 12, 1), date(2021, 12, 31), 475))
    decision = student.do(declare("b", EMPLOYER_A, date(2022, 1, 3), date(2022, 1, 31), 100))
    assert (decision.status, decision.reduced_hours, decision.years) == (
        Status.ACCEPTED,
        100,
        frozenset({2022}),
    )
    assert (student.balance(2021).remaining, student.balance(2022).remaining) == (0, 375)


def test_the_declaration_is_recorded_with_its_details() -> None:
    student = Student()
    received = brussels(date(2026, 6, 20))
    student.do(
        declare(
            "a",
            EMPLOYER_A,
            JULY_1,
            JULY_31,
            30,
            received_at=received,
            joint_commission="302",
            using_employer=EMPLOYER_C,
        )
    )
    assert student.period("a") == Period(
        period_id=period_id_for("a"),
        employer=EMPLOYER_A,
        declarant=EMPLOYER_A,
        start=JULY_1,
        end=JULY_31,
        tranches=(Tranche(1, 30),),
        received_at=received,
        late=False,
        event_id="a",
        joint_commission="302",
        using_employer=EMPLOYER_C,
        cancelled=False,
    )
    assert student.ledger.next_seq == 2
    assert (student.period("a").year, student.period("a").quarter) == (2026, 3)


# -------------------------------------------------------- hours, not days, are deducted


def test_all_of_july_for_thirty_hours_deducts_thirty_hours() -> None:
    student = Student()
    decision = student.do(declare("a", EMPLOYER_A, JULY_1, JULY_31, 30))
    assert decision == Decision(Status.ACCEPTED, (), period_id_for("a"), 30, 0, frozenset({2026}))
    balance = student.balance(2026)
    assert (balance.quota, balance.used, balance.remaining) == (650, 30, 620)


def test_a_one_day_period_and_a_month_with_the_same_hours_deduct_the_same() -> None:
    month, day = Student(), Student()
    month.do(declare("a", EMPLOYER_A, JULY_1, JULY_31, 30))
    day.do(declare("a", EMPLOYER_A, JULY_1, JULY_1, 30))
    assert month.balance(2026).remaining == day.balance(2026).remaining == 620


# ------------------------------------------------------------------------ late declarations


def test_a_late_declaration_counts_nothing_against_the_quota() -> None:
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2026, 4, 1), date(2026, 4, 30), 100))
    remaining = student.balance(2026).remaining
    assert remaining == 550

    decision = student.do(
        declare("late", EMPLOYER_B, JULY_1, JULY_31, 30, received_at=brussels(date(2026, 7, 2)))
    )
    assert decision.status is Status.WARNING
    assert (decision.reduced_hours, decision.ordinary_hours) == (0, 30)
    anomaly = only_anomaly(decision)
    assert (anomaly.code, anomaly.hours) == (AnomalyCode.LATE_DECLARATION, 30)
    assert decision.years == frozenset({2026})
    assert student.period("late").late

    balance = student.balance(2026)
    assert (balance.used, balance.remaining, balance.late_hours) == (100, remaining, 30)
    assert (balance.reduced_hours, balance.ordinary_hours) == (100, 0)
    assert balance.share_of(period_id_for("late")) == PeriodShare(
        period_id_for("late"), 30, True, False, 0, 30, False
    )


def test_a_late_declaration_is_outside_the_quota_even_when_the_quota_is_full() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 475))
    decision = student.do(
        declare("late", EMPLOYER_B, MAY_1, MAY_31, 20, received_at=brussels(date(2021, 5, 3)))
    )
    assert [a.code for a in decision.anomalies] == [AnomalyCode.LATE_DECLARATION]
    assert student.balance(2021).used == 475


@pytest.mark.parametrize(
    ("start", "received_at", "late"),
    [
        (JULY_1, brussels(JULY_1, 23, 59), False),
        (JULY_1, brussels(JULY_1, 0, 0), False),
        (JULY_1, brussels(date(2026, 7, 2), 0, 0), True),
        # Summer: 23:30 UTC the day before is 01:30 on the start day in Brussels.
        (JULY_1, utc(2026, 6, 30, 23, 30), False),
        # Summer: 22:30 UTC on the start day is already 00:30 the next day in Brussels.
        (JULY_1, utc(2026, 7, 1, 22, 30), True),
        (JULY_1, utc(2026, 7, 1, 21, 30), False),
        # Winter: 22:30 UTC on the start day is 23:30 the same day in Brussels.
        (date(2026, 1, 15), utc(2026, 1, 15, 22, 30), False),
        (date(2026, 1, 15), utc(2026, 1, 15, 23, 0), True),
    ],
)
def test_lateness_is_judged_on_the_brussels_date(
    start: date, received_at: datetime, late: bool
) -> None:
    student = Student()
    decision = student.do(declare("a", EMPLOYER_A, start, start, 8, received_at=received_at))
    if late:
        assert (decision.status, decision.reduced_hours, decision.ordinary_hours) == (
            Status.WARNING,
            0,
            8,
        )
        assert [a.code for a in decision.anomalies] == [AnomalyCode.LATE_DECLARATION]
        assert student.balance(2026).remaining == 650
    else:
        assert (decision.status, decision.anomalies, decision.reduced_hours) == (
            Status.ACCEPTED,
            (),
            8,
        )
        assert student.balance(2026).remaining == 642
    assert student.period("a").late is late


# -------------------------------------------------------------------------------- refusals


def _declare_july(student: Student) -> None:
    student.do(declare("a", EMPLOYER_A, JULY_1, JULY_31, 30))


def _declare_late(student: Student) -> None:
    student.do(
        declare("a", EMPLOYER_A, JULY_1, JULY_31, 30, received_at=brussels(date(2026, 7, 5)))
    )


def _declare_july_and_dmfa(student: Student) -> None:
    _declare_july(student)
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 26))


def _declare_and_cancel(student: Student) -> None:
    _declare_july(student)
    student.do(cancel("c", EMPLOYER_A, "a"))


def _nothing(student: Student) -> None:
    pass


Setup = Callable[[Student], None]

REFUSALS: list[tuple[str, Setup, Command, AnomalyCode]] = [
    (
        "cross-quarter",
        _nothing,
        declare("x", EMPLOYER_A, date(2026, 6, 20), date(2026, 7, 10), 30),
        AnomalyCode.CROSS_QUARTER,
    ),
    (
        "cross-year",
        _nothing,
        declare("x", EMPLOYER_A, date(2026, 12, 20), date(2027, 1, 5), 30),
        AnomalyCode.CROSS_QUARTER,
    ),
    ("zero-hours", _nothing, declare("x", EMPLOYER_A, JULY_1, JULY_31, 0), AnomalyCode.ZERO_HOURS),
    (
        "negative-hours",
        _nothing,
        declare("x", EMPLOYER_A, JULY_1, JULY_31, -5),
        AnomalyCode.ZERO_HOURS,
    ),
    (
        "end-before-start",
        _nothing,
        declare("x", EMPLOYER_A, JULY_31, JULY_1, 30),
        AnomalyCode.END_BEFORE_START,
    ),
    (
        "not-a-student",
        _nothing,
        declare("x", EMPLOYER_A, JULY_1, JULY_31, 30, worker_type="OTH"),
        AnomalyCode.NOT_A_STUDENT,
    ),
    (
        "start-date-update",
        _declare_july,
        update("u", EMPLOYER_A, "a", JULY_31, 30, start=date(2026, 7, 2)),
        AnomalyCode.START_DATE_CHANGE,
    ),
    (
        "update-after-dmfa",
        _declare_july_and_dmfa,
        update("u", EMPLOYER_A, "a", JULY_31, 26),
        AnomalyCode.UPDATE_AFTER_DMFA,
    ),
    (
        "update-of-late",
        _declare_late,
        update("u", EMPLOYER_A, "a", JULY_31, 20),
        AnomalyCode.LATE_NOT_UPDATABLE,
    ),
    (
        "update-unknown",
        _declare_july,
        update("u", EMPLOYER_A, "never-declared", JULY_31, 20),
        AnomalyCode.UNKNOWN_PERIOD,
    ),
    (
        "cancel-unknown",
        _declare_july,
        cancel("c2", EMPLOYER_A, "never-declared"),
        AnomalyCode.UNKNOWN_PERIOD,
    ),
    (
        "update-other-employer",
        _declare_july,
        update("u", EMPLOYER_B, "a", JULY_31, 20),
        AnomalyCode.UNKNOWN_PERIOD,
    ),
    (
        "cancel-other-employer",
        _declare_july,
        cancel("c2", EMPLOYER_B, "a"),
        AnomalyCode.UNKNOWN_PERIOD,
    ),
    (
        "update-cancelled",
        _declare_and_cancel,
        update("u", EMPLOYER_A, "a", JULY_31, 20),
        AnomalyCode.PERIOD_CANCELLED,
    ),
    (
        "cancel-cancelled",
        _declare_and_cancel,
        cancel("c2", EMPLOYER_A, "a"),
        AnomalyCode.PERIOD_CANCELLED,
    ),
    (
        "update-end-in-next-quarter",
        _declare_july,
        update("u", EMPLOYER_A, "a", date(2026, 10, 2), 30),
        AnomalyCode.CROSS_QUARTER,
    ),
    (
        "update-end-before-start",
        _declare_july,
        update("u", EMPLOYER_A, "a", date(2026, 6, 30), 30),
        AnomalyCode.END_BEFORE_START,
    ),
    (
        "update-to-zero-hours",
        _declare_july,
        update("u", EMPLOYER_A, "a", JULY_31, 0),
        AnomalyCode.ZERO_HOURS,
    ),
]


@pytest.mark.parametrize(
    ("setup", "command", "code"),
    [pytest.param(setup, command, code, id=name) for name, setup, command, code in REFUSALS],
)
def test_refusals_leave_the_ledger_unchanged(
    setup: Setup, command: Command, code: AnomalyCode
) -> None:
    student = Student()
    setup(student)
    snapshot = student.snapshot()
    balance = student.balance(2026)

    decision = student.do(command)

    assert decision.status is Status.REFUSED
    assert decision.refused
    assert [a.code for a in decision.anomalies] == [code]
    assert (decision.reduced_hours, decision.ordinary_hours, decision.years) == (
        0,
        0,
        frozenset(),
    )
    assert student.ledger == snapshot
    assert student.balance(2026) == balance


def test_every_kind_of_refusal_has_its_own_reason() -> None:
    kinds = {
        "cross-quarter": AnomalyCode.CROSS_QUARTER,
        "zero-hours": AnomalyCode.ZERO_HOURS,
        "end-before-start": AnomalyCode.END_BEFORE_START,
        "not-a-student": AnomalyCode.NOT_A_STUDENT,
        "start-date-update": AnomalyCode.START_DATE_CHANGE,
        "update-after-dmfa": AnomalyCode.UPDATE_AFTER_DMFA,
        "update-of-late": AnomalyCode.LATE_NOT_UPDATABLE,
        "update-unknown": AnomalyCode.UNKNOWN_PERIOD,
        "update-cancelled": AnomalyCode.PERIOD_CANCELLED,
    }
    table = {name: code for name, _setup, _command, code in REFUSALS}
    assert {name: table[name] for name in kinds} == kinds
    assert len(set(kinds.values())) == len(kinds)


def test_a_refused_declaration_names_no_period_and_an_update_refusal_names_its_period() -> None:
    student = Student()
    refused = student.do(declare("x", EMPLOYER_A, JULY_1, JULY_31, 0))
    assert refused.period_id is None
    _declare_july(student)
    refused = student.do(update("u", EMPLOYER_A, "a", JULY_31, 0))
    assert refused.period_id == period_id_for("a")


def test_another_employers_period_looks_exactly_like_an_unknown_one() -> None:
    student = Student()
    _declare_july(student)
    foreign = student.do(update("u", EMPLOYER_B, "a", JULY_31, 20))
    unknown = student.do(update("u2", EMPLOYER_B, "never-declared", JULY_31, 20))
    foreign_text = only_anomaly(foreign).text
    assert foreign_text.replace(period_id_for("a"), "ID") == only_anomaly(unknown).text.replace(
        period_id_for("never-declared"), "ID"
    )
    assert EMPLOYER_A not in foreign_text
    assert "cancel" not in foreign_text
    foreign_cancel = student.do(cancel("c", EMPLOYER_B, "a"))
    assert only_anomaly(foreign_cancel).text == foreign_text
    # The owner's period is untouched.
    assert student.period("a").planned_hours == 30
    assert not student.period("a").cancelled


def test_an_update_repeating_the_start_date_is_allowed() -> None:
    student = Student()
    _declare_july(student)
    decision = student.do(update("u", EMPLOYER_A, "a", JULY_31, 26, start=JULY_1))
    assert (decision.status, decision.reduced_hours) == (Status.ACCEPTED, 26)


def test_a_dmfa_of_another_quarter_or_employer_does_not_block_an_update() -> None:
    student = Student()
    _declare_july(student)
    student.do(dmfa("w1", EMPLOYER_A, 2026, 2, 10))
    student.do(dmfa("w2", EMPLOYER_B, 2026, 3, 10))
    student.do(dmfa("w3", EMPLOYER_A, 2025, 3, 10))
    decision = student.do(update("u", EMPLOYER_A, "a", JULY_31, 26))
    assert (decision.status, decision.reduced_hours) == (Status.ACCEPTED, 26)


# -------------------------------------------------------------------------------- updates


def test_lowering_thirty_booked_hours_to_twenty_six_frees_four_at_once() -> None:
    student = Student()
    student.do(declare("a", EMPLOYER_A, JULY_1, JULY_31, 30))
    remaining = student.balance(2026).remaining

    decision = student.do(update("u", EMPLOYER_A, "a", JULY_31, 26))

    assert decision == Decision(Status.ACCEPTED, (), period_id_for("a"), 26, 0, frozenset({2026}))
    assert student.balance(2026).remaining == remaining + 4 == 624
    assert student.period("a").planned_hours == 26
    assert student.period("a").tranches == (Tranche(1, 26),)


def test_an_update_may_change_the_end_date_within_the_quarter() -> None:
    student = Student()
    _declare_july(student)
    student.do(update("u", EMPLOYER_A, "a", date(2026, 9, 30), 30))
    assert student.period("a").end == date(2026, 9, 30)
    assert student.balance(2026).remaining == 620


def test_lowering_frees_hours_for_a_declaration_that_was_beyond_the_quota() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 200))

    lowered = student.do(update("u", EMPLOYER_A, "a", APRIL_30, 280))

    assert (lowered.status, lowered.reduced_hours, lowered.ordinary_hours) == (
        Status.ACCEPTED,
        280,
        0,
    )
    balance = student.balance(2021)
    assert (balance.used, balance.remaining, balance.ordinary_hours) == (480, 0, 5)
    assert balance.share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 200, False, False, 195, 5, True
    )
    student.do(update("u2", EMPLOYER_A, "a", APRIL_30, 250))
    balance = student.balance(2021)
    assert (balance.used, balance.remaining, balance.ordinary_hours) == (450, 25, 0)


def test_raising_hours_uses_the_quota_only_where_there_is_room() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 100))

    raised = student.do(update("u", EMPLOYER_A, "a", APRIL_30, 400))

    assert raised.status is Status.WARNING
    assert (raised.period_id, raised.reduced_hours, raised.ordinary_hours) == (
        period_id_for("a"),
        375,
        25,
    )
    anomaly = only_anomaly(raised)
    assert (anomaly.code, anomaly.hours) == (AnomalyCode.QUOTA_EXCEEDED, 25)
    assert "exceeding 25 hours" in anomaly.text
    assert student.period("a").tranches == (Tranche(1, 300), Tranche(3, 100))

    balance = student.balance(2021)
    assert (balance.used, balance.remaining) == (500, 0)
    assert (balance.reduced_hours, balance.ordinary_hours) == (475, 25)
    # B was accepted before A's raise: it keeps its 100 reduced-rate hours.
    assert balance.share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 100, False, False, 100, 0, True
    )
    assert balance.share_of(period_id_for("a")) == PeriodShare(
        period_id_for("a"), 400, False, False, 375, 25, True
    )


def test_raising_hours_within_the_room_is_accepted() -> None:
    student = Student()
    _declare_july(student)
    decision = student.do(update("u", EMPLOYER_A, "a", JULY_31, 50))
    assert decision == Decision(Status.ACCEPTED, (), period_id_for("a"), 50, 0, frozenset({2026}))
    assert student.period("a").tranches == (Tranche(1, 30), Tranche(2, 20))
    assert student.balance(2026).remaining == 600


def test_raising_hours_already_partly_ordinary_only_reports_the_new_excess() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 200))
    decision = student.do(update("u", EMPLOYER_B, "b", MAY_31, 210))
    assert (decision.status, decision.reduced_hours, decision.ordinary_hours) == (
        Status.WARNING,
        175,
        35,
    )
    assert only_anomaly(decision).hours == 10


def test_lowering_removes_the_most_recent_tranche_first() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 100))
    student.do(update("u1", EMPLOYER_A, "a", APRIL_30, 400))

    lowered = student.do(update("u2", EMPLOYER_A, "a", APRIL_30, 350))
    assert student.period("a").tranches == (Tranche(1, 300), Tranche(3, 50))
    assert (lowered.status, lowered.reduced_hours, lowered.ordinary_hours) == (
        Status.ACCEPTED,
        350,
        0,
    )
    assert student.balance(2021).remaining == 25

    student.do(update("u3", EMPLOYER_A, "a", APRIL_30, 250))
    assert student.period("a").tranches == (Tranche(1, 250),)

    # Raised again, the new hours queue behind C, declared in the meantime.
    student.do(declare("c", EMPLOYER_C, MAY_1, MAY_31, 120))
    raised = student.do(update("u4", EMPLOYER_A, "a", APRIL_30, 300))
    assert student.period("a").tranches == (Tranche(1, 250), Tranche(5, 50))
    assert (raised.reduced_hours, raised.ordinary_hours) == (255, 45)
    assert only_anomaly(raised).hours == 45
    assert student.balance(2021).share_of(period_id_for("c")) == PeriodShare(
        period_id_for("c"), 120, False, False, 120, 0, True
    )


def test_an_update_keeping_the_hours_changes_nothing_in_the_balance() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 200))
    balance = student.balance(2021)
    decision = student.do(update("u", EMPLOYER_B, "b", date(2021, 5, 20), 200))
    # Nothing was added: no new excess is reported, the 25 ordinary hours stay.
    assert (decision.status, decision.reduced_hours, decision.ordinary_hours) == (
        Status.ACCEPTED,
        175,
        25,
    )
    assert student.balance(2021) == balance
    assert student.period("b").tranches == (Tranche(2, 200),)


# -------------------------------------------------------------------------------- cancels


def test_cancel_returns_the_hours_to_the_quota() -> None:
    student = Student()
    _declare_july(student)
    decision = student.do(cancel("c", EMPLOYER_A, "a"))
    assert decision == Decision(Status.ACCEPTED, (), period_id_for("a"), 0, 0, frozenset({2026}))
    assert student.period("a").cancelled
    balance = student.balance(2026)
    assert (balance.used, balance.remaining) == (0, 650)
    assert balance.share_of(period_id_for("a")) == PeriodShare(
        period_id_for("a"), 30, False, True, 0, 0, False
    )


def test_cancel_gives_the_freed_hours_to_the_next_declarations_in_order() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, APRIL_1, APRIL_30, 300))
    student.do(declare("b", EMPLOYER_B, MAY_1, MAY_31, 200))
    student.do(cancel("c", EMPLOYER_A, "a"))
    balance = student.balance(2021)
    assert (balance.used, balance.remaining, balance.ordinary_hours) == (200, 275, 0)
    assert balance.share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 200, False, False, 200, 0, True
    )


def test_cancelling_a_late_declaration_removes_its_late_hours() -> None:
    student = Student()
    _declare_late(student)
    assert student.balance(2026).late_hours == 30
    decision = student.do(cancel("c", EMPLOYER_A, "a"))
    assert decision.status is Status.ACCEPTED
    balance = student.balance(2026)
    assert (balance.used, balance.remaining, balance.late_hours) == (0, 650, 0)


def test_declaring_again_after_a_cancel_to_change_the_start_date() -> None:
    student = Student()
    _declare_july(student)
    student.do(cancel("c", EMPLOYER_A, "a"))
    decision = student.do(declare("a2", EMPLOYER_A, date(2026, 7, 6), JULY_31, 30))
    assert (decision.status, decision.reduced_hours) == (Status.ACCEPTED, 30)
    assert student.balance(2026).remaining == 620
