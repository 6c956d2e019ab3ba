"""Properties over random command streams of 1-3 students.

The streams mix declarations, updates, cancellations and DmfA lines, valid and invalid;
updates and cancellations mostly target periods declared earlier in the stream (through
``period_id_for`` of the declaring event), sometimes another employer's period, another
student's period or an unknown one. Years 2021 and 2022 bring the neutralised quarters
of the default rules into play, 2026 has none.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from quota import (
    Anomaly,
    AnomalyCode,
    Balance,
    CancelPeriod,
    Command,
    DeclarePeriod,
    Outcome,
    QuotaRules,
    ReportWages,
    Status,
    StudentLedger,
    TermSource,
    UpdatePeriod,
    apply,
    apply_batch,
    compute_balance,
    period_id_for,
)
from quota.calendar import quarter_end, quarter_of, quarter_start
from tests.quota.builders import (
    EMPLOYER_A,
    EMPLOYER_B,
    EMPLOYER_C,
    UTC,
    LedgerState,
    ledger_state,
)

#: The default rules with smaller quotas, so that random streams often go beyond them.
RULES = QuotaRules().with_overrides({2021: 300, 2022: 300, 2026: 300})
SSINS = ("93051822361", "85073003328", "01020300167")
EMPLOYERS = (EMPLOYER_A, EMPLOYER_B, EMPLOYER_C)
#: 2026 (no neutralised quarter, where the queue is checked against an independent
#: reading) comes up half of the time.
YEARS = (2021, 2022, 2026, 2026)
SECTORS = (None, "318", "201")

PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, database=None)

Stream = list[tuple[str, Command]]


# ------------------------------------------------------------------------------ strategies


@dataclass(frozen=True)
class _Seen:
    """A period declared, or a DmfA reported, earlier in the stream."""

    ssin: str
    employer: str
    start: date
    event_id: str | None  # the declaring event; None for a DmfA


def _rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 7)) == 0


def _hours(draw: st.DrawFn) -> int:
    if _rarely(draw):
        return draw(st.integers(-3, 0))
    return draw(st.integers(1, 260))


def _start(draw: st.DrawFn, year: int | None = None, quarter: int | None = None) -> date:
    year = year or draw(st.sampled_from(YEARS))
    quarter = quarter or draw(st.integers(1, 4))
    first, last = quarter_start(year, quarter), quarter_end(year, quarter)
    return first + timedelta(days=draw(st.integers(0, (last - first).days)))


def _instant(draw: st.DrawFn, day: date) -> datetime:
    return datetime.combine(day, time(draw(st.integers(0, 23)), 30), tzinfo=UTC)


def _declare(draw: st.DrawFn, event_id: str, employer: str, start: date) -> DeclarePeriod:
    # Mostly within the quarter, sometimes before the start or into the next quarter.
    end = start + timedelta(days=draw(st.integers(-2, 45)))
    # Mostly before the first day of work, sometimes on it or after it (late).
    received = _instant(draw, start - timedelta(days=draw(st.integers(-3, 20))))
    return DeclarePeriod(
        event_id=event_id,
        employer=employer,
        declarant=employer,
        start=start,
        end=end,
        planned_hours=_hours(draw),
        received_at=received,
        worker_type="OTH" if _rarely(draw) else "STU",
        joint_commission=draw(st.sampled_from(SECTORS)),
    )


@st.composite
def streams(draw: st.DrawFn, max_size: int = 24) -> Stream:
    students = draw(st.lists(st.sampled_from(SSINS), min_size=1, max_size=3, unique=True))
    seen: list[_Seen] = []
    stream: Stream = []
    for index in range(draw(st.integers(1, max_size))):
        event_id = f"event-{index}"
        kind = draw(st.sampled_from(("declare", "declare", "update", "cancel", "dmfa")))
        # Updates and cancels mostly target a period declared earlier; declarations and
        # DmfA lines are half of the time about a group (employer, quarter) seen earlier.
        targeting = kind in ("update", "cancel")
        candidates = [x for x in seen if x.event_id] if targeting else seen
        about_seen = not _rarely(draw) if targeting else draw(st.booleans())
        anchor = draw(st.sampled_from(candidates)) if candidates and about_seen else None
        ssin = draw(st.sampled_from(students))
        employer = draw(st.sampled_from(EMPLOYERS))
        if anchor is not None and not _rarely(draw):
            ssin = anchor.ssin
        if anchor is not None and not _rarely(draw):
            employer = anchor.employer
        if anchor is not None:
            start = _start(draw, anchor.start.year, quarter_of(anchor.start))
        else:
            start = _start(draw)

        command: Command
        if kind == "declare":
            command = _declare(draw, event_id, employer, start)
            seen.append(_Seen(ssin, employer, start, event_id))
        elif kind in ("update", "cancel"):
            if anchor is not None and anchor.event_id is not None:
                period_id, start = period_id_for(anchor.event_id), anchor.start
            else:
                period_id = f"unknown-{index}"
            if kind == "cancel":
                command = CancelPeriod(event_id, employer, period_id, _instant(draw, start))
            else:
                new_start = None
                if draw(st.booleans()):
                    new_start = start + timedelta(days=draw(st.sampled_from((0, 0, 0, 1))))
                command = UpdatePeriod(
                    event_id=event_id,
                    employer=employer,
                    period_id=period_id,
                    end=start + timedelta(days=draw(st.integers(-1, 40))),
                    planned_hours=_hours(draw),
                    received_at=_instant(draw, start),
                    start=new_start,
                )
        else:
            quarter = draw(st.sampled_from((0, 5))) if _rarely(draw) else quarter_of(start)
            command = ReportWages(
                event_id=event_id,
                employer=employer,
                year=start.year,
                quarter=quarter,
                hours_worked=draw(st.integers(-1, 300)) if _rarely(draw) else _hours(draw) + 3,
                gross_wage_cents=-100 if _rarely(draw) else draw(st.integers(0, 500_000)),
                received_at=_instant(draw, start + timedelta(days=100)),
            )
            seen.append(_Seen(ssin, employer, start, None))
        stream.append((ssin, command))
    return stream


@st.composite
def cut(draw: st.DrawFn, stream: Sequence[tuple[str, Command]]) -> list[Stream]:
    """``stream`` cut into consecutive batches (some possibly empty)."""
    points = draw(st.lists(st.integers(0, len(stream)), max_size=6))
    bounds = [0, *sorted(points), len(stream)]
    return [list(stream[a:b]) for a, b in pairwise(bounds)]


# ------------------------------------------------------------------------------ running


@dataclass
class _Run:
    ledgers: dict[str, StudentLedger]
    outcomes: list[Outcome]
    #: The last balance a batch published per (student, year).
    published: dict[tuple[str, int], Balance]

    def states(self) -> dict[str, LedgerState]:
        return {ssin: ledger_state(ledger) for ssin, ledger in self.ledgers.items()}

    def final_balances(self) -> dict[tuple[str, int], Balance]:
        return {
            (ssin, year): compute_balance(ledger, year, RULES)
            for ssin, ledger in self.ledgers.items()
            for year in ledger.years()
        }


def _run(batches: Sequence[Stream], *, reload: bool = False) -> _Run:
    ledgers: dict[str, StudentLedger] = {}
    applied: set[str] = set()
    outcomes: list[Outcome] = []
    published: dict[tuple[str, int], Balance] = {}
    for batch in batches:
        if reload:
            # As the worker does: the ledgers come back from the database, saved.
            ledgers = copy.deepcopy(ledgers)
            for ledger in ledgers.values():
                ledger.mark_saved()
            applied = set(applied)
        result = apply_batch(ledgers, batch, applied, RULES)
        outcomes.extend(result.outcomes)
        published.update({(b.ssin, b.year): b for b in result.balances})
    return _Run(ledgers, outcomes, published)


def _assert_same_run(run: _Run, expected: _Run) -> None:
    assert run.states() == expected.states()
    assert run.outcomes == expected.outcomes
    assert run.final_balances() == expected.final_balances()
    assert run.published == expected.published


# ---------------------------------------------------------------------- batch properties


@PROPERTY_SETTINGS
@given(data=st.data(), stream=streams(), reload=st.booleans())
def test_results_do_not_depend_on_how_the_stream_is_cut_into_batches(
    data: st.DataObject, stream: Stream, reload: bool
) -> None:
    single = _run([stream])
    # Every (student, year) with anything in its ledger had its final balance published.
    assert single.published == single.final_balances()
    assert len(single.outcomes) == len(stream)

    batches = data.draw(cut(stream))
    _assert_same_run(_run(batches, reload=reload), single)


@PROPERTY_SETTINGS
@given(data=st.data(), stream=streams(), reload=st.booleans())
def test_replaying_a_prefix_changes_nothing(
    data: st.DataObject, stream: Stream, reload: bool
) -> None:
    delivered = data.draw(st.integers(0, len(stream)), label="delivered before the replay")
    replayed = data.draw(st.integers(0, delivered), label="replayed prefix")
    with_replay = stream[:delivered] + stream[:replayed] + stream[delivered:]
    batches = data.draw(cut(with_replay))

    _assert_same_run(_run(batches, reload=reload), _run([stream]))


# ------------------------------------------------------------------ invariants per command


def _rule_quarters(rules: QuotaRules) -> set[tuple[int, int]]:
    return {(rule.year, rule.quarter) for rule in rules.neutralisations}


def _first_come_first_served(
    ledger: StudentLedger, year: int, quota: int
) -> dict[tuple[str, int], int]:
    """An independent reading of the queue, for years without neutralised hours."""
    queue: list[tuple[int, int, tuple[str, int]]] = []
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for period in ledger.periods.values():
        if period.year == year and period.in_force and not period.late:
            groups[(period.employer, period.quarter)].append(period.accepted_seq)
    for (employer, report_year, quarter), report in ledger.wage_reports.items():
        if report_year == year:
            rank = min([*groups.pop((employer, quarter), []), report.seq])
            queue.append((rank, report.hours_worked, (employer, quarter)))
    for period in ledger.periods.values():
        key = (period.employer, period.quarter)
        if key in groups and period.year == year and period.in_force and not period.late:
            queue.extend((t.seq, t.hours, key) for t in period.tranches)
    room = quota
    reduced: dict[tuple[str, int], int] = defaultdict(int)
    for _seq, hours, key in sorted(queue):
        take = min(hours, room)
        room -= take
        reduced[key] += take
    return reduced


def _check_balance(ledger: StudentLedger, balance: Balance) -> None:
    year = balance.year
    assert balance.quota == RULES.quota(year)
    assert balance.remaining >= 0
    assert balance.used >= 0
    assert balance.remaining == max(0, balance.quota - balance.used)
    assert 0 <= balance.reduced_hours <= balance.quota
    # Neutralised hours are already out of `used`, late hours were never in it: every
    # counted hour is either reduced or ordinary.
    assert balance.reduced_hours + balance.ordinary_hours == balance.used
    assert balance.reduced_hours == min(balance.used, balance.quota)
    assert balance.remaining == balance.quota - balance.reduced_hours
    assert balance.used + balance.neutralised_hours == sum(t.hours for t in balance.terms)
    assert balance.neutralised_hours == sum(t.neutralised_hours for t in balance.terms)
    assert balance.late_hours == sum(t.late_hours for t in balance.terms)

    # Every term against the ledger itself.
    periods = [p for p in ledger.periods.values() if p.year == year]
    keys = {(p.employer, p.quarter) for p in periods} | {
        (employer, quarter) for employer, y, quarter in ledger.wage_reports if y == year
    }
    assert sorted((t.employer, t.quarter) for t in balance.terms) == sorted(keys)
    for term in balance.terms:
        mine = [p for p in periods if (p.employer, p.quarter) == (term.employer, term.quarter)]
        on_time = [p for p in mine if p.in_force and not p.late]
        report = ledger.wage_reports.get((term.employer, year, term.quarter))
        planned = sum(p.planned_hours for p in on_time)
        assert term.planned_hours == planned
        assert term.late_hours == sum(p.planned_hours for p in mine if p.in_force and p.late)
        assert 0 <= term.neutralised_hours <= term.hours
        if (year, term.quarter) not in _rule_quarters(RULES):
            assert term.neutralised_hours == 0
        assert term.reduced_hours + term.ordinary_hours == term.counted_hours
        assert {s.period_id for s in term.periods} == {p.period_id for p in mine}
        counted = [s for s in term.periods if s.counted]
        if report is None:
            assert (term.source, term.hours, term.dmfa_hours) == (TermSource.PLANNED, planned, None)
            assert {s.period_id for s in counted} == {p.period_id for p in on_time}
            assert sum(s.reduced_hours for s in counted) == term.reduced_hours
            assert sum(s.ordinary_hours for s in counted) == term.ordinary_hours
        else:
            assert (term.source, term.hours) == (TermSource.DMFA, report.hours_worked)
            assert (term.dmfa_hours, term.gross_wage_cents) == (
                report.hours_worked,
                report.gross_wage_cents,
            )
            assert counted == []
        for share in term.periods:
            period = ledger.periods[share.period_id]
            assert (share.planned_hours, share.late, share.cancelled) == (
                period.planned_hours,
                period.late,
                period.cancelled,
            )
            if period.late and period.in_force:
                assert (share.reduced_hours, share.ordinary_hours) == (0, period.planned_hours)
            elif not share.counted:
                assert (share.reduced_hours, share.ordinary_hours) == (0, 0)

    if not any(rule.year == year for rule in RULES.neutralisations):
        reduced = _first_come_first_served(ledger, year, balance.quota)
        assert {(t.employer, t.quarter): t.reduced_hours for t in balance.terms} == {
            (t.employer, t.quarter): reduced.get((t.employer, t.quarter), 0) for t in balance.terms
        }


def _codes(anomalies: tuple[Anomaly, ...]) -> list[AnomalyCode]:
    return [a.code for a in anomalies]


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(stream=streams(max_size=30))
def test_balances_and_answers_stay_consistent_after_every_command(stream: Stream) -> None:
    ledgers: dict[str, StudentLedger] = {}
    for ssin, command in stream:
        ledger = ledgers.setdefault(ssin, StudentLedger(ssin))
        state = ledger_state(ledger)
        target = None
        if isinstance(command, UpdatePeriod | CancelPeriod):
            target = ledger.periods.get(command.period_id)
        # The (year, quarter) the command is about, when it can be told beforehand.
        where: tuple[int, int] | None = None
        if isinstance(command, DeclarePeriod):
            where = (command.start.year, quarter_of(command.start))
        elif isinstance(command, ReportWages):
            where = (command.year, command.quarter)
        elif target is not None:
            where = (target.year, target.quarter)
        previous = compute_balance(ledger, where[0], RULES) if where else None

        decision = apply(ledger, command, RULES)

        if decision.refused:
            assert ledger_state(ledger) == state
            assert len(decision.anomalies) == 1
            assert (decision.reduced_hours, decision.ordinary_hours, decision.years) == (
                0,
                0,
                frozenset(),
            )
            continue
        assert where is not None and previous is not None
        year = where[0]
        assert decision.years == frozenset({year})
        assert decision.status in (Status.ACCEPTED, Status.WARNING)
        assert (decision.status is Status.ACCEPTED) == (decision.anomalies == ())
        for balance_year in ledger.years():
            _check_balance(ledger, compute_balance(ledger, balance_year, RULES))
        balance = compute_balance(ledger, year, RULES)
        # No neutralisation rule for the quarter: the hours count one for one.
        plain = where not in _rule_quarters(RULES)

        if isinstance(command, DeclarePeriod | UpdatePeriod):
            period = ledger.periods[decision.period_id or ""]
            share = balance.share_of(period.period_id)
            assert share is not None
            if period.late:
                assert isinstance(command, DeclarePeriod)
                assert _codes(decision.anomalies) == [AnomalyCode.LATE_DECLARATION]
                assert (decision.reduced_hours, decision.ordinary_hours) == (
                    0,
                    command.planned_hours,
                )
                # Where a sector rule applies, a declaration may tell the group's sector
                # (and so neutralise its other hours); elsewhere it counts nothing.
                if plain:
                    assert balance.used == previous.used
            elif not share.counted:
                assert _codes(decision.anomalies) == [AnomalyCode.DMFA_ALREADY_RECEIVED]
                assert (decision.reduced_hours, decision.ordinary_hours) == (0, 0)
                if plain:
                    assert balance.used == previous.used
            else:
                # The answer never disagrees with the balance.
                assert (decision.reduced_hours, decision.ordinary_hours) == (
                    share.reduced_hours,
                    share.ordinary_hours,
                )
                assert period.planned_hours == command.planned_hours
                if decision.anomalies:
                    (anomaly,) = decision.anomalies
                    assert anomaly.code is AnomalyCode.QUOTA_EXCEEDED
                    assert anomaly.hours is not None and anomaly.hours > 0
                    assert anomaly.hours <= decision.ordinary_hours
                    assert f"exceeding {anomaly.hours} hours" in anomaly.text
                if isinstance(command, DeclarePeriod):
                    # A new declaration queues last: its only excess is its own.
                    assert decision.ordinary_hours == (
                        decision.anomalies[0].hours if decision.anomalies else 0
                    )
                    if plain:
                        assert decision.reduced_hours + decision.ordinary_hours == (
                            command.planned_hours
                        )
                        assert decision.reduced_hours == min(
                            command.planned_hours, previous.remaining
                        )
                        assert balance.used == previous.used + command.planned_hours
                elif plain:
                    assert target is not None
                    delta = command.planned_hours - target.planned_hours
                    assert balance.used == previous.used + delta
                    if delta <= 0:
                        assert decision.anomalies == ()
                        assert balance.remaining >= previous.remaining
        elif isinstance(command, CancelPeriod):
            assert target is not None
            assert ledger.periods[target.period_id].cancelled
            assert (decision.reduced_hours, decision.ordinary_hours) == (0, 0)
            if plain:
                group_has_dmfa = (target.employer, year, target.quarter) in ledger.wage_reports
                freed = 0 if target.late or group_has_dmfa else target.planned_hours
                assert balance.used == previous.used - freed
                assert balance.remaining >= previous.remaining
        else:
            assert isinstance(command, ReportWages)
            report = ledger.wage_reports[(command.employer, command.year, command.quarter)]
            assert (report.hours_worked, report.event_id) == (
                command.hours_worked,
                command.event_id,
            )
            declared = any(
                p.in_force
                and (p.employer, p.year, p.quarter)
                == (command.employer, command.year, command.quarter)
                for p in ledger.periods.values()
            )
            expected = [] if declared else [AnomalyCode.DMFA_WITHOUT_DECLARATION]
            assert _codes(decision.anomalies) == expected
