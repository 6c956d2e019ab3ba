"""The year-dependent rules (quota table, neutralised quarters) and the calendar helpers."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from quota import DEFAULT_QUOTA_HOURS, Neutralisation, QuotaRules, is_late, period_id_for
from quota.calendar import brussels_date, quarter_end, quarter_of, quarter_start, same_quarter
from quota.rules import DEFAULT_NEUTRALISATIONS
from tests.quota.builders import brussels, utc

# ------------------------------------------------------------------------------ quota table


@pytest.mark.parametrize(
    ("year", "hours"),
    [
        (2017, 475),
        (2018, 475),
        (2019, 475),
        (2020, 475),
        (2021, 475),
        (2022, 475),
        (2023, 600),
        (2024, 600),
        (2025, 650),
        (2026, 650),
        (2030, 650),
    ],
)
def test_default_quota_by_year(year: int, hours: int) -> None:
    assert QuotaRules().quota(year) == hours


def test_years_before_the_hour_quota_fall_back_to_the_earliest_hour_quota() -> None:
    # Up to 2016 the quota counted days, which is not modelled.
    assert QuotaRules().quota(2016) == 475
    assert QuotaRules().quota(2005) == 475


def test_default_table_lists_the_known_years_only() -> None:
    assert dict(DEFAULT_QUOTA_HOURS) == {
        2017: 475,
        2018: 475,
        2019: 475,
        2020: 475,
        2021: 475,
        2022: 475,
        2023: 600,
        2024: 600,
        2025: 650,
    }


def test_with_quota_changes_one_year_and_leaves_the_original_rules_alone() -> None:
    rules = QuotaRules()
    changed = rules.with_quota(2025, 475)
    assert changed.quota(2025) == 475
    assert changed.quota(2024) == 600
    assert rules.quota(2025) == 650
    assert changed.neutralisations == rules.neutralisations
    # A year absent from the table follows the latest earlier entry ("from 2025: ..."),
    # so 2026 follows the changed 2025 value until 2026 gets an entry of its own.
    assert changed.quota(2026) == 475
    assert changed.with_quota(2026, 650).quota(2026) == 650


def test_with_quota_refuses_a_negative_quota() -> None:
    with pytest.raises(ValueError, match="negative"):
        QuotaRules().with_quota(2026, -1)


def test_with_overrides_replaces_several_years() -> None:
    rules = QuotaRules().with_overrides({2023: 500, 2027: 700})
    assert (rules.quota(2022), rules.quota(2023), rules.quota(2024)) == (475, 500, 600)
    assert (rules.quota(2026), rules.quota(2027), rules.quota(2028)) == (650, 700, 700)


# ------------------------------------------------------------------------ neutralisations


def test_a_rule_without_sectors_applies_to_its_quarter_only() -> None:
    rule = Neutralisation(2021, 3)
    assert rule.applies_to(2021, 3, None)
    assert rule.applies_to(2021, 3, "200")
    assert not rule.applies_to(2021, 2, None)
    assert not rule.applies_to(2021, 4, None)
    assert not rule.applies_to(2022, 3, None)


def test_a_sector_rule_applies_to_those_joint_commissions_only() -> None:
    rule = Neutralisation(2021, 1, joint_commissions=frozenset({"318", "330"}))
    assert rule.applies_to(2021, 1, "318")
    assert rule.applies_to(2021, 1, "330")
    assert not rule.applies_to(2021, 1, "200")
    assert not rule.applies_to(2021, 1, None)
    assert not rule.applies_to(2021, 2, "318")


def test_default_neutralisations_of_the_domain() -> None:
    general = [r for r in DEFAULT_NEUTRALISATIONS if r.joint_commissions is None]
    assert sorted((r.year, r.quarter, r.max_hours) for r in general) == [
        (2021, 3, None),
        (2022, 1, 45),
    ]
    sectors = [r for r in DEFAULT_NEUTRALISATIONS if r.joint_commissions is not None]
    # Care and education, Q4 2020 - Q2 2022 (Q3 2021 is neutralised for everyone).
    assert sorted((r.year, r.quarter) for r in sectors) == [
        (2020, 4),
        (2021, 1),
        (2021, 2),
        (2021, 4),
        (2022, 1),
        (2022, 2),
    ]
    assert all(r.max_hours is None for r in sectors)
    assert all("318" in (r.joint_commissions or ()) for r in sectors)


def test_no_default_neutralisation_applies_from_2023_on() -> None:
    sectors = {None, "200", "318", "319", "330", "331", "332", "152", "225"}
    for rule in DEFAULT_NEUTRALISATIONS:
        for year in range(2023, 2031):
            for quarter in (1, 2, 3, 4):
                for sector in sectors:
                    assert not rule.applies_to(year, quarter, sector)


# -------------------------------------------------------------------------------- calendar


@pytest.mark.parametrize(
    ("day", "quarter"),
    [
        (date(2026, 1, 1), 1),
        (date(2026, 3, 31), 1),
        (date(2026, 4, 1), 2),
        (date(2026, 6, 30), 2),
        (date(2026, 7, 1), 3),
        (date(2026, 9, 30), 3),
        (date(2026, 10, 1), 4),
        (date(2026, 12, 31), 4),
    ],
)
def test_quarter_of(day: date, quarter: int) -> None:
    assert quarter_of(day) == quarter


def test_quarter_bounds() -> None:
    assert [(quarter_start(2024, q), quarter_end(2024, q)) for q in (1, 2, 3, 4)] == [
        (date(2024, 1, 1), date(2024, 3, 31)),
        (date(2024, 4, 1), date(2024, 6, 30)),
        (date(2024, 7, 1), date(2024, 9, 30)),
        (date(2024, 10, 1), date(2024, 12, 31)),
    ]


def test_same_quarter() -> None:
    assert same_quarter(date(2026, 7, 1), date(2026, 9, 30))
    assert not same_quarter(date(2026, 6, 30), date(2026, 7, 1))
    # Same quarter number, another year.
    assert not same_quarter(date(2026, 10, 1), date(2027, 10, 1))


def test_brussels_date_follows_summer_and_winter_time() -> None:
    # Summer (UTC+2): 22:30 UTC is already 00:30 the next day in Brussels.
    assert brussels_date(utc(2026, 6, 30, 21, 59)) == date(2026, 6, 30)
    assert brussels_date(utc(2026, 6, 30, 22, 0)) == date(2026, 7, 1)
    # Winter (UTC+1): 22:30 UTC is 23:30 the same day.
    assert brussels_date(utc(2026, 1, 15, 22, 30)) == date(2026, 1, 15)
    assert brussels_date(utc(2026, 1, 15, 23, 0)) == date(2026, 1, 16)


def test_brussels_date_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="time zone"):
        brussels_date(datetime(2026, 7, 1, 12))


def test_is_late_compares_brussels_dates() -> None:
    start = date(2026, 7, 1)
    assert not is_late(start, brussels(date(2026, 6, 30), 23, 59))
    assert not is_late(start, brussels(start, 0, 0))
    assert not is_late(start, brussels(start, 23, 59))
    assert is_late(start, brussels(date(2026, 7, 2), 0, 0))
    # 23:30 UTC the day before is 01:30 on the start day in Brussels: on time.
    assert not is_late(start, utc(2026, 6, 30, 23, 30))
    # In summer 21:30 UTC on the start day is 23:30 in Brussels (on time) but 22:30 UTC is
    # 00:30 the next day (late).
    assert not is_late(start, utc(2026, 7, 1, 21, 30))
    assert is_late(start, utc(2026, 7, 1, 22, 30))
    # In winter 22:30 UTC on the start day is still the start day in Brussels.
    assert not is_late(date(2026, 1, 15), utc(2026, 1, 15, 22, 30))
    assert is_late(date(2026, 1, 15), utc(2026, 1, 15, 23, 0))


def test_period_id_is_stable_per_event_and_distinct_between_events() -> None:
    assert period_id_for("event-1") == period_id_for("event-1")
    assert period_id_for("event-1") != period_id_for("event-2")
