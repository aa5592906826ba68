"""The closed-form consumption of pumps/projection.py against the step-by-step walk.

``project()``, ``expected_volume_at()`` and ``volume_series()`` compute a flex program's
consumption in closed form (whole local days in one multiplication, a new piece at each
daylight-saving change). The step-by-step walk they used before is kept as the reference
(``fast=False`` and the private ``_segments``/``_crossings``/``_volume_at``): here both
must agree on every instant to the minute (and the crossings to the microsecond) and on
every volume exactly, for random flex programs in zones with and without daylight saving,
in both hemispheres, with a 30-minute shift (Lord Howe), anchors and program changes near
the changes of the clocks.

No Django, no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal as D
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pumps import projection as pj
from pumps.projection import (
    MODE_CONTINUOUS,
    MODE_FLEX,
    FlexStep,
    ProgramData,
    PumpState,
    ReadingData,
    RefillData,
    expected_volume_at,
    project,
    volume_series,
)

ZONE_NAMES = [
    "America/Chicago",
    "Europe/London",
    "Australia/Sydney",  # southern hemisphere: clocks go forward in October
    "Australia/Lord_Howe",  # a 30-minute shift
    "UTC",
    "Asia/Kolkata",  # +05:30, no daylight saving
]
ZONES = {name: ZoneInfo(name) for name in ZONE_NAMES}
CONCENTRATIONS = ["50", "100", "500", "1000", "1500", "2000"]
DAY = timedelta(days=1)
HORIZON = timedelta(days=pj.HORIZON_DAYS)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _changes_of_the_clock(tz, first_year=2025, last_year=2028):
    """Instants at which ``tz`` changes its UTC offset, found here independently of the
    code under test: hourly samples, then a bisection to the second."""
    out = []
    cursor = datetime(first_year, 1, 1, tzinfo=UTC)
    stop = datetime(last_year + 1, 1, 1, tzinfo=UTC)
    offset = cursor.astimezone(tz).utcoffset()
    while cursor < stop:
        probe = cursor + timedelta(hours=1)
        if probe.astimezone(tz).utcoffset() != offset:
            lo, hi = 0, 3600
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (cursor + timedelta(seconds=mid)).astimezone(tz).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            out.append(cursor + timedelta(seconds=hi))
            offset = probe.astimezone(tz).utcoffset()
        cursor = probe
    return out


CHANGES = {name: _changes_of_the_clock(tz) for name, tz in ZONES.items()}


def test_the_zones_change_their_clocks_as_expected():
    # Sanity of the fixture: two changes a year where there is daylight saving, none elsewhere;
    # Lord Howe moves its clocks by 30 minutes.
    assert len(CHANGES["America/Chicago"]) == 8
    assert len(CHANGES["Europe/London"]) == 8
    assert len(CHANGES["Australia/Sydney"]) == 8
    assert CHANGES["UTC"] == [] and CHANGES["Asia/Kolkata"] == []
    lhi = ZONES["Australia/Lord_Howe"]
    change = CHANGES["Australia/Lord_Howe"][0]
    shift = change.astimezone(lhi).utcoffset() - (change - timedelta(seconds=1)).astimezone(lhi).utcoffset()
    assert abs(shift) == timedelta(minutes=30)


# ------------------------------------------------------------------ strategies

doses = st.one_of(
    st.just(D(0)),
    st.integers(0, 200).map(D),
    st.decimals(min_value=0, max_value=200, places=2, allow_nan=False, allow_infinity=False),
)


@st.composite
def flex_programs(draw, effective_at):
    count = draw(st.integers(1, 8))
    minutes = sorted(draw(st.lists(st.integers(0, 1439), min_size=count, max_size=count, unique=True)))
    steps = tuple(FlexStep(time(m // 60, m % 60), draw(doses)) for m in minutes)
    bolus = draw(st.one_of(st.none(), st.tuples(st.integers(1, 200), st.integers(1, 8))))
    return ProgramData(
        effective_at=effective_at,
        concentration_mcg_per_ml=D(draw(st.sampled_from(CONCENTRATIONS))),
        mode=MODE_FLEX,
        steps=steps,
        bolus_mcg=D(bolus[0]) if bolus else None,
        bolus_max_per_day=bolus[1] if bolus else None,
    )


@st.composite
def continuous_programs(draw, effective_at):
    bolus = draw(st.one_of(st.none(), st.tuples(st.integers(1, 200), st.integers(1, 8))))
    return ProgramData(
        effective_at=effective_at,
        concentration_mcg_per_ml=D(draw(st.sampled_from(CONCENTRATIONS))),
        mode=MODE_CONTINUOUS,
        daily_dose_mcg=D(draw(st.integers(0, 1500))),
        bolus_mcg=D(bolus[0]) if bolus else None,
        bolus_max_per_day=bolus[1] if bolus else None,
    )


def _near(draw, zone, spread):
    """An instant near a change of the clocks (or anywhere in 2025-2027 in a zone without
    any), with seconds and sometimes microseconds."""
    changes = CHANGES[zone]
    if changes and draw(st.integers(0, 4)):
        base = draw(st.sampled_from(changes[:-2]))
    else:
        base = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 3 * 365 * 86_400)))
    moment = base + timedelta(seconds=draw(st.integers(-spread, spread)))
    if draw(st.booleans()):
        moment += timedelta(microseconds=draw(st.integers(0, 999_999)))
    return moment


@st.composite
def scenarios(draw):
    zone = draw(st.sampled_from(ZONE_NAMES))
    t0 = _near(draw, zone, 3 * 86_400)
    programs = [draw(flex_programs(t0 - timedelta(seconds=draw(st.integers(0, 40 * 86_400)))))]
    for _ in range(draw(st.integers(0, 2))):
        if CHANGES[zone] and draw(st.booleans()):
            when = _near(draw, zone, 2 * 86_400)  # a program change near a change of the clocks
            if when <= t0:
                when = t0 + timedelta(seconds=draw(st.integers(1, 60 * 86_400)))
        else:
            when = t0 + timedelta(seconds=draw(st.integers(1, 200 * 86_400)))
        kind = flex_programs if draw(st.integers(0, 3)) else continuous_programs
        programs.append(draw(kind(when)))
    added = D(draw(st.integers(0, 40_000))) / 1000  # mL, to the microlitre
    alarm = D(draw(st.integers(0, 5_000))) / 1000
    readings = []
    if draw(st.integers(0, 3)) == 0:
        read_at = t0 + timedelta(seconds=draw(st.integers(1, 30 * 86_400)))
        readings.append(ReadingData(read_at=read_at, reservoir_volume_ml=D(draw(st.integers(0, 40_000))) / 1000))
    # ``at``: near the anchor, near a change of the clocks, or anywhere up to past the horizon.
    how = draw(st.integers(0, 2))
    if how == 0:
        at = t0 + timedelta(seconds=draw(st.integers(0, 3 * 86_400)))
    elif how == 1:
        at = max(t0, _near(draw, zone, 86_400))
    else:
        at = t0 + timedelta(seconds=draw(st.integers(0, 800 * 86_400)))
    if draw(st.booleans()):
        at += timedelta(microseconds=draw(st.integers(0, 999_999)))
    return {
        "zone": zone,
        "pump": PumpState(tz=ZONES[zone], alarm_volume_ml=alarm),
        "refills": [RefillData(performed_at=t0, added_volume_ml=added)],
        "readings": readings,
        "programs": programs,
        "at": at,
    }


def _records(s):
    return {k: s[k] for k in ("pump", "refills", "readings", "programs")}


# ------------------------------------------------------------------ properties


@FAST
@given(s=scenarios())
def test_project_fast_equals_the_step_by_step_walk(s):
    fast = project(at=s["at"], **_records(s))
    slow = project(at=s["at"], fast=False, **_records(s))
    for name in ("low_reservoir_alarm_at", "empty_at", "expected_low_reservoir_alarm_at", "expected_empty_at",
                 "reservoir_volume_ml", "worst_case_volume_ml", "status", "refill_due_on"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast == slow  # every field


@FAST
@given(s=scenarios(), offsets=st.lists(st.integers(0, 800 * 86_400 * 1_000_000), min_size=1, max_size=8))
def test_crossings_to_the_microsecond_and_volumes_exactly(s, offsets):
    tz = s["pump"].tz
    t0 = s["refills"][0].performed_at
    v0 = s["refills"][0].anchor_volume()
    programs = sorted(s["programs"], key=lambda p: p.effective_at)
    horizon = t0 + HORIZON
    end = t0 + timedelta(days=800)
    walk = pj._Consumption(programs, tz, pj._to_us(t0), pj._to_us(end))
    reference = list(pj._segments(programs, tz, t0, end))

    # Volumes at random instants (and at every boundary of the reference's first pieces): exact.
    moments = [t0 + timedelta(microseconds=o) for o in offsets]
    moments += [seg.end for seg in reference[:50]]
    for moment in moments:
        for worst in (False, True):
            assert walk.volume(v0, moment, worst) == pj._volume_at(reference, v0, moment, worst), (moment, worst)

    # The first instant at or below each threshold, to the microsecond, within the horizon.
    alarm = Fraction(s["pump"].alarm_volume_ml)
    thresholds = {"lra": alarm, "empty": Fraction(0), "half": v0 / 2, "almost": v0 - Fraction(1, 10**6)}
    within = list(pj._segments(programs, tz, t0, horizon))
    for worst in (False, True):
        expected = pj._crossings(within, v0, thresholds, worst, t0)
        got = walk.crossings(v0, thresholds, worst, horizon)
        for name in thresholds:
            want = expected[name] if expected[name] is not None and expected[name] <= horizon else None
            assert got[name] == want, (name, worst)


@FAST
@given(s=scenarios())
def test_expected_volume_at_and_volume_series_equal_the_walk(s):
    at = s["at"] + timedelta(microseconds=1)  # never exactly on the anchor
    assert expected_volume_at(at=at, **_records(s)) == expected_volume_at(at=at, fast=False, **_records(s))
    start = s["refills"][0].performed_at
    for read in s["readings"]:
        start = max(start, read.read_at)
    end = min(at, start + timedelta(days=120))
    assume(end > start)
    fast = volume_series(start=start, end=end, points=13, **_records(s))
    slow = volume_series(start=start, end=end, points=13, fast=False, **_records(s))
    assert fast == slow


# --------------------------------------------------------------- worked cases


def _flex_36ml(tz, t0):
    steps = [(0, 0, "15"), (3, 0, "12"), (6, 0, "20"), (9, 0, "25"), (12, 0, "22"), (15, 0, "25"), (18, 0, "20"),
             (21, 30, "18")]
    return {
        "pump": PumpState(tz=tz, alarm_volume_ml=D("2")),
        "refills": [RefillData(performed_at=t0, added_volume_ml=D("36"))],
        "readings": [],
        "programs": [ProgramData(effective_at=t0 - 30 * DAY, concentration_mcg_per_ml=D("1000"), mode=MODE_FLEX,
                             steps=tuple(FlexStep(time(h, m), D(d)) for h, m, d in steps), bolus_mcg=D("50"),
                             bolus_max_per_day=4)],
    }


@pytest.mark.parametrize("zone", ZONE_NAMES)
def test_the_benchmark_program_in_every_zone(zone):
    # The program of the performance issue (8 steps, boluses, 36 mL at 1000 mcg/mL), refilled
    # a few days before the spring change of the clocks, asked about at the anchor, across
    # the change, after the alarm, and past the horizon.
    tz = ZONES[zone]
    t0 = datetime(2026, 3, 5, 9, 0, tzinfo=tz)
    records = _flex_36ml(tz, t0)
    for at in (t0, t0 + 4 * DAY, t0 + 60 * DAY, t0 + 800 * DAY):
        assert project(at=at, **records) == project(at=at, fast=False, **records)


@pytest.mark.parametrize("zone", ZONE_NAMES)
def test_a_charts_series_equals_the_walk(zone):
    # A chart's 121 points (charts.SERIES_POINTS) over both clocks' changes and past empty,
    # flex then continuous with boluses: the volumes the series computes in integers
    # (``_Consumption.volumes_ml``) are the walk's, floored at 0.
    tz = ZONES[zone]
    t0 = datetime(2026, 3, 5, 9, 0, tzinfo=tz)
    records = _flex_36ml(tz, t0)
    start, end = t0.astimezone(UTC), t0.astimezone(UTC) + 240 * DAY
    assert volume_series(start=start, end=end, points=121, **records) == volume_series(
        start=start, end=end, points=121, fast=False, **records)
    records["programs"] = [ProgramData(effective_at=t0 - DAY, concentration_mcg_per_ml=D("1500"),
                                       mode=MODE_CONTINUOUS, daily_dose_mcg=D("333"), bolus_mcg=D("25"),
                                       bolus_max_per_day=3)]
    series = volume_series(start=start, end=end, points=121, **records)
    assert series == volume_series(start=start, end=end, points=121, fast=False, **records)
    assert series[-1][1:] == (D("0.000"), D("0.000"))


def test_a_flex_program_that_delivers_nothing_never_empties():
    tz = ZONES["Australia/Lord_Howe"]
    t0 = datetime(2026, 4, 1, tzinfo=tz)
    records = _flex_36ml(tz, t0)
    records["programs"] = [ProgramData(effective_at=t0, concentration_mcg_per_ml=D("500"), mode=MODE_FLEX,
                                   steps=(FlexStep(time(0), D(0)), FlexStep(time(12), D(0))))]
    fast = project(at=t0 + 900 * DAY, **records)
    assert fast == project(at=t0 + 900 * DAY, fast=False, **records)
    assert fast.empty_at is None and fast.low_reservoir_alarm_at is None
    assert fast.reservoir_volume_ml == D("36.000")


def test_a_crossing_in_the_repeated_hour_of_lord_howe():
    # Lord Howe falls back from +11:00 to +10:30 at 02:00 local on 2026-04-05 (15:00 UTC on
    # the 4th): local 01:30-02:00 runs twice. One step of 60 mcg/h at 100 mcg/mL from 01:30
    # (0.6 mL/h), 0 mcg/h otherwise. From 01:30 (first pass, 14:30 UTC) with 0.5 mL: 0.3 mL
    # in the first pass, then the clock reads 01:30 again (15:00 UTC) and the step runs
    # again: the remaining 0.2 mL take 20 minutes -> empty at 15:20 UTC (01:50, second pass).
    tz = ZONES["Australia/Lord_Howe"]
    t0 = datetime(2026, 4, 4, 14, 30, tzinfo=UTC)
    records = {
        "pump": PumpState(tz=tz, alarm_volume_ml=D("0.1")),
        "refills": [RefillData(performed_at=t0, added_volume_ml=D("0.5"))],
        "readings": [],
        "programs": [ProgramData(effective_at=t0 - DAY, concentration_mcg_per_ml=D("100"), mode=MODE_FLEX,
                             steps=(FlexStep(time(1, 30), D(60)), FlexStep(time(2, 0), D(0))))],
    }
    fast = project(at=t0, **records)
    assert fast == project(at=t0, fast=False, **records)
    assert fast.expected_empty_at == datetime(2026, 4, 4, 15, 20, tzinfo=UTC)
    # Alarm at 0.1 mL: 0.4 mL used -> 10 minutes into the second pass.
    assert fast.expected_low_reservoir_alarm_at == datetime(2026, 4, 4, 15, 10, tzinfo=UTC)
