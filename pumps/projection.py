"""Reservoir projection: anchor -> consumption -> instants -> due date -> status.

Pure Python (no Django, no clock): every function takes the instant ``at`` it is asked
about, so tests and the sweep can ask about any moment. Inputs are ``Decimal`` volumes and
doses and timezone-aware datetimes; arithmetic inside is exact (``Fraction``), because a
volume crossing computed in binary or rounded decimal can land one minute late, and for
this product one minute late is the unsafe direction.

Time rules (docs/clinical-rules.md §1, §4):
- elapsed time is real time: a day of delivery is 24 hours of UTC time, also across
  daylight-saving changes; we never add a timedelta to a local wall-clock time;
- calendar dates (due dates, "today") are local dates in the clinic's zone;
- flex steps start at local wall-clock times: the step in force at an instant is the one
  whose start is the latest at or before that instant's local wall-clock time. A step
  whose start falls in a skipped hour therefore begins when the clock jumps past it, and
  steps in a repeated hour run twice.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

HORIZON_DAYS = 730
DAY = timedelta(days=1)
_US_PER_DAY = 86_400 * 1_000_000
_US_PER_HOUR = 3_600 * 1_000_000
MILLILITRE_QUANTUM = Decimal("0.001")

STATUS_INACTIVE = "inactive"
STATUS_INCOMPLETE = "incomplete"
STATUS_EMPTY = "empty"
STATUS_ALARM = "alarm"
STATUS_OVERDUE = "overdue"
STATUS_DUE_SOON = "due_soon"
STATUS_OK = "ok"
#: Most urgent first; the order of docs/clinical-rules.md §7 and of the worklist.
STATUSES = (
    STATUS_EMPTY,
    STATUS_ALARM,
    STATUS_OVERDUE,
    STATUS_DUE_SOON,
    STATUS_OK,
    STATUS_INCOMPLETE,
    STATUS_INACTIVE,
)

MODE_CONTINUOUS = "continuous"
MODE_FLEX = "flex"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class FlexStep:
    """A flex-dosing step: from local wall-clock ``start`` on, ``dose_mcg_per_hour``."""

    start: time
    dose_mcg_per_hour: Decimal


@dataclass(frozen=True)
class ProgramData:
    effective_at: datetime
    concentration_mcg_per_ml: Decimal
    mode: str = MODE_CONTINUOUS
    daily_dose_mcg: Decimal | None = None  # continuous
    steps: tuple[FlexStep, ...] = ()  # flex, sorted by start
    bolus_mcg: Decimal | None = None
    bolus_max_per_day: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "effective_at", _utc(self.effective_at, "effective_at"))

    def basal_daily_dose_mcg(self) -> Fraction:
        """The programmed basal dose of one nominal 24-hour day (boluses excluded)."""
        if self.mode == MODE_FLEX:
            return flex_daily_dose(self.steps)
        return Fraction(self.daily_dose_mcg or 0)

    def bolus_daily_volume_ml(self) -> Fraction:
        if not self.bolus_mcg or not self.bolus_max_per_day:
            return Fraction(0)
        return Fraction(self.bolus_mcg) * self.bolus_max_per_day / Fraction(self.concentration_mcg_per_ml)

    def daily_volume_ml(self) -> Fraction:
        """Expected mL per nominal day (a flex program's 24-hour total)."""
        return self.basal_daily_dose_mcg() / Fraction(self.concentration_mcg_per_ml)

    def worst_case_daily_volume_ml(self) -> Fraction:
        return self.daily_volume_ml() + self.bolus_daily_volume_ml()


@dataclass(frozen=True)
class RefillData:
    performed_at: datetime
    added_volume_ml: Decimal
    residual_left_ml: Decimal = Decimal(0)
    bridge_bolus_ml: Decimal = Decimal(0)
    stability_days: int = 180

    def __post_init__(self) -> None:
        object.__setattr__(self, "performed_at", _utc(self.performed_at, "performed_at"))

    @property
    def at(self) -> datetime:
        return self.performed_at

    def anchor_volume(self) -> Fraction:
        return (
            Fraction(self.residual_left_ml or 0)
            + Fraction(self.added_volume_ml)
            - Fraction(self.bridge_bolus_ml or 0)
        )


@dataclass(frozen=True)
class ReadingData:
    read_at: datetime
    reservoir_volume_ml: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_at", _utc(self.read_at, "read_at"))

    @property
    def at(self) -> datetime:
        return self.read_at


@dataclass(frozen=True)
class Policy:
    lead_days: int = 7
    high_risk_extra_days: int = 7
    due_soon_days: int = 14
    open_weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0
    closures: frozenset[date] = frozenset()
    withdrawal_window_hours: int = 72


@dataclass(frozen=True)
class PumpState:
    """Everything about the pump and patient that the projection needs."""

    tz: tzinfo
    alarm_volume_ml: Decimal
    high_risk: bool = False
    active: bool = True  # implanted and patient active


# -------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Projection:
    at: datetime
    status: str
    anchor_at: datetime | None = None
    anchor_volume_ml: Decimal | None = None
    reservoir_volume_ml: Decimal | None = None  # expected, floored at 0
    worst_case_volume_ml: Decimal | None = None  # worst case, floored at 0
    daily_volume_ml: Decimal | None = None
    worst_case_daily_volume_ml: Decimal | None = None
    low_reservoir_alarm_at: datetime | None = None  # worst case
    empty_at: datetime | None = None  # worst case
    expected_low_reservoir_alarm_at: datetime | None = None
    expected_empty_at: datetime | None = None
    drug_expires_at: datetime | None = None
    refill_due_on: date | None = None
    tz: tzinfo = field(default=UTC, repr=False, compare=False)

    @property
    def days_to_due(self) -> int | None:
        if self.refill_due_on is None:
            return None
        return (self.refill_due_on - local_date(self.at, self.tz)).days


# ----------------------------------------------------------------------- utilities


def to_decimal_ml(value: Fraction | Decimal | int) -> Decimal:
    """Round a volume half-up to 0.001 mL (the stored and returned precision)."""
    frac = value if type(value) is Fraction else Fraction(value)
    return _ratio_to_decimal_ml(frac.numerator, frac.denominator)


def _ratio_to_decimal_ml(n: int, d: int) -> Decimal:
    """``to_decimal_ml`` of ``n / d`` mL (``d`` > 0, the ratio in any terms)."""
    # Exact half-up (away from zero) on the rational itself: dividing as Decimals first
    # would round at 28 digits and could round a second time here.
    whole = (2000 * abs(n) + d) // (2 * d)  # floor(|x| * 1000 + 1/2), in integers
    if n < 0:
        whole = -whole
    return Decimal(whole).scaleb(-3).quantize(MILLILITRE_QUANTUM, rounding=ROUND_HALF_UP)


def _require_aware(moment: datetime, name: str = "at") -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _utc(moment: datetime, name: str) -> datetime:
    """Instants are held in UTC so that adding a timedelta adds real elapsed time (an aware
    datetime in a local zone would add wall-clock time across a DST change)."""
    _require_aware(moment, name)
    return moment.astimezone(UTC)


def floor_minute(moment: datetime) -> datetime:
    """Round an instant down to the whole UTC minute (earlier is safer)."""
    moment = moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


def local_date(moment: datetime, tz: tzinfo) -> date:
    return moment.astimezone(tz).date()


def start_of_local_day(day: date, tz: tzinfo) -> datetime:
    """The first instant whose local date is ``day``.

    ``fold=0`` maps a nonexistent local midnight (a zone that springs forward at 00:00)
    to the offset before the change, which is exactly the transition instant, and picks the
    first of two midnights when midnight repeats.
    """
    return datetime.combine(day, time(0), tzinfo=tz).replace(fold=0).astimezone(UTC)


def flex_daily_dose(steps: Sequence[FlexStep]) -> Fraction:
    """mcg delivered by cyclic flex steps over a nominal 24-hour day."""
    if not steps:
        return Fraction(0)
    minutes = [s.start.hour * 60 + s.start.minute for s in steps]
    total = Fraction(0)
    for i, step in enumerate(steps):
        end = minutes[i + 1] if i + 1 < len(steps) else minutes[0] + 1440
        total += Fraction(step.dose_mcg_per_hour) * Fraction(end - minutes[i], 60)
    return total


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --------------------------------------------------------------- rate segments


@dataclass(frozen=True)
class _Segment:
    start: datetime  # UTC
    end: datetime  # UTC
    expected_ml_per_us: Fraction
    worst_ml_per_us: Fraction


def _offset_intervals(
    tz: tzinfo, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime, timedelta]]:
    """Split [start, end) (UTC) into intervals of constant UTC offset in ``tz``.

    Offsets are sampled once per day and a change is located to the second by bisection;
    no zone changes its offset twice within one day.
    """
    cursor = start
    offset = cursor.astimezone(tz).utcoffset()
    while cursor < end:
        probe = min(cursor + DAY, end)
        if probe.astimezone(tz).utcoffset() == offset:
            yield cursor, probe, offset
            cursor = probe
            continue
        # Offsets change on whole seconds: search whole seconds from the cursor's second.
        base = cursor.replace(microsecond=0)
        lo, hi = 0, math.ceil((probe - base).total_seconds())  # offset(lo) same, offset(hi) not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (base + timedelta(seconds=mid)).astimezone(tz).utcoffset() == offset:
                lo = mid
            else:
                hi = mid
        change = base + timedelta(seconds=hi)
        yield cursor, change, offset
        cursor = change
        offset = change.astimezone(tz).utcoffset()


def _flex_segments(
    program: ProgramData, tz: tzinfo, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime, Fraction]]:
    """Constant-rate pieces (UTC start, UTC end, mL per microsecond) of a flex program."""
    conc = Fraction(program.concentration_mcg_per_ml)
    starts = [s.start.hour * 60 + s.start.minute for s in program.steps]
    rates = [Fraction(s.dose_mcg_per_hour) / conc / _US_PER_HOUR for s in program.steps]
    for a, b, offset in _offset_intervals(tz, start, end):
        # Within [a, b) the local wall clock is UTC + offset: continuous and monotonic, so
        # step boundaries are plain wall-clock times. At a daylight-saving change a new
        # interval begins and the step in force is re-read from the new wall clock.
        naive = (a + offset).replace(tzinfo=None)
        naive_end = (b + offset).replace(tzinfo=None)
        while naive < naive_end:
            minute = naive.hour * 60 + naive.minute
            pos = bisect.bisect_right(starts, minute)
            if pos == 0:  # before the first start of the day: yesterday's last step
                idx, boundary_minute = len(starts) - 1, starts[0]
            else:
                idx = pos - 1
                boundary_minute = starts[pos] if pos < len(starts) else starts[0] + 1440
            boundary = datetime.combine(naive.date(), time(0)) + timedelta(minutes=boundary_minute)
            piece_end = min(boundary, naive_end)
            yield (naive - offset).replace(tzinfo=UTC), (piece_end - offset).replace(tzinfo=UTC), rates[idx]
            naive = piece_end


def _segments(programs: Sequence[ProgramData], tz: tzinfo, t0: datetime, horizon: datetime) -> Iterator[_Segment]:
    """Consumption-rate segments from ``t0`` to ``horizon`` across program changes."""
    in_force = [p for p in programs if p.effective_at <= t0]
    later = [p for p in programs if p.effective_at > t0]
    if not in_force:
        return
    chain = [(t0, in_force[-1])] + [(p.effective_at, p) for p in later]
    for i, (begin, program) in enumerate(chain):
        end = chain[i + 1][0] if i + 1 < len(chain) else horizon
        end = min(end, horizon)
        if end <= begin:
            continue
        bolus = program.bolus_daily_volume_ml() / _US_PER_DAY
        if program.mode == MODE_FLEX:
            for a, b, rate in _flex_segments(program, tz, begin, end):
                yield _Segment(a, b, rate, rate + bolus)
        else:
            rate = program.daily_volume_ml() / _US_PER_DAY
            yield _Segment(begin, end, rate, rate + bolus)


def _crossings(
    segments: Iterable[_Segment], v0: Fraction, thresholds: dict[str, Fraction], worst: bool, t0: datetime
) -> dict[str, datetime | None]:
    """First instant at which the volume falls to or below each threshold."""
    found: dict[str, datetime | None] = {}
    pending = dict(thresholds)
    for name, limit in list(pending.items()):
        if v0 <= limit:
            found[name] = t0
            del pending[name]
    volume = v0
    for seg in segments:
        if not pending:
            break
        rate = seg.worst_ml_per_us if worst else seg.expected_ml_per_us
        length = _us(seg.end - seg.start)
        after = volume - rate * length
        for name, limit in list(pending.items()):
            if after <= limit and rate > 0:
                elapsed = (volume - limit) / rate  # microseconds, exact
                found[name] = seg.start + timedelta(microseconds=int(elapsed // 1))
                del pending[name]
        volume = after
    for name in pending:
        found[name] = None
    return found


def _volume_at(segments: Iterable[_Segment], v0: Fraction, at: datetime, worst: bool) -> Fraction:
    volume = v0
    for seg in segments:
        if seg.start >= at:
            break
        rate = seg.worst_ml_per_us if worst else seg.expected_ml_per_us
        stop = min(seg.end, at)
        volume -= rate * _us(stop - seg.start)
    return volume


def _segments_until_empty(
    programs: Sequence[ProgramData], tz: tzinfo, t0: datetime, end: datetime, v0: Fraction, at: datetime
) -> list[_Segment]:
    """Segments from ``t0`` until the *expected* volume is spent (worst case empties no
    later) and ``at`` is covered: a flex program need not be unrolled over two years when
    the reservoir empties in weeks."""
    out: list[_Segment] = []
    expected_left = v0
    for seg in _segments(programs, tz, t0, end):
        out.append(seg)
        expected_left -= seg.expected_ml_per_us * _us(seg.end - seg.start)
        if expected_left <= 0 and seg.end >= at:
            break
    return out


# ------------------------------------------------- closed-form consumption (fast)
#
# The functions above walk a flex program step by step over the whole horizon: the
# reference ("oracle") the tests compare with, and ``project(..., fast=False)``. The code
# below gives the same exact results in closed form. Within an interval of constant UTC
# offset the local wall clock is real time plus a constant, so the volume a flex program
# delivers between two instants is F(wall(b)) - F(wall(a)), where F(w) = (whole local days
# before w) x (the day's 24-hour volume) + (the volume from local midnight to w's time of
# day): whole days in one multiplication and only the last partial day step by step. A
# daylight-saving change starts a new interval, so the 23- or 25-hour day is exact (the
# skipped hour's steps do not run, the repeated hour's run twice). Instants are integers
# of microseconds since 1970-01-01 UTC; volumes are exact Fractions of mL.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_MINUTE = 60 * 1_000_000


def _to_us(moment: datetime) -> int:
    return _us(moment - _EPOCH)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class _Flat:
    """A constant rate in real time, ``rate / den`` mL per microsecond (integers): a
    continuous program."""

    __slots__ = ("rate", "den", "daily", "per_day")

    def __init__(self, rate: Fraction) -> None:
        self.rate, self.den = rate.numerator, rate.denominator
        self.daily = self.rate * _US_PER_DAY  # mL per day, over den
        self.per_day = rate * _US_PER_DAY  # mL per day

    def used(self, a: int, b: int, offset: int) -> Fraction:
        return Fraction(self.used_over_den(a, b, offset), self.den)

    def used_over_den(self, a: int, b: int, offset: int) -> int:
        return self.rate * (b - a)

    def reach(self, a: int, need: Fraction, offset: int) -> tuple[int, int, int]:
        """The instant at which ``need`` (> 0) mL have flowed since ``a``, exactly:
        ``(whole, rem, div)`` for ``whole + rem / div`` microseconds, ``0 <= rem < div``."""
        div = need.denominator * self.rate
        whole, rem = divmod(need.numerator * self.den, div)
        return a + whole, rem, div


class _Day:
    """A flex program's rate over one local wall-clock day, plus a uniform ``extra`` (the
    worst case's boluses): from ``starts[i]`` (microseconds after local midnight) on,
    ``rates[i] / den`` mL per microsecond; ``cumulative[i] / den`` mL from local midnight to
    ``starts[i]``; ``daily / den`` mL over the 24-hour day. Integers over one denominator:
    exact, and much cheaper than Fractions."""

    __slots__ = ("starts", "rates", "cumulative", "daily", "den", "per_day")

    def __init__(self, steps: Sequence[FlexStep], concentration: Fraction, extra: Fraction) -> None:
        minutes = [s.start.hour * 60 + s.start.minute for s in steps]
        rates = [Fraction(s.dose_mcg_per_hour) / concentration / _US_PER_HOUR + extra for s in steps]
        if not steps:
            minutes, rates = [0], [extra]
        elif minutes[0] > 0:  # before the first start of the day: yesterday's last step
            minutes, rates = [0, *minutes], [rates[-1], *rates]
        self.den = math.lcm(*(r.denominator for r in rates))
        self.rates = [r.numerator * (self.den // r.denominator) for r in rates]
        self.starts = [m * _US_PER_MINUTE for m in minutes]
        cumulative = [0]
        for i, rate in enumerate(self.rates):
            end = self.starts[i + 1] if i + 1 < len(rates) else _US_PER_DAY
            cumulative.append(cumulative[-1] + rate * (end - self.starts[i]))
        self.cumulative = cumulative
        self.daily = cumulative[-1]
        self.per_day = Fraction(self.daily, self.den)  # mL over a 24-hour day

    def through(self, wall: int) -> int:
        """mL (over den) from wall-clock 1970-01-01 00:00 to ``wall`` (microseconds)."""
        day, of_day = divmod(wall, _US_PER_DAY)
        i = bisect.bisect_right(self.starts, of_day) - 1
        return day * self.daily + self.cumulative[i] + self.rates[i] * (of_day - self.starts[i])

    def used(self, a: int, b: int, offset: int) -> Fraction:
        return Fraction(self.used_over_den(a, b, offset), self.den)

    def used_over_den(self, a: int, b: int, offset: int) -> int:
        return self.through(b + offset) - self.through(a + offset)

    def reach(self, a: int, need: Fraction, offset: int) -> tuple[int, int, int]:
        """The instant at which ``need`` (> 0) mL have flowed since ``a``, the offset
        staying ``offset`` (the caller checked that it is reached): ``(whole, rem, div)``
        for ``whole + rem / div`` microseconds, ``0 <= rem < div``."""
        q = need.denominator
        target = self.through(a + offset) * q + need.numerator * self.den  # over den * q
        per_day = self.daily * q
        day = -(-target // per_day) - 1  # the wall-clock day in which the total reaches target
        left = target - day * per_day  # 0 < left <= per_day
        i = bisect.bisect_left(self.cumulative, -(-left // q)) - 1  # cumulative[i] * q < left <= cumulative[i + 1] * q
        div = self.rates[i] * q
        whole, rem = divmod(left - self.cumulative[i] * q, div)
        return day * _US_PER_DAY + self.starts[i] + whole - offset, rem, div


def _day_tables(program: ProgramData) -> tuple[_Flat | _Day, _Flat | _Day]:
    """(expected, worst case) rates of a program."""
    return _day_tables_of(program.mode, program.concentration_mcg_per_ml, program.daily_dose_mcg,
                          program.steps, program.bolus_mcg, program.bolus_max_per_day)


@functools.lru_cache(maxsize=1024)
def _day_tables_of(mode, concentration, daily_dose, steps, bolus_mcg, bolus_max_per_day):
    conc = Fraction(concentration)
    bolus = Fraction(0)
    if bolus_mcg and bolus_max_per_day:
        bolus = Fraction(bolus_mcg) * bolus_max_per_day / conc / _US_PER_DAY
    if mode == MODE_FLEX:
        return _Day(steps, conc, Fraction(0)), _Day(steps, conc, bolus)
    rate = Fraction(daily_dose or 0) / conc / _US_PER_DAY
    return _Flat(rate), _Flat(rate + bolus)


@functools.lru_cache(maxsize=4096)
def _zone_changes_in_year(tz: tzinfo, year: int) -> tuple[int, ...]:
    """The instants (microseconds) of the UTC offset changes of ``tz`` in the UTC year
    ``year``, more precisely in (``year``-01-01 00:00, next 01-01 00:00]: the offset is
    sampled once per day and a change is located to the second by bisection, as the
    step-by-step walk does (no zone changes its offset twice within one day). Cached: a
    process projects many pumps in few zones and years."""
    first = datetime(year, 1, 1, tzinfo=UTC)
    days = (datetime(year + 1, 1, 1, tzinfo=UTC) - first).days
    changes = []
    before = first.astimezone(tz).utcoffset()
    for k in range(1, days + 1):
        probe = first + timedelta(days=k)
        offset = probe.astimezone(tz).utcoffset()
        if offset == before:
            continue
        lo, hi = (k - 1) * 86_400, k * 86_400  # seconds after ``first``: offset(lo) old, offset(hi) new
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (first + timedelta(seconds=mid)).astimezone(tz).utcoffset() == before:
                lo = mid
            else:
                hi = mid
        changes.append(_to_us(first) + hi * 1_000_000)
        before = offset
    return tuple(changes)


def _zone_intervals(tz: tzinfo, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Split [start, end) (microseconds) into intervals of constant UTC offset in ``tz``:
    (start, end, offset in microseconds)."""
    first_year = _from_us(start).year  # a change at exactly 01-01 00:00 is the year before's
    last_year = _from_us(max(end - 1, start)).year
    cursor = start
    for year in range(first_year, last_year + 1):
        for change in _zone_changes_in_year(tz, year):
            if cursor < change < end:
                yield cursor, change, _us(_from_us(cursor).astimezone(tz).utcoffset())
                cursor = change
    if cursor < end:
        yield cursor, end, _us(_from_us(cursor).astimezone(tz).utcoffset())


class _Consumption:
    """The exact consumption of the programs in force from ``t0`` to ``end`` (instants as
    microseconds): constant-offset pieces of each program, with the expected and worst-case
    mL used before each piece. A few pieces per year (program changes and daylight-saving
    changes), whatever the number of flex steps."""

    def __init__(self, programs: Sequence[ProgramData], tz: tzinfo, t0: int, end: int) -> None:
        self.t0 = t0
        self.starts: list[int] = []
        self.pieces: list[tuple[int, int, int, _Flat | _Day, _Flat | _Day]] = []
        self.used_before: list[tuple[Fraction, Fraction]] = []
        self.used_total = (Fraction(0), Fraction(0))
        in_force = [p for p in programs if _to_us(p.effective_at) <= t0]
        later = [p for p in programs if _to_us(p.effective_at) > t0]
        if not in_force:
            return
        chain = [(t0, in_force[-1])] + [(_to_us(p.effective_at), p) for p in later]
        expected = worst = Fraction(0)
        for i, (begin, program) in enumerate(chain):
            stop = min(chain[i + 1][0] if i + 1 < len(chain) else end, end)
            if stop <= begin:
                continue
            exp_rate, worst_rate = _day_tables(program)
            if program.mode == MODE_FLEX:
                intervals = _zone_intervals(tz, begin, stop)
            else:
                intervals = iter([(begin, stop, 0)])  # real time: the offset does not matter
            for a, b, offset in intervals:
                self.starts.append(a)
                self.pieces.append((a, b, offset, exp_rate, worst_rate))
                self.used_before.append((expected, worst))
                expected += exp_rate.used(a, b, offset)
                worst += worst_rate.used(a, b, offset)
        self.used_total = (expected, worst)

    def used(self, at: int, worst: bool) -> Fraction:
        """mL used from ``t0`` to ``at`` (at or after ``t0``; beyond the end, all of it)."""
        i = bisect.bisect_left(self.starts, at) - 1  # the piece with a < at <= b
        if i < 0:
            return Fraction(0)
        a, b, offset, exp_rate, worst_rate = self.pieces[i]
        if at >= b:
            return self.used_total[worst] if i == len(self.pieces) - 1 else self.used_before[i + 1][worst]
        rate = worst_rate if worst else exp_rate
        return self.used_before[i][worst] + rate.used(a, at, offset)

    def volume(self, v0: Fraction, at: datetime, worst: bool) -> Fraction:
        return v0 - self.used(_to_us(at), worst)

    def volumes_ml(self, v0: Fraction, moments: Sequence[datetime], worst: bool) -> list[Decimal]:
        """``to_decimal_ml`` of ``volume`` at each instant, floored at 0, as charts want
        them, exactly the same: within a piece in integers over one denominator, rather
        than a few Fraction operations per instant (each reducing its result by a gcd),
        as a chart asks for hundreds."""
        out = []
        left: dict[int, Fraction] = {}  # mL at the start of each piece reached
        for at in moments:
            at_us = _to_us(at)
            i = bisect.bisect_left(self.starts, at_us) - 1  # the piece with a < at <= b
            if i < 0 or at_us >= self.pieces[i][1]:
                out.append(to_decimal_ml(max(v0 - self.used(at_us, worst), Fraction(0))))
                continue
            a, _, offset, exp_rate, worst_rate = self.pieces[i]
            rate = worst_rate if worst else exp_rate
            if i not in left:
                left[i] = v0 - self.used_before[i][worst]
            start = left[i]
            n = start.numerator * rate.den - start.denominator * rate.used_over_den(a, at_us, offset)
            out.append(_ratio_to_decimal_ml(max(n, 0), start.denominator * rate.den))
        return out

    def crossings(
        self, v0: Fraction, thresholds: dict[str, Fraction], worst: bool, horizon: datetime
    ) -> dict[str, datetime | None]:
        """The first instant at which the volume falls to or below each threshold, rounded
        down to the microsecond (``t0`` if ``v0`` already is); ``None`` if it is after
        ``horizon``. (The step-by-step walk can also report an instant less than a
        microsecond past the horizon, floored onto it, when its last piece runs past it.)"""
        limit_us = _to_us(horizon)
        found: dict[str, datetime | None] = {}
        for name, limit in thresholds.items():
            need = v0 - limit
            if need <= 0:
                found[name] = _from_us(self.t0)
                continue
            found[name] = None
            i = bisect.bisect_left([u[worst] for u in self.used_before[1:]] + [self.used_total[worst]], need)
            if i >= len(self.pieces):
                continue
            a, _, offset, exp_rate, worst_rate = self.pieces[i]
            whole, rem, _ = (worst_rate if worst else exp_rate).reach(a, need - self.used_before[i][worst], offset)
            if whole < limit_us or (whole == limit_us and rem == 0):
                found[name] = _from_us(whole)
        return found


# ------------------------------------------------------------------------ anchor


@dataclass(frozen=True)
class Anchor:
    at: datetime
    volume_ml: Fraction
    refill: RefillData | None  # the latest refill at or before the anchor (renews the drug)
    is_refill: bool


def find_anchor(refills: Sequence[RefillData], readings: Sequence[ReadingData], at: datetime) -> Anchor | None:
    """The latest refill or reading at or before ``at``; a refill wins a tie."""
    past_refills = [r for r in refills if r.performed_at <= at]
    past_readings = [r for r in readings if r.read_at <= at]
    last_refill = max(past_refills, key=lambda r: r.performed_at, default=None)
    last_reading = max(past_readings, key=lambda r: r.read_at, default=None)
    if last_refill is None and last_reading is None:
        return None
    if last_reading is None or (last_refill is not None and last_refill.performed_at >= last_reading.read_at):
        return Anchor(last_refill.performed_at, last_refill.anchor_volume(), last_refill, True)
    return Anchor(last_reading.read_at, Fraction(last_reading.reservoir_volume_ml), last_refill, False)


def program_in_force(programs: Sequence[ProgramData], at: datetime) -> ProgramData | None:
    current = None
    for p in sorted(programs, key=lambda p: p.effective_at):
        if p.effective_at <= at:
            current = p
    return current


# ----------------------------------------------------------------- due and status


def refill_due_on(
    *, worst_lra_at: datetime | None, drug_expires_at: datetime | None, tz: tzinfo, policy: Policy, high_risk: bool
) -> date | None:
    """docs/clinical-rules.md §6: the earlier of (LRA date - lead) and (expiry date - 1), moved earlier
    to the nearest open day of the clinic."""
    candidates = []
    if worst_lra_at is not None:
        extra = policy.high_risk_extra_days if high_risk else 0
        candidates.append(local_date(worst_lra_at, tz) - timedelta(days=policy.lead_days + extra))
    if drug_expires_at is not None:
        candidates.append(local_date(drug_expires_at, tz) - DAY)
    if not candidates:
        return None
    return previous_open_day(min(candidates), policy)


def previous_open_day(day: date, policy: Policy) -> date:
    """``day`` itself if the clinic is open, else the nearest earlier open day."""
    if not policy.open_weekdays:
        return day
    for _ in range(3660):  # closures are finite; ten years of closures would be absurd
        if day.weekday() in policy.open_weekdays and day not in policy.closures:
            return day
        day -= DAY
    raise ValueError("no open clinic day in the ten years before the due date")


def status_at(
    at: datetime,
    *,
    tz: tzinfo,
    active: bool,
    complete: bool,
    empty_at: datetime | None,
    lra_at: datetime | None,
    due_on: date | None,
    due_soon_days: int,
) -> str:
    """docs/clinical-rules.md §7, first match wins. Works from stored instants too (the worklist, the sweep)."""
    if not active:
        return STATUS_INACTIVE
    if not complete:
        return STATUS_INCOMPLETE
    if empty_at is not None and at >= empty_at:
        return STATUS_EMPTY
    if lra_at is not None and at >= lra_at:
        return STATUS_ALARM
    if due_on is not None:
        today = local_date(at, tz)
        if today > due_on:
            return STATUS_OVERDUE
        if (due_on - today).days <= due_soon_days:
            return STATUS_DUE_SOON
    return STATUS_OK


def next_status_change(
    after: datetime,
    *,
    tz: tzinfo,
    active: bool,
    complete: bool,
    empty_at: datetime | None,
    lra_at: datetime | None,
    due_on: date | None,
    due_soon_days: int,
    extra_instants: Iterable[datetime | None] = (),
) -> datetime | None:
    """The first instant strictly after ``after`` at which something the sweep cares about
    happens: a status change, or one of ``extra_instants`` (e.g. the withdrawal window)."""
    if not active:
        return None
    if not complete:  # no projection, but scheduled checks (verification, battery) still fall due
        return min((c for c in extra_instants if c is not None and c > after), default=None)
    candidates = [empty_at, lra_at, *extra_instants]
    if due_on is not None:
        candidates.append(start_of_local_day(due_on - timedelta(days=due_soon_days), tz))
        candidates.append(start_of_local_day(due_on + DAY, tz))
    future = [c for c in candidates if c is not None and c > after]
    return min(future, default=None)


# ------------------------------------------------------------------ in words


def relative_instant(moment: datetime, at: datetime) -> str:
    """How far ``moment`` is from ``at`` in the right tense: "in 3 days", "11 days ago",
    "in 5 hours", "20 minutes ago", "now". Whole units, rounded towards ``at``."""
    seconds = (moment - at).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "now"
    size, unit = next((size, unit) for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute"))
                      if span >= size)
    count = int(span // size)
    words = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {words}" if seconds > 0 else f"{words} ago"


def relative_date(day: date, today: date) -> str:
    """A calendar date against the clinic's today: "today", "tomorrow", "in 3 days",
    "yesterday", "11 days ago"."""
    days = (day - today).days
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if days == -1:
        return "yesterday"
    return f"in {days} days" if days > 0 else f"{-days} days ago"


def local_instant(moment: datetime, tz: tzinfo) -> str:
    """An instant on the clinic's wall clock with its zone: "2026-11-20 10:45 CST"."""
    local = moment.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def instant_in_words(moment: datetime, at: datetime, tz: tzinfo) -> str:
    """ "2026-11-20 10:45 CST (11 days ago)" or "2026-12-04 09:00 CST (in 3 days)"."""
    return f"{local_instant(moment, tz)} ({relative_instant(moment, at)})"


DUE_BY_ALARM = "alarm"
DUE_BY_DRUG = "drug"


def due_date_binding(
    *, worst_lra_at: datetime | None, drug_expires_at: datetime | None, tz: tzinfo, lead_days: int,
    high_risk_extra_days: int, high_risk: bool,
) -> str | None:
    """Which limit set the refill due date (clinical rules, "Refill due date"): the
    low-reservoir alarm (``DUE_BY_ALARM``) or the drug's stability date (``DUE_BY_DRUG``);
    the drug wins a tie, since its date cannot move."""
    by_alarm = None
    if worst_lra_at is not None:
        extra = high_risk_extra_days if high_risk else 0
        by_alarm = local_date(worst_lra_at, tz) - timedelta(days=lead_days + extra)
    by_drug = local_date(drug_expires_at, tz) - DAY if drug_expires_at is not None else None
    if by_drug is not None and (by_alarm is None or by_drug <= by_alarm):
        return DUE_BY_DRUG
    return DUE_BY_ALARM if by_alarm is not None else None


def status_reason(
    status: str, at: datetime, *, tz: tzinfo, empty_at: datetime | None, lra_at: datetime | None,
    due_on: date | None, drug_expires_at: datetime | None, binding: str | None, inactive_reason: str = "",
) -> str:
    """The status in words, naming what binds (clinical rules, "Status"): since when a
    pump is empty or at its alarm, and for a due date whether the alarm or the drug's
    stability date set it ("overdue: drug expired on 2026-10-18")."""
    today = local_date(at, tz)
    if status == STATUS_INACTIVE:
        return f"inactive: {inactive_reason}" if inactive_reason else "inactive"
    if status == STATUS_INCOMPLETE:
        return "incomplete: no fill, or no program in force, to project from"
    if status == STATUS_EMPTY and empty_at is not None:
        return f"empty since {instant_in_words(empty_at, at, tz)} (worst case)"
    if status == STATUS_ALARM and lra_at is not None:
        text = f"at the low-reservoir alarm since {instant_in_words(lra_at, at, tz)} (worst case)"
        if empty_at is not None:
            text += f"; empty {instant_in_words(empty_at, at, tz)}"
        return text
    if due_on is None:
        return "ok: nothing falls due within the projection's two-year horizon"
    label = {STATUS_OVERDUE: "overdue", STATUS_DUE_SOON: "due soon"}.get(status, "ok")
    if binding == DUE_BY_DRUG and drug_expires_at is not None:
        expiry = local_date(drug_expires_at, tz)
        verb = "expired" if drug_expires_at <= at else "expires"
        cause = f"drug {verb} on {expiry.isoformat()} ({relative_date(expiry, today)})"
        if status == STATUS_OVERDUE:
            return f"{label}: {cause}"
        return f"{label}: refill due on {due_on.isoformat()} ({relative_date(due_on, today)}); {cause}"
    due = f"refill {'was ' if due_on < today else ''}due on {due_on.isoformat()} ({relative_date(due_on, today)})"
    if lra_at is not None:
        return f"{label}: {due}; low-reservoir alarm {instant_in_words(lra_at, at, tz)}"
    return f"{label}: {due}"


# ---------------------------------------------------------------------- project


def project(
    *,
    at: datetime,
    pump: PumpState,
    refills: Sequence[RefillData],
    readings: Sequence[ReadingData],
    programs: Sequence[ProgramData],
    policy: Policy = Policy(),
    fast: bool = True,
) -> Projection:
    """The projection of one pump as of ``at``, using only records timestamped <= ``at``.

    ``refills``, ``readings`` and ``programs`` are the pump's non-voided records in any
    order; instants in the result are UTC and rounded down to the minute. ``fast=False``
    walks flex programs step by step over the horizon instead of in closed form: the
    reference the tests compare with (same results, a hundred times slower).
    """
    _require_aware(at)
    at = at.astimezone(UTC)
    tz = pump.tz
    programs = sorted((p for p in programs if p.effective_at <= at), key=lambda p: p.effective_at)
    anchor = find_anchor(refills, readings, at)
    in_force_at_anchor = program_in_force(programs, anchor.at) if anchor else None
    if anchor is None or in_force_at_anchor is None:
        status = STATUS_INACTIVE if not pump.active else STATUS_INCOMPLETE
        return Projection(at=at, status=status, anchor_at=anchor.at if anchor else None, tz=tz)

    t0 = anchor.at.astimezone(UTC)
    horizon = t0 + timedelta(days=HORIZON_DAYS)
    v0 = anchor.volume_ml
    alarm = Fraction(pump.alarm_volume_ml)
    thresholds = {"lra": alarm, "empty": Fraction(0)}
    if fast:
        walk = _Consumption(programs, tz, _to_us(t0), _to_us(max(horizon, at)))
        worst = walk.crossings(v0, thresholds, True, horizon)
        expected = walk.crossings(v0, thresholds, False, horizon)
        volume_expected, volume_worst = walk.volume(v0, at, False), walk.volume(v0, at, True)
    else:
        segments = _segments_until_empty(programs, tz, t0, max(horizon, at), v0, at)
        within = [s for s in segments if s.start < horizon]
        worst = _crossings(within, v0, thresholds, True, t0)
        expected = _crossings(within, v0, thresholds, False, t0)
        volume_expected, volume_worst = _volume_at(segments, v0, at, False), _volume_at(segments, v0, at, True)

    def _cap(moment: datetime | None) -> datetime | None:
        if moment is None or moment > horizon:
            return None
        return floor_minute(moment)

    drug_expires_at = None
    if anchor.refill is not None:
        drug_expires_at = floor_minute(anchor.refill.performed_at + timedelta(days=anchor.refill.stability_days))
    lra_at, empty_at = _cap(worst["lra"]), _cap(worst["empty"])
    due_on = refill_due_on(
        worst_lra_at=lra_at, drug_expires_at=drug_expires_at, tz=tz, policy=policy, high_risk=pump.high_risk
    )
    current = program_in_force(programs, at)
    daily, worst_daily = _day_tables(current)  # their 24-hour volumes: the program's daily volumes
    status = status_at(
        at,
        tz=tz,
        active=pump.active,
        complete=True,
        empty_at=empty_at,
        lra_at=lra_at,
        due_on=due_on,
        due_soon_days=policy.due_soon_days,
    )
    return Projection(
        at=at,
        status=status,
        anchor_at=t0,
        anchor_volume_ml=to_decimal_ml(v0),
        reservoir_volume_ml=to_decimal_ml(max(volume_expected, Fraction(0))),
        worst_case_volume_ml=to_decimal_ml(max(volume_worst, Fraction(0))),
        daily_volume_ml=to_decimal_ml(daily.per_day if fast else current.daily_volume_ml()),
        worst_case_daily_volume_ml=to_decimal_ml(
            worst_daily.per_day if fast else current.worst_case_daily_volume_ml()
        ),
        low_reservoir_alarm_at=lra_at,
        empty_at=empty_at,
        expected_low_reservoir_alarm_at=_cap(expected["lra"]),
        expected_empty_at=_cap(expected["empty"]),
        drug_expires_at=drug_expires_at,
        refill_due_on=due_on,
        tz=tz,
    )


def expected_volume_at(
    *,
    at: datetime,
    pump: PumpState,
    refills: Sequence[RefillData],
    readings: Sequence[ReadingData],
    programs: Sequence[ProgramData],
    fast: bool = True,
) -> tuple[Fraction | None, datetime | None]:
    """Expected (no boluses) volume at ``at`` from the latest anchor *strictly before*
    ``at``, and the expected empty instant from that anchor. Used by the refill checks:
    what should be in the reservoir when the nurse draws it out. ``fast=False``: the
    step-by-step reference, as in ``project``."""
    _require_aware(at)
    at = at.astimezone(UTC)
    earlier_refills = [r for r in refills if r.performed_at < at]
    earlier_readings = [r for r in readings if r.read_at < at]
    programs = sorted((p for p in programs if p.effective_at <= at), key=lambda p: p.effective_at)
    anchor = find_anchor(earlier_refills, earlier_readings, at)
    if anchor is None or program_in_force(programs, anchor.at) is None:
        return None, None
    t0 = anchor.at.astimezone(UTC)
    horizon = t0 + timedelta(days=HORIZON_DAYS)
    if fast:
        walk = _Consumption(programs, pump.tz, _to_us(t0), _to_us(max(horizon, at)))
        empty_at = walk.crossings(anchor.volume_ml, {"empty": Fraction(0)}, False, horizon)["empty"]
        return walk.volume(anchor.volume_ml, at, False), (floor_minute(empty_at) if empty_at else None)
    segments = _segments_until_empty(programs, pump.tz, t0, max(horizon, at), anchor.volume_ml, at)
    volume = _volume_at(segments, anchor.volume_ml, at, False)
    empty = _crossings([s for s in segments if s.start < horizon], anchor.volume_ml, {"empty": Fraction(0)}, False, t0)
    empty_at = empty["empty"]
    return volume, (floor_minute(empty_at) if empty_at and empty_at <= horizon else None)


def volume_series(
    *,
    start: datetime,
    end: datetime,
    points: int,
    pump: PumpState,
    refills: Sequence[RefillData],
    readings: Sequence[ReadingData],
    programs: Sequence[ProgramData],
    fast: bool = True,
) -> list[tuple[datetime, Decimal, Decimal]]:
    """(instant, expected, worst case) volumes for charts, from the anchor in force at
    ``start``, projected forward (later records are not applied)."""
    start = _utc(start, "start")
    end = _utc(end, "end")
    anchor = find_anchor(refills, readings, start)
    programs = sorted(programs, key=lambda p: p.effective_at)
    programs = [p for p in programs if p.effective_at <= start] if anchor else []
    if anchor is None or not programs or program_in_force(programs, anchor.at) is None:
        return []
    t0 = anchor.at.astimezone(UTC)
    if fast:
        walk = _Consumption(programs, pump.tz, _to_us(t0), _to_us(end))
    else:
        segments = list(_segments(programs, pump.tz, t0, end))
    step = (end - start) / max(points - 1, 1)
    moments = [start + step * i for i in range(points)]
    if fast:
        return list(zip(moments, walk.volumes_ml(anchor.volume_ml, moments, False),
                        walk.volumes_ml(anchor.volume_ml, moments, True), strict=True))
    out = []
    for moment in moments:
        exp = max(_volume_at(segments, anchor.volume_ml, moment, False), Fraction(0))
        worst = max(_volume_at(segments, anchor.volume_ml, moment, True), Fraction(0))
        out.append((moment, to_decimal_ml(exp), to_decimal_ml(worst)))
    return out
