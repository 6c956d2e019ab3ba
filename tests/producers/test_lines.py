"""Local checks of the publisher: no broker needed."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.cli import cli
from producers.publisher import (
    InvalidDeclaration,
    PreparedLine,
    RejectedLine,
    detect_kind,
    parse_timestamp,
    read_lines,
    to_declaration,
)
from quota.calendar import BRUSSELS
from tests.support import STUDENT, dimona_in, dmfa

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=BRUSSELS)


def lines_of(*items: object) -> list[str]:
    return [item if isinstance(item, str) else json.dumps(item) for item in items]


def test_each_line_is_checked_with_its_number() -> None:
    bad_ssin = dimona_in("x-1", ssin="93051822362")
    no_hours = dimona_in("x-2")
    del no_hours["dimonaIn"]["plannedHoursNumber"]
    prepared = list(
        read_lines(
            lines_of(
                dimona_in("ok-1"),
                "",
                "   ",
                bad_ssin,
                "{not json",
                [1, 2],
                no_hours,
                {"worker": {"ssin": STUDENT}},
                {**dimona_in("both"), "hoursWorked": 3},
                dmfa("ok-2"),
                dimona_in("ok-1"),
            ),
            now=NOW,
        )
    )
    assert [type(p).__name__ for p in prepared] == [
        "PreparedLine",
        "RejectedLine",
        "RejectedLine",
        "RejectedLine",
        "RejectedLine",
        "RejectedLine",
        "RejectedLine",
        "PreparedLine",
        "RejectedLine",
    ]
    reasons = {p.line: p.reason for p in prepared if isinstance(p, RejectedLine)}
    assert set(reasons) == {4, 5, 6, 7, 8, 9, 11}
    assert reasons[4].startswith("worker.ssin: ") and "check digits" in reasons[4]
    assert reasons[5].startswith("not valid JSON")
    assert reasons[6] == "expected a JSON object, got list"
    assert reasons[7].startswith("dimonaIn.plannedHoursNumber: ")
    assert reasons[8].startswith("neither a Dimona declaration")
    assert reasons[9].startswith("both a Dimona action")
    assert "already used on line 1" in reasons[11]
    first, dmfa_line = (p for p in prepared if isinstance(p, PreparedLine))
    assert (first.line, first.kind, first.event_id, first.key) == (1, "dimona", "ok-1", STUDENT)
    assert (dmfa_line.line, dmfa_line.kind) == (10, "dmfa")
    assert first.timestamp_ms is None


def test_a_bare_rest_body_gets_an_event_id_and_submission_time() -> None:
    body = dimona_in("ignored")
    del body["eventId"], body["submittedAt"]
    body["worker"]["ssin"] = "93.05.18-223.61"
    stamp = parse_timestamp("2026-05-20T10:00:00")
    (line,) = read_lines(lines_of(body), timestamp_ms=stamp, now=NOW)
    assert isinstance(line, PreparedLine)
    assert uuid.UUID(line.event_id).version == 4
    assert line.key == STUDENT
    assert line.timestamp_ms == stamp
    value = json.loads(line.value)
    assert value["worker"]["ssin"] == STUDENT
    assert datetime.fromisoformat(value["submittedAt"]) == datetime(
        2026, 5, 20, 10, 0, tzinfo=BRUSSELS
    )
    # Without a timestamp, "now".
    (line,) = read_lines(lines_of(body), now=NOW)
    assert isinstance(line, PreparedLine)
    assert datetime.fromisoformat(json.loads(line.value)["submittedAt"]) == NOW


def test_simulator_envelopes_keep_their_timestamp_unless_overridden() -> None:
    envelope = {
        "topic": "dimona.declarations",
        "key": STUDENT,
        "timestamp": 1_780_000_000_000,
        "value": dimona_in("env-1"),
        "kind": "in",
    }
    wrong_topic = {**envelope, "topic": "dmfa.declarations", "value": dimona_in("env-2")}
    prefixed = {**envelope, "topic": "t1.dimona.declarations", "value": dimona_in("env-3")}
    one, two, three = read_lines(lines_of(envelope, wrong_topic, prefixed), now=NOW)
    assert isinstance(one, PreparedLine) and one.timestamp_ms == 1_780_000_000_000
    assert isinstance(two, RejectedLine) and "belongs on dimona.declarations" in two.reason
    assert isinstance(three, PreparedLine)
    (overridden,) = read_lines(lines_of(envelope), timestamp_ms=5, now=NOW)
    assert isinstance(overridden, PreparedLine) and overridden.timestamp_ms == 5


def test_invalid_lines_can_be_sent_for_the_service_to_refuse() -> None:
    (line,) = read_lines(lines_of(dimona_in("bad", ssin="93051822362")), now=NOW, send_invalid=True)
    assert isinstance(line, PreparedLine)
    assert line.error is not None and line.error.startswith("worker.ssin")
    assert (line.key, line.event_id, line.expects_answer) == ("93051822362", "bad", True)


def test_contract_helpers() -> None:
    assert detect_kind(dmfa("m")) == "dmfa"
    assert detect_kind({"dimonaCancel": {}}) == "dimona"
    with pytest.raises(InvalidDeclaration, match="neither"):
        detect_kind({})
    declaration = to_declaration(dimona_in("d"))
    assert to_declaration(declaration) is declaration
    with pytest.raises(InvalidDeclaration) as refused:
        to_declaration({**dimona_in("d"), "employer": {}})
    assert refused.value.reason.startswith("employer: ")
    assert parse_timestamp("2026-07-01T00:00:00Z") == 1_782_864_000_000
    assert parse_timestamp("2026-07-01T02:00:00") == 1_782_864_000_000  # Brussels, CEST
    assert parse_timestamp(12) == 12


def test_usage_errors_exit_with_2(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["publish", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert "no such file" in missing.output
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(dimona_in("u-1")) + "\n")
    bad_time = runner.invoke(cli, ["publish", str(good), "--timestamp", "yesterday"])
    assert bad_time.exit_code == 2
    assert "not an ISO date-time" in bad_time.output
    assert runner.invoke(cli, ["publish", str(good), "--timeout", "-1"]).exit_code == 2
    assert runner.invoke(cli, ["simulate", "--students", "10"]).exit_code == 2
    both = runner.invoke(cli, ["simulate", "--out", str(tmp_path / "x"), "--publish"])
    assert both.exit_code == 2
