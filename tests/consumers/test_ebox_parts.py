"""The eBox consumer's pure parts: validation of deliveries, retention dates, file names."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import pytest

from consumers.ebox import Rejection, parse, safe_file_name
from db.ebox import add_months_clamped, document_id
from streams.processor import RawRecord
from tests.support import STUDENT

PDF = b"%PDF-1.4\n%tiny\n%%EOF\n"


def record(**changes: Any) -> RawRecord:
    body: dict[str, Any] = {
        "eventId": "e1",
        "attestationId": "a1",
        "ssin": STUDENT,
        "year": 2026,
        "title": "Attestation 2026",
        "fileName": "attestation-2026.pdf",
        "pdfBase64": base64.b64encode(PDF).decode(),
        "issuedAt": "2026-11-26T10:00:00+01:00",
        **changes,
    }
    return RawRecord("ebox.deliveries", 0, 7, None, STUDENT.encode(), json.dumps(body).encode())


@pytest.mark.parametrize(
    ("delivered", "months", "until"),
    [
        (date(2026, 11, 26), 2, date(2027, 1, 26)),
        (date(2026, 12, 31), 2, date(2027, 2, 28)),
        (date(2027, 12, 31), 2, date(2028, 2, 29)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
    ],
)
def test_retention_ends_on_the_same_day_or_the_month_end(
    delivered: date, months: int, until: date
) -> None:
    assert add_months_clamped(delivered, months) == until


def test_a_valid_delivery_parses_to_its_exact_bytes() -> None:
    parsed = parse(record(ssin="93.05.18-223.61"))
    assert not isinstance(parsed, Rejection)
    assert parsed.content == PDF
    assert parsed.ssin == STUDENT
    assert parsed.id == document_id("e1")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ssin": "93051822362"}, "ssin"),
        ({"pdfBase64": "not base64!"}, "base64"),
        ({"pdfBase64": base64.b64encode(b"<html>").decode()}, "not a PDF"),
        ({"contentType": "text/html"}, "contentType"),
        ({"eventId": ""}, "eventId"),
        ({"title": "  "}, "title"),
        ({"year": 1999}, "year"),
        ({"issuedAt": "yesterday"}, "issuedAt"),
    ],
)
def test_invalid_deliveries_say_why(changes: dict[str, Any], reason: str) -> None:
    parsed = parse(record(**changes))
    assert isinstance(parsed, Rejection)
    assert reason in parsed.reason


def test_file_names_cannot_break_the_header_or_escape() -> None:
    assert safe_file_name('../../etc/x"; evil=1', 2026) == "x-evil-1.pdf"
    assert safe_file_name("", 2026) == "attestation-2026.pdf"
    assert safe_file_name("Attestation 2026.PDF", 2026) == "Attestation-2026.PDF"
