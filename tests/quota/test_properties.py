"""Properties over random command streams of 1-3 students.

The streams mix declarations, updates, cancellations and DmfA lines, valid and invalid;
updates and cancellations mostly target periods declared earlier in the stream (through
``period_id_for`` of the declaring event), sometimes another employer's period, another
student's period or an unknown one. Years 2021 and 2022 bring the neutralised quarters
of the default rules into play, 2026 has none.
"""

from __future__ import annotations

import calendar
import copy
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise

from hypothesis import example, given, settings
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
from quota.balance import allocate_period, remaining_hours
from quota.calendar import quarter_end, quarter_of, quarter_start
from quota.ledger import shrink_tranches
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


def _late_in_force(ledger: StudentLedger, employer: str, year: int, quarter: int) -> int:
    return sum(
        p.planned_hours
        for p in ledger.periods.values()
        if (p.employer, p.year, p.quarter) == (employer, year, quarter) and p.in_force and p.late
    )


def _first_come_first_served(
    ledger: StudentLedger, year: int, quota: int
) -> dict[tuple[str, int], int]:
    """An independent reading of the queue, for years without neutralised hours: every
    on-time tranche of a group without DmfA at its own rank, every place a DmfA keeps
    at its own rank less the late hours, taken from the back."""
    queue: list[tuple[int, int, tuple[str, int]]] = []
    reported = {(employer, quarter) for employer, y, quarter in ledger.wage_reports if y == year}
    for period in ledger.periods.values():
        key = (period.employer, period.quarter)
        if period.year == year and period.in_force and not period.late and key not in reported:
            queue.extend((t.seq, t.hours, key) for t in period.tranches)
    for (employer, report_year, quarter), report in ledger.wage_reports.items():
        if report_year != year:
            continue
        assert report.tranches is not None
        late = min(report.hours_worked, _late_in_force(ledger, employer, year, quarter))
        places = shrink_tranches(report.tranches, late)
        queue.extend((t.seq, t.hours, (employer, quarter)) for t in places)
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
            # The late hours stay outside the quota after the DmfA too.
            late = min(report.hours_worked, term.late_hours)
            assert (term.source, term.hours) == (TermSource.DMFA, report.hours_worked - late)
            assert term.late_deducted_hours == late
            # The places a DmfA keeps hold its hours exactly, each once, all of them
            # taken before the ledger's next rank.
            assert report.tranches is not None
            assert sum(t.hours for t in report.tranches) == report.hours_worked
            seqs = [t.seq for t in report.tranches]
            assert seqs == sorted(set(seqs))
            assert all(t.hours > 0 and t.seq < ledger.next_seq for t in report.tranches)
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
    """The codes of the anomalies, but the 12-month warning (checked on its own)."""
    return [a.code for a in anomalies if a.code is not AnomalyCode.TWELVE_MONTHS_IN_A_ROW]


def _over_twelve_months(ledger: StudentLedger, period_id: str) -> bool:
    """Independently of :mod:`quota.employment`: the days the period's employer covers
    without interruption around the period, longer than 12 months?"""
    period = ledger.periods[period_id]
    days: set[date] = set()
    for p in ledger.periods.values():
        if p.employer == period.employer and p.in_force:
            days.update(p.start + timedelta(n) for n in range((p.end - p.start).days + 1))
    first = last = period.start
    while first - timedelta(1) in days:
        first -= timedelta(1)
    while last + timedelta(1) in days:
        last += timedelta(1)
    month = first.month + 12
    year, month = first.year + (month - 1) // 12, (month - 1) % 12 + 1
    day = min(first.day, calendar.monthrange(year, month)[1])
    return last >= date(year, month, day)


def _deducted(balance: Balance, employer: str, quarter: int) -> int:
    for term in balance.terms:
        if (term.employer, term.quarter) == (employer, quarter):
            return term.late_deducted_hours
    return 0


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(stream=streams(max_size=30))
def test_one_periods_walk_and_the_remaining_hours_agree_with_the_whole_balance(
    stream: Stream,
) -> None:
    """Answers walk the queue for one period (``allocate_period``) and an update reads
    the hours left before it (``remaining_hours``), both without building the balance:
    after every command, each period's figures and each year's hours left are the
    balance's."""
    ledgers: dict[str, StudentLedger] = {}
    for ssin, command in stream:
        ledger = ledgers.setdefault(ssin, StudentLedger(ssin))
        apply(ledger, command, RULES)
        for year in ledger.years():
            balance = compute_balance(ledger, year, RULES)
            assert remaining_hours(ledger, year, RULES) == balance.remaining
            for period in ledger.periods.values():
                if period.year != year:
                    continue
                share = balance.share_of(period.period_id)
                assert share is not None
                expected = (
                    (balance.quota, True, share.reduced_hours, share.ordinary_hours)
                    if share.counted
                    else (balance.quota, False, 0, 0)
                )
                assert astuple(allocate_period(ledger, period, RULES)) == expected


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
        # No neutralisation rule for the quarter: the hours count one for one. Where a
        # sector rule applies in the year, a declaration may also tell the sector of its
        # employer's DmfA hours of another quarter (its commission of record), and so
        # neutralise them.
        plain = where not in _rule_quarters(RULES) and not (
            isinstance(command, DeclarePeriod)
            and command.joint_commission is not None
            and any(r.year == year and r.joint_commissions for r in RULES.neutralisations)
        )

        if isinstance(command, DeclarePeriod | UpdatePeriod):
            period = ledger.periods[decision.period_id or ""]
            share = balance.share_of(period.period_id)
            assert share is not None
            warned = [a for a in decision.anomalies if a.code is AnomalyCode.TWELVE_MONTHS_IN_A_ROW]
            assert len(warned) == _over_twelve_months(ledger, period.period_id)
            if period.late:
                assert isinstance(command, DeclarePeriod)
                assert _codes(decision.anomalies) == [AnomalyCode.LATE_DECLARATION]
                assert (decision.reduced_hours, decision.ordinary_hours) == (
                    0,
                    command.planned_hours,
                )
                # A late declaration counts nothing; after the DmfA of its group, its hours
                # come out of the DmfA hours.
                if plain:
                    more = _deducted(balance, period.employer, period.quarter) - _deducted(
                        previous, period.employer, period.quarter
                    )
                    assert balance.used == previous.used - more
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
                exceeded = [a for a in decision.anomalies if a not in warned]
                if exceeded:
                    (anomaly,) = exceeded
                    assert anomaly.code is AnomalyCode.QUOTA_EXCEEDED
                    assert anomaly.hours is not None and anomaly.hours > 0
                    assert anomaly.hours <= decision.ordinary_hours
                    assert f"exceeding {anomaly.hours} hours" in anomaly.text
                if isinstance(command, DeclarePeriod):
                    # A new declaration queues last: its only excess is its own.
                    assert decision.ordinary_hours == (exceeded[0].hours if exceeded else 0)
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
                        assert exceeded == []
                        assert balance.remaining >= previous.remaining
        elif isinstance(command, CancelPeriod):
            assert target is not None
            assert ledger.periods[target.period_id].cancelled
            assert (decision.reduced_hours, decision.ordinary_hours) == (0, 0)
            if plain:
                group_has_dmfa = (target.employer, year, target.quarter) in ledger.wage_reports
                if group_has_dmfa:
                    # Cancelling a late declaration gives its hours in the DmfA back.
                    back = _deducted(previous, target.employer, target.quarter) - _deducted(
                        balance, target.employer, target.quarter
                    )
                    assert back >= 0
                    assert back == 0 or target.late
                    assert balance.used == previous.used + back
                else:
                    freed = 0 if target.late else target.planned_hours
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


# ---------------------------------------------------------------- no later reordering


@dataclass(frozen=True)
class _Confirmed:
    """What the last answer about a period said: its employer and its split."""

    employer: str
    reduced: int
    ordinary: int


def _on_time(day: date) -> datetime:
    return datetime.combine(day - timedelta(days=1), time(9), tzinfo=UTC)


#: The issue's example with the 2026 quota of 300: B's answer gives 100 reduced-rate
#: hours; A's DmfA then reports 100 hours more than A planned.
_DMFA_ABOVE_PLANNED: Stream = [
    (
        SSINS[0],
        DeclarePeriod(
            "a",
            EMPLOYER_A,
            EMPLOYER_A,
            date(2026, 2, 2),
            date(2026, 2, 27),
            200,
            _on_time(date(2026, 2, 2)),
        ),
    ),
    (
        SSINS[0],
        DeclarePeriod(
            "b",
            EMPLOYER_B,
            EMPLOYER_B,
            date(2026, 4, 1),
            date(2026, 4, 30),
            150,
            _on_time(date(2026, 4, 1)),
        ),
    ),
    (
        SSINS[0],
        ReportWages("w", EMPLOYER_A, 2026, 1, 300, 1_000, datetime(2026, 4, 20, 9, tzinfo=UTC)),
    ),
]


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(stream=streams(max_size=30))
@example(stream=_DMFA_ABOVE_PLANNED)
def test_hours_an_answer_confirmed_at_the_reduced_rate_stay_there_whatever_others_send(
    stream: Stream,
) -> None:
    """No message of another employer takes reduced-rate hours from a period whose
    answer confirmed them: everything it adds (declarations, raises, DmfA hours beyond
    the declared ones, late hours coming back) queues behind.

    Its reduced hours may only become neutralised (a neutralisation rule walks the same
    queue: when hours before it go, the first 45 hours of Q1 2022 reach further), never
    ordinary; in a year without neutralisation rules they never decrease at all.
    """
    ledgers: dict[str, StudentLedger] = {}
    confirmed: dict[tuple[str, str], _Confirmed] = {}
    for ssin, command in stream:
        ledger = ledgers.setdefault(ssin, StudentLedger(ssin))
        decision = apply(ledger, command, RULES)
        if decision.refused:
            continue
        if isinstance(command, DeclarePeriod | UpdatePeriod | CancelPeriod):
            key = (ssin, decision.period_id or "")
            confirmed.pop(key, None)
            period = ledger.periods[key[1]]
            share = compute_balance(ledger, period.year, RULES).share_of(period.period_id)
            if not isinstance(command, CancelPeriod) and share is not None and share.counted:
                assert (share.reduced_hours, share.ordinary_hours) == (
                    decision.reduced_hours,
                    decision.ordinary_hours,
                )
                confirmed[key] = _Confirmed(
                    command.employer, decision.reduced_hours, decision.ordinary_hours
                )
        for (owner, period_id), answer in list(confirmed.items()):
            if owner != ssin:
                continue
            period = ledger.periods[period_id]
            share = compute_balance(ledger, period.year, RULES).share_of(period_id)
            assert share is not None
            if answer.employer == command.employer:
                # The period's own employer may change it (a DmfA replaces its hours, an
                # update raises them behind others): what stands now is the reference.
                if share.counted:
                    confirmed[(owner, period_id)] = _Confirmed(
                        answer.employer, share.reduced_hours, share.ordinary_hours
                    )
                else:
                    del confirmed[(owner, period_id)]
                continue
            assert share.counted
            assert share.ordinary_hours <= answer.ordinary
            if not any(rule.year == period.year for rule in RULES.neutralisations):
                assert share.reduced_hours >= answer.reduced
