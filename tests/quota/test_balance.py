"""The balance and every term of its computation; quota changes and neutralised hours."""

from __future__ import annotations

from datetime import date

from quota import (
    AnomalyCode,
    Balance,
    BalanceTerm,
    Decision,
    Neutralisation,
    PeriodShare,
    QuotaRules,
    Status,
    TermSource,
    period_id_for,
)
from tests.quota.builders import (
    EMPLOYER_A,
    EMPLOYER_B,
    EMPLOYER_C,
    SSIN,
    Student,
    brussels,
    cancel,
    declare,
    dmfa,
    update,
)


def pid(event_id: str) -> str:
    return period_id_for(event_id)


def test_balance_of_an_empty_ledger() -> None:
    assert Student().balance(2026) == Balance(
        ssin=SSIN,
        year=2026,
        quota=650,
        used=0,
        remaining=650,
        reduced_hours=0,
        ordinary_hours=0,
        neutralised_hours=0,
        late_hours=0,
        terms=(),
    )


def test_every_term_of_a_mixed_balance() -> None:
    """Two employers, two quarters, one DmfA, one late and one cancelled declaration."""
    student = Student()
    decisions = [
        student.do(declare("a1", EMPLOYER_A, date(2026, 1, 5), date(2026, 1, 31), 100)),
        student.do(declare("b1", EMPLOYER_B, date(2026, 2, 2), date(2026, 2, 27), 200)),
        student.do(declare("a3", EMPLOYER_A, date(2026, 7, 1), date(2026, 7, 31), 300)),
        student.do(
            declare(
                "b3late",
                EMPLOYER_B,
                date(2026, 7, 1),
                date(2026, 7, 10),
                40,
                received_at=brussels(date(2026, 7, 3)),
            )
        ),
        student.do(declare("b3", EMPLOYER_B, date(2026, 8, 3), date(2026, 8, 28), 150)),
        student.do(declare("a3c", EMPLOYER_A, date(2026, 9, 1), date(2026, 9, 30), 60)),
        student.do(cancel("cancel-a3c", EMPLOYER_A, "a3c")),
        student.do(dmfa("dmfa-a1", EMPLOYER_A, 2026, 1, 90, wage_cents=123_456)),
    ]
    assert [(d.status, d.reduced_hours, d.ordinary_hours) for d in decisions] == [
        (Status.ACCEPTED, 100, 0),
        (Status.ACCEPTED, 200, 0),
        (Status.ACCEPTED, 300, 0),
        (Status.WARNING, 0, 40),  # late
        (Status.WARNING, 50, 100),  # 50 hours were left of 650
        (Status.WARNING, 0, 60),  # nothing left
        (Status.ACCEPTED, 0, 0),  # cancel
        (Status.ACCEPTED, 0, 0),  # DmfA
    ]
    assert [[(a.code, a.hours) for a in d.anomalies] for d in decisions] == [
        [],
        [],
        [],
        [(AnomalyCode.LATE_DECLARATION, 40)],
        [(AnomalyCode.QUOTA_EXCEEDED, 100)],
        [(AnomalyCode.QUOTA_EXCEEDED, 60)],
        [],
        [],
    ]

    # used = A Q1 (DmfA 90) + B Q1 (planned 200) + A Q3 (planned 300, the cancelled 60
    # gone) + B Q3 (planned 150, the late 40 outside) = 740; the 10 hours freed by A's
    # DmfA went to B Q3, the last in the queue: 60 reduced, 90 ordinary.
    assert student.balance(2026) == Balance(
        ssin=SSIN,
        year=2026,
        quota=650,
        used=740,
        remaining=0,
        reduced_hours=650,
        ordinary_hours=90,
        neutralised_hours=0,
        late_hours=40,
        terms=(
            BalanceTerm(
                employer=EMPLOYER_A,
                quarter=1,
                source=TermSource.DMFA,
                hours=90,
                planned_hours=100,
                late_hours=0,
                dmfa_hours=90,
                gross_wage_cents=123_456,
                neutralised_hours=0,
                reduced_hours=90,
                ordinary_hours=0,
                periods=(PeriodShare(pid("a1"), 100, False, False, 0, 0, False),),
            ),
            BalanceTerm(
                employer=EMPLOYER_B,
                quarter=1,
                source=TermSource.PLANNED,
                hours=200,
                planned_hours=200,
                late_hours=0,
                dmfa_hours=None,
                gross_wage_cents=None,
                neutralised_hours=0,
                reduced_hours=200,
                ordinary_hours=0,
                periods=(PeriodShare(pid("b1"), 200, False, False, 200, 0, True),),
            ),
            BalanceTerm(
                employer=EMPLOYER_A,
                quarter=3,
                source=TermSource.PLANNED,
                hours=300,
                planned_hours=300,
                late_hours=0,
                dmfa_hours=None,
                gross_wage_cents=None,
                neutralised_hours=0,
                reduced_hours=300,
                ordinary_hours=0,
                periods=(
                    PeriodShare(pid("a3"), 300, False, False, 300, 0, True),
                    PeriodShare(pid("a3c"), 60, False, True, 0, 0, False),
                ),
            ),
            BalanceTerm(
                employer=EMPLOYER_B,
                quarter=3,
                source=TermSource.PLANNED,
                hours=150,
                planned_hours=150,
                late_hours=40,
                dmfa_hours=None,
                gross_wage_cents=None,
                neutralised_hours=0,
                reduced_hours=60,
                ordinary_hours=90,
                periods=(
                    PeriodShare(pid("b3late"), 40, True, False, 0, 40, False),
                    PeriodShare(pid("b3"), 150, False, False, 60, 90, True),
                ),
            ),
        ),
    )
    # The other years are untouched.
    assert student.balance(2025).terms == ()
    assert student.balance(2027).remaining == 650
    assert student.balance(2026).terms[0].counted_hours == 90


def test_a_retroactive_quota_change_changes_the_recomputed_balance() -> None:
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2025, 3, 3), date(2025, 3, 28), 300))
    student.do(declare("b", EMPLOYER_B, date(2025, 7, 1), date(2025, 7, 31), 200))
    assert (student.balance(2025).quota, student.balance(2025).remaining) == (650, 150)

    old_law = QuotaRules().with_quota(2025, 475)
    balance = student.balance(2025, old_law)
    assert (balance.quota, balance.used, balance.remaining) == (475, 500, 0)
    assert (balance.reduced_hours, balance.ordinary_hours) == (475, 25)
    assert balance.share_of(pid("b")) == PeriodShare(pid("b"), 200, False, False, 175, 25, True)
    # Other years keep their quota; the ledger is the same, only the rules changed.
    assert student.balance(2024, old_law).quota == 600


# --------------------------------------------------------------------------- neutralised


def test_all_hours_of_q3_2021_are_not_counted() -> None:
    student = Student()
    decision = student.do(declare("a", EMPLOYER_A, date(2021, 7, 1), date(2021, 7, 31), 100))
    assert (decision.status, decision.anomalies) == (Status.ACCEPTED, ())
    balance = student.balance(2021)
    assert (balance.quota, balance.used, balance.remaining) == (475, 0, 475)
    assert (balance.neutralised_hours, balance.reduced_hours, balance.ordinary_hours) == (
        100,
        0,
        0,
    )
    (term,) = balance.terms
    assert (term.hours, term.neutralised_hours, term.counted_hours) == (100, 100, 0)
    # Q2 and Q4 2021 count as usual.
    student.do(declare("b", EMPLOYER_A, date(2021, 6, 1), date(2021, 6, 30), 10))
    student.do(declare("c", EMPLOYER_A, date(2021, 10, 1), date(2021, 10, 31), 20))
    assert (student.balance(2021).used, student.balance(2021).neutralised_hours) == (30, 100)


def test_neutralised_hours_are_not_reported_as_exceeding_a_full_quota() -> None:
    # Regression: the excess used to be computed as added - remaining, ignoring that the
    # added hours may not count at all.
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2021, 4, 1), date(2021, 4, 30), 475))
    decision = student.do(declare("b", EMPLOYER_B, date(2021, 7, 1), date(2021, 7, 31), 100))
    assert decision == Decision(Status.ACCEPTED, (), pid("b"), 0, 0, frozenset({2021}))
    assert (student.balance(2021).used, student.balance(2021).ordinary_hours) == (475, 0)


def test_the_first_45_hours_of_q1_2022_are_not_counted() -> None:
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2022, 1, 3), date(2022, 1, 31), 100))
    balance = student.balance(2022)
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (55, 45, 420)
    assert (balance.terms[0].reduced_hours, balance.terms[0].ordinary_hours) == (55, 0)
    assert balance.share_of(pid("a")) == PeriodShare(pid("a"), 100, False, False, 55, 0, True, 45)


def test_the_45_hours_of_q1_2022_go_to_the_first_accepted_hours() -> None:
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2022, 3, 1), date(2022, 3, 31), 30))
    student.do(declare("b", EMPLOYER_B, date(2022, 1, 3), date(2022, 1, 31), 40))
    balance = student.balance(2022)
    neutralised = {t.employer: t.neutralised_hours for t in balance.terms}
    assert neutralised == {EMPLOYER_A: 30, EMPLOYER_B: 15}
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (25, 45, 450)
    # Q2 2022 is not part of the rule.
    student.do(declare("c", EMPLOYER_C, date(2022, 4, 1), date(2022, 4, 30), 50))
    assert (student.balance(2022).used, student.balance(2022).neutralised_hours) == (75, 45)


def test_neutralised_q1_2022_hours_are_not_reported_as_exceeding() -> None:
    # Regression: 415 hours of Q2 first, then 100 hours of Q1 of which 45 do not count;
    # the 55 counted fit in the 60 hours left, so nothing exceeds the quota.
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2022, 4, 1), date(2022, 4, 30), 415))
    decision = student.do(declare("b", EMPLOYER_B, date(2022, 2, 1), date(2022, 2, 28), 100))
    assert decision == Decision(Status.ACCEPTED, (), pid("b"), 55, 0, frozenset({2022}))
    balance = student.balance(2022)
    assert (balance.used, balance.remaining, balance.ordinary_hours) == (470, 5, 0)

    # With 5 hours left, 20 more counted hours exceed by exactly 15.
    more = student.do(declare("c", EMPLOYER_C, date(2022, 3, 1), date(2022, 3, 31), 20))
    assert (more.status, more.reduced_hours, more.ordinary_hours) == (Status.WARNING, 5, 15)
    assert [(a.code, a.hours) for a in more.anomalies] == [(AnomalyCode.QUOTA_EXCEEDED, 15)]


def test_a_sector_rule_only_applies_to_its_joint_commissions() -> None:
    student = Student()
    student.do(
        declare(
            "care", EMPLOYER_A, date(2021, 4, 1), date(2021, 4, 30), 100, joint_commission="318"
        )
    )
    student.do(
        declare("shop", EMPLOYER_B, date(2021, 4, 1), date(2021, 4, 30), 60, joint_commission="201")
    )
    student.do(declare("none", EMPLOYER_C, date(2021, 5, 3), date(2021, 5, 7), 20))
    balance = student.balance(2021)
    neutralised = {t.employer: t.neutralised_hours for t in balance.terms}
    assert neutralised == {EMPLOYER_A: 100, EMPLOYER_B: 0, EMPLOYER_C: 0}
    assert (balance.used, balance.remaining) == (80, 395)


def test_a_configured_sector_rule() -> None:
    rules = QuotaRules(
        {2026: 650}, (Neutralisation(2026, 3, joint_commissions=frozenset({"999"})),)
    )
    student = Student(rules)
    student.do(
        declare("a", EMPLOYER_A, date(2026, 7, 1), date(2026, 7, 31), 30, joint_commission="999")
    )
    student.do(
        declare("b", EMPLOYER_B, date(2026, 7, 1), date(2026, 7, 31), 40, joint_commission="302")
    )
    student.do(
        declare("c", EMPLOYER_C, date(2026, 4, 1), date(2026, 4, 30), 50, joint_commission="999")
    )
    balance = student.balance(2026)
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (90, 30, 560)


def test_no_hours_are_neutralised_from_2023_on() -> None:
    student = Student()
    for year in (2023, 2024, 2025, 2026):
        for quarter, month in ((1, 1), (3, 7)):
            event = f"{year}-{quarter}"
            student.do(
                declare(
                    event,
                    EMPLOYER_A,
                    date(year, month, 2),
                    date(year, month, 20),
                    50,
                    joint_commission="318",
                )
            )
        balance = student.balance(year)
        assert (balance.used, balance.neutralised_hours) == (100, 0)


def test_a_dmfa_in_a_neutralised_quarter_is_neutralised_too() -> None:
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2021, 7, 1), date(2021, 7, 31), 100))
    student.do(dmfa("w", EMPLOYER_A, 2021, 3, 80))
    balance = student.balance(2021)
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (0, 80, 475)


# ------------------------------------------------- neutralised per declaration, in order

OCT_2020 = (date(2020, 10, 5), date(2020, 10, 30))
NOV_2020 = (date(2020, 11, 2), date(2020, 11, 27))


def test_a_cancelled_declaration_does_not_decide_the_sector_of_the_others() -> None:
    student = Student()
    student.do(declare("shop", EMPLOYER_A, *OCT_2020, 30, joint_commission="200"))
    student.do(cancel("x", EMPLOYER_A, "shop"))
    student.do(declare("care", EMPLOYER_A, *NOV_2020, 40, joint_commission="330"))
    balance = student.balance(2020)
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (0, 40, 475)
    assert balance.share_of(pid("care")) == PeriodShare(
        pid("care"), 40, False, False, 0, 0, True, 40
    )


def test_each_declaration_is_neutralised_on_its_own_joint_commission() -> None:
    student = Student()
    student.do(declare("care", EMPLOYER_A, *OCT_2020, 10, joint_commission="330"))
    student.do(declare("shop", EMPLOYER_A, *NOV_2020, 400, joint_commission="200"))
    balance = student.balance(2020)
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (400, 10, 75)
    (term,) = balance.terms
    assert (term.hours, term.neutralised_hours, term.counted_hours) == (410, 10, 400)
    assert balance.share_of(pid("care")) == PeriodShare(
        pid("care"), 10, False, False, 0, 0, True, 10
    )
    assert balance.share_of(pid("shop")) == PeriodShare(
        pid("shop"), 400, False, False, 400, 0, True, 0
    )


def test_the_45_hours_of_q1_2022_follow_acceptance_across_employers() -> None:
    # A 10, B 40, then A raises by 100: the raise queues behind B, so the first 45
    # hours accepted are A's 10 and 35 of B's.
    student = Student()
    student.do(declare("a", EMPLOYER_A, date(2022, 1, 3), date(2022, 1, 28), 10))
    student.do(declare("b", EMPLOYER_B, date(2022, 2, 1), date(2022, 2, 25), 40))
    student.do(update("u", EMPLOYER_A, "a", date(2022, 1, 28), 110))
    balance = student.balance(2022)
    neutralised = {t.employer: t.neutralised_hours for t in balance.terms}
    assert neutralised == {EMPLOYER_A: 10, EMPLOYER_B: 35}
    assert (balance.used, balance.neutralised_hours, balance.remaining) == (105, 45, 370)
    assert balance.share_of(pid("a")) == PeriodShare(pid("a"), 110, False, False, 100, 0, True, 10)
    assert balance.share_of(pid("b")) == PeriodShare(pid("b"), 40, False, False, 5, 0, True, 35)


def test_a_dmfa_keeps_the_sector_of_each_declaration_it_replaces() -> None:
    student = Student()
    student.do(declare("care", EMPLOYER_A, *OCT_2020, 10, joint_commission="330"))
    student.do(declare("shop", EMPLOYER_A, *NOV_2020, 400, joint_commission="200"))
    student.do(dmfa("w", EMPLOYER_A, 2020, 4, 300))
    (term,) = student.balance(2020).terms
    assert (term.hours, term.neutralised_hours, term.counted_hours) == (300, 10, 290)


def test_a_dmfa_only_group_takes_the_employers_commission_of_record() -> None:
    # No declaration of A in Q2 2021, but A declared the student in care (330) in Q1.
    student = Student()
    student.do(
        declare("q1", EMPLOYER_A, date(2021, 2, 1), date(2021, 2, 26), 20, joint_commission="330")
    )
    student.do(dmfa("w", EMPLOYER_A, 2021, 2, 60))
    student.do(dmfa("w2", EMPLOYER_B, 2021, 2, 70))  # no sector known for B
    balance = student.balance(2021)
    neutralised = {(t.employer, t.quarter): t.neutralised_hours for t in balance.terms}
    assert neutralised == {(EMPLOYER_A, 1): 20, (EMPLOYER_A, 2): 60, (EMPLOYER_B, 2): 0}
    assert (balance.used, balance.remaining) == (70, 405)
