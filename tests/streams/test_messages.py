"""The hand-built balance messages are exactly their contracts: the public one carries
the figures of the year only, the internal one every term (issue 8, item 7)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import orjson

from quota import DeclarePeriod, QuotaRules, ReportWages, StudentLedger, apply, compute_balance
from schemas.answers import BalanceEvent, LedgerEvent
from streams.messages import (
    DOCUMENT_KEYS,
    TERM_KEYS,
    balance_document,
    balance_event_bytes,
    ledger_event_bytes,
    stored_balance_document,
)

WHEN = datetime(2026, 6, 1, 7, tzinfo=UTC)


def _document() -> dict[str, object]:
    ledger = StudentLedger("93051822361")
    rules = QuotaRules()
    apply(
        ledger,
        DeclarePeriod(
            "e1", "0123456749", "0123456749", date(2026, 7, 1), date(2026, 7, 31), 300, WHEN
        ),
        rules,
    )
    apply(
        ledger,
        DeclarePeriod(
            "e2", "0403170701", "0403170701", date(2026, 8, 1), date(2026, 8, 31), 400, WHEN
        ),
        rules,
    )
    apply(ledger, ReportWages("dmfa:1", "0123456749", 2026, 3, 280, 420_000, WHEN), rules)
    return balance_document(compute_balance(ledger, 2026, rules))


def test_the_internal_ledger_message_validates_and_round_trips() -> None:
    raw = ledger_event_bytes(_document(), 3, WHEN)

    event = LedgerEvent.model_validate_json(raw)
    assert event.event_id == "ledger:93051822361:2026:3"
    assert (event.quota, event.used, event.remaining) == (650, 680, 0)
    assert (event.reduced_hours, event.ordinary_hours) == (650, 30)
    assert [(t.employer, t.source, t.hours, t.dmfa_hours) for t in event.terms] == [
        ("0123456749", "dmfa", 280, 280),
        ("0403170701", "planned", 400, None),
    ]
    assert [t.gross_wage_cents for t in event.terms] == [420_000, None]
    assert event.computed_at == WHEN
    # Every field of the contract is present, under its wire name.
    assert json.loads(raw) == event.model_dump(mode="json", by_alias=True)


def test_the_public_balance_message_carries_no_employer_and_no_wage() -> None:
    raw = balance_event_bytes(_document(), 3, WHEN)

    assert json.loads(raw) == {
        "eventId": "balance:93051822361:2026:3",
        "ssin": "93051822361",
        "year": 2026,
        "quota": 650,
        "used": 680,
        "remaining": 0,
        "reducedHours": 650,
        "ordinaryHours": 30,
        "neutralisedHours": 0,
        "lateHours": 0,
        "computedAt": "2026-06-01T07:00:00Z",
    }
    event = BalanceEvent.model_validate_json(raw)
    assert json.loads(raw) == event.model_dump(mode="json", by_alias=True)
    assert b"0123456749" not in raw and b"0403170701" not in raw and b"420000" not in raw


def test_a_stored_document_is_read_back_in_the_order_it_is_written() -> None:
    document = _document()
    assert tuple(document) == DOCUMENT_KEYS
    assert {tuple(term) for term in document["terms"]} == {TERM_KEYS}  # type: ignore[attr-defined]
    # jsonb's own order (shorter keys first), as PostgreSQL returns the document.
    stored = orjson.dumps(
        {
            **dict(sorted(document.items(), key=lambda kv: (len(kv[0]), kv[0]))),
            "terms": [
                dict(sorted(term.items(), key=lambda kv: (len(kv[0]), kv[0])))
                for term in document["terms"]  # type: ignore[attr-defined]
            ],
        }
    ).decode()
    read = stored_balance_document(stored)
    assert ledger_event_bytes(read, 3, WHEN) == ledger_event_bytes(document, 3, WHEN)
    assert balance_event_bytes(read, 3, WHEN) == balance_event_bytes(document, 3, WHEN)


def test_a_key_this_release_does_not_write_is_kept_last() -> None:
    read = stored_balance_document('{"used": 1, "extra": true, "ssin": "x", "terms": []}')
    assert list(read.items()) == [("ssin", "x"), ("used", 1), ("terms", []), ("extra", True)]
