"""Metering and the 80/20 split (pure functions of shared.billing)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing import Outcome, meter, split
from shared.kernel.money import PricingSpec, usd_to_micros

EXAMPLE = PricingSpec(base_usd=Decimal("0.50"), per_record_usd=Decimal("0.001"), per_cpu_hour_usd=Decimal("0.50"))


def test_the_architecture_documents_example():
    charge = meter(EXAMPLE, Outcome.SUCCEEDED, records=15_000, cpu_ms=2 * 3_600_000)
    assert charge.total_micros == usd_to_micros("16.50")
    assert charge.developer_micros == usd_to_micros("13.20")
    assert charge.platform_micros == usd_to_micros("3.30")
    assert (charge.base_micros, charge.records_micros, charge.cpu_micros) == (500_000, 15_000_000, 1_000_000)


@pytest.mark.parametrize(("outcome", "expected"), [
    (Outcome.SUCCEEDED, 16_500_000),  # the full price
    (Outcome.FAILED, 16_000_000),  # the agent's error or timeout: what it used, no base fee
    (Outcome.CANCELLED, 16_000_000),  # stopped while running: what it used
    (Outcome.NOT_STARTED, 0),
    (Outcome.PLATFORM_FAILURE, 0),
])
def test_which_outcomes_are_charged(outcome, expected):
    assert meter(EXAMPLE, outcome, records=15_000, cpu_ms=7_200_000).total_micros == expected


def test_a_cap_limits_the_charge_and_says_so():
    charge = meter(EXAMPLE, Outcome.SUCCEEDED, records=15_000, cpu_ms=7_200_000, cap_micros=10_000_000)
    assert charge.capped and charge.total_micros == 10_000_000
    assert (charge.developer_micros, charge.platform_micros) == (8_000_000, 2_000_000)
    assert not meter(EXAMPLE, Outcome.SUCCEEDED, records=1, cpu_ms=0, cap_micros=10_000_000).capped


def test_cpu_is_rounded_down_to_the_customers_favour():
    pricing = PricingSpec(base_usd=Decimal(0), per_record_usd=Decimal(0), per_cpu_hour_usd=Decimal("1"))
    assert meter(pricing, Outcome.SUCCEEDED, records=0, cpu_ms=1).total_micros == 0  # 0.277… micro-dollars
    assert meter(pricing, Outcome.SUCCEEDED, records=0, cpu_ms=3_600).total_micros == 1_000


def test_negative_usage_is_refused():
    with pytest.raises(ValueError, match="never negative"):
        meter(EXAMPLE, Outcome.SUCCEEDED, records=-1, cpu_ms=0)
    with pytest.raises(ValueError, match="never negative"):
        split(-1)


@given(st.integers(min_value=0, max_value=10**18))
def test_the_split_is_exact_and_the_remainder_goes_to_the_platform(total):
    developer, platform = split(total)
    assert developer + platform == total
    assert developer == total * 80 // 100  # the developer's 80 %, rounded down
    # The platform's 20 % plus less than one micro-dollar, in integers (floats lose it above 2**53).
    assert 0 <= platform * 100 - total * 20 < 100


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**7),
       st.integers(0, 10**9), st.sampled_from(list(Outcome)), st.none() | st.integers(1, 10**9))
def test_a_charge_is_its_parts_capped(base, per_record, per_hour, records, cpu_ms, outcome, cap):
    pricing = PricingSpec(base_usd=Decimal(base) / 10**6, per_record_usd=Decimal(per_record) / 10**6,
                          per_cpu_hour_usd=Decimal(per_hour) / 10**6)
    charge = meter(pricing, outcome, records=records, cpu_ms=cpu_ms, cap_micros=cap)
    parts = charge.base_micros + charge.records_micros + charge.cpu_micros
    assert charge.total_micros == (parts if cap is None else min(parts, cap))
    assert charge.capped == (cap is not None and parts > cap)
    assert charge.developer_micros + charge.platform_micros == charge.total_micros
