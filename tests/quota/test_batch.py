"""apply_batch: many students' commands in order, replays skipped by event id."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from quota import (
    Command,
    QuotaRules,
    Status,
    StudentLedger,
    Tranche,
    apply_batch,
    compute_balance,
    period_id_for,
)
from tests.quota.builders import (
    DEFAULT_RULES,
    EMPLOYER_A,
    EMPLOYER_B,
    cancel,
    declare,
    dmfa,
    update,
)

ANNA = "93051822361"
BERT = "85073003328"

JULY_1, JULY_31 = date(2026, 7, 1), date(2026, 7, 31)


def test_a_batch_applies_each_students_commands_in_order() -> None:
    ledgers: dict[str, StudentLedger] = {}
    applied: set[str] = set()
    commands: list[tuple[str, Command]] = [
        (ANNA, declare("e1", EMPLOYER_A, JULY_1, JULY_31, 30)),
        (BERT, declare("e2", EMPLOYER_B, JULY_1, JULY_31, 40)),
        (ANNA, update("e3", EMPLOYER_A, "e1", JULY_31, 26)),
        (BERT, declare("e4", EMPLOYER_B, date(2025, 7, 1), date(2025, 7, 31), 0)),
        (ANNA, dmfa("e5", EMPLOYER_B, 2025, 4, 12)),
    ]

    result = apply_batch(ledgers, commands, applied, DEFAULT_RULES)

    assert [(o.ssin, o.command.event_id, o.decision.status) for o in result.outcomes] == [
        (ANNA, "e1", Status.ACCEPTED),
        (BERT, "e2", Status.ACCEPTED),
        (ANNA, "e3", Status.ACCEPTED),
        (BERT, "e4", Status.REFUSED),
        (ANNA, "e5", Status.WARNING),
    ]
    assert applied == {"e1", "e2", "e3", "e4", "e5"}
    # One balance per (student, year) a command may have changed, sorted by student and
    # year; none for the refusal (Bert's 2025).
    assert [(b.ssin, b.year, b.used, b.remaining) for b in result.balances] == [
        (BERT, 2026, 40, 610),
        (ANNA, 2025, 12, 638),
        (ANNA, 2026, 26, 624),
    ]
    for balance in result.balances:
        assert balance == compute_balance(ledgers[balance.ssin], balance.year, DEFAULT_RULES)
    assert ledgers[ANNA].periods[period_id_for("e1")].planned_hours == 26
    assert set(ledgers) == {ANNA, BERT}


def test_replayed_events_are_skipped_in_the_same_and_in_a_later_batch() -> None:
    ledgers: dict[str, StudentLedger] = {}
    applied: set[str] = set()
    first = declare("e1", EMPLOYER_A, JULY_1, JULY_31, 30)
    result = apply_batch(ledgers, [(ANNA, first), (ANNA, first)], applied, DEFAULT_RULES)
    assert [o.command.event_id for o in result.outcomes] == ["e1"]
    assert ledgers[ANNA].next_seq == 2

    again = apply_batch(ledgers, [(ANNA, first)], applied, DEFAULT_RULES)
    assert (again.outcomes, again.balances) == ([], [])
    assert compute_balance(ledgers[ANNA], 2026, DEFAULT_RULES).used == 30


def test_a_refused_event_is_not_retried_under_the_same_id() -> None:
    ledgers: dict[str, StudentLedger] = {}
    applied: set[str] = set()
    refused = declare("e1", EMPLOYER_A, JULY_1, JULY_31, 0)
    result = apply_batch(ledgers, [(ANNA, refused)], applied, DEFAULT_RULES)
    assert [o.decision.status for o in result.outcomes] == [Status.REFUSED]
    assert result.balances == []
    assert apply_batch(ledgers, [(ANNA, refused)], applied, DEFAULT_RULES).outcomes == []


def test_batch_balances_use_the_rules_given() -> None:
    ledgers: dict[str, StudentLedger] = {}
    rules = QuotaRules({2026: 100}, ())
    result = apply_batch(
        ledgers, [(ANNA, declare("e1", EMPLOYER_A, JULY_1, JULY_31, 130))], set(), rules
    )
    (outcome,) = result.outcomes
    assert (outcome.decision.reduced_hours, outcome.decision.ordinary_hours) == (100, 30)
    assert [(b.quota, b.used, b.remaining, b.ordinary_hours) for b in result.balances] == [
        (100, 130, 0, 30)
    ]


def test_a_dmfa_stored_without_its_places_gets_them_before_anything_changes() -> None:
    # A report stored before migration 0006 (no places): the first batch that touches
    # the student fixes the places the balance derives, so that cancelling a declaration
    # the DmfA replaced cannot move the DmfA's hours afterwards.
    rules = QuotaRules({2026: 475}, ())
    ledger = StudentLedger(ANNA)
    ledgers = {ANNA: ledger}
    apply_batch(
        ledgers,
        [
            (ANNA, declare("a", EMPLOYER_A, date(2026, 1, 5), date(2026, 1, 30), 300)),
            (ANNA, declare("b", EMPLOYER_B, date(2026, 4, 1), date(2026, 4, 30), 200)),
            (ANNA, dmfa("w", EMPLOYER_A, 2026, 1, 300)),
        ],
        set(),
        rules,
    )
    key = (EMPLOYER_A, 2026, 1)
    ledger.wage_reports[key] = replace(ledger.wage_reports[key], tranches=None)
    ledger.mark_saved()
    before = compute_balance(ledger, 2026, rules)

    apply_batch(ledgers, [(ANNA, cancel("c", EMPLOYER_A, "a"))], set(), rules)
    assert ledger.wage_reports[key].tranches == (Tranche(1, 300),)
    assert key in ledger.changed_reports
    after = compute_balance(ledger, 2026, rules)
    assert [(t.employer, t.reduced_hours, t.ordinary_hours) for t in after.terms] == [
        (t.employer, t.reduced_hours, t.ordinary_hours) for t in before.terms
    ]
    assert after.share_of(period_id_for("b")) == before.share_of(period_id_for("b"))
