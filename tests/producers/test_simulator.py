"""The simulator: reproducible output, realistic proportions, messages the service accepts.

The proportions are checked on 2,000 students against the bounds DOMAIN.md section 7
suggests; every record is also replayed through the pure domain core, which must accept
all of them except the deliberately invalid ones, refused for the intended reason.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from infra.cli import cli
from producers import simulator
from producers.simulator import RecordKind, SimulatedRecord, Simulation, generate
from quota import QuotaRules, StudentLedger, apply, is_late
from quota.calendar import BRUSSELS, quarter_of, same_quarter
from schemas.declarations import DimonaDeclaration, DmfaDeclaration
from schemas.identifiers import is_valid_enterprise_number, is_valid_ssin, ssin_birth_date
from streams.messages import dimona_command, dmfa_command, utc_from_millis

YEAR = 2026
STUDENTS = 2_000


def sha256_of(year: int, students: int, seed: int, **options: Any) -> str:
    buffer = io.StringIO()
    Simulation(year, students, seed, **options).write_jsonl(buffer)
    return hashlib.sha256(buffer.getvalue().encode()).hexdigest()


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    digests = []
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(
            cli,
            [
                "simulate",
                "--students",
                "300",
                "--year",
                "2026",
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        assert "records written to" in result.output
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_output_does_not_depend_on_memory_budget_or_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator, "_CHUNK_STUDENTS", 150)  # several chunks per process
    reference = sha256_of(YEAR, 600, 11)
    assert sha256_of(YEAR, 600, 11, max_buffered=1_000, temp_dir=tmp_path) == reference
    assert sha256_of(YEAR, 600, 11, workers=2) == reference
    assert list(tmp_path.iterdir()) == []  # spilled buckets are removed


def test_records_match_the_file_lines() -> None:
    buffer = io.StringIO()
    Simulation(YEAR, 50, 3).write_jsonl(buffer)
    records = list(generate(YEAR, 50, 3))
    assert [r.envelope_line() for r in records] == buffer.getvalue().splitlines()
    first = json.loads(buffer.getvalue().splitlines()[0])
    assert set(first) == {"topic", "key", "timestamp", "value", "kind"}


def test_the_year_changes_the_output() -> None:
    assert sha256_of(2025, 100, 1) != sha256_of(2026, 100, 1)


def test_refuses_more_students_than_distinct_ssins() -> None:
    with pytest.raises(ValueError, match="distinct SSINs"):
        Simulation(YEAR, 10_000_000, 0)


# ----------------------------------------------------------------------------- a year


@dataclass
class Year:
    records: list[SimulatedRecord]
    values: list[dict[str, Any]]


@pytest.fixture(scope="module")
def year() -> Year:
    records = list(generate(YEAR, STUDENTS, 42))
    return Year(records, [json.loads(r.value) for r in records])


def in_force_declarations(y: Year) -> dict[str, dict[str, Any]]:
    """Valid dimonaIn by period id, final hours after updates, cancelled ones removed."""
    from streams.messages import declared_period_id

    periods: dict[str, dict[str, Any]] = {}
    for record, value in zip(y.records, y.values, strict=True):
        if record.kind in (RecordKind.IN, RecordKind.LATE):
            body = value["dimonaIn"]
            declarant = value["declarant"]["enterpriseNumber"]
            periods[declared_period_id(declarant, value["eventId"])] = {
                "ssin": record.key,
                "employer": json.dumps(value["employer"], sort_keys=True),
                "agency": value["declarant"]["kind"] == "agency",
                "start": date.fromisoformat(body["startingDate"]),
                "end": date.fromisoformat(body["endingDate"]),
                "hours": body["plannedHoursNumber"],
                "at": record.timestamp_ms,
            }
        elif record.kind is RecordKind.UPDATE:
            periods[value["dimonaUpdate"]["periodId"]]["hours"] = value["dimonaUpdate"][
                "plannedHoursNumber"
            ]
        elif record.kind is RecordKind.CANCEL:
            del periods[value["dimonaCancel"]["periodId"]]
    return periods


def test_every_line_is_valid_except_the_intended_ones(year: Year) -> None:
    rules = QuotaRules()
    ledgers: dict[str, StudentLedger] = {}
    outcomes: Counter[tuple[str, str, str]] = Counter()
    # The domain recomputes a balance per message: a quarter of the students is plenty.
    replayed = set(sorted({r.key for r in year.records})[::4])
    for record in year.records:
        if record.key not in replayed and record.kind is not RecordKind.INVALID_SSIN:
            continue
        received = utc_from_millis(record.timestamp_ms)
        assert received is not None
        if record.kind is RecordKind.INVALID_SSIN:
            with pytest.raises(ValidationError) as refused:
                DimonaDeclaration.model_validate_json(record.value)
            assert [e["loc"] for e in refused.value.errors()] == [("worker", "ssin")]
            assert "check digits" in str(refused.value)
            continue
        if record.topic == "dmfa.declarations":
            dmfa = DmfaDeclaration.model_validate_json(record.value)
            assert record.key == dmfa.worker.ssin
            command: Any = dmfa_command(dmfa, received)
        else:
            dimona = DimonaDeclaration.model_validate_json(record.value)
            assert record.key == dimona.worker.ssin
            command = dimona_command(dimona, received)
        ledger = ledgers.setdefault(record.key, StudentLedger(record.key))
        decision = apply(ledger, command, rules)
        codes = ",".join(a.code.value for a in decision.anomalies)
        outcomes[(record.kind.value, decision.status.value, codes)] += 1

    by_kind: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for kind, status, codes in outcomes:
        by_kind[kind].add((status, codes))
    assert by_kind["in"] <= {("A", ""), ("W", "QUOTA_EXCEEDED")}
    assert ("W", "QUOTA_EXCEEDED") in by_kind["in"]  # some students go over the quota
    assert by_kind["late"] == {("W", "LATE_DECLARATION")}
    assert by_kind["update"] == {("A", "")}
    assert by_kind["cancel"] == {("A", "")}
    assert by_kind["dmfa"] == {("A", "")}
    assert by_kind["invalid:CROSS_QUARTER"] == {("B", "CROSS_QUARTER")}
    assert by_kind["invalid:ZERO_HOURS"] == {("B", "ZERO_HOURS")}


def test_records_are_in_submission_order_with_valid_identifiers(year: Year) -> None:
    stamps = [r.timestamp_ms for r in year.records]
    assert stamps == sorted(stamps)
    assert {r.topic for r in year.records} == {"dimona.declarations", "dmfa.declarations"}
    today = date(YEAR, 12, 31)
    keys = {r.key for r in year.records if r.kind is not RecordKind.INVALID_SSIN}
    assert len(keys) == STUDENTS
    assert all(is_valid_ssin(k, today=today) for k in keys)
    births = [ssin_birth_date(k, today=today) for k in keys]
    decades = Counter(b.year // 10 * 10 for b in births if b is not None)
    assert decades[1990] > 0.03 * STUDENTS and decades[2000] > 0.5 * STUDENTS
    employers = {v["employer"].get("enterpriseNumber") for v in year.values} - {None}
    assert employers and all(is_valid_enterprise_number(e) for e in employers)
    event_ids = [v["eventId"] for v in year.values]
    assert len(set(event_ids)) == len(event_ids)


def test_lateness_is_in_the_record_timestamp(year: Year) -> None:
    for record, value in zip(year.records, year.values, strict=True):
        if record.kind in (RecordKind.IN, RecordKind.LATE):
            start = date.fromisoformat(value["dimonaIn"]["startingDate"])
            received = datetime.fromtimestamp(record.timestamp_ms / 1000, BRUSSELS)
            assert is_late(start, received) == (record.kind is RecordKind.LATE)
            assert datetime.fromisoformat(value["submittedAt"]) == received.replace(microsecond=0)


def test_proportions(year: Year) -> None:
    kinds = Counter(r.kind for r in year.records)
    declared = kinds[RecordKind.IN] + kinds[RecordKind.LATE]
    dimona = sum(n for k, n in kinds.items() if k is not RecordKind.DMFA)
    # 2-5 million declarations a year for about 600,000 students: 3 to 9 per student.
    assert 3 <= dimona / STUDENTS <= 9
    # A few late and a few invalid declarations, of every intended kind.
    assert 0.005 <= kinds[RecordKind.LATE] / declared <= 0.03
    invalid = {k: n for k, n in kinds.items() if k.invalid}
    assert set(invalid) == {k for k in RecordKind if k.invalid}
    assert 0.002 <= sum(invalid.values()) / dimona <= 0.015
    assert 0.01 <= kinds[RecordKind.CANCEL] / declared <= 0.06
    assert 0.03 <= kinds[RecordKind.UPDATE] / declared <= 0.15

    periods = in_force_declarations(year)
    assert all(same_quarter(p["start"], p["end"]) and p["hours"] > 0 for p in periods.values())
    hours: Counter[str] = Counter()
    summer_only: dict[str, bool] = {}
    agency_hours = 0
    for p in periods.values():
        hours[p["ssin"]] += p["hours"]
        agency_hours += p["hours"] if p["agency"] else 0
        in_summer = p["start"] >= date(YEAR, 6, 15) and p["end"] <= date(YEAR, 9, 15)
        summer_only[p["ssin"]] = summer_only.get(p["ssin"], True) and in_summer
    # About 200 hours per student, a long tail over the 650-hour quota.
    assert 180 <= sum(hours.values()) / STUDENTS <= 220
    over = sum(1 for h in hours.values() if h > 650) / STUDENTS
    assert 0.005 <= over <= 0.06
    # About 20 % work only in summer; agencies carry about a third of the hours, in many
    # small declarations.
    assert 0.15 <= sum(summer_only.values()) / STUDENTS <= 0.25
    assert 0.25 <= agency_hours / sum(hours.values()) <= 0.42
    agency_declarations = sum(1 for p in periods.values() if p["agency"])
    assert agency_declarations / len(periods) >= 0.5

    # The peak week of declarations is in late June or early July.
    weeks: Counter[int] = Counter()
    for record in year.records:
        if record.kind is RecordKind.IN:
            day = datetime.fromtimestamp(record.timestamp_ms / 1000, BRUSSELS).date()
            weeks[(day - date(YEAR, 1, 1)).days // 7] += 1
    peak_week_start = date(YEAR, 1, 1).toordinal() + 7 * weeks.most_common(1)[0][0]
    assert date(YEAR, 6, 15) <= date.fromordinal(peak_week_start) <= date(YEAR, 7, 15)


def test_dmfa_follows_each_quarter(year: Year) -> None:
    planned: Counter[tuple[str, str, int]] = Counter()
    for p in in_force_declarations(year).values():
        planned[(p["ssin"], p["employer"], quarter_of(p["start"]))] += p["hours"]
    reported: dict[tuple[str, str, int], tuple[int, int]] = {}
    for record, value in zip(year.records, year.values, strict=True):
        if record.kind is RecordKind.DMFA:
            key = (record.key, json.dumps(value["employer"], sort_keys=True), value["quarter"])
            assert key in planned and key not in reported
            assert value["year"] == YEAR
            reported[key] = (value["hoursWorked"], record.timestamp_ms)
            day = datetime.fromtimestamp(record.timestamp_ms / 1000, BRUSSELS).date()
            quarter_end_month = 3 * value["quarter"]
            weeks_after = (
                day - date(YEAR + (value["quarter"] == 4), quarter_end_month % 12 + 1, 1)
            ).days // 7
            assert 2 <= weeks_after <= 12
            assert value["grossWageCents"] > 0 or value["hoursWorked"] == 0
    share = len(reported) / len(planned)
    assert 0.9 <= share < 1.0  # most arrive, a few never do
    at_most_planned = sum(1 for k, (h, _) in reported.items() if h <= planned[k])
    assert at_most_planned / len(reported) >= 0.85
