"""Exact money: US dollars held as integer micro-dollars (1 USD = 1,000,000 micros).

Every amount the platform prices, meters, bills or pays out is an ``int`` of micro-dollars; floats
never carry money. Amounts arrive from people (manifests, API bodies) as decimal strings or JSON
numbers, so :func:`usd_to_micros` converts them exactly or refuses them with a message that says
why, and :func:`micros_to_usd_str` turns micros back into a decimal string for display and JSON.
:class:`UsdDecimal` applies the same rules to pydantic fields; :class:`PricingSpec` is an agent's
price list (the manifest's ``pricing`` section) with its amounts in micros.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

MICROS_PER_USD = 1_000_000
"""Micro-dollars in one US dollar."""

MAX_USD = 10**12
"""Largest accepted magnitude in USD: 10**18 micros still fits a Postgres BIGINT (max about 9.2e18)."""

# A double carries 15 significant decimal digits faithfully (sys.float_info.dig): any decimal literal
# with at most 15 of them parses to a float whose shortest repr is that same literal again. A float
# whose repr needs more digits was not written that way by a person (0.1 + 0.2 -> 0.30000000000000004),
# so it cannot be trusted to mean the amount its author had in mind.
_FLOAT_FAITHFUL_DIGITS = 15
_MAX_TEXT_LENGTH = 64
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")

UsdAmount = Decimal | int | float | str
"""What :func:`usd_to_micros` accepts: a Decimal, an int, a float, or a decimal string such as "0.50"."""


class MoneyError(ValueError):
    """A value that is not an exact, allowed amount of US dollars; the message says what is wrong."""


def usd_to_micros(value: UsdAmount, *, allow_negative: bool = False) -> int:
    """Convert a USD amount to integer micro-dollars, exactly, or raise :class:`MoneyError`.

    Refused: booleans and other types, NaN and infinities, negative amounts (unless
    ``allow_negative``), amounts finer than one micro-dollar (``"0.0000001"``), amounts above
    :data:`MAX_USD`, strings that are not plain decimal notation, and floats whose shortest repr has
    more than 15 significant digits (their decimal meaning is ambiguous; pass a string instead).
    """
    amount = _to_decimal(value)
    if not amount.is_finite():
        raise MoneyError("must be a finite number")
    if amount < 0 and not allow_negative:
        raise MoneyError("must be ≥ 0")
    if abs(amount) > MAX_USD:
        raise MoneyError(f"must be at most {MAX_USD:,} USD")
    # Integer arithmetic on the decimal's own digits: Decimal operations round to the context
    # precision (28 digits), which could silently turn a too-precise amount into an exact-looking one.
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite decimals always have an integer exponent
    coefficient = int("".join(map(str, digits)))
    if coefficient == 0:
        return 0
    shift = exponent + 6
    micros: int
    if shift >= 0:
        micros = coefficient * 10**shift
    else:
        # A non-zero coefficient of n digits cannot be divisible by 10**k for k > n, so the power
        # stays as small as the input is long.
        if -shift > len(digits):
            raise MoneyError("has more than 6 decimal places (finer than one micro-dollar)")
        micros, remainder = divmod(coefficient, 10**-shift)
        if remainder:
            raise MoneyError("has more than 6 decimal places (finer than one micro-dollar)")
    return -micros if sign else micros


def micros_to_usd_str(micros: int) -> str:
    """Format micro-dollars as a decimal USD string with 2 to 6 decimals: ``16_500_000 -> "16.50"``.

    The result round-trips through :func:`usd_to_micros` (with ``allow_negative`` for negatives).
    """
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise TypeError(f"micros must be an int, not {type(micros).__name__}")
    whole, fraction = divmod(abs(micros), MICROS_PER_USD)
    decimals = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{'-' if micros < 0 else ''}{whole}.{decimals}"


def _to_decimal(value: object) -> Decimal:
    """Turn an accepted input into the Decimal its author meant, refusing anything ambiguous."""
    if isinstance(value, bool):  # bool is an int subclass; True is not a price
        raise MoneyError("must be a number or a decimal string, not a boolean")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MoneyError("must be a finite number")
        written = Decimal(repr(value))
        if len(written.normalize().as_tuple().digits) > _FLOAT_FAITHFUL_DIGITS:
            raise MoneyError(
                f"the number {value!r} is not exactly representable as given; "
                'write it as a decimal string such as "0.001"'
            )
        return written
    if isinstance(value, str):
        text = value
        if len(text) > _MAX_TEXT_LENGTH:
            raise MoneyError(f"must be at most {_MAX_TEXT_LENGTH} characters")
        try:
            parsed = Decimal(text)
        except InvalidOperation:
            parsed = None
        if parsed is not None and not parsed.is_finite():
            raise MoneyError("must be a finite number")
        if parsed is None or not _DECIMAL_TEXT.fullmatch(text):
            raise MoneyError(f'must be a decimal amount such as "0.50", not {value!r}')
        return parsed
    raise MoneyError(f"must be a number or a decimal string, not {type(value).__name__}")


class UsdDecimal:
    """Pydantic marker for a non-negative USD amount: ``Annotated[Decimal, UsdDecimal()]``.

    Validates with :func:`usd_to_micros` (so the value is exact to one micro-dollar), holds the
    amount as a canonical Decimal (``Decimal("0.50")``), serialises to JSON as a decimal string,
    and publishes a JSON Schema accepting a decimal string or a number.
    """

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def parse(value: Any) -> Decimal:
            try:
                return Decimal(micros_to_usd_str(usd_to_micros(value)))
            except MoneyError as error:
                raise PydanticCustomError("usd_amount", "{message}", {"message": str(error)}) from None

        def as_text(value: Decimal) -> str:
            return micros_to_usd_str(usd_to_micros(value))

        return core_schema.no_info_plain_validator_function(
            parse, serialization=core_schema.plain_serializer_function_ser_schema(as_text, when_used="json")
        )

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,6}0*)?$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "US dollars, exact to one micro-dollar (at most 6 decimal places)",
        }


Usd = Annotated[Decimal, UsdDecimal()]
"""A non-negative USD amount field, exact to one micro-dollar."""


class PricingModel(StrEnum):
    """Catalog summary of a price list (SPEC §3 filter ``pricing_model``)."""

    FREE = "free"
    USAGE = "usage"
    SUBSCRIPTION = "subscription"
    HYBRID = "hybrid"


class PricingSpec(BaseModel):
    """An agent's price list (manifest ``pricing``), in USD exact to one micro-dollar."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_usd: Usd
    """Charged once per run."""
    per_record_usd: Usd
    """Charged per record processed."""
    per_cpu_hour_usd: Usd
    """Charged per CPU-hour consumed."""
    subscription_monthly_usd: Usd | None = None
    """Monthly fee while installed, if any."""

    @property
    def base_micros(self) -> int:
        """``base_usd`` in micro-dollars."""
        return usd_to_micros(self.base_usd)

    @property
    def per_record_micros(self) -> int:
        """``per_record_usd`` in micro-dollars."""
        return usd_to_micros(self.per_record_usd)

    @property
    def per_cpu_hour_micros(self) -> int:
        """``per_cpu_hour_usd`` in micro-dollars."""
        return usd_to_micros(self.per_cpu_hour_usd)

    @property
    def subscription_monthly_micros(self) -> int:
        """``subscription_monthly_usd`` in micro-dollars (0 without a subscription)."""
        return usd_to_micros(self.subscription_monthly_usd or 0)

    @property
    def pricing_model(self) -> PricingModel:
        """free, usage (per run), subscription, or hybrid (both)."""
        usage = any((self.base_micros, self.per_record_micros, self.per_cpu_hour_micros))
        subscription = self.subscription_monthly_micros > 0
        if usage and subscription:
            return PricingModel.HYBRID
        if subscription:
            return PricingModel.SUBSCRIPTION
        return PricingModel.USAGE if usage else PricingModel.FREE
