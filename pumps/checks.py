"""Pure clinical checks (no Django): residual discrepancy, titration limit, flex steps.

Each function returns values or raises ``CheckError`` carrying a field name and the
message shown to the user, so the services, the API and the pages word them alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .projection import FlexStep, flex_daily_dose, to_decimal_ml

SPASTICITY_SPINAL = "spinal"

MSG_CONCENTRATION_CHANGE = "a concentration change needs a new program and a bridge bolus"
MSG_AFTER_EMPTY = "refilled after projected empty: assess for withdrawal"
MSG_LESS_THAN_EXPECTED = (
    "less drug than expected remained: suggests over-infusion, a leak or an earlier "
    "pocket fill"
)
MSG_MORE_THAN_EXPECTED = (
    "more drug than expected remained: suggests under-delivery (catheter occlusion or "
    "motor stall): withdrawal risk"
)


class CheckError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DiscrepancyResult:
    expected_residual_ml: Decimal | None
    discrepancy_ml: Decimal | None
    flagged: bool
    meaning: str  # "" when not flagged


def discrepancy_threshold_ml(reservoir_ml: Decimal, *, small: Decimal, large: Decimal) -> Decimal:
    """Maino 2017: 1 mL for reservoirs of 20 mL or less, 2 mL above."""
    return small if reservoir_ml <= 20 else large


def residual_discrepancy(
    *,
    expected_volume: Fraction | None,
    extracted_ml: Decimal | None,
    residual_left_ml: Decimal,
    threshold_ml: Decimal,
) -> DiscrepancyResult:
    """docs/clinical-rules.md §8: expected residual floored at 0; discrepancy = (extracted + left) - expected;
    flagged when its magnitude exceeds the threshold. No expectation (first fill, or no
    program at the previous anchor) means no discrepancy."""
    if expected_volume is None or extracted_ml is None:
        return DiscrepancyResult(None, None, False, "")
    expected = to_decimal_ml(max(expected_volume, Fraction(0)))
    discrepancy = to_decimal_ml(Fraction(extracted_ml) + Fraction(residual_left_ml or 0) - Fraction(expected))
    flagged = abs(discrepancy) > threshold_ml
    meaning = ""
    if flagged:
        meaning = MSG_LESS_THAN_EXPECTED if discrepancy < 0 else MSG_MORE_THAN_EXPECTED
    return DiscrepancyResult(expected, discrepancy, flagged, meaning)


def titration_limit_pct(spasticity_origin: str, *, spinal_pct: Decimal, other_pct: Decimal) -> Decimal:
    """Saulino 2016: +30 % per 24 h for spinal origin, +15 % for cerebral, mixed or unknown."""
    return spinal_pct if spasticity_origin == SPASTICITY_SPINAL else other_pct


def check_titration(
    *, new_daily_mcg: Fraction, old_daily_mcg: Fraction | None, limit_pct: Decimal, override_reason: str
) -> None:
    """``new <= old * (1 + limit)`` passes; no earlier program, no check; an override
    reason lets a larger rise through (it is recorded on the program)."""
    if old_daily_mcg is None or (override_reason or "").strip():
        return
    ceiling = Fraction(old_daily_mcg) * (1 + Fraction(limit_pct) / 100)
    if Fraction(new_daily_mcg) > ceiling:
        raise CheckError(
            "override_reason",
            f"the basal daily dose rises from {_fmt(old_daily_mcg)} to {_fmt(new_daily_mcg)} mcg/day, "
            f"above the titration limit of +{_fmt(limit_pct)} % in 24 h (at most "
            f"{_fmt(ceiling)} mcg/day); give an override reason to proceed",
        )


def _fmt(value: Fraction | Decimal) -> str:
    dec = to_decimal_ml(Fraction(value)).normalize()
    text = f"{dec:f}"
    return text


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_flex_steps(raw: Sequence[dict]) -> tuple[FlexStep, ...]:
    """Validate flex steps given as ``[{"start": "HH:MM", "dose_mcg_per_hour": x}]``:
    HH:MM format, strictly increasing (sorted, no duplicates), non-negative doses."""
    if not isinstance(raw, list | tuple) or not raw:
        raise CheckError("steps", "a flex program needs at least one step")
    steps: list[FlexStep] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise CheckError("steps", f"step {i + 1}: expected an object with start and dose_mcg_per_hour")
        start = item.get("start")
        if not isinstance(start, str) or not _HHMM.match(start):
            raise CheckError("steps", f"step {i + 1}: start must be a time as HH:MM (00:00 to 23:59)")
        try:
            dose = Decimal(str(item.get("dose_mcg_per_hour")))
        except (InvalidOperation, ValueError):
            raise CheckError("steps", f"step {i + 1}: dose_mcg_per_hour must be a number") from None
        if not dose.is_finite() or dose < 0:
            raise CheckError("steps", f"step {i + 1}: dose_mcg_per_hour must be zero or more")
        hh, mm = start.split(":")
        steps.append(FlexStep(time(int(hh), int(mm)), dose))
    starts = [s.start for s in steps]
    if len(set(starts)) != len(starts):
        raise CheckError("steps", "steps have duplicate start times")
    if starts != sorted(starts):
        raise CheckError("steps", "steps must be sorted by start time")
    if flex_daily_dose(steps) <= 0:
        raise CheckError("steps", "a flex program must deliver a positive daily dose")
    return tuple(steps)


def check_flex_daily_dose(steps: Sequence[FlexStep], stated: Decimal | None) -> Decimal:
    """The flex 24-hour total; a stated ``daily_dose_mcg`` must agree with it to 0.001."""
    total = to_decimal_ml(flex_daily_dose(steps))
    if stated is not None and to_decimal_ml(Fraction(stated)) != total:
        raise CheckError(
            "daily_dose_mcg",
            f"daily_dose_mcg {_fmt(stated)} disagrees with the steps, which deliver {_fmt(total)} mcg/day",
        )
    return total
