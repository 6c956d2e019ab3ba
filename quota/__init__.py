"""The pure domain core: quota per year, the ledger, its commands and the balance.

No Kafka, no database and no clock: every instant is a parameter. Everything else in
the project calls these functions.
"""

from __future__ import annotations

from quota.balance import Balance, BalanceTerm, PeriodShare, TermSource, compute_balance
from quota.batch import BatchResult, Outcome, apply_batch, refreshed_balances
from quota.decisions import apply
from quota.ledger import (
    Anomaly,
    AnomalyCode,
    CancelPeriod,
    Command,
    Decision,
    DeclarePeriod,
    Period,
    ReportWages,
    Status,
    StudentLedger,
    Tranche,
    UpdatePeriod,
    WageReport,
    is_late,
    period_id_for,
)
from quota.rules import DEFAULT_QUOTA_HOURS, Neutralisation, QuotaRules

__all__ = [
    "DEFAULT_QUOTA_HOURS",
    "Anomaly",
    "AnomalyCode",
    "Balance",
    "BalanceTerm",
    "BatchResult",
    "CancelPeriod",
    "Command",
    "Decision",
    "DeclarePeriod",
    "Neutralisation",
    "Outcome",
    "Period",
    "PeriodShare",
    "QuotaRules",
    "ReportWages",
    "Status",
    "StudentLedger",
    "TermSource",
    "Tranche",
    "UpdatePeriod",
    "WageReport",
    "apply",
    "apply_batch",
    "compute_balance",
    "is_late",
    "period_id_for",
    "refreshed_balances",
]
