"""A realistic, reproducible year of student-job declarations, for load and demos.

The shapes and proportions follow DOMAIN.md section 7 and the usual life of a Dimona STU
declaration (section 2):

* students, ordinary employers and temporary work agencies; agencies carry about a third
  of the hours, mostly as day and week contracts (many small declarations per student),
  ordinary employers declare longer contracts (summer jobs of several weeks, side jobs
  booked per quarter, school-holiday jobs);
* about 20 % of students work only in summer; the summer peak of declarations falls in
  late June and early July;
* about 200 planned hours per student and year on average, with a long tail so that a
  few percent of students go over the quota;
* updates that lower the planned hours once the work is done (30 booked, 26 worked),
  cancellations (half of them declared again a few days later), a few late declarations
  (received after the first day of work) and a few deliberately invalid ones (a period
  across two quarters, zero hours, a mistyped SSIN), each followed by the corrected one;
* a DmfA line per (student, employer, quarter) some weeks after the quarter ends, with
  the hours actually worked (usually at most the planned ones); a few never arrive.

**Reproducible.** The same seed, year and student count give the same output byte for
byte: nothing reads the clock or the system's randomness. Every student draws from a
random generator seeded by (seed, year, student number); employers from one seeded by
(seed, employer number). Event ids are UUID-shaped numbers drawn from those generators,
so a simulator can reference a period in an update or cancel without waiting for the
answer (:func:`streams.messages.declared_period_id` derives the period id from the
declarant and the event id).

**Streaming.** Students are generated one at a time; their records are put into day
buckets keyed by submission time, which spill to temporary files beyond a memory budget.
The buckets are then read back in order and sorted one by one, so memory stays bounded
from a hundred students to millions, and the output is in submission order, as a broker
would have received it.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import multiprocessing
import random
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, TypeVar

from aiokafka import AIOKafkaProducer

from quota.calendar import BRUSSELS, quarter_end, quarter_of, same_quarter
from quota.rules import QuotaRules
from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA
from streams.messages import declared_period_id

__all__ = [
    "AGENCY_JOB_SHARE",
    "CANCEL_SHARE",
    "DMFA_SHARE",
    "INVALID_SHARE",
    "LATE_SHARE",
    "MAX_STUDENTS",
    "SUMMER_ONLY_SHARE",
    "GenerationStats",
    "ProgressCallback",
    "RecordKind",
    "SimulatedRecord",
    "Simulation",
    "generate",
    "publish_records",
]

# ------------------------------------------------------------------------- proportions

#: Share of students who work only in summer (DOMAIN.md section 7: about 20 %).
SUMMER_ONLY_SHARE = 0.20
#: Mean target hours of summer-only and of year-round students; with the 20/80 split and
#: the hours that updates and cancellations take back, the planned mean is about 200.
MEAN_HOURS_SUMMER_ONLY = 140.0
MEAN_HOURS_YEAR_ROUND = 222.0
#: Gamma shape of the year-round hours: small enough for a long tail over the quota.
HOURS_SHAPE_YEAR_ROUND = 1.5
HOURS_SHAPE_SUMMER_ONLY = 2.5
MAX_HOURS_YEAR_ROUND = 1400
MAX_HOURS_SUMMER_ONLY = 420
#: Share of jobs held through a temporary work agency (they then carry a third of hours).
AGENCY_JOB_SHARE = 0.33
#: Share of declarations received after the first day of work.
LATE_SHARE = 0.015
#: Share of declarations preceded by an invalid attempt (then corrected).
INVALID_SHARE = 0.006
#: Share of on-time declarations cancelled; half of those are declared again.
CANCEL_SHARE = 0.03
REDECLARE_AFTER_CANCEL = 0.5
#: Share of on-time declarations whose hours are lowered by an update after the work.
UPDATE_SHARE_EMPLOYER = 0.14
UPDATE_SHARE_AGENCY = 0.03
#: Share of (student, employer, quarter) whose DmfA arrives at all.
DMFA_SHARE = 0.96
#: Students per ordinary employer (523k students, 59.8k employers in 2017).
STUDENTS_PER_EMPLOYER = 9
#: How many students an agency serves, at most this many agencies.
STUDENTS_PER_AGENCY = 2500
MAX_AGENCIES = 200
SOCIAL_SECRETARIATS = 8
#: Share of ordinary employers who declare through a social secretariat, and who name
#: themselves by NSSO registration number rather than enterprise number.
SECRETARIAT_SHARE = 0.4
NSSO_SHARE = 0.03
#: Share of students with a BIS number (not in the National Register).
BIS_SHARE = 0.02

#: Relative number of students by age in the simulated year (16 to 30).
AGE_WEIGHTS: dict[int, int] = {
    16: 3,
    17: 6,
    18: 9,
    19: 11,
    20: 12,
    21: 12,
    22: 11,
    23: 9,
    24: 7,
    25: 5,
    26: 4,
    27: 3,
    28: 3,
    29: 2,
    30: 2,
}
_MAX_SERIAL = 998  # serials 001-998; 000 and 999 are never issued


def _serials_for(weight: int) -> int:
    return max(1, round(_MAX_SERIAL * weight / max(AGE_WEIGHTS.values())))


#: More students than distinct SSINs of the simulated ages would repeat a number.
MAX_STUDENTS = sum(365 * _serials_for(w) for w in AGE_WEIGHTS.values())

#: Joint commissions (sectors) of ordinary employers hiring students, with weights.
_EMPLOYER_SECTORS: tuple[tuple[str, int], ...] = (
    ("302", 24),  # hotels, restaurants, cafes
    ("311", 16),  # large retail
    ("201", 10),  # independent retail
    ("202", 8),  # food retail
    ("119", 6),  # food trade
    ("118", 6),  # food industry
    ("200", 12),  # white-collar workers
    ("140", 4),  # transport
    ("145", 4),  # horticulture (seasonal picking)
    ("329", 5),  # socio-cultural sector
    ("319", 3),  # care institutions
    ("330", 2),  # health care
)
_AGENCY_SECTOR = "322"  # temporary work

_T = TypeVar("_T")
_DAY_MS = 86_400_000
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000

# ------------------------------------------------------------------------- records


class RecordKind(StrEnum):
    """What a simulated record is, and for the invalid ones why the service refuses it."""

    IN = "in"
    LATE = "late"
    UPDATE = "update"
    CANCEL = "cancel"
    DMFA = "dmfa"
    INVALID_CROSS_QUARTER = "invalid:CROSS_QUARTER"
    INVALID_ZERO_HOURS = "invalid:ZERO_HOURS"
    INVALID_SSIN = "invalid:SSIN"

    @property
    def invalid(self) -> bool:
        """Deliberately invalid: the service answers B (or the contract refuses it)."""
        return self.value.startswith("invalid:")

    @property
    def topic(self) -> str:
        return DMFA if self is RecordKind.DMFA else DIMONA


@dataclass(frozen=True, slots=True)
class SimulatedRecord:
    """One message as a payroll system would publish it, at its simulated moment.

    ``topic`` is the base topic name (the settings add their prefix when publishing),
    ``key`` the worker's SSIN, ``timestamp_ms`` the submission instant (the record's
    CreateTime, which decides lateness) and ``value`` the contract JSON.
    """

    topic: str
    key: str
    timestamp_ms: int
    value: bytes
    kind: RecordKind

    def envelope_line(self) -> str:
        """The JSON Lines form of ``studentwork simulate --out`` (without the newline)."""
        return _envelope(self.topic, self.key, self.timestamp_ms, self.value.decode(), self.kind)


def _tag(kind: RecordKind) -> str:
    return f"{kind.topic}\t{kind.value}"


# Pre-built "topic<TAB>kind" fields of the sort lines: enum attribute access is slow.
_IN = _tag(RecordKind.IN)
_LATE = _tag(RecordKind.LATE)
_UPDATE = _tag(RecordKind.UPDATE)
_CANCEL = _tag(RecordKind.CANCEL)
_DMFA = _tag(RecordKind.DMFA)
_INVALID = {kind: _tag(kind) for kind in RecordKind if kind.invalid}
_KIND_OF_TAG = {_tag(kind): kind.value for kind in RecordKind}


def _envelope(topic: str, key: str, timestamp_ms: int, value: str, kind: str) -> str:
    return (
        f'{{"topic":"{topic}","key":"{key}","timestamp":{timestamp_ms},'
        f'"value":{value},"kind":"{kind}"}}'
    )


@dataclass
class GenerationStats:
    """What a simulation generated, for its summary and for checking proportions."""

    year: int
    students: int
    employers: int = 0
    agencies: int = 0
    #: Records generated, and of those emitted (not left out by ``until_ms``).
    records: int = 0
    emitted: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    summer_only_students: int = 0
    #: Planned hours in force at the end (after updates, without cancelled periods).
    planned_hours: int = 0
    agency_planned_hours: int = 0
    agency_declarations: int = 0
    students_over_quota: int = 0
    dmfa_hours: int = 0

    def absorb(self, part: GenerationStats) -> None:
        """Add the counts of a part generated elsewhere (another process)."""
        self.by_kind.update(part.by_kind)
        self.summer_only_students += part.summer_only_students
        self.planned_hours += part.planned_hours
        self.agency_planned_hours += part.agency_planned_hours
        self.agency_declarations += part.agency_declarations
        self.students_over_quota += part.students_over_quota
        self.dmfa_hours += part.dmfa_hours

    @property
    def declarations(self) -> int:
        """Dimona declarations of every kind (in, late, update, cancel, invalid)."""
        return self.records - self.by_kind[RecordKind.DMFA]

    @property
    def mean_planned_hours(self) -> float:
        return self.planned_hours / self.students if self.students else 0.0


#: ``(phase, done, total)``; phases are ``"students"`` then ``"records"``.
ProgressCallback = Callable[[str, int, int], None]

# ------------------------------------------------------------------------- identifiers


def _ssin_check(base9: int, birth_year: int) -> int:
    return 97 - ((2_000_000_000 + base9) if birth_year >= 2000 else base9) % 97


def _other_century_check(base9: int, birth_year: int) -> int:
    return 97 - (base9 if birth_year >= 2000 else 2_000_000_000 + base9) % 97


def _coprime_multiplier(rng: random.Random, modulus: int) -> int:
    while True:
        candidate = rng.randrange(modulus // 3, modulus - 1)
        if math.gcd(candidate, modulus) == 1:
            return candidate


class _SsinSpace:
    """Distinct, valid SSINs for student numbers 0..capacity-1.

    Each birth year of the simulated ages gets a block of (days x serials), with more
    serials for the common student ages; an affine permutation of the student number
    (seeded) picks a slot, so numbers never repeat and ages follow ``AGE_WEIGHTS``.
    """

    def __init__(self, year: int, seed: int) -> None:
        self._blocks: list[tuple[int, int, int]] = []  # (birth year, serials, block size)
        starts: list[int] = []
        total = 0
        for age in sorted(AGE_WEIGHTS, reverse=True):
            birth_year = year - age
            days = 366 if _is_leap(birth_year) else 365
            serials = _serials_for(AGE_WEIGHTS[age])
            starts.append(total)
            self._blocks.append((birth_year, serials, days * serials))
            total += days * serials
        self._starts = starts
        self.capacity = total
        rng = random.Random(f"studentwork-sim:ssin:{seed}:{year}")
        self._a = _coprime_multiplier(rng, total)
        self._b = rng.randrange(total)

    def ssin(self, student: int, bis: bool) -> tuple[str, int]:
        """The SSIN of a student and its birth year."""
        slot = (self._a * student + self._b) % self.capacity
        block = bisect.bisect_right(self._starts, slot) - 1
        birth_year, serials, _size = self._blocks[block]
        offset = slot - self._starts[block]
        born = date(birth_year, 1, 1) + timedelta(days=offset // serials)
        serial = offset % serials + 1
        month = born.month + (40 if bis else 0)
        base9 = int(f"{born.year % 100:02d}{month:02d}{born.day:02d}{serial:03d}")
        return f"{base9:09d}{_ssin_check(base9, birth_year):02d}", birth_year


def _mistyped_ssin(ssin: str, birth_year: int, rng: random.Random) -> str:
    """The same number with check digits that fit neither century: an invalid SSIN."""
    base9 = int(ssin[:9])
    good = {_ssin_check(base9, birth_year), _other_century_check(base9, birth_year)}
    while True:
        check = rng.randrange(1, 98)
        if check not in good:
            return f"{ssin[:9]}{check:02d}"


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _enterprise_number(base8: int) -> str:
    return f"{base8:08d}{97 - base8 % 97:02d}"


@dataclass(frozen=True, slots=True)
class _Party:
    """An employer, agency or social secretariat, with what its messages carry."""

    number: int
    enterprise_number: str
    #: JSON of the ``employer`` object (enterprise or NSSO number).
    employer_json: str
    #: JSON of the ``declarant`` object of its Dimona declarations.
    declarant_json: str
    #: Who declares its Dimona (its event ids are unique per declarant).
    declarant_id: str
    joint_commission: str
    wage_cents: int
    #: Days after each quarter's end when its DmfA arrives, and at what hour.
    dmfa_delay_days: tuple[int, int, int, int]
    dmfa_hour: int


# ------------------------------------------------------------------------- calendar


@dataclass(frozen=True, slots=True)
class _DayTable:
    """Dates of the year with cumulative weights, to draw work days from."""

    days: tuple[date, ...]
    cumulative: tuple[float, ...]

    def draw(self, rng: random.Random) -> date:
        point = rng.random() * self.cumulative[-1]
        return self.days[bisect.bisect_right(self.cumulative, point)]


_MONTH_WEIGHTS = (0.55, 0.5, 0.6, 0.8, 0.5, 0.85, 2.3, 2.0, 0.7, 0.65, 0.65, 1.0)
_WEEKDAY_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.1, 1.7, 0.5)


def _summer(year: int) -> tuple[date, date]:
    """The summer-only window of work: after the June exams to the end of August."""
    return date(year, 6, 22), date(year, 8, 31)


def _day_tables(year: int) -> tuple[_DayTable, _DayTable, _DayTable]:
    """Work-day distributions: the whole year, summer only, and outside summer."""
    summer_start, summer_end = _summer(year)
    whole: list[tuple[date, float]] = []
    summer: list[tuple[date, float]] = []
    off: list[tuple[date, float]] = []
    day = date(year, 1, 1)
    while day.year == year:
        weight = _MONTH_WEIGHTS[day.month - 1] * _WEEKDAY_WEIGHTS[day.weekday()]
        if (day.month, day.day) >= (6, 20) and day.month == 6:
            weight *= 2.0  # exams over: the summer rush starts in late June
        if day.month == 7 and day.day <= 14:
            weight *= 1.3
        whole.append((day, weight))
        if summer_start <= day <= summer_end:
            summer.append((day, weight))
        if not date(year, 6, 15) <= day <= date(year, 9, 15):
            off.append((day, weight))
        day += timedelta(days=1)
    return _table(whole), _table(summer), _table(off)


def _table(weighted: list[tuple[date, float]]) -> _DayTable:
    cumulative: list[float] = []
    total = 0.0
    for _, weight in weighted:
        total += weight
        cumulative.append(total)
    return _DayTable(tuple(d for d, _ in weighted), tuple(cumulative))


def _quarter_parts(start: date, end: date, hours: int) -> list[tuple[date, date, int]]:
    """Split a contract at quarter boundaries, hours in proportion to the days."""
    if start.year == end.year and (start.month - 1) // 3 == (end.month - 1) // 3:
        return [(start, end, hours)]
    parts: list[tuple[date, date]] = []
    cursor = start
    while cursor <= end:
        q_end = quarter_end(cursor.year, quarter_of(cursor))
        parts.append((cursor, min(end, q_end)))
        cursor = q_end + timedelta(days=1)
    if len(parts) == 1:
        return [(start, end, hours)]
    total_days = (end - start).days + 1
    out: list[tuple[date, date, int]] = []
    given = 0
    for i, (s, e) in enumerate(parts):
        share = (
            hours - given if i == len(parts) - 1 else round(hours * ((e - s).days + 1) / total_days)
        )
        given += share
        if share > 0:
            out.append((s, e, share))
    return out


# ------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class _Job:
    employer: _Party  # the legal employer (the agency for agency work)
    client: _Party | None  # the using employer of agency work
    hours: int

    @property
    def agency(self) -> bool:
        return self.client is not None


@dataclass(frozen=True, slots=True)
class _Declaration:
    job: _Job
    start: date
    end: date
    hours: int


@dataclass
class _StudentOut:
    """One student's records as (timestamp, tag, key, value JSON); sequence = list order."""

    ssin: str
    records: list[tuple[int, str, str, str]] = field(default_factory=list)

    def add(self, timestamp_ms: int, tag: str, value: str, key: str | None = None) -> None:
        self.records.append((timestamp_ms, tag, key or self.ssin, value))


_NOON_OFFSETS: dict[date, int] = {}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _brussels_ms(day: date, hour: int, minute: int, second: int) -> int:
    """Epoch milliseconds of a Brussels wall-clock time (from 04:00 on: after DST shifts)."""
    offset = _NOON_OFFSETS.get(day)
    if offset is None:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=BRUSSELS).utcoffset()
        assert noon is not None
        offset = _NOON_OFFSETS[day] = int(noon.total_seconds())
    seconds = (day.toordinal() - _EPOCH_ORDINAL) * 86_400 + hour * 3600 + minute * 60 + second
    return (seconds - offset) * 1000


def _iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms // 1000, BRUSSELS).isoformat()


def _office_hours(rng: random.Random, day: date, first: int = 8, last: int = 18) -> int:
    """A random instant between ``first`` o'clock and the end of hour ``last`` that day."""
    seconds = int(rng.random() * (last - first + 1) * 3600)
    return _brussels_ms(day, first, 0, 0) + seconds * 1000 + int(rng.random() * 1000)


def _event_id(rng: random.Random) -> str:
    """A UUID-shaped (version 4) id drawn from the seeded generator."""
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


# ------------------------------------------------------------------------- sorting


class _TimeSorter:
    """Lines in day buckets by timestamp; spills to files beyond ``max_buffered`` lines.

    Each line starts with a fixed-width sort key (timestamp, student, sequence), so
    sorting a bucket's lines as strings orders them in time, ties broken the same way
    whatever was buffered or spilled: the output does not depend on the memory budget.
    """

    def __init__(self, max_buffered: int, directory: Path | None) -> None:
        self._max = max_buffered
        self._parent = directory
        self._buckets: dict[int, list[str]] = {}
        self._buffered = 0
        self._spilled: set[int] = set()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.count = 0

    def add(self, line: str) -> None:
        self._buckets.setdefault(int(line[:15]) // _DAY_MS, []).append(line)
        self._buffered += 1
        self.count += 1
        if self._buffered >= self._max:
            self._spill()

    def _path(self, day: int) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="studentwork-sim-", dir=self._parent)
        return Path(self._dir.name) / f"{day}.lines"

    def _spill(self) -> None:
        for day, lines in self._buckets.items():
            with self._path(day).open("a", encoding="utf-8", newline="\n") as out:
                out.write("\n".join(lines))
                out.write("\n")
            self._spilled.add(day)
        self._buckets.clear()
        self._buffered = 0

    def drain(self) -> Iterator[str]:
        """Every line, in order; the temporary files are removed afterwards."""
        try:
            for day in sorted(self._spilled | self._buckets.keys()):
                lines = self._buckets.pop(day, [])
                if day in self._spilled:
                    with self._path(day).open(encoding="utf-8", newline="\n") as spilled:
                        lines.extend(line.rstrip("\n") for line in spilled)
                    self._path(day).unlink()
                lines.sort()
                yield from lines
        finally:
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None


# ------------------------------------------------------------------------- simulation


class Simulation:
    """A year of simulated declarations for ``students`` students (see the module doc).

    Iterate :meth:`records` (or call :meth:`write_jsonl`) once; :attr:`stats` is complete
    when the iteration ends. ``max_buffered`` bounds the records kept in memory before
    spilling to temporary files (in ``temp_dir``, default the system's). ``workers`` > 1
    generates students in that many processes; the output is the same byte for byte.
    """

    def __init__(
        self,
        year: int,
        students: int,
        seed: int = 0,
        *,
        on_progress: ProgressCallback | None = None,
        max_buffered: int = 250_000,
        temp_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        if not 2000 <= year <= 2100:
            raise ValueError(f"year must be between 2000 and 2100, got {year}")
        if students < 1:
            raise ValueError("simulate at least one student")
        self.year = year
        self.students = students
        self.seed = seed
        self._ssins = _SsinSpace(year, seed)
        if students > self._ssins.capacity:
            raise ValueError(
                f"at most {self._ssins.capacity:,} students can get distinct SSINs of the "
                f"simulated ages (asked {students:,})"
            )
        self._on_progress = on_progress
        self._max_buffered = max_buffered
        self._temp_dir = temp_dir
        self._workers = max(1, workers)
        self._employer_count = max(20, students // STUDENTS_PER_EMPLOYER)
        self._agency_count = min(MAX_AGENCIES, 3 + students // STUDENTS_PER_AGENCY)
        self._parties: dict[int, _Party] = {}
        self._party_a = _coprime_multiplier(
            random.Random(f"studentwork-sim:parties:{seed}"), _ENTERPRISE_SPACE
        )
        self._party_b = random.Random(f"studentwork-sim:parties-offset:{seed}").randrange(
            _ENTERPRISE_SPACE
        )
        self._whole_year, self._summer_days, self._off_summer_days = _day_tables(year)
        self._quota = QuotaRules().quota(year)
        self.stats = GenerationStats(
            year=year,
            students=students,
            employers=self._employer_count,
            agencies=self._agency_count,
        )
        self._used = False

    # -- output

    def records(self, until_ms: int | None = None) -> Iterator[SimulatedRecord]:
        """Every record in submission order; none submitted after ``until_ms``."""
        for line in self._lines(until_ms):
            head, topic, kind, key, value = line.split("\t", 4)
            yield SimulatedRecord(topic, key, int(head[:15]), value.encode(), RecordKind(kind))

    def write_jsonl(self, path: Path | IO[str], until_ms: int | None = None) -> GenerationStats:
        """Write the envelope lines (topic, key, timestamp, value, kind) to ``path``.

        Records submitted after ``until_ms`` are left out.
        """
        if isinstance(path, Path):
            with path.open("w", encoding="utf-8", newline="\n") as out:
                return self.write_jsonl(out, until_ms)
        buffer: list[str] = []
        for line in self._lines(until_ms):
            head, topic, kind, key, value = line.split("\t", 4)
            buffer.append(_envelope(topic, key, int(head[:15]), value, kind))
            if len(buffer) >= 10_000:
                path.write("\n".join(buffer) + "\n")
                buffer.clear()
        if buffer:
            path.write("\n".join(buffer) + "\n")
        return self.stats

    def _lines(self, until_ms: int | None) -> Iterator[str]:
        if self._used:
            raise RuntimeError("a Simulation can be iterated once; make a new one")
        self._used = True
        sorter = _TimeSorter(self._max_buffered, self._temp_dir)
        if self._workers > 1 and self.students > _CHUNK_STUDENTS:
            self._generate_in_processes(sorter)
        else:
            step = max(1, self.students // 200)
            for index in range(self.students):
                self._emit(index, sorter.add)
                if self._on_progress is not None and (index + 1) % step == 0:
                    self._on_progress("students", index + 1, self.students)
        self.stats.records = sorter.count
        if self._on_progress is not None:
            self._on_progress("students", self.students, self.students)
        step = max(1, sorter.count // 200)
        cutoff = f"{until_ms:015d}~" if until_ms is not None else None
        for done, line in enumerate(sorter.drain(), start=1):
            if cutoff is not None and line > cutoff:
                break  # in time order: every later line is later still
            self.stats.emitted += 1
            yield line
            if self._on_progress is not None and done % step == 0:
                self._on_progress("records", done, sorter.count)
        if self._on_progress is not None:
            self._on_progress("records", sorter.count, sorter.count)

    def _generate_in_processes(self, sorter: _TimeSorter) -> None:
        """Students in chunks over a process pool, a bounded number of chunks in flight."""
        # fork: ``python -m infra`` has no main guard, so spawned children would rerun
        # the command line; the children only compute and return lines.
        context = multiprocessing.get_context("fork")
        chunks = iter(range(0, self.students, _CHUNK_STUDENTS))
        done = 0
        with ProcessPoolExecutor(self._workers, mp_context=context) as pool:
            in_flight: deque[Future[tuple[list[str], GenerationStats]]] = deque()

            def submit_next() -> None:
                first = next(chunks, None)
                if first is not None:
                    last = min(first + _CHUNK_STUDENTS, self.students)
                    args = (self.year, self.students, self.seed, first, last)
                    in_flight.append(pool.submit(_generate_chunk, args))

            for _ in range(2 * self._workers):
                submit_next()
            while in_flight:
                lines, part = in_flight.popleft().result()
                submit_next()
                for line in lines:
                    sorter.add(line)
                self.stats.absorb(part)
                done = min(self.students, done + _CHUNK_STUDENTS)
                if self._on_progress is not None:
                    self._on_progress("students", done, self.students)

    def _emit(self, index: int, sink: Callable[[str], None]) -> None:
        """Generate student ``index`` and pass each record's sort line to ``sink``."""
        by_kind = self.stats.by_kind
        for seq, (timestamp_ms, tag, key, value) in enumerate(self._student(index).records):
            sink(f"{timestamp_ms:015d}{index:09d}{seq:05d}\t{tag}\t{key}\t{value}")
            by_kind[_KIND_OF_TAG[tag]] += 1

    # -- parties

    def _enterprise_of(self, number: int) -> str:
        """The distinct enterprise number of party ``number`` (a seeded permutation)."""
        base8 = _ENTERPRISE_BASE + (self._party_a * number + self._party_b) % _ENTERPRISE_SPACE
        return _enterprise_number(base8)

    def _party(self, number: int) -> _Party:
        """Party ``number``: agencies after the social secretariats, then employers.

        Numbers below ``SOCIAL_SECRETARIATS`` are the secretariats, which only declare on
        behalf of employers and so only need an enterprise number.
        """
        party = self._parties.get(number)
        if party is not None:
            return party
        rng = random.Random(f"studentwork-sim:party:{self.seed}:{number}")
        enterprise = self._enterprise_of(number)
        is_agency = SOCIAL_SECRETARIATS <= number < SOCIAL_SECRETARIATS + self._agency_count
        if is_agency:
            sector = _AGENCY_SECTOR
            declarant = f'{{"kind":"agency","enterpriseNumber":"{enterprise}"}}'
            declarant_id = enterprise
            employer_json = f'{{"enterpriseNumber":"{enterprise}"}}'
            wage = rng.randint(1250, 1500)
        else:
            sector = _weighted(rng, _EMPLOYER_SECTORS)
            wage = rng.randint(1150, 1700)
            if rng.random() < NSSO_SHARE:
                nsso = f"{(number * 7919 + 104_729) % 1_000_000_000:09d}"
                employer_json = f'{{"nssoRegistrationNumber":"{nsso}"}}'
            else:
                employer_json = f'{{"enterpriseNumber":"{enterprise}"}}'
            if rng.random() < SECRETARIAT_SHARE:
                secretariat = self._enterprise_of(rng.randrange(SOCIAL_SECRETARIATS))
                declarant = f'{{"kind":"social_secretariat","enterpriseNumber":"{secretariat}"}}'
                declarant_id = secretariat
            else:
                declarant = f'{{"kind":"employer","enterpriseNumber":"{enterprise}"}}'
                declarant_id = enterprise
        delays = (
            rng.randint(21, 80),
            rng.randint(21, 80),
            rng.randint(21, 80),
            rng.randint(21, 80),
        )
        party = _Party(
            number=number,
            enterprise_number=enterprise,
            employer_json=employer_json,
            declarant_json=declarant,
            declarant_id=declarant_id,
            joint_commission=sector,
            wage_cents=wage,
            dmfa_delay_days=delays,
            dmfa_hour=rng.randint(8, 18),
        )
        self._parties[number] = party
        return party

    def _employer(self, rng: random.Random) -> _Party:
        # A few large employers (retail chains, hospitality groups) hire many students.
        index = int(self._employer_count * rng.random() ** 1.8)
        return self._party(SOCIAL_SECRETARIATS + self._agency_count + index)

    def _agency(self, rng: random.Random) -> _Party:
        index = int(self._agency_count * rng.random() ** 1.5)
        return self._party(SOCIAL_SECRETARIATS + index)

    # -- one student

    def _student(self, index: int) -> _StudentOut:
        rng = random.Random(f"studentwork-sim:student:{self.seed}:{self.year}:{index}")
        ssin, birth_year = self._ssins.ssin(index, bis=rng.random() < BIS_SHARE)
        summer_only = rng.random() < SUMMER_ONLY_SHARE
        if summer_only:
            self.stats.summer_only_students += 1
            mean, shape, cap = (
                MEAN_HOURS_SUMMER_ONLY,
                HOURS_SHAPE_SUMMER_ONLY,
                MAX_HOURS_SUMMER_ONLY,
            )
        else:
            mean, shape, cap = MEAN_HOURS_YEAR_ROUND, HOURS_SHAPE_YEAR_ROUND, MAX_HOURS_YEAR_ROUND
        target = max(4, min(cap, round(rng.gammavariate(shape, mean / shape))))

        declarations: list[_Declaration] = []
        for n, job in enumerate(self._jobs(rng, target)):
            force_off_summer = not summer_only and n == 0
            for start, end, hours in self._contracts(rng, job, summer_only, force_off_summer):
                for s, e, h in _quarter_parts(start, end, hours):
                    declarations.append(_Declaration(job, s, e, h))

        out = _StudentOut(ssin)
        worked: dict[tuple[int, int], tuple[_Party, int]] = {}
        planned = 0
        for declaration in declarations:
            final = self._declare(rng, out, declaration, birth_year)
            if final:
                planned += final
                if declaration.job.agency:
                    self.stats.agency_planned_hours += final
                key = (declaration.job.employer.number, quarter_of(declaration.start))
                party, hours = worked.get(key, (declaration.job.employer, 0))
                worked[key] = (party, hours + final)
        self.stats.planned_hours += planned
        if planned > self._quota:
            self.stats.students_over_quota += 1
        for (_, quarter), (party, hours) in worked.items():
            self._dmfa(rng, out, party, quarter, hours)
        return out

    def _jobs(self, rng: random.Random, target: int) -> list[_Job]:
        count = _weighted(rng, ((1, 60), (2, 28), (3, 9), (4, 3)))
        count = max(1, min(count, target // 30 + 1))
        weights = [rng.random() + 0.3 for _ in range(count)]
        total = sum(weights)
        jobs = []
        for weight in weights:
            hours = max(4, round(target * weight / total))
            if rng.random() < AGENCY_JOB_SHARE:
                jobs.append(_Job(self._agency(rng), self._employer(rng), hours))
            else:
                jobs.append(_Job(self._employer(rng), None, hours))
        return jobs

    def _contracts(
        self, rng: random.Random, job: _Job, summer_only: bool, force_off_summer: bool
    ) -> list[tuple[date, date, int]]:
        """The contracts of one job, as (start, end, hours); they may span quarters."""
        if job.agency:
            return self._agency_contracts(rng, job.hours, summer_only, force_off_summer)
        if summer_only:
            return self._summer_contracts(rng, job.hours)
        if rng.random() < 0.5:
            return self._side_job(rng, job.hours, force_off_summer)
        return self._holiday_jobs(rng, job.hours, force_off_summer)

    def _agency_contracts(
        self, rng: random.Random, hours: int, summer_only: bool, force_off_summer: bool
    ) -> list[tuple[date, date, int]]:
        """Day and week contracts until the job's hours are used."""
        contracts: list[tuple[date, date, int]] = []
        left = hours
        year_end = date(self.year, 12, 31)
        while left > 0:
            if summer_only:
                table = self._summer_days
            elif force_off_summer and not contracts:
                table = self._off_summer_days
            else:
                table = self._whole_year
            day = table.draw(rng)
            if rng.random() < 0.55:
                start = end = day
                h = _int(rng, 4, 8)
            else:
                monday = day - timedelta(days=day.weekday() if day.weekday() < 5 else 0)
                start = max(monday, date(self.year, 1, 1))
                days = _int(rng, 2, 5)
                end = min(start + timedelta(days=days - 1), year_end)
                h = days * _int(rng, 5, 8)
                if summer_only:
                    end = min(end, _summer(self.year)[1])
            h = min(h, left)
            if left - h < 3:
                h = left
            contracts.append((start, end, h))
            left -= h
        return contracts

    def _summer_contracts(self, rng: random.Random, hours: int) -> list[tuple[date, date, int]]:
        """A summer job of some weeks, most starting on 1 July or just after the exams."""
        window_start, window_end = _summer(self.year)
        r = rng.random()
        if r < 0.25:
            start = window_start + timedelta(days=_int(rng, 0, 8))
        elif r < 0.55:
            start = date(self.year, 7, 1)
        elif r < 0.8:
            start = date(self.year, 7, _int(rng, 2, 15))
        else:
            start = date(self.year, 7, 16) + timedelta(days=_int(rng, 0, 30))
        weekly = _int(rng, 18, 38)
        weeks = max(1, math.ceil(hours / weekly))
        end = min(start + timedelta(days=7 * weeks - 3), window_end)
        end = max(end, start)
        return [(start, end, hours)]

    def _side_job(
        self, rng: random.Random, hours: int, force_off_summer: bool
    ) -> list[tuple[date, date, int]]:
        """A weekend or evening job booked one quarter at a time, for the whole quarter."""
        first = _int(rng, 1, 4)
        last = min(4, first + _int(rng, 0, 3))
        if force_off_summer and first == last == 3:
            last = 4
        weights = {q: (1.6 if q == 3 else 1.0) for q in range(first, last + 1)}
        total = sum(weights.values())
        contracts = []
        for q in range(first, last + 1):
            q_hours = round(hours * weights[q] / total)
            if q_hours < 2:
                continue
            q_start = date(self.year, 3 * q - 2, 1)
            start = q_start + timedelta(days=_int(rng, 0, 44)) if q == first else q_start
            contracts.append((start, quarter_end(self.year, q), q_hours))
        if not contracts:
            q_start = date(self.year, 3 * first - 2, 1)
            contracts.append((q_start, quarter_end(self.year, first), hours))
        return contracts

    def _holiday_jobs(
        self, rng: random.Random, hours: int, force_off_summer: bool
    ) -> list[tuple[date, date, int]]:
        """One to three school-holiday jobs (carnival, Easter, summer, autumn, Christmas)."""
        y = self.year
        windows = [
            (date(y, 2, 14), date(y, 3, 3), False),
            (date(y, 4, 1), date(y, 4, 19), False),
            (date(y, 6, 24), date(y, 8, 31), True),
            (date(y, 10, 27), date(y, 11, 5), False),
            (date(y, 12, 18), date(y, 12, 31), False),
        ]
        count = min(_weighted(rng, ((1, 50), (2, 35), (3, 15))), max(1, hours // 12))
        chosen = []
        for n in range(count):
            options = [w for w in windows if not w[2]] if force_off_summer and n == 0 else windows
            # Summer is the holiday job's season: three times the weight of the others.
            chosen.append(_weighted(rng, tuple((w, 3 if w[2] else 1) for w in options)))
        contracts = []
        given = 0
        for n, (w_start, w_end, _) in enumerate(chosen):
            h = hours - given if n == count - 1 else hours // count
            given += h
            span = (w_end - w_start).days
            start = w_start + timedelta(days=_int(rng, 0, max(0, span - 5)))
            end = min(w_end, start + timedelta(days=_int(rng, 4, 20)))
            contracts.append((start, end, h))
        return contracts

    # -- one declaration and its life

    def _declare(
        self, rng: random.Random, out: _StudentOut, d: _Declaration, birth_year: int
    ) -> int:
        """Emit a declaration and what follows it; return the hours in force at the end."""
        job = d.job
        late = rng.random() < LATE_SHARE
        if late:
            submitted = _office_hours(rng, d.start + timedelta(days=_int(rng, 1, 4)))
        else:
            submitted = self._on_time(rng, d)
        if rng.random() < INVALID_SHARE:
            self._invalid_attempt(rng, out, d, submitted, birth_year)
        event_id = _event_id(rng)
        out.add(
            submitted,
            _LATE if late else _IN,
            self._dimona_in(event_id, submitted, out.ssin, job, d.start, d.end, d.hours),
        )
        if job.agency:
            self.stats.agency_declarations += 1
        if late:
            return d.hours

        update_share = UPDATE_SHARE_AGENCY if job.agency else UPDATE_SHARE_EMPLOYER
        if rng.random() < CANCEL_SHARE:
            start_ms = _brussels_ms(d.start, 0, 0, 0)
            window = max(start_ms - submitted, 0)
            cancelled = submitted + 10 * _MINUTE_MS + int(rng.random() * window * 0.9)
            out.add(
                cancelled,
                _CANCEL,
                self._dimona_cancel(_event_id(rng), cancelled, out.ssin, job, event_id),
            )
            if rng.random() >= REDECLARE_AFTER_CANCEL:
                return 0
            # Declared again, usually a few days later (the start date cannot be updated).
            shift = timedelta(days=_int(rng, 1, 7))
            start, end = d.start + shift, d.end + shift
            if not (same_quarter(start, d.start) and same_quarter(end, d.start)):
                start, end = d.start, d.end
            again = cancelled + _int(rng, 5, 90) * _MINUTE_MS
            out.add(
                again,
                _IN,
                self._dimona_in(_event_id(rng), again, out.ssin, job, start, end, d.hours),
            )
            if job.agency:
                self.stats.agency_declarations += 1
            return d.hours
        if d.hours >= 4 and rng.random() < update_share:
            # The work is done; fewer hours than booked: free them now, not at the DmfA.
            lower = d.hours - max(1, round(d.hours * rng.uniform(0.05, 0.25)))
            updated = _office_hours(rng, d.end + timedelta(days=_int(rng, 1, 20)))
            out.add(
                updated,
                _UPDATE,
                self._dimona_update(_event_id(rng), updated, out.ssin, job, event_id, d, lower),
            )
            return lower
        return d.hours

    def _on_time(self, rng: random.Random, d: _Declaration) -> int:
        if d.job.agency:
            lead = _weighted(rng, ((0, 30), (1, 35), (2, 15), (3, 10), (5, 6), (7, 4)))
            if lead == 0:  # the same morning, before work
                return _office_hours(rng, d.start, 6, 7)
            return _office_hours(rng, d.start - timedelta(days=lead), 8, 20)
        lead = _int(rng, 2, 30) if rng.random() < 0.85 else _int(rng, 31, 60)
        return _office_hours(rng, d.start - timedelta(days=lead))

    def _invalid_attempt(
        self, rng: random.Random, out: _StudentOut, d: _Declaration, before: int, birth_year: int
    ) -> None:
        """A refused first attempt, corrected minutes later by the real declaration."""
        at = before - _int(rng, 5, 120) * _MINUTE_MS
        kind = rng.choice(
            (
                RecordKind.INVALID_CROSS_QUARTER,
                RecordKind.INVALID_ZERO_HOURS,
                RecordKind.INVALID_SSIN,
            )
        )
        ssin, end, hours = out.ssin, d.end, d.hours
        if kind is RecordKind.INVALID_CROSS_QUARTER:
            end = quarter_end(d.start.year, quarter_of(d.start)) + timedelta(days=_int(rng, 1, 20))
        elif kind is RecordKind.INVALID_ZERO_HOURS:
            hours = 0
        else:
            ssin = _mistyped_ssin(out.ssin, birth_year, rng)
        value = self._dimona_in(_event_id(rng), at, ssin, d.job, d.start, end, hours)
        out.add(at, _INVALID[kind], value, key=ssin)

    def _dmfa(
        self, rng: random.Random, out: _StudentOut, party: _Party, quarter: int, planned: int
    ) -> None:
        if rng.random() >= DMFA_SHARE:
            return  # some employers never send it: the planned hours keep counting
        r = rng.random()
        if r < 0.55:
            hours = planned
        elif r < 0.95:
            hours = planned - round(planned * rng.uniform(0.0, 0.2))
        else:
            hours = planned + max(1, round(planned * rng.uniform(0.01, 0.1)))
        day = quarter_end(self.year, quarter) + timedelta(days=party.dmfa_delay_days[quarter - 1])
        at = _brussels_ms(day, party.dmfa_hour, _int(rng, 0, 59), _int(rng, 0, 59))
        self.stats.dmfa_hours += hours
        value = (
            f'{{"eventId":"{_event_id(rng)}","submittedAt":"{_iso(at)}",'
            f'"employer":{party.employer_json},"worker":{{"ssin":"{out.ssin}"}},'
            f'"year":{self.year},"quarter":{quarter},"hoursWorked":{hours},'
            f'"grossWageCents":{hours * party.wage_cents}}}'
        )
        out.add(at, _DMFA, value)

    # -- message bodies (the Dimona REST shape, DOMAIN.md section 2)

    @staticmethod
    def _head(event_id: str, at: int, ssin: str, job: _Job) -> str:
        return (
            f'{{"eventId":"{event_id}","submittedAt":"{_iso(at)}",'
            f'"declarant":{job.employer.declarant_json},"employer":{job.employer.employer_json},'
            f'"worker":{{"ssin":"{ssin}"}}'
        )

    @staticmethod
    def _period_id(job: _Job, declared_event: str) -> str:
        return declared_period_id(job.employer.declarant_id, declared_event)

    def _dimona_in(
        self, event_id: str, at: int, ssin: str, job: _Job, start: date, end: date, hours: int
    ) -> str:
        using = (
            f',"usingEmployer":{{"enterpriseNumber":"{job.client.enterprise_number}"}}'
            if job.client is not None
            else ""
        )
        return (
            f'{self._head(event_id, at, ssin, job)},"dimonaIn":{{"startingDate":"{start}",'
            f'"endingDate":"{end}","dimonaFeatures":{{"jointCommissionNumber":'
            f'"{job.employer.joint_commission}","workerType":"STU"}},'
            f'"plannedHoursNumber":{hours}{using}}}}}'
        )

    def _dimona_update(
        self,
        event_id: str,
        at: int,
        ssin: str,
        job: _Job,
        declared_event: str,
        d: _Declaration,
        hours: int,
    ) -> str:
        return (
            f'{self._head(event_id, at, ssin, job)},"dimonaUpdate":{{"periodId":'
            f'"{self._period_id(job, declared_event)}","startingDate":"{d.start}",'
            f'"endingDate":"{d.end}","plannedHoursNumber":{hours}}}}}'
        )

    def _dimona_cancel(
        self, event_id: str, at: int, ssin: str, job: _Job, declared_event: str
    ) -> str:
        return (
            f'{self._head(event_id, at, ssin, job)},"dimonaCancel":{{"periodId":'
            f'"{self._period_id(job, declared_event)}"}}}}'
        )


#: Enterprise numbers are drawn from 0200000000-1999999999 (first digit 0 or 1).
_ENTERPRISE_BASE = 2_000_000
_ENTERPRISE_SPACE = 18_000_000


def _int(rng: random.Random, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high`` inclusive (faster than ``randint``)."""
    return low + int(rng.random() * (high - low + 1))


def _weighted(rng: random.Random, options: Iterable[tuple[_T, int | float]]) -> _T:
    pairs = list(options)
    point = rng.random() * sum(w for _, w in pairs)
    for value, weight in pairs:
        point -= weight
        if point < 0:
            return value
    return pairs[-1][0]


#: Students per task when generating in several processes.
_CHUNK_STUDENTS = 2_000


def _generate_chunk(args: tuple[int, int, int, int, int]) -> tuple[list[str], GenerationStats]:
    """Sort lines and counts of students ``first`` to ``last - 1`` (in a pool process)."""
    year, students, seed, first, last = args
    simulation = Simulation(year, students, seed)
    lines: list[str] = []
    for index in range(first, last):
        simulation._emit(index, lines.append)
    return lines, simulation.stats


def generate(
    year: int,
    students: int,
    seed: int = 0,
    *,
    until_ms: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[SimulatedRecord]:
    """A year of simulated records in submission order (see :class:`Simulation`).

    ``until_ms`` leaves out the records submitted after it: to publish a year that is
    still running, pass the current time (later records have not happened yet, and a
    broker refuses timestamps more than ``message.timestamp.after.max.ms`` ahead).
    """
    return Simulation(year, students, seed, on_progress=on_progress).records(until_ms)


async def publish_records(
    records: Iterable[SimulatedRecord],
    settings: Settings,
    *,
    on_sent: Callable[[int], None] | None = None,
    window: int = 5_000,
) -> int:
    """Publish records to Kafka with their timestamps as CreateTime; return the count.

    Keys are the SSINs, topics get the settings' prefix. The producer is idempotent
    (acks=all), so the order of each student's records is kept. ``on_sent`` receives the
    running total each time a window of records has been acknowledged. Lateness is only
    simulated where the input topics keep CreateTime (``input_timestamp_type``). The
    broker refuses records stamped more than ``message.timestamp.after.max.ms`` (one hour
    by default) in the future: generate with ``until_ms`` set to now for a running year.
    Raises the producer's ``KafkaError`` when the broker refuses a record.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        for record in records:
            pending.append(
                await producer.send(
                    settings.topic(record.topic),
                    record.value,
                    key=record.key.encode(),
                    timestamp_ms=record.timestamp_ms,
                )
            )
            if len(pending) >= window:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if on_sent is not None:
                    on_sent(sent)
        await asyncio.gather(*pending)
        sent += len(pending)
        if on_sent is not None:
            on_sent(sent)
    finally:
        await producer.stop()
    return sent
