"""The rules that change by year: the quota itself and the neutralised periods.

Both are tables rather than code because the legislator changes them, sometimes
retroactively (the 650-hour quota of 2025 was voted in April 2025 for the whole year).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

#: Hours per calendar year (DOMAIN.md section 1). Years before 2017 counted days, which
#: this system does not model; they fall back to the earliest known hour quota.
DEFAULT_QUOTA_HOURS: Mapping[int, int] = {
    **{year: 475 for year in range(2017, 2023)},
    2023: 600,
    2024: 600,
    2025: 650,
}


@dataclass(frozen=True)
class Neutralisation:
    """Hours of a quarter that did not count against the quota.

    ``max_hours`` None means every hour of the quarter; otherwise the first ``max_hours``
    hours of the student's quarter, in order of acceptance across all employers (hours
    an update adds queue where the update was accepted). ``joint_commissions`` limits the
    rule to the hours of declarations of those sectors, each declaration judged on its
    own joint commission (None: every sector).
    """

    year: int
    quarter: int
    max_hours: int | None = None
    joint_commissions: frozenset[str] | None = None

    def applies_to(self, year: int, quarter: int, joint_commission: str | None) -> bool:
        if (self.year, self.quarter) != (year, quarter):
            return False
        if self.joint_commissions is None:
            return True
        return joint_commission is not None and joint_commission in self.joint_commissions


# Care and education sectors neutralised Q4 2020 - Q2 2022. The exact list of joint
# commissions was published per sector; these are the care (318, 319, 330, 331, 332) and
# education (152, 225) commissions and can be replaced through configuration.
_CARE_AND_EDUCATION = frozenset({"318", "319", "330", "331", "332", "152", "225"})

DEFAULT_NEUTRALISATIONS: tuple[Neutralisation, ...] = (
    Neutralisation(2021, 3),
    Neutralisation(2022, 1, max_hours=45),
    *(
        Neutralisation(year, quarter, joint_commissions=_CARE_AND_EDUCATION)
        for year, quarter in [(2020, 4), (2021, 1), (2021, 2), (2021, 4), (2022, 1), (2022, 2)]
    ),
)


#: Months in a row with one employer after which a worker stops being a student for that
#: employer (DOMAIN.md section 1).
STUDENT_MONTHS_IN_A_ROW = 12


@dataclass(frozen=True)
class QuotaRules:
    """Everything year-dependent that the balance computation needs, and the readings of
    the rules that are configurable because the published method leaves them open."""

    quota_hours: Mapping[int, int] = field(default_factory=lambda: dict(DEFAULT_QUOTA_HOURS))
    neutralisations: tuple[Neutralisation, ...] = DEFAULT_NEUTRALISATIONS
    #: The older, literal reading of DOMAIN.md section 3: a DmfA's hours count as
    #: reported, the hours of that employer's late declarations of the quarter included.
    #: False (the rule): late hours stay outside the quota after the DmfA too, so they are
    #: deducted from the DmfA hours (never below 0).
    dmfa_counts_late_hours: bool = False
    #: A declaration whose employer has declared the student for more than this many
    #: months in a row is answered with a warning (``TWELVE_MONTHS_IN_A_ROW``); None: never.
    student_months_in_a_row: int | None = STUDENT_MONTHS_IN_A_ROW

    def quota(self, year: int) -> int:
        """The quota of a year: the table's value, or the nearest earlier year's."""
        if year in self.quota_hours:
            return self.quota_hours[year]
        earlier = [y for y in self.quota_hours if y < year]
        if earlier:
            return self.quota_hours[max(earlier)]
        return self.quota_hours[min(self.quota_hours)]

    def with_quota(self, year: int, hours: int) -> QuotaRules:
        if hours < 0:
            raise ValueError("a quota cannot be negative")
        return replace(self, quota_hours={**self.quota_hours, year: hours})

    def with_overrides(self, overrides: Mapping[int, int]) -> QuotaRules:
        return replace(self, quota_hours={**self.quota_hours, **overrides})
