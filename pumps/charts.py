"""Server-rendered SVG charts for the pump page: no JavaScript, nothing from a CDN.

Each chart is an ``<svg role="img">`` with a title and a text description that says in
words what the lines show (screen readers read it), and the page puts the same numbers
in a table beside it. Lines differ by dash pattern as well as colour, and every marker is
labelled with text: colour is never the only cue. Colours come from CSS classes in
``static/css/app.css``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import projection as pj
from . import symptoms

WIDTH = 720
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 20, 46
SERIES_POINTS = 121


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _ml(value: Decimal | float) -> str:
    """A volume to two decimals, without trailing zeros (stored to three)."""
    text = f"{Decimal(str(value)).quantize(Decimal('0.01')).normalize():f}"
    return "0" if text in ("-0", "") else text


def _day(value: date) -> str:
    """A dated axis label with its year: "2026-03-02"."""
    return value.isoformat()


TICK_LABEL_PX = 76  # the width an ISO date needs at the charts' 12 px, with a gap


@dataclass(frozen=True)
class Frame:
    """Maps instants and values onto the plot area."""

    t0: datetime
    t1: datetime
    v0: float
    v1: float
    width: int = WIDTH
    height: int = HEIGHT
    right: int = RIGHT  # the right margin (wider when a second value axis is labelled there)

    def x(self, moment: datetime) -> float:
        span = (self.t1 - self.t0).total_seconds() or 1
        frac = (moment - self.t0).total_seconds() / span
        return LEFT + max(0.0, min(1.0, frac)) * (self.width - LEFT - self.right)

    def y(self, value: float) -> float:
        span = (self.v1 - self.v0) or 1
        frac = (float(value) - self.v0) / span
        return self.height - BOTTOM - max(0.0, min(1.0, frac)) * (self.height - TOP - BOTTOM)

    def inside(self, moment: datetime) -> bool:
        return self.t0 <= moment <= self.t1


def nice_step(span: float, count: int = 5) -> float:
    """A 1, 2, 2.5 or 5 × 10^n step giving about ``count`` intervals over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def value_ticks(v0: float, v1: float, count: int = 5) -> list[float]:
    step = nice_step(v1 - v0, count)
    first = math.ceil(v0 / step) * step
    ticks, value = [], first
    while value <= v1 + step * 1e-9:
        ticks.append(round(value, 6))
        value += step
    return ticks


TICK_DAYS = (1, 2, 7, 14, 28, 56, 91, 182, 365, 730)


def time_ticks(t0: datetime, t1: datetime, tz: tzinfo, count: int = 6) -> list[tuple[datetime, str]]:
    """Local midnights every 1, 2, 7, 14 … days, labelled with the local date."""
    days = max((t1 - t0).total_seconds() / 86400, 1)
    count = min(count, int((WIDTH - LEFT - RIGHT) // TICK_LABEL_PX))
    step = next((d for d in TICK_DAYS if days / d <= count), TICK_DAYS[-1])
    day = pj.local_date(t0, tz) + timedelta(days=1)
    if step >= 7:  # align weekly ticks on Mondays for a steadier axis
        day += timedelta(days=(7 - day.weekday()) % 7)
    ticks = []
    while True:
        moment = pj.start_of_local_day(day, tz)
        if moment > t1:
            break
        label = _day(day) if step < 182 else f"{day:%Y-%m}"
        ticks.append((moment, label))
        day += timedelta(days=step)
    return ticks


class Svg:
    def __init__(self, chart_id: str, title: str, description: str, frame: Frame):
        self.id = chart_id
        self.frame = frame
        self.parts: list[str] = [
            f'<svg class="chart" id="{chart_id}" viewBox="0 0 {frame.width} {frame.height}" role="img" '
            f'aria-labelledby="{chart_id}-title {chart_id}-desc" preserveAspectRatio="xMidYMid meet" '
            'xmlns="http://www.w3.org/2000/svg">',
            f'<title id="{chart_id}-title">{escape(title)}</title>',
            f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        ]

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def text(self, x: float, y: float, text: str, cls: str = "chart-label", anchor: str = "start") -> None:
        self.add(f'<text x="{_n(x)}" y="{_n(y)}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str) -> None:
        self.add(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" class="{cls}"/>')

    def polyline(self, points: list[tuple[float, float]], cls: str) -> None:
        coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
        self.add(f'<polyline points="{coords}" class="{cls}" fill="none"/>')

    def axes(self, y_ticks: list[float], y_unit: str, x_ticks: list[tuple[datetime, str]] | None = None) -> None:
        f = self.frame
        bottom, top = f.height - BOTTOM, TOP
        for value in y_ticks:
            y = f.y(value)
            self.line(LEFT, y, f.width - f.right, y, "chart-grid")
            self.text(LEFT - 6, y + 4, _n(value), "chart-tick", "end")
        middle = (top + bottom) / 2
        self.add(f'<text x="16" y="{_n(middle)}" class="chart-unit" text-anchor="middle" '
                 f'transform="rotate(-90 16 {_n(middle)})">{escape(y_unit)}</text>')
        for moment, label in x_ticks or []:
            x = f.x(moment)
            self.line(x, bottom, x, bottom + 5, "chart-axis")
            self.text(x, bottom + 18, label, "chart-tick", "middle")
        self.line(LEFT, bottom, f.width - f.right, bottom, "chart-axis")
        self.line(LEFT, top, LEFT, bottom, "chart-axis")

    def legend(self, items: list[tuple[str, str]]) -> None:
        """(css class of the sample line, label) along the bottom edge."""
        x = LEFT
        y = self.frame.height - 8
        for cls, label in items:
            self.line(x, y - 4, x + 24, y - 4, cls)
            self.text(x + 30, y, label, "chart-legend")
            x += 42 + 7.2 * len(label)

    def render(self) -> SafeString:
        return mark_safe("".join([*self.parts, "</svg>"]))  # noqa: S308 - every text is escaped above


# --------------------------------------------------------------- reservoir volume


@dataclass(frozen=True)
class VolumeChart:
    svg: SafeString
    series: list[tuple[datetime, Decimal, Decimal]]  # (instant, expected, worst) for the table
    start: datetime
    end: datetime


def series_start(anchor_at: datetime, program_times: list[datetime], now: datetime) -> datetime:
    """The chart starts at the anchor, or at a later program change before ``now``:
    ``pj.volume_series`` projects forward with the programs in force at its start."""
    later = [t for t in program_times if anchor_at < t <= now]
    return max([anchor_at, *later])


def _nothing_to_chart(projection: pj.Projection) -> bool:
    """Nothing to project, or nothing left to watch (explanted, patient not active)."""
    return projection.anchor_at is None or projection.anchor_volume_ml is None or projection.status in (
        pj.STATUS_INCOMPLETE, pj.STATUS_INACTIVE
    )


def _volume_span(projection: pj.Projection, program_times: list[datetime], now: datetime,
                 tz: tzinfo) -> tuple[datetime, datetime]:
    """From the series' start to a few days past the last of empty, expected empty, the due
    date and now (or 180 days without any of them), within the projection's horizon."""
    start = series_start(projection.anchor_at, program_times, now)
    horizon = projection.anchor_at + timedelta(days=pj.HORIZON_DAYS)
    ends = [e for e in (projection.empty_at, projection.expected_empty_at) if e is not None]
    if projection.refill_due_on is not None:
        ends.append(pj.start_of_local_day(projection.refill_due_on + timedelta(days=1), tz))
    end = max([*ends, now]) + timedelta(days=3) if ends else start + timedelta(days=180)
    end = min(end, horizon)
    if end <= start:
        end = start + timedelta(days=1)
    return start, end


def _volume_description(projection: pj.Projection, alarm: Decimal, start: datetime, end: datetime,
                        tz: tzinfo) -> str:
    """The chart in words, for its accessible description."""
    words = [f"Projected reservoir volume from {start.astimezone(tz):%Y-%m-%d %H:%M} to {end.astimezone(tz):%Y-%m-%d}."]
    if projection.low_reservoir_alarm_at:
        words.append(
            f"Worst case reaches the {_ml(alarm)} mL alarm volume on "
            f"{projection.low_reservoir_alarm_at.astimezone(tz):%Y-%m-%d %H:%M}"
        )
    if projection.empty_at:
        words.append(f"and is empty on {projection.empty_at.astimezone(tz):%Y-%m-%d %H:%M}.")
    if projection.expected_empty_at:
        words.append(
            f"Expected (no on-demand boluses) empty on {projection.expected_empty_at.astimezone(tz):%Y-%m-%d %H:%M}."
        )
    if projection.refill_due_on:
        words.append(f"Refill due on {projection.refill_due_on.isoformat()}.")
    return " ".join(words)


def _draw_alarm_volume(svg: Svg, frame: Frame, alarm: Decimal) -> None:
    """The alarm volume, labelled at the left where the lines are still high."""
    y_alarm = frame.y(float(alarm))
    svg.line(LEFT, y_alarm, WIDTH - RIGHT, y_alarm, "chart-alarm")
    svg.text(LEFT + 6, y_alarm - 5, f"Alarm volume {_ml(alarm)} mL", "chart-label chart-label-alarm")


def _draw_due_date(svg: Svg, frame: Frame, refill_due_on: date | None, tz: tzinfo) -> None:
    """The due date, labelled at the top (the now line, often close, is labelled at the bottom)."""
    if refill_due_on is None:
        return
    due = pj.start_of_local_day(refill_due_on, tz)
    if not frame.inside(due):
        return
    x = frame.x(due)
    svg.line(x, TOP, x, HEIGHT - BOTTOM, "chart-due")
    label = f"Due {_day(refill_due_on)}"
    # at the line's left, or its right when the left has no room
    if x - LEFT > 7 * len(label):
        svg.text(x - 4, TOP + 12, label, "chart-label chart-label-due", "end")
    else:
        svg.text(x + 4, TOP + 12, label, "chart-label chart-label-due", "start")


def _draw_now(svg: Svg, frame: Frame, now: datetime) -> None:
    """Now, labelled at the bottom."""
    if not frame.inside(now):
        return
    x = frame.x(now)
    svg.line(x, TOP, x, HEIGHT - BOTTOM, "chart-now")
    if x + 34 > WIDTH - RIGHT:  # near the right edge: the label on the line's left
        svg.text(x - 4, HEIGHT - BOTTOM - 30, "Now", "chart-label", "end")
    else:
        svg.text(x + 4, HEIGHT - BOTTOM - 30, "Now", "chart-label")


def _draw_worst_case_marks(svg: Svg, frame: Frame, projection: pj.Projection, alarm: Decimal, tz: tzinfo) -> None:
    """Worst-case alarm (circle) and empty (square) instants, spelled out at the top right."""
    notes = []
    if projection.low_reservoir_alarm_at is not None:
        notes.append(f"Worst-case alarm {projection.low_reservoir_alarm_at.astimezone(tz):%Y-%m-%d %H:%M}")
        if frame.inside(projection.low_reservoir_alarm_at):
            x, y = frame.x(projection.low_reservoir_alarm_at), frame.y(float(alarm))
            svg.add(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="4.5" class="chart-marker"/>')
    if projection.empty_at is not None:
        notes.append(f"empty {projection.empty_at.astimezone(tz):%Y-%m-%d %H:%M %Z}")
        if frame.inside(projection.empty_at):
            x, y = frame.x(projection.empty_at), frame.y(0)
            svg.add(f'<rect x="{_n(x - 4)}" y="{_n(y - 4)}" width="8" height="8" class="chart-marker"/>')
    if notes:  # below the due date's label, at the right: clear of it whatever the due date
        svg.text(WIDTH - RIGHT - 4, TOP + 30, " · ".join(notes), "chart-label chart-label-strong", "end")


def _table_rows(series: list) -> list:
    """About a dozen of the series' points, the last always among them."""
    step = max(1, len(series) // 12)
    table = series[::step]
    if table[-1] is not series[-1]:
        table.append(series[-1])
    return table


def volume_chart(*, pump_state: pj.PumpState, history_inputs, projection: pj.Projection, capacity_ml: Decimal,
                 program_times: list[datetime], now: datetime, tz: tzinfo) -> VolumeChart | None:
    """Projected reservoir volume, expected and worst case, with the alarm volume, the
    due date and now."""
    if _nothing_to_chart(projection):
        return None
    refills, readings, programs = history_inputs
    start, end = _volume_span(projection, program_times, now, tz)
    series = pj.volume_series(start=start, end=end, points=SERIES_POINTS, pump=pump_state, refills=refills,
                              readings=readings, programs=programs)
    if not series:
        return None
    top = float(max(capacity_ml, max(s[1] for s in series)))
    frame = Frame(start, end, 0.0, top)
    alarm = pump_state.alarm_volume_ml
    description = _volume_description(projection, alarm, start, end, tz)
    svg = Svg("volume-chart", "Projected reservoir volume (mL)", description, frame)
    svg.axes(value_ticks(0, top), "mL", time_ticks(start, end, tz))
    _draw_alarm_volume(svg, frame, alarm)
    _draw_due_date(svg, frame, projection.refill_due_on, tz)
    _draw_now(svg, frame, now)
    svg.polyline([(frame.x(t), frame.y(float(w))) for t, _e, w in series], "series-worst")
    svg.polyline([(frame.x(t), frame.y(float(e))) for t, e, _w in series], "series-expected")
    _draw_worst_case_marks(svg, frame, projection, alarm, tz)
    svg.legend([("series-expected", "Expected"), ("series-worst", "Worst case (all boluses)"),
                ("chart-alarm", "Alarm volume"), ("chart-due", "Due date"), ("chart-now", "Now")])
    return VolumeChart(svg.render(), _table_rows(series), start, end)


# ------------------------------------------------------------------- dose history


@dataclass(frozen=True)
class DoseChart:
    svg: SafeString
    steps: list[tuple[datetime, Decimal, Decimal]]  # (from, mcg/day, mL/day)


def dose_chart(*, programs: list, refills: list, now: datetime, tz: tzinfo) -> DoseChart | None:
    """Basal daily dose (mcg/day) of each program over time, with the refills marked."""
    live = sorted((p for p in programs if not p.is_voided and p.effective_at <= now), key=lambda p: p.effective_at)
    if not live:
        return None
    start = live[0].effective_at
    end = max(now, start + timedelta(days=1))
    doses = [(p.effective_at, p.daily_dose_mcg, p.daily_volume_ml) for p in live]
    top = float(max(d for _t, d, _v in doses)) * 1.15 or 1.0
    frame = Frame(start, end, 0.0, top)
    first, last = doses[0], doses[-1]
    words = (
        f"Basal daily dose from {first[0].astimezone(tz):%Y-%m-%d}: {_ml(first[1])} mcg/day at first, "
        f"{_ml(last[1])} mcg/day now, over {len(doses)} program(s)."
    )
    svg = Svg("dose-chart", "Dose history (mcg/day)", words, frame)
    svg.axes(value_ticks(0, top), "mcg/day", time_ticks(start, end, tz))
    points: list[tuple[float, float]] = []
    for i, (moment, dose, _ml_day) in enumerate(doses):
        x, y = frame.x(moment), frame.y(float(dose))
        if points:
            points.append((x, points[-1][1]))
        points.append((x, y))
        if i == len(doses) - 1:
            points.append((frame.x(end), y))
    svg.polyline(points, "series-dose")
    for moment, dose, _v in doses:
        svg.add(f'<circle cx="{_n(frame.x(moment))}" cy="{_n(frame.y(float(dose)))}" r="3.5" class="chart-marker"/>')
    for refill in refills:
        if refill.is_voided or not frame.inside(refill.performed_at):
            continue
        x = frame.x(refill.performed_at)
        svg.line(x, HEIGHT - BOTTOM, x, HEIGHT - BOTTOM - 10, "chart-refill")
    svg.legend([("series-dose", "Basal dose"), ("chart-refill", "Refill")])
    return DoseChart(svg.render(), doses)


# ---------------------------------------------------------- residual discrepancies


@dataclass(frozen=True)
class DiscrepancyChart:
    svg: SafeString
    bars: list[tuple[datetime, Decimal, bool]]


def discrepancy_chart(*, refills: list, threshold_ml: Decimal, tz: tzinfo) -> DiscrepancyChart | None:
    """Residual discrepancy of each refill (extracted + left − expected), with the
    clinic's threshold above and below zero; flagged refills are labelled."""
    bars = [(r.performed_at, r.discrepancy_ml, r.discrepancy_flagged) for r in refills
            if not r.is_voided and r.discrepancy_ml is not None]
    if not bars:
        return None
    bars = bars[-24:]
    reach = max([float(threshold_ml) * 1.5, *(abs(float(d)) for _t, d, _f in bars)]) * 1.2
    width = WIDTH
    frame = Frame(bars[0][0], bars[-1][0], -reach, reach, width=width)
    flagged = sum(1 for b in bars if b[2])
    words = (
        f"Residual discrepancy of the last {len(bars)} refills; threshold ±{_ml(threshold_ml)} mL; "
        f"{flagged} flagged. Below zero: less drug than expected remained; above zero: more than expected."
    )
    svg = Svg("discrepancy-chart", "Residual discrepancy at each refill (mL)", words, frame)
    svg.axes(value_ticks(-reach, reach), "mL")
    y0 = frame.y(0)
    plot = width - LEFT - RIGHT
    slot = plot / len(bars)
    bar_w = min(36.0, slot * 0.6)
    for sign in (1, -1):
        y = frame.y(sign * float(threshold_ml))
        svg.line(LEFT, y, width - RIGHT, y, "chart-threshold")
    svg.text(width - RIGHT - 4, frame.y(float(threshold_ml)) - 5, f"+{_ml(threshold_ml)} mL threshold",
             "chart-label", "end")
    svg.line(LEFT, y0, width - RIGHT, y0, "chart-axis")
    for i, (moment, value, is_flagged) in enumerate(bars):
        cx = LEFT + slot * (i + 0.5)
        y = frame.y(float(value))
        top, height = min(y, y0), abs(y - y0)
        cls = "bar-flagged" if is_flagged else "bar-ok"
        svg.add(f'<rect x="{_n(cx - bar_w / 2)}" y="{_n(top)}" width="{_n(bar_w)}" height="{_n(max(height, 1))}" '
                f'class="{cls}"/>')
        label = f"{'+' if value > 0 else ''}{_ml(value)}{' !' if is_flagged else ''}"
        if slot >= 7 * len(label) or is_flagged:  # every value when they fit; flagged ones always
            svg.text(cx, top - 4 if value >= 0 else top + height + 12, label,
                     "chart-label chart-label-strong" if is_flagged else "chart-label", "middle")
        every = max(1, math.ceil(TICK_LABEL_PX / slot))  # dates that do not overlap
        if i % every == 0:
            svg.text(cx, HEIGHT - BOTTOM + 18, _day(moment.astimezone(tz).date()), "chart-tick", "middle")
    svg.line(LEFT, HEIGHT - BOTTOM, width - RIGHT, HEIGHT - BOTTOM, "chart-axis")
    svg.legend([("chart-threshold", "Threshold"), ("bar-legend-flagged", "Flagged (!)")])
    return DiscrepancyChart(svg.render(), bars)


# ------------------------------------------------------------- dose and response

RESPONSE_RIGHT = 60  # room for the score axis's labels at the right
SCORE_MAX = 4.0  # Modified Ashworth and Penn both run 0-4


def highest_ashworth(assessment) -> str | None:
    """The highest Modified Ashworth grade of the limbs assessed (1+ ranks between 1 and
    2: ``symptoms.ASHWORTH_VALUE``), or None when no limb was assessed."""
    grades = [getattr(assessment, name) for name in symptoms.ashworth_fields()]
    grades = [g for g in grades if g]
    return max(grades, key=lambda g: symptoms.ASHWORTH_VALUE[g]) if grades else None


@dataclass(frozen=True)
class ResponseRow:
    """One row of the response table: a program change or an assessment."""

    at: datetime
    dose_mcg: Decimal | None  # the basal daily dose in force at ``at``
    program_change: bool  # the row is a new program (else an assessment)
    ashworth: tuple[str, ...] = ()  # grade per limb in ``symptoms.LIMBS`` order, "" when not assessed
    highest: str | None = None
    penn: int | None = None


@dataclass(frozen=True)
class ResponseChart:
    svg: SafeString
    rows: list[ResponseRow]


def _dose_at(doses: list[tuple[datetime, Decimal]], moment: datetime) -> Decimal | None:
    in_force = [d for t, d in doses if t <= moment]
    return in_force[-1] if in_force else None


def _response_rows(doses: list[tuple[datetime, Decimal]], assessments: list) -> list[ResponseRow]:
    rows = [ResponseRow(t, d, True) for t, d in doses]
    for a in assessments:
        rows.append(ResponseRow(
            a.assessed_at, _dose_at(doses, a.assessed_at), False,
            ashworth=tuple(getattr(a, name) or "" for name in symptoms.ashworth_fields()),
            highest=highest_ashworth(a), penn=a.penn_spasm_frequency,
        ))
    rows.sort(key=lambda r: (r.at, not r.program_change))
    return rows


def _response_description(doses, ashworth, penn, start: datetime, end: datetime, tz: tzinfo) -> str:
    words = [f"Daily dose (left axis, mcg/day) against spasticity scores (right axis, 0 to 4) from "
             f"{start.astimezone(tz):%Y-%m-%d} to {end.astimezone(tz):%Y-%m-%d}."]
    if doses:
        words.append(f"Dose {_ml(doses[0][1])} mcg/day at first, {_ml(doses[-1][1])} mcg/day now.")
    if ashworth:
        (t0, g0), (t1, g1) = ashworth[0], ashworth[-1]
        words.append(f"Highest Modified Ashworth grade of the limbs (1+ drawn as 1.5): {g0} on "
                     f"{t0.astimezone(tz):%Y-%m-%d}, {g1} on {t1.astimezone(tz):%Y-%m-%d}.")
    if penn:
        (t0, p0), (t1, p1) = penn[0], penn[-1]
        words.append(f"Penn spasm frequency: {p0} on {t0.astimezone(tz):%Y-%m-%d}, "
                     f"{p1} on {t1.astimezone(tz):%Y-%m-%d}.")
    return " ".join(words)


def _score_axis(svg: Svg, scores: Frame) -> None:
    """The right-hand axis of the scores, 0 to 4."""
    x = scores.width - scores.right
    for value in range(int(SCORE_MAX) + 1):
        svg.text(x + 6, scores.y(value) + 4, str(value), "chart-tick", "start")
    svg.line(x, TOP, x, scores.height - BOTTOM, "chart-axis")
    middle = (TOP + scores.height - BOTTOM) / 2
    at = scores.width - 16
    svg.add(f'<text x="{_n(at)}" y="{_n(middle)}" class="chart-unit" text-anchor="middle" '
            f'transform="rotate(90 {_n(at)} {_n(middle)})">score (0-4)</text>')


def _dose_steps(frame: Frame, doses: list[tuple[datetime, Decimal]], end: datetime) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for moment, dose in doses:
        x, y = frame.x(moment), frame.y(float(dose))
        if points:
            points.append((x, points[-1][1]))
        points.append((x, y))
    if points:
        points.append((frame.x(end), points[-1][1]))
    return points


def response_chart(*, programs: list, assessments: list, now: datetime, tz: tzinfo) -> ResponseChart | None:
    """The basal daily dose (a step line over time, from the programs) against the
    spasticity scores of the visit assessments on one time axis: the highest Modified
    Ashworth grade of the limbs assessed (1+ drawn as 1.5) and the Penn spasm frequency,
    both 0-4 on the right axis. None until an assessment has a score."""
    live = sorted((a for a in assessments if not a.is_voided and a.assessed_at <= now),
                  key=lambda a: (a.assessed_at, a.pk or 0))
    ashworth = [(a.assessed_at, g) for a in live if (g := highest_ashworth(a)) is not None]
    penn = [(a.assessed_at, a.penn_spasm_frequency) for a in live if a.penn_spasm_frequency is not None]
    if not ashworth and not penn:
        return None
    doses = [(p.effective_at, p.daily_dose_mcg) for p in sorted(
        (p for p in programs if not p.is_voided and p.effective_at <= now), key=lambda p: p.effective_at)]
    start = min([t for t, _ in doses[:1]] + [live[0].assessed_at])
    end = max(now, start + timedelta(days=1))
    top = float(max((d for _t, d in doses), default=Decimal(0))) * 1.15 or 1.0
    frame = Frame(start, end, 0.0, top, right=RESPONSE_RIGHT)
    scores = Frame(start, end, 0.0, SCORE_MAX, right=RESPONSE_RIGHT)
    svg = Svg("response-chart", "Dose and response: daily dose (mcg/day), Ashworth and Penn scores",
              _response_description(doses, ashworth, penn, start, end, tz), frame)
    svg.axes(value_ticks(0, top), "mcg/day", time_ticks(start, end, tz))
    _score_axis(svg, scores)
    if doses:
        svg.polyline(_dose_steps(frame, doses, end), "series-dose")
    if ashworth:
        points = [(scores.x(t), scores.y(symptoms.ASHWORTH_VALUE[g])) for t, g in ashworth]
        svg.polyline(points, "series-ashworth")
        for (x, y), (_t, grade) in zip(points, ashworth, strict=True):
            svg.add(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="4" class="chart-marker"/>')
            svg.text(x, y - 8, grade, "chart-label", "middle")
    if penn:
        points = [(scores.x(t), scores.y(value)) for t, value in penn]
        svg.polyline(points, "series-penn")
        for (x, y), (_t, value) in zip(points, penn, strict=True):
            svg.add(f'<rect x="{_n(x - 4)}" y="{_n(y - 4)}" width="8" height="8" class="chart-marker"/>')
            svg.text(x, y + 18, f"P{value}", "chart-label", "middle")
    svg.legend([("series-dose", "Daily dose (mcg/day)"), ("series-ashworth", "Highest Ashworth grade"),
                ("series-penn", "Penn spasm frequency (P)")])
    return ResponseChart(svg.render(), _response_rows(doses, live))
