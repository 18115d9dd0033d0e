"""Billing's models: how a run is metered and split, and what the usage API shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from shared.identity import StrictModel
from shared.kernel.money import PricingSpec, Usd, micros_to_usd_str

DEVELOPER_SHARE_PERCENT = 80
"""The developer's share of a run's charge; the platform keeps the rest (docs/BILLING.md)."""

CPU_MS_PER_HOUR = 3_600_000

MICROS_PER_CENT = 10_000
PAYOUT_MINIMUM_MICROS = 100_000_000
"""A developer is paid out once their balance reaches 100 USD; smaller balances carry over."""

ALERT_PERCENTS = (50, 80, 100)
"""Budget thresholds announced (``billing.budget_threshold``), each once per month."""

PLATFORM_ACCOUNT = "platform:revenue"
STRIPE_CLEARING_ACCOUNT = "stripe:clearing"


def customer_account(org_id: str) -> str:
    """What ``org_id`` owes the platform for its usage (a debit balance)."""
    return f"customer:{org_id}"


def developer_account(org_id: str) -> str:
    """What the platform owes developer org ``org_id`` (a credit balance: negative sums)."""
    return f"developer:{org_id}"


def payouts_account(org_id: str) -> str:
    """What has been transferred to developer org ``org_id``'s Stripe Connect account."""
    return f"payouts:{org_id}"


class Outcome(StrEnum):
    """How a run ended, as billing sees it (docs/BILLING.md, "What is charged")."""

    SUCCEEDED = "succeeded"  # the full price: base + records + CPU
    FAILED = "failed"  # the agent's error or its timeout: records and CPU used, no base fee
    CANCELLED = "cancelled"  # stopped while running (by a user, the kill switch or a cap): records and CPU used
    NOT_STARTED = "not_started"  # cancelled before it started: nothing
    PLATFORM_FAILURE = "platform_failure"  # the platform gave up (retries exhausted, worker lost): nothing


CHARGES_BASE = frozenset({Outcome.SUCCEEDED})
CHARGES_USAGE = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED})


def split(total_micros: int) -> tuple[int, int]:
    """(developer share, platform fee) of a charge, exact to the micro-dollar.

    The developer gets 80 % rounded down to the micro-dollar; the platform gets the rest, so the
    remainder of the division (at most 0.8 of a micro-dollar) always goes to the platform and the
    two parts always add up to the charge.
    """
    if total_micros < 0:
        raise ValueError("a charge is never negative")
    developer = total_micros * DEVELOPER_SHARE_PERCENT // 100
    return developer, total_micros - developer


def cpu_ms_of(cpu_seconds: float) -> int:
    """CPU time as whole milliseconds (to the nearest), the unit it is metered in."""
    return max(0, round(cpu_seconds * 1000))


@dataclass(frozen=True, slots=True)
class Charge:
    """A run's metered charge, in micro-dollars."""

    outcome: Outcome
    records: int
    cpu_ms: int
    base_micros: int
    records_micros: int
    cpu_micros: int
    capped: bool
    total_micros: int
    developer_micros: int
    platform_micros: int


@dataclass(frozen=True, slots=True)
class MeteredRun:
    """A run's usage row as metered: what it used, what it was charged and how it was split."""

    run_id: str
    org_id: str
    agent_id: str
    version: str
    developer_org_id: str | None
    outcome: str
    records: int
    cpu_ms: int
    base_micros: int
    records_micros: int
    cpu_micros: int
    capped: bool
    charge_micros: int
    developer_micros: int
    platform_micros: int
    period: date
    charged_at: datetime


@dataclass(frozen=True, slots=True)
class TransactionSum:
    """A ledger transaction with the sum and count of its entries (a sum is 0 unless the ledger is broken)."""

    id: str
    kind: str
    total: int
    entries: int


@dataclass(frozen=True, slots=True)
class SubscriptionFee:
    """A deployment's subscription fee for one month: the active days charged, and the split."""

    deployment_id: str
    period: date
    agent_id: str
    version: str
    active_days: int
    period_days: int
    monthly_micros: int
    charge_micros: int
    developer_micros: int
    platform_micros: int
    transaction_id: str


def meter(pricing: PricingSpec, outcome: Outcome, *, records: int, cpu_ms: int, cap_micros: int | None = None
          ) -> Charge:
    """The charge for a run: ``base_usd`` + ``per_record_usd`` * records + ``per_cpu_hour_usd`` *
    CPU-hours, each part charged only for the outcomes that carry it, at most ``cap_micros``.

    CPU is priced per millisecond, rounded down (never more than the price list says).
    """
    if records < 0 or cpu_ms < 0:
        raise ValueError("records and CPU time are never negative")
    base = pricing.base_micros if outcome in CHARGES_BASE else 0
    usage = outcome in CHARGES_USAGE
    per_records = pricing.per_record_micros * records if usage else 0
    per_cpu = pricing.per_cpu_hour_micros * cpu_ms // CPU_MS_PER_HOUR if usage else 0
    total = base + per_records + per_cpu
    capped = cap_micros is not None and total > cap_micros
    if capped:
        assert cap_micros is not None
        total = cap_micros
    developer, platform = split(total)
    return Charge(outcome=outcome, records=records, cpu_ms=cpu_ms, base_micros=base, records_micros=per_records,
                  cpu_micros=per_cpu, capped=capped, total_micros=total, developer_micros=developer,
                  platform_micros=platform)


def period_of(moment: datetime | date) -> date:
    """The billing period (a calendar month, UTC) a moment falls in, as its first day."""
    return date(moment.year, moment.month, 1)


class RunUsageOut(BaseModel):
    """One run's metering and charge, as the org sees it."""

    run_id: str
    agent_id: str
    version: str
    outcome: str
    records: int
    cpu_seconds: float
    charge_usd: str = Field(description="What the run was charged (USD, exact decimal string)")
    charge_micros: int
    capped: bool
    charged_at: datetime
    refunded_usd: str = Field(default="0.00", description="Refunded of the charge so far (USD)")
    refunded_micros: int = 0


class AgentUsageOut(BaseModel):
    agent_id: str
    runs: int
    records: int
    cpu_seconds: float
    charge_usd: str
    charge_micros: int


class DayUsageOut(BaseModel):
    day: date
    runs: int
    charge_usd: str
    charge_micros: int


class UsageOut(BaseModel):
    """An org's usage over a period: totals, per agent, per day, and each run's charge."""

    org_id: str
    period_start: date
    period_end: date
    runs: int
    records: int
    cpu_seconds: float
    total_usd: str
    total_micros: int
    refunded_usd: str = Field(default="0.00", description="Refunded of this month's runs' charges (USD)")
    refunded_micros: int = 0
    budget_usd: str | None
    reserved_usd: str
    by_agent: list[AgentUsageOut]
    by_day: list[DayUsageOut]
    items: list[RunUsageOut] = Field(description="The period's runs, newest first, at most `limit`")
    items_truncated: bool = Field(description="Whether the period has more runs than `items` shows "
                                              "(the totals always count them all)")


class UsageQuery(BaseModel):
    """``GET /orgs/{org_id}/usage``: a month (``YYYY-MM``, UTC; default the current one)."""

    period: str | None = Field(default=None, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    limit: int = Field(default=100, ge=1, le=1000)

    def start_date(self) -> date:
        """The first day of the month asked for."""
        if self.period is None:
            return period_of(datetime.now(UTC))
        year, month = self.period.split("-")
        return date(int(year), int(month), 1)

    @field_validator("period")
    @classmethod
    def _in_range(cls, value: str | None) -> str | None:
        if value is not None and not 2000 <= int(value[:4]) <= 9999:
            raise ValueError("the year must be between 2000 and 9999")
        return value


class BillingLimitsIn(StrictModel):
    """An org's spend limits (absent or null: none)."""

    monthly_budget_usd: Usd | None = None
    default_run_cap_usd: Usd | None = Field(default=None, description="The maximum charge of a run that "
                                                                       "names none (must be > 0)")

    @field_validator("default_run_cap_usd")
    @classmethod
    def _positive(cls, value: object) -> object:
        if value is not None and value == 0:
            raise ValueError("a default run cap must be more than 0")
        return value


class BillingLimitsOut(BaseModel):
    org_id: str
    monthly_budget_usd: str | None
    default_run_cap_usd: str | None
    frozen: bool
    frozen_reason: str | None
    charged_this_month_usd: str
    reserved_usd: str = Field(description="Held by running runs' maximum charges")


class RefundIn(StrictModel):
    """``POST /admin/runs/{run_id}/refund``: how much of a run's charge to give back."""

    amount_usd: Usd | None = Field(default=None, description="The amount to refund (USD, > 0); absent: all "
                                                             "that is left of the charge")
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("amount_usd")
    @classmethod
    def _positive(cls, value: object) -> object:
        if value is not None and value == 0:
            raise ValueError("a refund must be more than 0")
        return value


class RefundOut(BaseModel):
    """A refund of (part of) a run's charge, and where the run's charge stands after it."""

    id: str
    run_id: str
    org_id: str
    amount_usd: str
    amount_micros: int
    developer_micros: int = Field(description="Taken back from the developer's balance")
    platform_micros: int = Field(description="Given back from the platform's fee")
    charge_micros: int = Field(description="The run's charge")
    refunded_micros: int = Field(description="Refunded of the charge in total, this refund included")
    transaction_id: str
    reason: str
    created_by: str
    created_at: datetime


def refund_split(charge: int, developer: int, refunded_before: int, amount: int,
                 developer_before: int) -> tuple[int, int]:
    """(developer part, platform part) of a refund of ``amount`` micro-dollars of a charge whose
    developer share was ``developer``, after refunds totalling ``refunded_before`` of which
    ``developer_before`` came from the developer.

    Cumulative, so partial refunds never drift: after refunds totalling R the developer has given
    back floor(R * developer / charge), and a refund of the whole charge gives back exactly the
    developer's share and the platform's fee. Each part is never negative and never more than
    what is left of its share.
    """
    if amount <= 0 or refunded_before + amount > charge:
        raise ValueError("a refund is more than 0 and never passes the charge")
    back = (refunded_before + amount) * developer // charge - developer_before
    return back, amount - back


class FreezeIn(StrictModel):
    reason: str = Field(default="frozen by an admin", min_length=1, max_length=500)


class UsageReportIn(StrictModel):
    """A runner's usage heartbeat: what the run has used so far (measured by the runner)."""

    lease_token: str = Field(min_length=1, max_length=200)
    records_processed: int = Field(ge=0, le=10**12)
    cpu_seconds: float = Field(ge=0, le=10**9)


class UsageReportOut(BaseModel):
    charge_so_far_usd: str
    cap_usd: str | None
    stop: bool = Field(description="The run reached its maximum charge: stop it now")


def usd(micros: int) -> str:
    """Micro-dollars as the API's decimal USD string."""
    return micros_to_usd_str(micros)


def micros_to_cents(micros: int) -> int:
    """Whole cents for the payment provider: to the nearest cent, halves up (only invoices use cents)."""
    return (micros + 5_000) // 10_000


class InvoiceLineOut(BaseModel):
    line_no: int
    kind: str = Field(description="usage (the month's runs of an agent), adjustment (late usage of an "
                                  "earlier month), subscription, or refund (a credit: refunds made that "
                                  "month, a negative amount)")
    agent_id: str | None
    usage_period: date | None
    runs: int
    description: str
    amount_usd: str
    amount_micros: int
    amount_cents: int = Field(description="What the Stripe invoice item says (rounded to the cent)")


class InvoiceOut(BaseModel):
    id: str
    org_id: str
    period: date
    status: str = Field(description="draft (not sent: see note), open (finalized at Stripe), paid, "
                                    "payment_failed, void")
    total_usd: str
    total_micros: int
    total_cents: int
    stripe_invoice_id: str | None
    note: str | None
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    payment_failed_at: datetime | None
    lines: list[InvoiceLineOut] | None = Field(default=None, description="Only when one invoice is read")


class InvoiceList(BaseModel):
    items: list[InvoiceOut]


class WebhookReceipt(BaseModel):
    event_id: str
    type: str
    handled: bool
    duplicate: bool


class MonthEarningsOut(BaseModel):
    agent_id: str
    period: date
    runs: int
    gross_usd: str
    developer_share_usd: str
    platform_fee_usd: str
    gross_micros: int
    developer_share_micros: int
    platform_fee_micros: int
    refunded_usd: str = Field(default="0.00", description="Refunded since of this month's charges (gross)")
    refunded_micros: int = 0
    developer_refunded_usd: str = Field(default="0.00", description="Of which taken back from the developer")
    developer_refunded_micros: int = 0


class EarningsOut(BaseModel):
    org_id: str
    balance_usd: str = Field(description="Owed to the developer now (earnings less refunds less payouts; "
                                         "negative after a refund of paid-out earnings)")
    payout_minimum_usd: str
    items: list[MonthEarningsOut]


class PayoutOut(BaseModel):
    id: str
    period: date
    amount_usd: str
    amount_micros: int
    amount_cents: int
    status: str
    stripe_transfer_id: str | None
    error: str | None
    created_at: datetime
    paid_at: datetime | None


class PayoutList(BaseModel):
    balance_usd: str
    items: list[PayoutOut]


class OnboardingIn(StrictModel):
    refresh_url: AnyHttpUrl = Field(description="Where Stripe sends the developer if the link expired")
    return_url: AnyHttpUrl = Field(description="Where Stripe sends the developer when onboarding is done")


class OnboardingOut(BaseModel):
    stripe_account_id: str
    onboarding_url: str
