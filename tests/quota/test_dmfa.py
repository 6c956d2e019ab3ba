"""DmfA (quarterly wage declaration): actual hours replace the planned ones per group."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from quota import (
    AnomalyCode,
    Decision,
    PeriodShare,
    QuotaRules,
    ReportWages,
    Status,
    TermSource,
    Tranche,
    WageReport,
    period_id_for,
)
from tests.quota.builders import (
    EMPLOYER_A,
    EMPLOYER_B,
    RULES_475,
    Student,
    brussels,
    cancel,
    declare,
    dmfa,
    update,
    utc,
)

JULY_1, JULY_31 = date(2026, 7, 1), date(2026, 7, 31)


def _july_30(student: Student) -> None:
    student.do(declare("a", EMPLOYER_A, JULY_1, JULY_31, 30))


def test_dmfa_hours_replace_the_planned_hours() -> None:
    student = Student()
    _july_30(student)
    decision = student.do(dmfa("w", EMPLOYER_A, 2026, 3, 26, wage_cents=41_600))
    assert decision == Decision(Status.ACCEPTED, (), None, 0, 0, frozenset({2026}))

    balance = student.balance(2026)
    assert (balance.used, balance.remaining) == (26, 624)
    (term,) = balance.terms
    assert (term.employer, term.quarter, term.source) == (EMPLOYER_A, 3, TermSource.DMFA)
    assert (term.hours, term.planned_hours, term.dmfa_hours, term.gross_wage_cents) == (
        26,
        30,
        26,
        41_600,
    )
    assert (term.reduced_hours, term.ordinary_hours) == (26, 0)
    # The planned hours of the period are superseded, not counted.
    assert balance.share_of(period_id_for("a")) == PeriodShare(
        period_id_for("a"), 30, False, False, 0, 0, False
    )


def test_dmfa_may_report_more_or_no_hours_than_planned() -> None:
    more, none = Student(), Student()
    _july_30(more)
    _july_30(none)
    more.do(dmfa("w", EMPLOYER_A, 2026, 3, 40))
    none.do(dmfa("w", EMPLOYER_A, 2026, 3, 0))
    assert (more.balance(2026).used, more.balance(2026).remaining) == (40, 610)
    assert (none.balance(2026).used, none.balance(2026).remaining) == (0, 650)


def test_dmfa_replaces_every_declaration_of_the_employer_in_the_quarter() -> None:
    student = Student()
    _july_30(student)
    student.do(declare("b", EMPLOYER_A, date(2026, 8, 1), date(2026, 8, 31), 20))
    assert student.balance(2026).used == 50
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 45))
    assert student.balance(2026).used == 45
    assert len(student.balance(2026).terms) == 1


def test_dmfa_of_another_employer_does_not_touch_the_group() -> None:
    student = Student()
    _july_30(student)
    decision = student.do(dmfa("w", EMPLOYER_B, 2026, 3, 10))
    assert decision.status is Status.WARNING
    assert [a.code for a in decision.anomalies] == [AnomalyCode.DMFA_WITHOUT_DECLARATION]

    balance = student.balance(2026)
    assert balance.used == 40
    by_employer = {t.employer: t for t in balance.terms}
    assert (by_employer[EMPLOYER_A].source, by_employer[EMPLOYER_A].hours) == (
        TermSource.PLANNED,
        30,
    )
    assert (by_employer[EMPLOYER_B].source, by_employer[EMPLOYER_B].hours) == (
        TermSource.DMFA,
        10,
    )


def test_dmfa_of_another_quarter_or_year_does_not_touch_the_group() -> None:
    student = Student()
    _july_30(student)
    other_quarter = student.do(dmfa("w1", EMPLOYER_A, 2026, 2, 10))
    other_year = student.do(dmfa("w2", EMPLOYER_A, 2025, 3, 12))
    assert [a.code for a in other_quarter.anomalies] == [AnomalyCode.DMFA_WITHOUT_DECLARATION]
    assert other_year.years == frozenset({2025})

    balance = student.balance(2026)
    assert balance.used == 40
    by_quarter = {t.quarter: t for t in balance.terms}
    assert (by_quarter[3].source, by_quarter[3].hours) == (TermSource.PLANNED, 30)
    assert (by_quarter[2].source, by_quarter[2].hours) == (TermSource.DMFA, 10)
    assert student.balance(2025).used == 12


def test_a_second_dmfa_for_the_same_group_replaces_the_first() -> None:
    student = Student()
    _july_30(student)
    student.do(dmfa("w1", EMPLOYER_A, 2026, 3, 26, wage_cents=41_600))
    first_seq = student.ledger.wage_reports[(EMPLOYER_A, 2026, 3)].seq
    decision = student.do(dmfa("w2", EMPLOYER_A, 2026, 3, 28, wage_cents=44_800))
    assert decision.status is Status.ACCEPTED

    assert list(student.ledger.wage_reports) == [(EMPLOYER_A, 2026, 3)]
    report = student.ledger.wage_reports[(EMPLOYER_A, 2026, 3)]
    assert (report.hours_worked, report.gross_wage_cents, report.event_id) == (28, 44_800, "w2")
    # A corrected DmfA keeps the place of the one it replaces.
    assert report.seq == first_seq
    balance = student.balance(2026)
    assert (balance.used, balance.remaining) == (28, 622)
    assert (balance.terms[0].dmfa_hours, balance.terms[0].gross_wage_cents) == (28, 44_800)


def test_dmfa_without_a_declaration_counts_with_a_warning() -> None:
    student = Student()
    received = utc(2026, 10, 20, 9)
    decision = student.do(
        dmfa("w", EMPLOYER_A, 2026, 3, 40, wage_cents=64_000, received_at=received)
    )
    assert decision.status is Status.WARNING
    assert (decision.period_id, decision.years) == (None, frozenset({2026}))
    (anomaly,) = decision.anomalies
    assert (anomaly.code, anomaly.hours) == (AnomalyCode.DMFA_WITHOUT_DECLARATION, 40)
    assert "40 hours" in anomaly.text
    assert student.ledger.wage_reports[(EMPLOYER_A, 2026, 3)] == WageReport(
        EMPLOYER_A, 2026, 3, 40, 64_000, received, "w", 1, (Tranche(1, 40),)
    )
    balance = student.balance(2026)
    assert (balance.used, balance.remaining) == (40, 610)


def test_dmfa_after_the_only_declaration_was_cancelled_is_undeclared_work() -> None:
    # Regression: a cancelled declaration used to count as "declared".
    student = Student()
    _july_30(student)
    student.do(cancel("c", EMPLOYER_A, "a"))
    decision = student.do(dmfa("w", EMPLOYER_A, 2026, 3, 12))
    assert decision.status is Status.WARNING
    assert [(a.code, a.hours) for a in decision.anomalies] == [
        (AnomalyCode.DMFA_WITHOUT_DECLARATION, 12)
    ]
    assert student.balance(2026).used == 12


def test_dmfa_after_a_late_declaration_is_declared_work() -> None:
    student = Student()
    student.do(
        declare("a", EMPLOYER_A, JULY_1, JULY_31, 30, received_at=brussels(date(2026, 7, 3)))
    )
    decision = student.do(dmfa("w", EMPLOYER_A, 2026, 3, 12))
    assert (decision.status, decision.anomalies) == (Status.ACCEPTED, ())


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (dmfa("w", EMPLOYER_A, 2026, 0, 26), AnomalyCode.INVALID_QUARTER),
        (dmfa("w", EMPLOYER_A, 2026, 5, 26), AnomalyCode.INVALID_QUARTER),
        (dmfa("w", EMPLOYER_A, 2026, 3, -1), AnomalyCode.NEGATIVE_AMOUNT),
        (dmfa("w", EMPLOYER_A, 2026, 3, 26, wage_cents=-1), AnomalyCode.NEGATIVE_AMOUNT),
    ],
    ids=["quarter-0", "quarter-5", "negative-hours", "negative-wage"],
)
def test_an_invalid_dmfa_is_refused(command: ReportWages, code: AnomalyCode) -> None:
    student = Student()
    _july_30(student)
    snapshot = student.snapshot()
    decision = student.do(command)
    assert decision.status is Status.REFUSED
    assert [a.code for a in decision.anomalies] == [code]
    assert decision.years == frozenset()
    assert student.ledger == snapshot
    assert student.balance(2026).used == 30


def test_a_declaration_after_the_dmfa_counts_nothing_more() -> None:
    student = Student()
    _july_30(student)
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 26))
    decision = student.do(declare("b", EMPLOYER_A, date(2026, 9, 1), date(2026, 9, 30), 50))
    assert decision.status is Status.WARNING
    assert [a.code for a in decision.anomalies] == [AnomalyCode.DMFA_ALREADY_RECEIVED]
    assert (decision.period_id, decision.reduced_hours, decision.ordinary_hours) == (
        period_id_for("b"),
        0,
        0,
    )
    assert student.balance(2026).used == 26


def test_cancelling_after_the_dmfa_leaves_the_actual_hours_counting() -> None:
    student = Student()
    _july_30(student)
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 26))
    assert student.do(cancel("c", EMPLOYER_A, "a")).status is Status.ACCEPTED
    assert student.balance(2026).used == 26


def test_the_literal_reading_counts_the_dmfa_hours_late_ones_included() -> None:
    # QuotaRules.dmfa_counts_late_hours keeps the older reading of DOMAIN.md section 3:
    # DmfA hours as they are, whatever the declarations were; late planned hours only
    # stay out of the quota until then.
    student = Student(QuotaRules(dmfa_counts_late_hours=True))
    late = student.do(
        declare("a", EMPLOYER_A, JULY_1, JULY_31, 30, received_at=brussels(date(2026, 7, 3)))
    )
    assert "until the quarterly declaration (DmfA) arrives" in late.anomalies[0].text
    assert (student.balance(2026).used, student.balance(2026).late_hours) == (0, 30)
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 28))
    balance = student.balance(2026)
    assert (balance.used, balance.late_hours) == (28, 30)
    (term,) = balance.terms
    assert (term.source, term.hours, term.late_deducted_hours) == (TermSource.DMFA, 28, 0)


# ------------------------------------------------- late hours stay outside after the DmfA

LATE = brussels(date(2026, 7, 3))


def test_late_hours_stay_outside_the_quota_after_the_dmfa() -> None:
    # The example: 100 late + 50 on time, then a DmfA of 150: 50 count.
    student = Student()
    late = student.do(declare("late", EMPLOYER_A, JULY_1, JULY_31, 100, received_at=LATE))
    assert "also once the quarterly declaration (DmfA) arrives" in late.anomalies[0].text
    student.do(declare("on-time", EMPLOYER_A, date(2026, 8, 3), date(2026, 8, 28), 50))
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 150))

    balance = student.balance(2026)
    assert (balance.used, balance.remaining, balance.late_hours) == (50, 600, 100)
    assert (balance.reduced_hours, balance.ordinary_hours) == (50, 0)
    (term,) = balance.terms
    assert (term.source, term.dmfa_hours, term.hours, term.counted_hours) == (
        TermSource.DMFA,
        150,
        50,
        50,
    )
    assert (term.late_hours, term.late_deducted_hours) == (100, 100)
    assert (term.reduced_hours, term.ordinary_hours) == (50, 0)
    # The late declaration keeps its hours at ordinary contributions, as its answer said.
    assert balance.share_of(period_id_for("late")) == PeriodShare(
        period_id_for("late"), 100, True, False, 0, 100, False
    )


def test_a_dmfa_below_the_late_hours_counts_nothing() -> None:
    student = Student()
    student.do(declare("late", EMPLOYER_A, JULY_1, JULY_31, 100, received_at=LATE))
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 80))
    (term,) = student.balance(2026).terms
    assert (term.hours, term.late_deducted_hours) == (0, 80)
    assert student.balance(2026).used == 0


def test_a_late_declaration_after_the_dmfa_comes_out_of_its_hours() -> None:
    student = Student()
    _july_30(student)
    student.do(dmfa("w", EMPLOYER_A, 2026, 3, 50))
    assert student.balance(2026).used == 50
    student.do(
        declare(
            "late",
            EMPLOYER_A,
            date(2026, 8, 3),
            date(2026, 8, 7),
            20,
            received_at=brussels(date(2026, 8, 5)),
        )
    )
    assert student.balance(2026).used == 30


def test_hours_of_a_cancelled_late_declaration_come_back_behind_the_queue() -> None:
    # Cancelling the late declaration makes its hours in the DmfA count again: they
    # queue behind B, accepted before the cancellation, like any hours added later.
    student = Student(RULES_475)
    april = brussels(date(2021, 4, 3))
    student.do(
        declare("late", EMPLOYER_A, date(2021, 4, 1), date(2021, 4, 30), 100, received_at=april)
    )
    student.do(declare("a", EMPLOYER_A, date(2021, 5, 3), date(2021, 5, 28), 50))
    student.do(dmfa("w", EMPLOYER_A, 2021, 2, 150))
    b = student.do(declare("b", EMPLOYER_B, date(2021, 7, 1), date(2021, 7, 31), 425))
    assert (b.status, b.reduced_hours, b.ordinary_hours) == (Status.ACCEPTED, 425, 0)

    student.do(cancel("c", EMPLOYER_A, "late"))
    balance = student.balance(2021)
    assert balance.used == 575
    assert balance.share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 425, False, False, 425, 0, True
    )
    by_employer = {t.employer: (t.hours, t.reduced_hours, t.ordinary_hours) for t in balance.terms}
    assert by_employer == {EMPLOYER_A: (150, 50, 100), EMPLOYER_B: (425, 425, 0)}


# ------------------------------------------------------- no later message reorders the queue


def test_the_extra_hours_of_a_dmfa_queue_behind_everything_accepted_before_it() -> None:
    # The example: B's answer confirmed 175 reduced-rate hours; A's DmfA of 475
    # (175 more than planned) must not take them.
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 1, 4), date(2021, 1, 31), 300))
    b = student.do(declare("b", EMPLOYER_B, date(2021, 4, 1), date(2021, 4, 30), 200))
    assert (b.reduced_hours, b.ordinary_hours) == (175, 25)

    student.do(dmfa("w", EMPLOYER_A, 2021, 1, 475))
    balance = student.balance(2021)
    assert balance.share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 200, False, False, 175, 25, True
    )
    by_employer = {t.employer: (t.hours, t.reduced_hours, t.ordinary_hours) for t in balance.terms}
    assert by_employer == {EMPLOYER_A: (475, 300, 175), EMPLOYER_B: (200, 175, 25)}
    assert (balance.used, balance.reduced_hours, balance.ordinary_hours) == (675, 475, 200)
    assert student.ledger.wage_reports[(EMPLOYER_A, 2021, 1)].tranches == (
        Tranche(1, 300),
        Tranche(3, 175),
    )


def test_the_hours_a_dmfa_confirms_keep_their_place() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 1, 4), date(2021, 1, 31), 100))
    student.do(declare("b", EMPLOYER_B, date(2021, 4, 1), date(2021, 4, 30), 500))
    # A's actual hours exceed its planned ones: the 100 it planned still come before B,
    # the 100 more queue behind B.
    student.do(dmfa("w", EMPLOYER_A, 2021, 1, 200))
    balance = student.balance(2021)
    by_employer = {t.employer: (t.reduced_hours, t.ordinary_hours) for t in balance.terms}
    assert by_employer == {EMPLOYER_A: (100, 100), EMPLOYER_B: (375, 125)}
    assert [t.employer for t in balance.terms] == [EMPLOYER_A, EMPLOYER_B]


def test_fewer_dmfa_hours_free_the_most_recent_places_first() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 1, 4), date(2021, 1, 31), 100))
    student.do(declare("b", EMPLOYER_B, date(2021, 4, 1), date(2021, 4, 30), 300))
    raised = student.do(update("u", EMPLOYER_A, "a", date(2021, 1, 31), 200))
    assert (raised.reduced_hours, raised.ordinary_hours) == (175, 25)
    # 150 worked: the 50 raised last are freed, the 100 first planned keep their place.
    student.do(dmfa("w", EMPLOYER_A, 2021, 1, 150))
    assert student.ledger.wage_reports[(EMPLOYER_A, 2021, 1)].tranches == (
        Tranche(1, 100),
        Tranche(3, 50),
    )
    balance = student.balance(2021)
    by_employer = {t.employer: (t.reduced_hours, t.ordinary_hours) for t in balance.terms}
    assert by_employer == {EMPLOYER_A: (150, 0), EMPLOYER_B: (300, 0)}
    assert balance.remaining == 25


def test_a_corrected_dmfa_queues_the_hours_it_adds_at_the_back() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 1, 4), date(2021, 1, 31), 300))
    student.do(dmfa("w1", EMPLOYER_A, 2021, 1, 300))
    b = student.do(declare("b", EMPLOYER_B, date(2021, 4, 1), date(2021, 4, 30), 175))
    assert (b.reduced_hours, b.ordinary_hours) == (175, 0)

    student.do(dmfa("w2", EMPLOYER_A, 2021, 1, 400))
    balance = student.balance(2021)
    by_employer = {t.employer: (t.reduced_hours, t.ordinary_hours) for t in balance.terms}
    assert by_employer == {EMPLOYER_A: (300, 100), EMPLOYER_B: (175, 0)}
    report = student.ledger.wage_reports[(EMPLOYER_A, 2021, 1)]
    assert (report.seq, report.tranches) == (2, (Tranche(1, 300), Tranche(4, 100)))


def test_a_dmfa_stored_before_its_places_were_kept_gets_them_from_the_declarations() -> None:
    # Reports stored before migration 0006 have no places: the declared places the DmfA
    # found, the rest at its own rank.
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 1, 4), date(2021, 1, 31), 300))
    student.do(declare("b", EMPLOYER_B, date(2021, 4, 1), date(2021, 4, 30), 200))
    student.do(dmfa("w", EMPLOYER_A, 2021, 1, 475))
    key = (EMPLOYER_A, 2021, 1)
    with_places = student.balance(2021)
    student.ledger.wage_reports[key] = replace(student.ledger.wage_reports[key], tranches=None)
    assert student.balance(2021) == with_places


def test_freed_hours_of_a_dmfa_go_to_the_next_declaration_in_order() -> None:
    student = Student(RULES_475)
    student.do(declare("a", EMPLOYER_A, date(2021, 4, 1), date(2021, 4, 30), 300))
    student.do(declare("b", EMPLOYER_B, date(2021, 5, 1), date(2021, 5, 31), 200))
    student.do(dmfa("w", EMPLOYER_A, 2021, 2, 280))
    balance = student.balance(2021)
    assert (balance.used, balance.remaining, balance.ordinary_hours) == (480, 0, 5)
    assert balance.share_of(period_id_for("b")) == PeriodShare(
        period_id_for("b"), 200, False, False, 195, 5, True
    )


def test_a_declaration_after_a_dmfa_does_not_move_the_dmfa_back_in_the_queue() -> None:
    # Regression: a DmfA without a declaration queues at its arrival. A declaration of the
    # same group sent afterwards counts nothing (the DmfA is there) and must not move the
    # DmfA behind declarations accepted in between.
    student = Student(QuotaRules({2026: 650}, ()))
    student.do(dmfa("w", EMPLOYER_B, 2026, 1, 400))
    student.do(declare("a", EMPLOYER_A, JULY_1, JULY_31, 300))
    before = student.balance(2026)
    by_employer = {t.employer: (t.reduced_hours, t.ordinary_hours) for t in before.terms}
    assert by_employer == {EMPLOYER_B: (400, 0), EMPLOYER_A: (250, 50)}

    decision = student.do(declare("b", EMPLOYER_B, date(2026, 2, 2), date(2026, 2, 6), 10))
    assert [a.code for a in decision.anomalies] == [AnomalyCode.DMFA_ALREADY_RECEIVED]
    after = student.balance(2026)
    by_employer = {t.employer: (t.reduced_hours, t.ordinary_hours) for t in after.terms}
    assert by_employer == {EMPLOYER_B: (400, 0), EMPLOYER_A: (250, 50)}
    assert after.share_of(period_id_for("a")) == before.share_of(period_id_for("a"))
