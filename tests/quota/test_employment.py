"""More than 12 months in a row with one employer: the warning (DOMAIN.md section 1)."""

from __future__ import annotations

from datetime import date

from quota import AnomalyCode, Command, QuotaRules, Status, period_id_for
from quota.employment import Spell, add_months, spells
from tests.quota.builders import (
    EMPLOYER_A,
    EMPLOYER_B,
    Student,
    brussels,
    cancel,
    declare,
    update,
)

#: The four quarters of 2025, each declared in full: exactly 12 months in a row.
YEAR_2025 = [
    (date(2025, 1, 1), date(2025, 3, 31)),
    (date(2025, 4, 1), date(2025, 6, 30)),
    (date(2025, 7, 1), date(2025, 9, 30)),
    (date(2025, 10, 1), date(2025, 12, 31)),
]


def _declare_2025(student: Student, employer: str = EMPLOYER_A, prefix: str = "q") -> None:
    for number, (start, end) in enumerate(YEAR_2025, 1):
        decision = student.do(declare(f"{prefix}{number}", employer, start, end, 10))
        assert (decision.status, decision.anomalies) == (Status.ACCEPTED, ())


def _codes(student: Student, command: Command) -> list[AnomalyCode]:
    return [a.code for a in student.do(command).anomalies]


def test_a_declaration_beyond_twelve_months_in_a_row_is_answered_with_a_warning() -> None:
    student = Student()
    _declare_2025(student)  # exactly 12 months: no warning
    decision = student.do(declare("jan", EMPLOYER_A, date(2026, 1, 1), date(2026, 1, 31), 10))
    assert decision.status is Status.WARNING
    (anomaly,) = decision.anomalies
    assert (anomaly.code, anomaly.hours) == (AnomalyCode.TWELVE_MONTHS_IN_A_ROW, None)
    assert anomaly.text == (
        "this employer has declared the worker without interruption from 2025-01-01 to "
        "2026-01-31, more than 12 months in a row: from 2026-01-01 on the worker is no longer "
        "a student for this employer (student contributions no longer apply); check the "
        "contract"
    )
    # A warning only: the hours count as before.
    assert (decision.reduced_hours, decision.ordinary_hours) == (10, 0)
    assert student.balance(2026).used == 10


def test_a_day_without_declaration_ends_the_spell() -> None:
    student = Student()
    student.do(declare("q1", EMPLOYER_A, date(2025, 1, 1), date(2025, 3, 30), 10))
    for number, (start, end) in enumerate(YEAR_2025[1:], 2):
        student.do(declare(f"q{number}", EMPLOYER_A, start, end, 10))
    # 31 March 2025 was not declared: the spell runs from 1 April, 12 months to 31 March.
    q1 = declare("q1-2026", EMPLOYER_A, date(2026, 1, 1), date(2026, 3, 31), 10)
    assert _codes(student, q1) == []
    april = student.do(declare("apr", EMPLOYER_A, date(2026, 4, 1), date(2026, 4, 30), 10))
    assert [a.code for a in april.anomalies] == [AnomalyCode.TWELVE_MONTHS_IN_A_ROW]
    assert "from 2025-04-01 to 2026-04-30" in april.anomalies[0].text


def test_another_employer_does_not_continue_the_spell() -> None:
    student = Student()
    _declare_2025(student)
    assert _codes(student, declare("b", EMPLOYER_B, date(2026, 1, 1), date(2026, 1, 31), 5)) == []
    a = declare("a", EMPLOYER_A, date(2026, 1, 1), date(2026, 1, 31), 5)
    assert _codes(student, a) == [AnomalyCode.TWELVE_MONTHS_IN_A_ROW]


def test_a_cancelled_declaration_is_no_employment() -> None:
    student = Student()
    _declare_2025(student)
    student.do(cancel("x", EMPLOYER_A, "q1"))
    jan = declare("jan", EMPLOYER_A, date(2026, 1, 1), date(2026, 3, 31), 5)
    assert _codes(student, jan) == []
    april = declare("apr", EMPLOYER_A, date(2026, 4, 1), date(2026, 4, 30), 5)
    assert _codes(student, april) == [AnomalyCode.TWELVE_MONTHS_IN_A_ROW]


def test_an_update_lengthening_the_spell_is_warned_and_late_declarations_count() -> None:
    student = Student()
    _declare_2025(student)
    assert (
        _codes(student, declare("a-jan", EMPLOYER_A, date(2026, 1, 5), date(2026, 1, 10), 5)) == []
    )
    # A's January period starts on the 5th, four days after the spell of 2025 ended; a
    # late declaration of 1-4 January closes the gap.
    late = student.do(
        declare(
            "gap",
            EMPLOYER_A,
            date(2026, 1, 1),
            date(2026, 1, 4),
            4,
            received_at=brussels(date(2026, 1, 3)),
        )
    )
    assert [a.code for a in late.anomalies] == [
        AnomalyCode.LATE_DECLARATION,
        AnomalyCode.TWELVE_MONTHS_IN_A_ROW,
    ]
    raised = student.do(update("u", EMPLOYER_A, "a-jan", date(2026, 1, 20), 6))
    assert raised.status is Status.WARNING
    assert [a.code for a in raised.anomalies] == [AnomalyCode.TWELVE_MONTHS_IN_A_ROW]
    assert raised.period_id == period_id_for("a-jan")


def test_the_warning_comes_with_the_quota_warning() -> None:
    student = Student(QuotaRules({2025: 650, 2026: 20}))
    _declare_2025(student)
    assert _codes(student, declare("jan", EMPLOYER_A, date(2026, 1, 1), date(2026, 1, 31), 30)) == [
        AnomalyCode.QUOTA_EXCEEDED,
        AnomalyCode.TWELVE_MONTHS_IN_A_ROW,
    ]


def test_the_warning_can_be_switched_off() -> None:
    student = Student(QuotaRules(student_months_in_a_row=None))
    _declare_2025(student)
    assert _codes(student, declare("jan", EMPLOYER_A, date(2026, 1, 1), date(2026, 1, 31), 5)) == []


def test_spells_merge_adjacent_and_overlapping_periods_per_employer() -> None:
    student = Student()
    student.do(declare("a1", EMPLOYER_A, date(2026, 7, 1), date(2026, 7, 10), 5))
    student.do(declare("a2", EMPLOYER_A, date(2026, 7, 11), date(2026, 7, 20), 5))
    student.do(declare("a3", EMPLOYER_A, date(2026, 7, 15), date(2026, 7, 31), 5))
    student.do(declare("a4", EMPLOYER_A, date(2026, 8, 2), date(2026, 8, 3), 5))
    student.do(declare("b1", EMPLOYER_B, date(2026, 7, 21), date(2026, 7, 22), 5))
    pid = period_id_for
    assert spells(student.ledger.periods.values()) == [
        Spell(EMPLOYER_A, date(2026, 7, 1), date(2026, 7, 31), (pid("a1"), pid("a2"), pid("a3"))),
        Spell(EMPLOYER_A, date(2026, 8, 2), date(2026, 8, 3), (pid("a4"),)),
        Spell(EMPLOYER_B, date(2026, 7, 21), date(2026, 7, 22), (pid("b1"),)),
    ]


def test_months_are_calendar_months() -> None:
    assert add_months(date(2025, 1, 1), 12) == date(2026, 1, 1)
    assert add_months(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert add_months(date(2025, 11, 15), 3) == date(2026, 2, 15)
    spell = Spell(EMPLOYER_A, date(2025, 3, 15), date(2026, 3, 14), ())
    assert not spell.exceeds(12)
    assert Spell(EMPLOYER_A, date(2025, 3, 15), date(2026, 3, 15), ()).exceeds(12)
