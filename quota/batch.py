"""Applying a batch of commands to many students' ledgers.

This is the whole of the worker's decision logic for one batch, with persistence left
out: the caller loads the ledgers of the students in the batch and the event ids already
applied, calls :func:`apply_batch`, and saves what it returns in one transaction. Because
commands of one student are applied in order and replays are skipped by event id, the
final ledgers do not depend on how a stream is cut into batches.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, MutableMapping, MutableSet
from dataclasses import dataclass

from quota.balance import Balance, compute_balance
from quota.decisions import apply, settle_dmfa_places
from quota.ledger import Command, Decision, StudentLedger
from quota.rules import QuotaRules


@dataclass(frozen=True)
class Outcome:
    ssin: str
    command: Command
    decision: Decision


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Outcome]
    #: Balances of every (student, year) a command of the batch may have changed.
    balances: list[Balance]


def apply_batch(
    ledgers: MutableMapping[str, StudentLedger],
    commands: Iterable[tuple[str, Command]],
    applied: MutableSet[str],
    rules: QuotaRules,
) -> BatchResult:
    """Apply ``commands`` (student, command) in order, skipping already applied events."""
    outcomes: list[Outcome] = []
    touched: set[tuple[str, int]] = set()
    settled: set[str] = set()
    for ssin, command in commands:
        if command.event_id in applied:
            continue
        applied.add(command.event_id)
        ledger = ledgers.setdefault(ssin, StudentLedger(ssin))
        if ssin not in settled:
            settled.add(ssin)
            settle_dmfa_places(ledger)
        decision = apply(ledger, command, rules)
        outcomes.append(Outcome(ssin, command, decision))
        touched.update((ssin, year) for year in decision.years)
    balances = [compute_balance(ledgers[ssin], year, rules) for ssin, year in sorted(touched)]
    return BatchResult(outcomes, balances)


def refreshed_balances(
    ledgers: Mapping[str, StudentLedger],
    ssins: Iterable[str],
    rules: QuotaRules,
    *,
    skip: Collection[tuple[str, int]] = (),
) -> list[Balance]:
    """Every balance of the given students, after a change that is not a command.

    Used when the rows of one employer known under two identifiers were merged: each
    student's years are recomputed, as a quota change does. The DmfA lines whose places
    were cleared by the merge get their places first (:func:`settle_dmfa_places`), so the
    next command finds them fixed. ``skip`` names (student, year) pairs already computed.
    """
    balances: list[Balance] = []
    for ssin in sorted(set(ssins)):
        ledger = ledgers.get(ssin)
        if ledger is None:
            continue
        settle_dmfa_places(ledger)
        balances.extend(
            compute_balance(ledger, year, rules)
            for year in sorted(ledger.years())
            if (ssin, year) not in skip
        )
    return balances
