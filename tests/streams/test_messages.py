"""The hand-built balance message is exactly the BalanceEvent contract."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from quota import DeclarePeriod, QuotaRules, ReportWages, StudentLedger, apply, compute_balance
from schemas.answers import BalanceEvent
from streams.messages import balance_document, balance_event_bytes

WHEN = datetime(2026, 6, 1, 7, tzinfo=UTC)


def test_balance_message_validates_and_round_trips() -> None:
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
    document = balance_document(compute_balance(ledger, 2026, rules))
    raw = balance_event_bytes(document, 3, WHEN)

    event = BalanceEvent.model_validate_json(raw)
    assert event.event_id == "balance:93051822361:2026:3"
    assert (event.quota, event.used, event.remaining) == (650, 680, 0)
    assert (event.reduced_hours, event.ordinary_hours) == (650, 30)
    assert [(t.employer, t.source, t.hours, t.dmfa_hours) for t in event.terms] == [
        ("0123456749", "dmfa", 280, 280),
        ("0403170701", "planned", 400, None),
    ]
    assert event.computed_at == WHEN
    # Every field of the contract is present, under its wire name.
    assert json.loads(raw) == event.model_dump(mode="json", by_alias=True)
