"""Pure tests of the reservoir projection engine (pumps/projection.py).

No Django, no database: plain pytest functions and hypothesis properties.

Every expected value below was computed by hand from docs/clinical-rules.md (§1, §3-§7)
and the arithmetic is shown in the comments. Instants are compared as aware datetimes (they
compare by instant); where the local wall clock matters it is asserted explicitly.

Calendar facts used (Gregorian calendar / IANA tz database, 2026):
- America/Chicago: DST starts 2026-03-08 02:00 CST -> 03:00 CDT (08:00 UTC);
  ends 2026-11-01 02:00 CDT -> 01:00 CST (07:00 UTC).
- Australia/Sydney: DST ends 2026-04-05 03:00 AEDT -> 02:00 AEST (2026-04-04 16:00 UTC);
  starts 2026-10-04 02:00 AEST -> 03:00 AEDT (2026-10-03 16:00 UTC).
- America/Santiago springs forward at local midnight 2026-09-06 (04:00 UTC, -04 -> -03);
  America/Havana at local midnight 2026-03-08 (05:00 UTC, -05 -> -04).
- Weekdays: 2026-04-10 Fri, 04-11 Sat, 04-03 Fri, 04-04 Sat, 2026-06-16 Tue, 06-29 Mon,
  07-02 Thu, 07-03 Fri, 07-31 Fri, 08-02 Sun, 08-03 Mon, 09-30 Wed, 10-30 Fri,
  2026-01-29 Thu, 05-08 Fri, 05-09 Sat, 05-16 Sat, 2026-06-02 Tue.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pumps.projection import (
    MODE_CONTINUOUS,
    MODE_FLEX,
    STATUS_ALARM,
    STATUS_DUE_SOON,
    STATUS_EMPTY,
    STATUS_INACTIVE,
    STATUS_INCOMPLETE,
    STATUS_OK,
    STATUS_OVERDUE,
    STATUSES,
    FlexStep,
    Policy,
    ProgramData,
    PumpState,
    ReadingData,
    RefillData,
    expected_volume_at,
    flex_daily_dose,
    next_status_change,
    previous_open_day,
    project,
    refill_due_on,
    start_of_local_day,
    status_at,
    to_decimal_ml,
    volume_series,
)

CHI = ZoneInfo("America/Chicago")
SYD = ZoneInfo("Australia/Sydney")
LA = ZoneInfo("America/Los_Angeles")
AKL = ZoneInfo("Pacific/Auckland")
TYO = ZoneInfo("Asia/Tokyo")
UTCZ = ZoneInfo("UTC")
SANTIAGO = ZoneInfo("America/Santiago")
HAVANA = ZoneInfo("America/Havana")

H = timedelta(hours=1)
DAY = timedelta(days=1)
MIN = timedelta(minutes=1)


# --------------------------------------------------------------------------- helpers


def cont(effective_at, conc, dose, bolus=None, max_per_day=None):
    return ProgramData(
        effective_at=effective_at,
        concentration_mcg_per_ml=D(conc),
        mode=MODE_CONTINUOUS,
        daily_dose_mcg=D(dose),
        bolus_mcg=D(bolus) if bolus is not None else None,
        bolus_max_per_day=max_per_day,
    )


def flex(effective_at, conc, steps, bolus=None, max_per_day=None):
    """steps: iterable of (hour, minute, mcg_per_hour)."""
    return ProgramData(
        effective_at=effective_at,
        concentration_mcg_per_ml=D(conc),
        mode=MODE_FLEX,
        steps=tuple(FlexStep(time(h, m), D(dose)) for h, m, dose in steps),
        bolus_mcg=D(bolus) if bolus is not None else None,
        bolus_max_per_day=max_per_day,
    )


def refill(at, added, residual="0", bridge="0", stability=180):
    return RefillData(
        performed_at=at,
        added_volume_ml=D(added),
        residual_left_ml=D(residual),
        bridge_bolus_ml=D(bridge),
        stability_days=stability,
    )


def reading(at, volume):
    return ReadingData(read_at=at, reservoir_volume_ml=D(volume))


def pump(tz, alarm="2", high_risk=False, active=True):
    return PumpState(tz=tz, alarm_volume_ml=D(alarm), high_risk=high_risk, active=active)


def local(moment, tz):
    """Naive local wall-clock reading of an instant (for wall-clock assertions)."""
    return moment.astimezone(tz).replace(tzinfo=None)


# The worked example (docs/clinical-rules.md §12) ---------------------------------------------------------
# Chicago, refill 2026-02-02 09:00 CST (= 15:00 UTC), 36 mL of 1000 mcg/mL,
# continuous 450 mcg/day -> 0.45 mL/day, alarm 2 mL.
WE_T0 = datetime(2026, 2, 2, 9, 0, tzinfo=CHI)
WE_LRA = datetime(2026, 4, 18, 23, 20, tzinfo=CHI)  # CDT = 2026-04-19 04:20 UTC
WE_EMPTY = datetime(2026, 4, 23, 10, 0, tzinfo=CHI)  # CDT = 2026-04-23 15:00 UTC
WE_EXPIRY = datetime(2026, 8, 1, 10, 0, tzinfo=CHI)  # CDT = 2026-08-01 15:00 UTC
WE_DUE = date(2026, 4, 10)


def worked(at, *, refills=None, readings=(), programs=None, policy=None, **pump_kw):
    kw = {}
    if policy is not None:
        kw["policy"] = policy
    return project(
        at=at,
        pump=pump(CHI, **pump_kw),
        refills=refills if refills is not None else [refill(WE_T0, "36")],
        readings=list(readings),
        programs=programs if programs is not None else [cont(WE_T0, "1000", "450")],
        **kw,
    )


# ===================================================================== the worked example


def test_worked_example_instants_and_due_date():
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI))
    # LRA: (36 - 2) / 0.45 = 75.555... d = 75 d 13 h 20 min (0.5555 d * 24 = 13.333 h).
    # 2026-02-02 15:00 UTC + 75 d = 2026-04-18 15:00 UTC; + 13:20 = 2026-04-19 04:20 UTC
    # = 2026-04-18 23:20 CDT.
    assert p.low_reservoir_alarm_at == datetime(2026, 4, 19, 4, 20, tzinfo=UTC)
    assert p.low_reservoir_alarm_at == WE_LRA
    # Empty: 36 / 0.45 = 80 d -> 2026-04-23 15:00 UTC = 10:00 CDT.
    assert p.empty_at == WE_EMPTY
    # No on-demand bolus: expected == worst case.
    assert p.expected_low_reservoir_alarm_at == WE_LRA
    assert p.expected_empty_at == WE_EMPTY
    # Expiry: Feb 2 + 180 d (Feb 28 d: Mar 2 = 28, Apr 2 = 59, May 2 = 89, Jun 2 = 120,
    # Jul 2 = 150, Aug 1 = 180) -> 2026-08-01 15:00 UTC = 10:00 CDT.
    assert p.drug_expires_at == WE_EXPIRY
    # Due: min(04-18 - 7 = 04-11 (Sat), 08-01 - 1 = 07-31) = 04-11 -> Fri 04-10.
    assert p.refill_due_on == WE_DUE
    assert p.anchor_at == WE_T0
    assert p.anchor_volume_ml == D("36.000")
    assert p.daily_volume_ml == D("0.450")
    assert p.worst_case_daily_volume_ml == D("0.450")


def test_worked_example_lra_wall_clock_is_cdt_not_naive():
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI))
    # Naive wall-clock arithmetic (09:00 + 75 d 13:20) would read 22:20; real elapsed time
    # across the 2026-03-08 spring-forward reads one hour later: 23:20 CDT (UTC-5).
    assert local(p.low_reservoir_alarm_at, CHI) == datetime(2026, 4, 18, 23, 20)
    assert p.low_reservoir_alarm_at.astimezone(CHI).utcoffset() == timedelta(hours=-5)
    assert local(p.empty_at, CHI) == datetime(2026, 4, 23, 10, 0)
    assert local(p.drug_expires_at, CHI) == datetime(2026, 8, 1, 10, 0)


def test_worked_example_due_soon_on_march_28():
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI))
    # 2026-04-10 - 2026-03-28 = 3 + 10 = 13 days <= 14 -> due_soon.
    assert p.status == STATUS_DUE_SOON
    assert p.days_to_due == 13
    # 03-28 12:00 CDT = 17:00 UTC; elapsed since 02-02 15:00 UTC = 54 d 2 h.
    # 0.45 * 54 = 24.3; 0.45 * 2/24 = 0.0375; 36 - 24.3375 = 11.6625 -> half-up 11.663.
    assert p.reservoir_volume_ml == D("11.663")
    assert p.worst_case_volume_ml == D("11.663")


def test_worked_example_ok_on_march_20():
    p = worked(datetime(2026, 3, 20, 12, 0, tzinfo=CHI))
    # 04-10 - 03-20 = 11 + 10 = 21 days > 14 -> ok.
    assert p.status == STATUS_OK
    assert p.days_to_due == 21
    # 03-20 17:00 UTC: 46 d 2 h elapsed: 20.7 + 0.0375 = 20.7375 -> 15.2625 -> 15.263.
    assert p.reservoir_volume_ml == D("15.263")


# ================================================================ status boundaries


def test_due_soon_boundary_exactly_due_soon_days():
    # 04-10 - 03-27 = 14 -> due_soon from local midnight 03-27 (CDT).
    p = worked(datetime(2026, 3, 27, 0, 0, tzinfo=CHI))
    assert (p.status, p.days_to_due) == (STATUS_DUE_SOON, 14)
    # One minute earlier it is still 03-26 locally: 15 days -> ok.
    p = worked(datetime(2026, 3, 26, 23, 59, tzinfo=CHI))
    assert (p.status, p.days_to_due) == (STATUS_OK, 15)


def test_overdue_from_local_midnight_after_due_day():
    p = worked(datetime(2026, 4, 10, 23, 59, tzinfo=CHI))
    assert (p.status, p.days_to_due) == (STATUS_DUE_SOON, 0)
    p = worked(datetime(2026, 4, 11, 0, 0, tzinfo=CHI))
    assert (p.status, p.days_to_due) == (STATUS_OVERDUE, -1)


def test_alarm_from_the_lra_minute_and_beats_overdue():
    # One minute before the LRA the pump is past due (04-18 > 04-10): overdue.
    assert worked(datetime(2026, 4, 18, 23, 19, tzinfo=CHI)).status == STATUS_OVERDUE
    # At the LRA instant (at >= LRA) alarm wins over overdue.
    assert worked(datetime(2026, 4, 18, 23, 20, tzinfo=CHI)).status == STATUS_ALARM


def test_empty_from_the_empty_minute_and_volume_zero():
    p = worked(datetime(2026, 4, 23, 9, 59, tzinfo=CHI))
    assert p.status == STATUS_ALARM
    # 1 minute before empty: 0.45 mL/day / 1440 = 0.0003125 mL left -> 0.000 (half-up).
    assert p.reservoir_volume_ml == D("0.000")
    p = worked(datetime(2026, 4, 23, 10, 0, tzinfo=CHI))
    assert p.status == STATUS_EMPTY
    assert p.reservoir_volume_ml == D("0.000")
    # Ten days later, still empty, volume floored at 0 (never negative).
    p = worked(datetime(2026, 5, 3, 10, 0, tzinfo=CHI))
    assert p.status == STATUS_EMPTY
    assert p.reservoir_volume_ml == D("0.000")
    assert p.worst_case_volume_ml == D("0.000")


def test_overdue_uses_local_date_los_angeles():
    # LA, refill Mon 2026-05-04 09:00 PDT (16:00 UTC), 20 mL, 500 mcg/day @1000 = 0.5 mL/day.
    # LRA (20-2)/0.5 = 36 d -> 2026-06-09 16:00 UTC = 09:00 PDT; due 06-09 - 7 = Tue 06-02.
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=LA)

    def at(moment):
        return project(
            at=moment,
            pump=pump(LA),
            refills=[refill(t0, "20")],
            readings=[],
            programs=[cont(t0, "1000", "500")],
        )

    # 2026-06-03 06:59 UTC is still 06-02 23:59 PDT: the due day itself, not overdue,
    # although the UTC date (06-03) is already past due_on.
    p = at(datetime(2026, 6, 3, 6, 59, tzinfo=UTC))
    assert p.refill_due_on == date(2026, 6, 2)
    assert p.low_reservoir_alarm_at == datetime(2026, 6, 9, 9, 0, tzinfo=LA)
    assert (p.status, p.days_to_due) == (STATUS_DUE_SOON, 0)
    # 07:00 UTC = 06-03 00:00 PDT -> overdue.
    p = at(datetime(2026, 6, 3, 7, 0, tzinfo=UTC))
    assert (p.status, p.days_to_due) == (STATUS_OVERDUE, -1)


def test_status_at_overdue_uses_local_date_auckland():
    # Auckland in May is NZST = UTC+12. due_on 2026-05-01.
    kw = dict(
        tz=AKL, active=True, complete=True, empty_at=None, lra_at=None,
        due_on=date(2026, 5, 1), due_soon_days=14,
    )
    # 2026-05-01 11:59 UTC = 23:59 NZST on 05-01 -> due day, due_soon.
    assert status_at(datetime(2026, 5, 1, 11, 59, tzinfo=UTC), **kw) == STATUS_DUE_SOON
    # 2026-05-01 12:00 UTC = 2026-05-02 00:00 NZST -> overdue, though UTC date is still 05-01.
    assert status_at(datetime(2026, 5, 1, 12, 0, tzinfo=UTC), **kw) == STATUS_OVERDUE


def _status_kw(**over):
    kw = dict(
        tz=CHI,
        active=True,
        complete=True,
        empty_at=WE_EMPTY,
        lra_at=WE_LRA,
        due_on=WE_DUE,
        due_soon_days=14,
    )
    kw.update(over)
    return kw


def test_status_at_first_match_order():
    # After empty: empty beats alarm and overdue (all three hold).
    assert status_at(WE_EMPTY + H, **_status_kw()) == STATUS_EMPTY
    # Between LRA and empty: alarm beats overdue.
    assert status_at(WE_LRA + H, **_status_kw()) == STATUS_ALARM
    # Before LRA but after due day: overdue.
    assert status_at(datetime(2026, 4, 15, 12, tzinfo=CHI), **_status_kw()) == STATUS_OVERDUE
    # 5 days before due: due_soon.
    assert status_at(datetime(2026, 4, 5, 12, tzinfo=CHI), **_status_kw()) == STATUS_DUE_SOON
    # 30 days before due: ok.
    assert status_at(datetime(2026, 3, 11, 12, tzinfo=CHI), **_status_kw()) == STATUS_OK
    # Nothing known beyond completeness: ok.
    none_kw = _status_kw(empty_at=None, lra_at=None, due_on=None)
    assert status_at(datetime(2026, 3, 11, 12, tzinfo=CHI), **none_kw) == STATUS_OK


def test_status_at_inactive_and_incomplete_first():
    late = WE_EMPTY + 10 * DAY
    assert status_at(late, **_status_kw(active=False)) == STATUS_INACTIVE
    assert status_at(late, **_status_kw(active=False, complete=False)) == STATUS_INACTIVE
    assert status_at(late, **_status_kw(complete=False)) == STATUS_INCOMPLETE


def test_status_at_due_soon_days_zero_and_custom():
    # due_soon_days = 0: only the due day itself is due_soon.
    kw = _status_kw(empty_at=None, lra_at=None, due_soon_days=0)
    assert status_at(datetime(2026, 4, 10, 8, tzinfo=CHI), **kw) == STATUS_DUE_SOON
    assert status_at(datetime(2026, 4, 9, 23, 59, tzinfo=CHI), **kw) == STATUS_OK
    # Through project(): Policy(due_soon_days=20): 03-21 -> 20 days due_soon; 03-20 -> 21 ok.
    pol = Policy(due_soon_days=20)
    assert worked(datetime(2026, 3, 21, 0, 0, tzinfo=CHI), policy=pol).status == STATUS_DUE_SOON
    assert worked(datetime(2026, 3, 20, 23, 59, tzinfo=CHI), policy=pol).status == STATUS_OK


# ============================================================================ anchor


def test_reading_after_refill_anchors_and_keeps_refill_expiry():
    # Reading 2026-03-01 10:00 CST (16:00 UTC) reports 20 mL.
    r_at = datetime(2026, 3, 1, 10, 0, tzinfo=CHI)
    p = worked(datetime(2026, 3, 2, 12, 0, tzinfo=CHI), readings=[reading(r_at, "20")])
    assert p.anchor_at == r_at
    assert p.anchor_volume_ml == D("20.000")
    # LRA: 18 / 0.45 = 40 d -> 2026-04-10 16:00 UTC = 11:00 CDT.
    assert p.low_reservoir_alarm_at == datetime(2026, 4, 10, 11, 0, tzinfo=CHI)
    # Empty: 20 / 0.45 = 44 4/9 d = 44 d 10 h 40 min -> 04-14 16:00 UTC + 10:40
    # = 2026-04-15 02:40 UTC = 2026-04-14 21:40 CDT.
    assert p.empty_at == datetime(2026, 4, 14, 21, 40, tzinfo=CHI)
    # A reading does not renew the drug: expiry still from the 02-02 refill.
    assert p.drug_expires_at == WE_EXPIRY
    # Due: 04-10 - 7 = 04-03 (Fri, open).
    assert p.refill_due_on == date(2026, 4, 3)
    # Volume at 03-02 12:00 CST (18:00 UTC): 1 d 2 h after reading: 0.45 + 0.0375 = 0.4875
    # -> 19.5125 -> 19.513 (half-up).
    assert p.reservoir_volume_ml == D("19.513")


def test_refill_after_reading_anchors():
    early = reading(datetime(2026, 1, 20, 9, 0, tzinfo=CHI), "5")
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI), readings=[early])
    assert p.anchor_at == WE_T0
    assert p.anchor_volume_ml == D("36.000")
    assert p.empty_at == WE_EMPTY


def test_refill_wins_tie_with_reading_at_same_instant():
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI), readings=[reading(WE_T0, "30")])
    assert p.anchor_volume_ml == D("36.000")  # refill's V0, not the reading's 30
    assert p.low_reservoir_alarm_at == WE_LRA
    assert p.empty_at == WE_EMPTY


def test_anchor_volume_residual_plus_added_minus_bridge_bolus():
    # V0 = 1.5 + 34 - 0.5 = 35 mL.
    p = worked(
        datetime(2026, 2, 3, 9, 0, tzinfo=CHI),
        refills=[refill(WE_T0, "34", residual="1.5", bridge="0.5")],
    )
    assert p.anchor_volume_ml == D("35.000")
    # LRA: 33 / 0.45 = 73 1/3 d = 73 d 8 h -> 02-02 15:00 UTC + 73 d = 04-16 15:00 UTC
    # (+28 -> 03-02, +59 -> 04-02, +73 -> 04-16); + 8 h = 23:00 UTC = 18:00 CDT.
    assert p.low_reservoir_alarm_at == datetime(2026, 4, 16, 18, 0, tzinfo=CHI)
    # Empty: 35 / 0.45 = 77 7/9 d = 77 d 18 h 40 min -> 04-20 15:00 UTC + 18:40
    # = 04-21 09:40 UTC = 04:40 CDT.
    assert p.empty_at == datetime(2026, 4, 21, 4, 40, tzinfo=CHI)
    # After one day: 35 - 0.45 = 34.55.
    assert p.reservoir_volume_ml == D("34.550")


def test_records_after_at_are_ignored():
    at = datetime(2026, 2, 10, 9, 0, tzinfo=CHI)
    p = worked(
        at,
        refills=[refill(WE_T0, "36"), refill(datetime(2026, 2, 15, 9, 0, tzinfo=CHI), "10")],
        readings=[reading(datetime(2026, 3, 1, 10, 0, tzinfo=CHI), "20")],
        programs=[
            cont(WE_T0, "1000", "450"),
            cont(datetime(2026, 2, 12, 9, 0, tzinfo=CHI), "1000", "900"),
        ],
    )
    assert p.anchor_at == WE_T0
    assert p.low_reservoir_alarm_at == WE_LRA
    assert p.empty_at == WE_EMPTY
    assert p.daily_volume_ml == D("0.450")
    # 8 days: 36 - 3.6 = 32.4.
    assert p.reservoir_volume_ml == D("32.400")
    assert p.refill_due_on == WE_DUE


def test_no_anchor_is_incomplete():
    p = worked(datetime(2026, 3, 1, tzinfo=CHI), refills=[])
    assert p.status == STATUS_INCOMPLETE
    assert p.anchor_at is None
    assert p.low_reservoir_alarm_at is None
    assert p.empty_at is None
    assert p.refill_due_on is None
    assert p.reservoir_volume_ml is None
    assert p.days_to_due is None
    # Asking about a moment before the only refill: no anchor yet either.
    assert worked(WE_T0 - MIN).status == STATUS_INCOMPLETE


def test_no_program_in_force_at_anchor_is_incomplete():
    # The only program begins one hour after the refill: nothing in force at the anchor.
    p = worked(WE_T0 + DAY, programs=[cont(WE_T0 + H, "1000", "450")])
    assert p.status == STATUS_INCOMPLETE
    assert p.low_reservoir_alarm_at is None
    assert p.refill_due_on is None


def test_program_effective_at_the_refill_instant_is_in_force():
    # A refill carrying a new program (900 mcg/day -> 0.9 mL/day) at the same instant.
    p = worked(
        WE_T0 + H,
        programs=[cont(datetime(2026, 1, 1, tzinfo=CHI), "1000", "450"), cont(WE_T0, "1000", "900")],
    )
    assert p.daily_volume_ml == D("0.900")
    # LRA: 34 / 0.9 = 37 7/9 d = 37 d 18 h 40 min -> 03-11 15:00 UTC + 18:40
    # = 2026-03-12 09:40 UTC = 04:40 CDT.
    assert p.low_reservoir_alarm_at == datetime(2026, 3, 12, 4, 40, tzinfo=CHI)
    # Empty: 36 / 0.9 = 40 d -> 2026-03-14 15:00 UTC = 10:00 CDT.
    assert p.empty_at == datetime(2026, 3, 14, 10, 0, tzinfo=CHI)


def test_inactive_pump_is_inactive_with_or_without_data():
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI), active=False)
    assert p.status == STATUS_INACTIVE
    p = worked(datetime(2026, 3, 28, 12, 0, tzinfo=CHI), refills=[], active=False)
    assert p.status == STATUS_INACTIVE
    # Even past the empty instant an explanted pump is inactive, not empty.
    assert worked(WE_EMPTY + DAY, active=False).status == STATUS_INACTIVE


# ====================================================== piecewise continuous / flex


def _tokyo_piecewise(at):
    # Tokyo (UTC+9, no DST). Refill 2026-01-05 08:00 JST, 20 mL; 500 mcg/day @500 = 1 mL/day;
    # from 2026-01-10 08:00 JST 250 mcg/day @500 = 0.5 mL/day.
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=TYO)
    return project(
        at=at,
        pump=pump(TYO),
        refills=[refill(t0, "20")],
        readings=[],
        programs=[cont(t0, "500", "500"), cont(datetime(2026, 1, 10, 8, 0, tzinfo=TYO), "500", "250")],
    )


def test_piecewise_continuous_to_continuous():
    p = _tokyo_piecewise(datetime(2026, 1, 12, 8, 0, tzinfo=TYO))
    # 5 d at 1 mL/day -> 15 mL at 01-10 08:00. Then 0.5 mL/day.
    # LRA: 13 / 0.5 = 26 d -> 2026-02-05 08:00 JST. Empty: 15 / 0.5 = 30 d -> 02-09 08:00.
    assert p.low_reservoir_alarm_at == datetime(2026, 2, 5, 8, 0, tzinfo=TYO)
    assert p.empty_at == datetime(2026, 2, 9, 8, 0, tzinfo=TYO)
    # 01-12 08:00: 15 - 2 * 0.5 = 14.
    assert p.reservoir_volume_ml == D("14.000")
    assert p.daily_volume_ml == D("0.500")
    # Due: 02-05 - 7 = 01-29 (Thu).
    assert p.refill_due_on == date(2026, 1, 29)


def test_piecewise_future_program_change_unknown_before_it_is_recorded():
    # As of 01-08 the change of 01-10 is not yet recorded: 1 mL/day throughout.
    p = _tokyo_piecewise(datetime(2026, 1, 8, 8, 0, tzinfo=TYO))
    # LRA 18 d -> 01-23 08:00; empty 20 d -> 01-25 08:00; volume 20 - 3 = 17.
    assert p.low_reservoir_alarm_at == datetime(2026, 1, 23, 8, 0, tzinfo=TYO)
    assert p.empty_at == datetime(2026, 1, 25, 8, 0, tzinfo=TYO)
    assert p.reservoir_volume_ml == D("17.000")
    assert p.daily_volume_ml == D("1.000")


def test_piecewise_continuous_to_flex():
    # Tokyo. Refill 2026-01-05 12:00 JST, 12 mL; 500 mcg/day @1000 = 0.5 mL/day.
    # From 01-07 12:00 flex @1000: 06:00 -> 50 mcg/h (0.05 mL/h), 22:00 -> 25 mcg/h
    # (0.025 mL/h); before 06:00 the 22:00 step is in force. Daily 16*0.05 + 8*0.025 = 1 mL.
    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=TYO)
    p = project(
        at=datetime(2026, 1, 8, 0, 0, tzinfo=TYO),
        pump=pump(TYO),
        refills=[refill(t0, "12")],
        readings=[],
        programs=[
            cont(t0, "1000", "500"),
            flex(datetime(2026, 1, 7, 12, 0, tzinfo=TYO), "1000", [(6, 0, "50"), (22, 0, "25")]),
        ],
    )
    # 01-07 12:00: 12 - 2*0.5 = 11. 12:00-22:00: 10 h * 0.05 = 0.5 -> 10.5.
    # 22:00-24:00: 2 h * 0.025 = 0.05 -> 10.45 at 01-08 00:00.
    assert p.reservoir_volume_ml == D("10.450")
    assert p.daily_volume_ml == D("1.000")
    # 01-08 06:00: 10.5 - 8 h * 0.025 = 10.3. Each later day from 06:00 uses 1 mL:
    # 01-16 06:00 -> 10.3 - 8 = 2.3; then 0.3 / 0.05 = 6 h -> LRA 01-16 12:00 JST.
    assert p.low_reservoir_alarm_at == datetime(2026, 1, 16, 12, 0, tzinfo=TYO)
    # 01-16 22:00 1.5; 01-17 06:00 1.3; 22:00 0.5; 01-18 06:00 0.3; + 6 h -> 12:00 empty.
    assert p.empty_at == datetime(2026, 1, 18, 12, 0, tzinfo=TYO)


# ============================================================================== flex


def test_flex_daily_dose_values():
    # 00:00 10/h for 7.5 h = 75; 07:30 20/h for 13.75 h = 275; 21:15 5/h for 2.75 h = 13.75.
    steps = [
        FlexStep(time(0, 0), D("10")),
        FlexStep(time(7, 30), D("20")),
        FlexStep(time(21, 15), D("5")),
    ]
    assert flex_daily_dose(steps) == Fraction("363.75")
    # Cyclic, first step not at midnight: 06:00 50/h * 16 h + 22:00 25/h * 8 h = 1000.
    assert flex_daily_dose([FlexStep(time(6), D("50")), FlexStep(time(22), D("25"))]) == 1000
    # A single step runs 24 h: 12.5 * 24 = 300.
    assert flex_daily_dose([FlexStep(time(8), D("12.5"))]) == 300
    assert flex_daily_dose([]) == 0


def test_flex_before_first_start_uses_last_step_of_day():
    # Tokyo reading 2026-02-01 00:00 JST, 10 mL; flex @1000: 06:00 50/h, 22:00 25/h.
    r_at = datetime(2026, 2, 1, 0, 0, tzinfo=TYO)
    progs = [flex(datetime(2026, 1, 1, tzinfo=TYO), "1000", [(6, 0, "50"), (22, 0, "25")])]

    def vol(at):
        return project(at=at, pump=pump(TYO), refills=[], readings=[reading(r_at, "10")],
                       programs=progs).reservoir_volume_ml

    # 00:00-06:00 the 22:00 step (0.025 mL/h): 6 * 0.025 = 0.15 -> 9.85.
    assert vol(datetime(2026, 2, 1, 6, 0, tzinfo=TYO)) == D("9.850")
    # 06:00-07:00 the 06:00 step: 0.05 -> 9.80.
    assert vol(datetime(2026, 2, 1, 7, 0, tzinfo=TYO)) == D("9.800")
    # A full local day uses exactly the 24 h total: 10 - 1 = 9.
    assert vol(datetime(2026, 2, 2, 0, 0, tzinfo=TYO)) == D("9.000")


# Chicago DST flex. Concentration 100 mcg/mL so mL/h = mcg/h / 100.
SPRING_STEPS = [(0, 0, "10"), (2, 30, "40"), (12, 0, "20")]  # 0.1 / 0.4 / 0.2 mL/h
FALL_STEPS = [(0, 0, "10"), (1, 30, "60"), (6, 0, "20")]  # 0.1 / 0.6 / 0.2 mL/h


def _flex_from_reading(tz, steps, r_at, volume, at, alarm="2"):
    return project(
        at=at,
        pump=pump(tz, alarm=alarm),
        refills=[],
        readings=[reading(r_at, volume)],
        programs=[flex(r_at - 7 * DAY, "100", steps)],
    )


def test_flex_spring_forward_chicago_step_in_skipped_hour_starts_at_jump():
    r_at = datetime(2026, 3, 8, 0, 0, tzinfo=CHI)  # 06:00 UTC (CST)

    def vol(at):
        return _flex_from_reading(CHI, SPRING_STEPS, r_at, "20", at).reservoir_volume_ml

    # 00:00-02:00 CST (2 real h) step 00:00: 0.2 mL. Clock jumps to 03:00 CDT (08:00 UTC).
    assert vol(datetime(2026, 3, 8, 8, 0, tzinfo=UTC)) == D("19.800")
    # The 02:30 step (skipped) is in force from 03:00 CDT: 30 min * 0.4 = 0.2 -> 19.6.
    assert vol(datetime(2026, 3, 8, 3, 30, tzinfo=CHI)) == D("19.600")
    # Whole 23-hour local day: 0.2 + 9 h * 0.4 (03:00-12:00) + 12 h * 0.2 = 0.2+3.6+2.4 = 6.2
    # (nominal 24 h total is 6.45). 2026-03-09 00:00 CDT = 05:00 UTC.
    assert vol(datetime(2026, 3, 9, 0, 0, tzinfo=CHI)) == D("13.800")
    # The next, ordinary day uses the nominal 2.5*0.1 + 9.5*0.4 + 12*0.2 = 6.45 -> 7.35.
    assert vol(datetime(2026, 3, 10, 0, 0, tzinfo=CHI)) == D("7.350")


def test_flex_spring_forward_chicago_lra_and_empty_minutes():
    r_at = datetime(2026, 3, 8, 0, 0, tzinfo=CHI)
    p = _flex_from_reading(CHI, SPRING_STEPS, r_at, "2.5", datetime(2026, 3, 8, 1, 0, tzinfo=CHI))
    # 2.5 - 0.2 = 2.3 at 03:00 CDT (08:00 UTC). 0.3 / 0.4 = 0.75 h -> 03:45 CDT (08:45 UTC).
    assert p.low_reservoir_alarm_at == datetime(2026, 3, 8, 8, 45, tzinfo=UTC)
    assert local(p.low_reservoir_alarm_at, CHI) == datetime(2026, 3, 8, 3, 45)
    # 2.3 / 0.4 = 5.75 h -> 08:45 CDT (13:45 UTC), still before the 12:00 step.
    assert p.empty_at == datetime(2026, 3, 8, 8, 45, tzinfo=CHI)
    assert p.empty_at == datetime(2026, 3, 8, 13, 45, tzinfo=UTC)


def test_flex_fall_back_chicago_repeated_hour_runs_twice():
    r_at = datetime(2026, 11, 1, 0, 0, tzinfo=CHI)  # 05:00 UTC (CDT)

    def vol(at):
        return _flex_from_reading(CHI, FALL_STEPS, r_at, "20", at).reservoir_volume_ml

    # 00:00-01:30 CDT step 00:00: 1.5 h * 0.1 = 0.15; 01:30-02:00 CDT step 01:30: 0.5*0.6 = 0.3.
    # Clock falls back to 01:00 CST at 07:00 UTC: 20 - 0.45 = 19.55.
    assert vol(datetime(2026, 11, 1, 7, 0, tzinfo=UTC)) == D("19.550")
    # 01:00-01:30 CST: the 00:00 step again: 0.05 -> 19.5.
    assert vol(datetime(2026, 11, 1, 7, 30, tzinfo=UTC)) == D("19.500")
    # Whole 25-hour day: 0.15 + 0.3 + 0.05 + 4.5 h*0.6 (01:30-06:00 CST) + 18 h*0.2
    # = 0.15 + 0.3 + 0.05 + 2.7 + 3.6 = 6.8 (nominal 6.45 + repeated hour 0.05 + 0.3).
    # 2026-11-02 00:00 CST = 06:00 UTC.
    assert vol(datetime(2026, 11, 2, 0, 0, tzinfo=CHI)) == D("13.200")


def test_flex_fall_back_chicago_lra_in_first_repeated_hour():
    r_at = datetime(2026, 11, 1, 0, 0, tzinfo=CHI)
    p = _flex_from_reading(CHI, FALL_STEPS, r_at, "2.4", datetime(2026, 11, 1, 0, 30, tzinfo=CHI))
    # 2.4 - 0.15 = 2.25 at 01:30 CDT; 0.25 / 0.6 h = 25 min -> 01:55 CDT (first 01:55) = 06:55 UTC.
    assert p.low_reservoir_alarm_at == datetime(2026, 11, 1, 6, 55, tzinfo=UTC)
    # (Not compared with datetime(..., 1, 55, tzinfo=CHI): per PEP 495 an ambiguous local time
    # never compares equal to an instant in another zone.)
    assert local(p.low_reservoir_alarm_at, CHI) == datetime(2026, 11, 1, 1, 55)
    assert p.low_reservoir_alarm_at.astimezone(CHI).utcoffset() == timedelta(hours=-5)
    # 1.95 at 01:00 CST; 01:00-01:30 CST at 0.1: 1.9; then 1.9 / 0.6 = 3 h 10 min
    # -> 04:40 CST = 10:40 UTC.
    assert p.empty_at == datetime(2026, 11, 1, 10, 40, tzinfo=UTC)
    assert local(p.empty_at, CHI) == datetime(2026, 11, 1, 4, 40)


def test_flex_sydney_dst_start_step_at_skipped_instant():
    # Sydney 2026-10-04: 02:00 AEST -> 03:00 AEDT. Steps @100: 00:00 10/h, 02:00 40/h, 08:00 20/h.
    steps = [(0, 0, "10"), (2, 0, "40"), (8, 0, "20")]
    r_at = datetime(2026, 10, 4, 0, 0, tzinfo=SYD)  # 2026-10-03 14:00 UTC

    def vol(at):
        return _flex_from_reading(SYD, steps, r_at, "20", at).reservoir_volume_ml

    # 00:00-02:00 AEST: 2 h * 0.1 = 0.2 -> 19.8 at 03:00 AEDT (16:00 UTC).
    assert vol(datetime(2026, 10, 3, 16, 0, tzinfo=UTC)) == D("19.800")
    # 23 h day: 0.2 + 5 h*0.4 (03:00-08:00) + 16 h*0.2 = 0.2 + 2.0 + 3.2 = 5.4
    # (nominal 5.8 minus the lost hour of the 02:00 step). 10-05 00:00 AEDT = 10-04 13:00 UTC.
    assert vol(datetime(2026, 10, 5, 0, 0, tzinfo=SYD)) == D("14.600")


def test_flex_sydney_dst_end_repeated_hour():
    # Sydney 2026-04-05: 03:00 AEDT -> 02:00 AEST. Steps @100: 00:00 10/h, 02:30 40/h, 08:00 20/h.
    steps = [(0, 0, "10"), (2, 30, "40"), (8, 0, "20")]
    r_at = datetime(2026, 4, 5, 0, 0, tzinfo=SYD)  # 2026-04-04 13:00 UTC

    def vol(at):
        return _flex_from_reading(SYD, steps, r_at, "20", at).reservoir_volume_ml

    # 00:00-02:30 AEDT 0.25 + 02:30-03:00 AEDT 0.2 = 0.45 at the (second) 02:00 AEST = 16:00 UTC.
    assert vol(datetime(2026, 4, 4, 16, 0, tzinfo=UTC)) == D("19.550")
    # 02:00-02:30 AEST: the 00:00 step again: 0.05.
    assert vol(datetime(2026, 4, 4, 16, 30, tzinfo=UTC)) == D("19.500")
    # 25 h day: 0.25 + 0.2 + 0.05 + 5.5 h*0.4 + 16 h*0.2 = 0.5 + 2.2 + 3.2 = 5.9.
    # 04-06 00:00 AEST = 04-05 14:00 UTC.
    assert vol(datetime(2026, 4, 6, 0, 0, tzinfo=SYD)) == D("14.100")


# ========================================================== continuous across DST


def test_continuous_chicago_fall_back_crossing():
    # Refill 2026-10-01 09:00 CDT (14:00 UTC), 20 mL, 500 mcg/day @1000 = 0.5 mL/day.
    t0 = datetime(2026, 10, 1, 9, 0, tzinfo=CHI)
    p = project(at=t0 + H, pump=pump(CHI), refills=[refill(t0, "20")], readings=[],
                programs=[cont(t0, "1000", "500")])
    # LRA 36 d -> 2026-11-06 14:00 UTC = 08:00 CST (naive wall clock would say 09:00).
    assert p.low_reservoir_alarm_at == datetime(2026, 11, 6, 8, 0, tzinfo=CHI)
    assert local(p.low_reservoir_alarm_at, CHI) == datetime(2026, 11, 6, 8, 0)
    # Empty 40 d -> 2026-11-10 14:00 UTC = 08:00 CST.
    assert p.empty_at == datetime(2026, 11, 10, 14, 0, tzinfo=UTC)
    # Due 11-06 - 7 = 10-30 (Fri).
    assert p.refill_due_on == date(2026, 10, 30)


def test_continuous_sydney_dst_start_crossing():
    # Refill 2026-09-01 10:00 AEST (00:00 UTC), 20 mL @0.5 mL/day.
    t0 = datetime(2026, 9, 1, 10, 0, tzinfo=SYD)
    p = project(at=t0 + H, pump=pump(SYD), refills=[refill(t0, "20")], readings=[],
                programs=[cont(t0, "1000", "500")])
    # LRA 36 d -> 2026-10-07 00:00 UTC = 11:00 AEDT.
    assert local(p.low_reservoir_alarm_at, SYD) == datetime(2026, 10, 7, 11, 0)
    assert p.low_reservoir_alarm_at == datetime(2026, 10, 7, 0, 0, tzinfo=UTC)
    # Empty 40 d -> 2026-10-11 00:00 UTC = 11:00 AEDT.
    assert local(p.empty_at, SYD) == datetime(2026, 10, 11, 11, 0)
    # Due 10-07 - 7 = 09-30 (Wed).
    assert p.refill_due_on == date(2026, 9, 30)
    # Expiry: 09-01 00:00 UTC + 180 d = 2027-02-28 00:00 UTC = 11:00 AEDT.
    assert local(p.drug_expires_at, SYD) == datetime(2027, 2, 28, 11, 0)


def test_continuous_sydney_dst_end_crossing():
    # Refill 2026-03-02 09:00 AEDT (2026-03-01 22:00 UTC), 36 mL @0.45 mL/day (as the worked example).
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=SYD)
    p = project(at=t0 + H, pump=pump(SYD), refills=[refill(t0, "36")], readings=[],
                programs=[cont(t0, "1000", "450")])
    # LRA 75 d 13 h 20 min: 03-01 22:00 UTC + 75 d = 05-15 22:00 UTC; + 13:20 = 05-16 11:20
    # UTC = 21:20 AEST (naive wall clock would say 22:20).
    assert p.low_reservoir_alarm_at == datetime(2026, 5, 16, 11, 20, tzinfo=UTC)
    assert local(p.low_reservoir_alarm_at, SYD) == datetime(2026, 5, 16, 21, 20)
    # Empty 80 d -> 05-20 22:00 UTC = 2026-05-21 08:00 AEST.
    assert local(p.empty_at, SYD) == datetime(2026, 5, 21, 8, 0)
    # Due 05-16 - 7 = 05-09 (Sat) -> 05-08 (Fri).
    assert p.refill_due_on == date(2026, 5, 8)
    # Expiry: 03-01 22:00 UTC + 180 d = 08-28 22:00 UTC = 2026-08-29 08:00 AEST.
    assert local(p.drug_expires_at, SYD) == datetime(2026, 8, 29, 8, 0)


# ============================================================ worst case (boluses)


def _bolus_case(at):
    # Chicago June (no DST change). Refill 2026-06-01 08:00 CDT (13:00 UTC), 20 mL.
    # 250 mcg/day @500 = 0.5 mL/day; bolus 50 mcg x 3/day = 150/500 = 0.3 mL/day.
    t0 = datetime(2026, 6, 1, 8, 0, tzinfo=CHI)
    return project(at=at, pump=pump(CHI), refills=[refill(t0, "20")], readings=[],
                   programs=[cont(t0, "500", "250", bolus="50", max_per_day=3)])


def test_worst_case_includes_max_boluses_expected_leaves_them_out():
    p = _bolus_case(datetime(2026, 6, 11, 8, 0, tzinfo=CHI))
    assert p.daily_volume_ml == D("0.500")
    assert p.worst_case_daily_volume_ml == D("0.800")
    # Worst LRA: 18 / 0.8 = 22.5 d -> 06-23 13:00 UTC + 12 h = 06-24 01:00 UTC = 06-23 20:00 CDT.
    assert p.low_reservoir_alarm_at == datetime(2026, 6, 23, 20, 0, tzinfo=CHI)
    # Worst empty: 20 / 0.8 = 25 d -> 06-26 13:00 UTC = 08:00 CDT.
    assert p.empty_at == datetime(2026, 6, 26, 8, 0, tzinfo=CHI)
    # Expected LRA 36 d -> 07-07 08:00 CDT; expected empty 40 d -> 07-11 08:00 CDT.
    assert p.expected_low_reservoir_alarm_at == datetime(2026, 7, 7, 8, 0, tzinfo=CHI)
    assert p.expected_empty_at == datetime(2026, 7, 11, 8, 0, tzinfo=CHI)
    # Due from the worst LRA: 06-23 - 7 = 06-16 (Tue).
    assert p.refill_due_on == date(2026, 6, 16)
    # After 10 d: expected 20 - 5 = 15; worst 20 - 8 = 12.
    assert p.reservoir_volume_ml == D("15.000")
    assert p.worst_case_volume_ml == D("12.000")


def test_status_is_worst_case():
    # 06-24 12:00 CDT: past worst LRA (06-23 20:00), before expected LRA (07-07) -> alarm.
    assert _bolus_case(datetime(2026, 6, 24, 12, 0, tzinfo=CHI)).status == STATUS_ALARM
    # 06-26 08:00 CDT: worst empty -> empty although 7 mL are expected to remain
    # (20 - 25 * 0.5 = 7.5).
    p = _bolus_case(datetime(2026, 6, 26, 8, 0, tzinfo=CHI))
    assert p.status == STATUS_EMPTY
    assert p.reservoir_volume_ml == D("7.500")
    assert p.worst_case_volume_ml == D("0.000")


def test_program_daily_volume_methods():
    p = cont(WE_T0, "500", "250", bolus="50", max_per_day=3)
    assert p.daily_volume_ml() == Fraction(1, 2)
    assert p.bolus_daily_volume_ml() == Fraction(3, 10)
    assert p.worst_case_daily_volume_ml() == Fraction(4, 5)
    # 25 mcg x 4 / 1500 = 100/1500 = 1/15 mL/day -> 0.0666... -> 0.067.
    q = cont(WE_T0, "1500", "600", bolus="25", max_per_day=4)
    assert q.bolus_daily_volume_ml() == Fraction(1, 15)
    assert q.worst_case_daily_volume_ml() == Fraction(2, 5) + Fraction(1, 15)  # 600/1500 + 1/15
    assert to_decimal_ml(q.worst_case_daily_volume_ml()) == D("0.467")
    # No bolus configured (or max 0): worst == expected.
    assert cont(WE_T0, "1000", "450").bolus_daily_volume_ml() == 0
    assert cont(WE_T0, "1000", "450", bolus="50", max_per_day=0).worst_case_daily_volume_ml() == Fraction(9, 20)
    # Flex: 24 h total / concentration: 1000 mcg / 1000 = 1 mL; + bolus 10 x 2 / 1000 = 0.02.
    f = flex(WE_T0, "1000", [(6, 0, "50"), (22, 0, "25")], bolus="10", max_per_day=2)
    assert f.daily_volume_ml() == 1
    assert f.worst_case_daily_volume_ml() == Fraction(51, 50)


def test_flex_worst_case_bolus_adds_uniformly():
    # Tokyo reading 2026-02-01 00:00 JST, 10 mL. Flex @1000 06:00 50/h, 22:00 25/h
    # plus bolus 24 mcg x 5/day = 120/1000 = 0.12 mL/day = 0.005 mL/h uniformly.
    r_at = datetime(2026, 2, 1, 0, 0, tzinfo=TYO)
    p = project(at=datetime(2026, 2, 1, 7, 0, tzinfo=TYO), pump=pump(TYO), refills=[],
                readings=[reading(r_at, "10")],
                programs=[flex(r_at - DAY, "1000", [(6, 0, "50"), (22, 0, "25")],
                               bolus="24", max_per_day=5)])
    # Expected: 6 * 0.025 + 1 * 0.05 = 0.2 -> 9.8. Worst: + 7 h * 0.005 = 0.035 -> 9.765.
    assert p.reservoir_volume_ml == D("9.800")
    assert p.worst_case_volume_ml == D("9.765")
    assert p.daily_volume_ml == D("1.000")
    assert p.worst_case_daily_volume_ml == D("1.120")


# ======================================================================== instants


def test_lra_at_t0_when_v0_already_at_alarm():
    # UTC. Refill 2026-05-01 10:00:30 UTC adds exactly 2 mL = alarm; 1000 mcg/day @1000.
    t0 = datetime(2026, 5, 1, 10, 0, 30, tzinfo=UTC)
    p = project(at=t0, pump=pump(UTCZ), refills=[refill(t0, "2")], readings=[],
                programs=[cont(t0, "1000", "1000")])
    # V0 <= alarm: LRA at t0, rounded down to the minute.
    assert p.low_reservoir_alarm_at == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    # Empty: 2 d later = 2026-05-03 10:00:30 -> 10:00.
    assert p.empty_at == datetime(2026, 5, 3, 10, 0, tzinfo=UTC)
    assert p.status == STATUS_ALARM


def test_lra_at_t0_even_when_nothing_flows_at_t0():
    # Tokyo reading 2026-02-01 00:00 JST reports 2 mL = alarm. Flex @1000: 00:00 -> 0 mcg/h,
    # 06:00 -> 50 mcg/h (0.05 mL/h). V0 <= alarm: LRA at t0, not when delivery resumes at 06:00.
    r_at = datetime(2026, 2, 1, 0, 0, tzinfo=TYO)
    p = project(at=datetime(2026, 2, 1, 5, 0, tzinfo=TYO), pump=pump(TYO), refills=[],
                readings=[reading(r_at, "2")],
                programs=[flex(r_at - DAY, "1000", [(0, 0, "0"), (6, 0, "50")])])
    assert p.low_reservoir_alarm_at == r_at
    assert p.status == STATUS_ALARM
    assert p.reservoir_volume_ml == D("2.000")  # nothing delivered 00:00-05:00
    # 18 h * 0.05 = 0.9 per day: 1.1 at 02-02 00:00, 0.2 at 02-03 00:00; 0.2 / 0.05 = 4 h
    # after 06:00 -> empty 2026-02-03 10:00 JST.
    assert p.empty_at == datetime(2026, 2, 3, 10, 0, tzinfo=TYO)


def test_reading_of_zero_is_empty_at_its_instant():
    t0 = datetime(2026, 5, 1, 10, 0, 30, tzinfo=UTC)
    r_at = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
    p = project(at=r_at, pump=pump(UTCZ), refills=[refill(t0, "20")],
                readings=[reading(r_at, "0")], programs=[cont(t0, "1000", "1000")])
    assert p.empty_at == r_at
    assert p.low_reservoir_alarm_at == r_at
    assert p.status == STATUS_EMPTY
    # Expiry from the refill: 05-01 (doy 121) + 180 = doy 301 = 10-28, 10:00:30 -> 10:00.
    assert p.drug_expires_at == datetime(2026, 10, 28, 10, 0, tzinfo=UTC)


def test_instants_rounded_down_not_to_nearest_minute():
    # UTC. Refill 2026-05-01 00:00, 7 mL, 700 mcg/day @1000 = 0.7 mL/day, alarm 2.
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    p = project(at=t0, pump=pump(UTCZ), refills=[refill(t0, "7")], readings=[],
                programs=[cont(t0, "1000", "700")])
    # LRA: 5 / 0.7 = 50/7 d = 72000/7 min = 10285.714 min = 171 h 25 min 42.86 s
    # -> rounded down: 7 d 3 h 25 min -> 2026-05-08 03:25 (nearest would be 03:26).
    assert p.low_reservoir_alarm_at == datetime(2026, 5, 8, 3, 25, tzinfo=UTC)
    assert p.expected_low_reservoir_alarm_at == datetime(2026, 5, 8, 3, 25, tzinfo=UTC)
    # Empty: 7 / 0.7 = 10 d exactly.
    assert p.empty_at == datetime(2026, 5, 11, 0, 0, tzinfo=UTC)


def test_anchor_seconds_are_floored_in_instants_and_expiry():
    # Refill at 10:00:45 UTC, 3 mL @1 mL/day, alarm 2.
    t0 = datetime(2026, 5, 1, 10, 0, 45, tzinfo=UTC)
    p = project(at=t0 + H, pump=pump(UTCZ), refills=[refill(t0, "3")], readings=[],
                programs=[cont(t0, "1000", "1000")])
    assert p.low_reservoir_alarm_at == datetime(2026, 5, 2, 10, 0, tzinfo=UTC)  # +1 d, floored
    assert p.empty_at == datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # +3 d, floored
    assert p.drug_expires_at == datetime(2026, 10, 28, 10, 0, tzinfo=UTC)  # +180 d, floored
    for moment in (p.low_reservoir_alarm_at, p.empty_at, p.drug_expires_at):
        assert (moment.second, moment.microsecond) == (0, 0)


def _horizon_case(v0):
    # UTC. Refill 2026-01-01 00:00, 50 mcg/day @1000 = 0.05 mL/day, alarm 2.
    # Horizon: + 730 d = 2028-01-01 00:00 (2026 and 2027 have 365 days each).
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return project(at=t0 + H, pump=pump(UTCZ), refills=[refill(t0, v0)], readings=[],
                   programs=[cont(t0, "1000", "50")])


def test_horizon_instant_exactly_at_730_days_is_reached():
    p = _horizon_case("36.5")
    # Empty: 36.5 / 0.05 = 730 d -> 2028-01-01 00:00 (reached by the horizon).
    assert p.empty_at == datetime(2028, 1, 1, tzinfo=UTC)
    assert p.expected_empty_at == datetime(2028, 1, 1, tzinfo=UTC)
    # LRA: 34.5 / 0.05 = 690 d = horizon - 40 d = 2027-11-22.
    assert p.low_reservoir_alarm_at == datetime(2027, 11, 22, tzinfo=UTC)


def test_horizon_instants_beyond_730_days_are_none():
    p = _horizon_case("36.55")
    # Empty: 731 d -> beyond the horizon -> None. LRA: 34.55 / 0.05 = 691 d -> 2027-11-23.
    assert p.empty_at is None
    assert p.expected_empty_at is None
    assert p.low_reservoir_alarm_at == datetime(2027, 11, 23, tzinfo=UTC)
    p = _horizon_case("38.6")
    # LRA 36.6 / 0.05 = 732 d: None as well; the due date then comes from expiry alone:
    # 01-01 (doy 1) + 180 = doy 181 = 06-30; 06-30 - 1 = 06-29 (Mon).
    assert p.low_reservoir_alarm_at is None
    assert p.empty_at is None
    assert p.drug_expires_at == datetime(2026, 6, 30, tzinfo=UTC)
    assert p.refill_due_on == date(2026, 6, 29)
    assert p.status == STATUS_OK  # 179 days to due


# ===================================================================== expiry / due


def test_drug_expiry_custom_stability_days_across_fall_back():
    # Morphine-like 90-day stability. Refill 2026-10-15 10:00 CDT (15:00 UTC).
    t0 = datetime(2026, 10, 15, 10, 0, tzinfo=CHI)
    p = project(at=t0 + H, pump=pump(CHI), refills=[refill(t0, "20", stability=90)],
                readings=[], programs=[cont(t0, "1000", "100")])
    # + 90 d (Nov 15 = 31, Dec 15 = 61, Jan 13 = 90) -> 2027-01-13 15:00 UTC = 09:00 CST.
    assert p.drug_expires_at == datetime(2027, 1, 13, 9, 0, tzinfo=CHI)
    assert local(p.drug_expires_at, CHI) == datetime(2027, 1, 13, 9, 0)
    # 0.1 mL/day: LRA 180 d away, so expiry binds: 01-13 - 1 = 01-12 (Tue).
    assert p.refill_due_on == date(2027, 1, 12)


def test_expiry_binds_and_due_moves_before_closure():
    # Chicago, refill Mon 2026-01-05 10:00 CST (16:00 UTC), 40 mL @0.1 mL/day.
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=CHI)

    def proj(policy):
        return project(at=t0 + H, pump=pump(CHI), refills=[refill(t0, "40")], readings=[],
                       programs=[cont(t0, "1000", "100")], policy=policy)

    p = proj(Policy())
    # Expiry: 01-05 + 180 d (Feb 5 = 31, Mar 5 = 59, Apr 5 = 90, May 5 = 120, Jun 5 = 151,
    # Jul 5 = 181) = 07-04 16:00 UTC = 11:00 CDT.
    assert p.drug_expires_at == datetime(2026, 7, 4, 11, 0, tzinfo=CHI)
    # LRA: 38 / 0.1 = 380 d -> 2027-01-20 16:00 UTC = 10:00 CST; - 7 = 2027-01-13.
    assert p.low_reservoir_alarm_at == datetime(2027, 1, 20, 10, 0, tzinfo=CHI)
    # min(2027-01-13, 07-04 - 1 = 07-03 Fri) = 07-03.
    assert p.refill_due_on == date(2026, 7, 3)
    # Independence Day observed (Fri 07-03) closed -> Thu 07-02.
    p = proj(Policy(closures=frozenset({date(2026, 7, 3)})))
    assert p.refill_due_on == date(2026, 7, 2)


def test_expiry_due_uses_local_date_not_utc_date():
    # Refill 2026-02-04 20:00 CST = 2026-02-05 02:00 UTC; + 180 d (doy 36 + 180 = 216 = 08-04)
    # -> 2026-08-04 02:00 UTC = 2026-08-03 21:00 CDT (Mon). Due: 08-03 - 1 = 08-02 (Sun)
    # -> Fri 07-31. (The UTC date would give 08-04 - 1 = Mon 08-03.)
    t0 = datetime(2026, 2, 4, 20, 0, tzinfo=CHI)
    p = project(at=t0 + H, pump=pump(CHI), refills=[refill(t0, "40")], readings=[],
                programs=[cont(t0, "1000", "100")])
    assert p.drug_expires_at == datetime(2026, 8, 3, 21, 0, tzinfo=CHI)
    assert p.refill_due_on == date(2026, 7, 31)


def test_due_moves_before_consecutive_closures():
    # Worked example base 04-11 (Sat) -> Fri 04-10 closed -> Thu 04-09 closed -> Wed 04-08.
    pol = Policy(closures=frozenset({date(2026, 4, 10), date(2026, 4, 9)}))
    assert worked(WE_T0 + H, policy=pol).refill_due_on == date(2026, 4, 8)


def test_due_high_risk_extra_days():
    # 04-18 - 7 - 7 = 04-04 (Sat) -> Fri 04-03.
    assert worked(WE_T0 + H, high_risk=True).refill_due_on == date(2026, 4, 3)
    # Custom policy: lead 3, extra 2: 04-18 - 5 = 04-13 (Mon, open).
    pol = Policy(lead_days=3, high_risk_extra_days=2)
    assert worked(WE_T0 + H, high_risk=True, policy=pol).refill_due_on == date(2026, 4, 13)


def test_due_saturday_open_clinic_keeps_saturday():
    pol = Policy(open_weekdays=frozenset({0, 1, 2, 3, 4, 5}))
    assert worked(WE_T0 + H, policy=pol).refill_due_on == date(2026, 4, 11)


def test_refill_due_on_function():
    kw = dict(tz=CHI, policy=Policy(), high_risk=False)
    # Both null: no due date.
    assert refill_due_on(worst_lra_at=None, drug_expires_at=None, **kw) is None
    # Only the LRA: 04-18 - 7 = 04-11 -> 04-10.
    assert refill_due_on(worst_lra_at=WE_LRA, drug_expires_at=None, **kw) == WE_DUE
    # Only expiry: 08-01 - 1 = 07-31 (Fri).
    assert refill_due_on(worst_lra_at=None, drug_expires_at=WE_EXPIRY, **kw) == date(2026, 7, 31)
    # LRA 2026-04-19 04:20 UTC is 04-18 locally: the local date is used (UTC date 04-19 - 7
    # = 04-12 Sun would also snap to 04-10, so use an LRA at 2026-04-21 03:00 UTC =
    # 04-20 22:00 CDT: local 04-20 - 7 = 04-13 (Mon); UTC 04-21 - 7 = 04-14).
    assert refill_due_on(worst_lra_at=datetime(2026, 4, 21, 3, 0, tzinfo=UTC),
                         drug_expires_at=None, **kw) == date(2026, 4, 13)


def test_previous_open_day():
    pol = Policy()
    assert previous_open_day(date(2026, 4, 11), pol) == date(2026, 4, 10)  # Sat -> Fri
    assert previous_open_day(date(2026, 4, 12), pol) == date(2026, 4, 10)  # Sun -> Fri
    assert previous_open_day(date(2026, 4, 13), pol) == date(2026, 4, 13)  # Mon open
    closed = Policy(closures=frozenset({date(2026, 4, 13), date(2026, 4, 10)}))
    assert previous_open_day(date(2026, 4, 13), closed) == date(2026, 4, 9)  # Mon, Fri closed
    mwf = Policy(open_weekdays=frozenset({0, 2, 4}))
    assert previous_open_day(date(2026, 4, 14), mwf) == date(2026, 4, 13)  # Tue -> Mon
    # Closures across the new year: Fri 2027-01-01 and Thu 2026-12-31 closed -> Wed 12-30.
    ny = Policy(closures=frozenset({date(2027, 1, 1), date(2026, 12, 31)}))
    assert previous_open_day(date(2027, 1, 2), ny) == date(2026, 12, 30)


# ============================================================= next_status_change


def test_next_status_change_sequence():
    kw = _status_kw()
    # due 04-10, 14 days: due_soon from 03-27 00:00 CDT = 05:00 UTC.
    first = next_status_change(datetime(2026, 3, 20, 12, 0, tzinfo=CHI), **kw)
    assert first == datetime(2026, 3, 27, 5, 0, tzinfo=UTC)
    # Strictly after: from that very instant the next is overdue at 04-11 00:00 CDT.
    second = next_status_change(first, **kw)
    assert second == datetime(2026, 4, 11, 5, 0, tzinfo=UTC)
    assert next_status_change(second, **kw) == WE_LRA
    assert next_status_change(WE_LRA, **kw) == WE_EMPTY
    assert next_status_change(WE_EMPTY, **kw) is None
    # An extra instant (withdrawal window: empty - 72 h = 04-20 15:00 UTC) is included.
    window = WE_EMPTY - timedelta(hours=72)
    assert next_status_change(WE_LRA, extra_instants=[window, None], **kw) == datetime(
        2026, 4, 20, 15, 0, tzinfo=UTC
    )


def test_next_status_change_none_when_inactive_or_incomplete():
    at = datetime(2026, 3, 20, 12, 0, tzinfo=CHI)
    assert next_status_change(at, **_status_kw(active=False)) is None
    assert next_status_change(at, **_status_kw(complete=False)) is None


# ================================================================== start_of_local_day


def test_start_of_local_day_dst_days():
    assert start_of_local_day(date(2026, 3, 8), CHI) == datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # CST
    assert start_of_local_day(date(2026, 3, 9), CHI) == datetime(2026, 3, 9, 5, 0, tzinfo=UTC)  # CDT
    assert start_of_local_day(date(2026, 11, 1), CHI) == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    assert start_of_local_day(date(2026, 11, 2), CHI) == datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    # Sydney: 10-04 starts in AEST (+10), 10-05 in AEDT (+11); 04-05 starts in AEDT.
    assert start_of_local_day(date(2026, 10, 4), SYD) == datetime(2026, 10, 3, 14, 0, tzinfo=UTC)
    assert start_of_local_day(date(2026, 10, 5), SYD) == datetime(2026, 10, 4, 13, 0, tzinfo=UTC)
    assert start_of_local_day(date(2026, 4, 5), SYD) == datetime(2026, 4, 4, 13, 0, tzinfo=UTC)
    assert start_of_local_day(date(2026, 4, 6), SYD) == datetime(2026, 4, 5, 14, 0, tzinfo=UTC)


def test_start_of_local_day_when_midnight_is_skipped():
    # Santiago 2026-09-06: 00:00 (-04) jumps to 01:00 (-03) at 04:00 UTC: the first
    # instant of that local date is the jump itself.
    assert start_of_local_day(date(2026, 9, 6), SANTIAGO) == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    # Havana 2026-03-08: 00:00 (-05) jumps to 01:00 (-04) at 05:00 UTC.
    assert start_of_local_day(date(2026, 3, 8), HAVANA) == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    # The instant before belongs to the previous local date.
    assert (datetime(2026, 9, 6, 4, 0, tzinfo=UTC) - timedelta(seconds=1)).astimezone(
        SANTIAGO
    ).date() == date(2026, 9, 5)


# ======================================================================= to_decimal_ml


def test_to_decimal_ml_half_up():
    assert to_decimal_ml(Fraction(1, 2000)) == D("0.001")  # 0.0005 -> up
    assert to_decimal_ml(D("11.6625")) == D("11.663")  # half-up, not half-even (11.662)
    assert to_decimal_ml(D("2.0025")) == D("2.003")
    assert to_decimal_ml(D("2.0004999")) == D("2.000")
    assert to_decimal_ml(Fraction(2, 3)) == D("0.667")
    assert to_decimal_ml(Fraction(1, 3)) == D("0.333")
    assert to_decimal_ml(7) == D("7.000")
    assert str(to_decimal_ml(7)) == "7.000"


def test_to_decimal_ml_no_double_rounding():
    # 0.0004999...9 (29 significant digits) is below the half: it must round to 0.000.
    # (Dividing in a 28-digit Decimal context first would round it to 0.0005000... and then
    # half-up to 0.001.)
    assert to_decimal_ml(Fraction(5 * 10**28 - 1, 10**32)) == D("0.000")


# ================================================================= expected_volume_at


def test_expected_volume_at_later_refill_from_previous_anchor():
    later = datetime(2026, 4, 1, 9, 0, tzinfo=CHI)  # 14:00 UTC (CDT)
    kw = dict(at=later, pump=pump(CHI), readings=[],
              refills=[refill(WE_T0, "36"), refill(later, "30")])  # the refill itself is excluded
    vol, empty = expected_volume_at(programs=[cont(WE_T0, "1000", "450")], **kw)
    # Elapsed 02-02 15:00 UTC -> 04-01 14:00 UTC = 58 d - 1 h.
    # 0.45 * 58 = 26.1; 0.45 / 24 = 0.01875; 36 - 26.08125 = 9.91875.
    assert vol == Fraction("9.91875")
    assert empty == WE_EMPTY
    # A new program saved with the refill (effective at the refill instant) does not change
    # what should have been in the reservoir when it was drawn out.
    vol, _ = expected_volume_at(programs=[cont(WE_T0, "1000", "450"), cont(later, "1000", "900")], **kw)
    assert vol == Fraction("9.91875")


def test_expected_volume_at_uses_reading_between():
    later = datetime(2026, 4, 1, 9, 0, tzinfo=CHI)
    vol, empty = expected_volume_at(
        at=later,
        pump=pump(CHI),
        refills=[refill(WE_T0, "36"), refill(later, "30")],
        readings=[reading(datetime(2026, 3, 1, 10, 0, tzinfo=CHI), "20")],
        programs=[cont(WE_T0, "1000", "450")],
    )
    # From 03-01 16:00 UTC: 31 d - 2 h: 13.95 - 0.0375 = 13.9125 -> 20 - 13.9125 = 6.0875.
    assert vol == Fraction("6.0875")
    assert empty == datetime(2026, 4, 14, 21, 40, tzinfo=CHI)


def test_expected_volume_at_excludes_boluses_and_needs_anchor():
    t0 = datetime(2026, 6, 1, 8, 0, tzinfo=CHI)
    progs = [cont(t0, "500", "250", bolus="50", max_per_day=3)]
    vol, empty = expected_volume_at(at=t0 + 10 * DAY, pump=pump(CHI), refills=[refill(t0, "20")],
                                    readings=[], programs=progs)
    assert vol == 15  # 20 - 10 * 0.5, boluses left out
    assert empty == datetime(2026, 7, 11, 8, 0, tzinfo=CHI)  # expected empty, 40 d
    # First fill: no earlier anchor -> (None, None).
    assert expected_volume_at(at=t0, pump=pump(CHI), refills=[refill(t0, "20")], readings=[],
                              programs=progs) == (None, None)


# ====================================================================== volume_series


def test_volume_series_worked_example():
    t0 = WE_T0.astimezone(UTC)
    series = volume_series(start=t0, end=t0 + 80 * DAY, points=5, pump=pump(CHI),
                           refills=[refill(WE_T0, "36")], readings=[],
                           programs=[cont(WE_T0, "1000", "450")])
    # Every 20 d: 0.45 * 20 = 9 mL.
    assert series == [
        (t0, D("36.000"), D("36.000")),
        (t0 + 20 * DAY, D("27.000"), D("27.000")),
        (t0 + 40 * DAY, D("18.000"), D("18.000")),
        (t0 + 60 * DAY, D("9.000"), D("9.000")),
        (t0 + 80 * DAY, D("0.000"), D("0.000")),
    ]


def test_volume_series_worst_case_and_floor():
    t0 = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    series = volume_series(start=t0, end=t0 + 30 * DAY, points=7, pump=pump(CHI),
                           refills=[refill(t0, "20")], readings=[],
                           programs=[cont(t0, "500", "250", bolus="50", max_per_day=3)])
    # Every 5 d: expected -2.5, worst -4 (floored at 0 from day 25).
    assert [v for _, v, _ in series] == [D(x) for x in
                                         ("20.000", "17.500", "15.000", "12.500", "10.000", "7.500", "5.000")]
    assert [w for _, _, w in series] == [D(x) for x in
                                         ("20.000", "16.000", "12.000", "8.000", "4.000", "0.000", "0.000")]


def test_volume_series_does_not_apply_later_records_and_needs_anchor():
    t0 = WE_T0.astimezone(UTC)
    kw = dict(pump=pump(CHI), refills=[refill(WE_T0, "36")],
              readings=[reading(t0 + 30 * DAY, "5")],
              programs=[cont(WE_T0, "1000", "450"), cont(t0 + 10 * DAY, "1000", "900")])
    series = volume_series(start=t0, end=t0 + 40 * DAY, points=3, **kw)
    assert [v for _, v, _ in series] == [D("36.000"), D("27.000"), D("18.000")]
    assert volume_series(start=t0 - MIN, end=t0 + DAY, points=3, **kw) == []


def test_volume_series_flex_with_local_aware_end():
    # Chicago, June (CDT). Refill 2026-06-01 00:00 CDT, 20 mL; flex @1000:
    # 00:00 20 mcg/h (0.02 mL/h), 06:00 40 mcg/h (0.04 mL/h). Start/end are aware local times.
    t0 = datetime(2026, 6, 1, 0, 0, tzinfo=CHI)
    series = volume_series(start=t0, end=datetime(2026, 6, 1, 12, 0, tzinfo=CHI), points=3,
                           pump=pump(CHI), refills=[refill(t0, "20")], readings=[],
                           programs=[flex(t0, "1000", [(0, 0, "20"), (6, 0, "40")])])
    # 06:00: 6 * 0.02 = 0.12 -> 19.88; 12:00: 0.12 + 6 * 0.04 = 0.36 -> 19.64.
    assert [v for _, v, _ in series] == [D("20.000"), D("19.880"), D("19.640")]


def test_volume_series_points_are_evenly_spaced_in_real_time_across_dst():
    # Start 2026-03-07 12:00 CST (18:00 UTC), end 2026-03-09 11:00 CDT (16:00 UTC): 46 real
    # hours. Three points: the middle one is 23 real hours after start = 2026-03-08 17:00 UTC
    # (12:00 CDT). Adding 23.5 h of wall clock to a local time (docs/clinical-rules.md §1 forbids) gives 16:30 UTC.
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=CHI)
    series = volume_series(start=datetime(2026, 3, 7, 12, 0, tzinfo=CHI),
                           end=datetime(2026, 3, 9, 11, 0, tzinfo=CHI), points=3,
                           pump=pump(CHI), refills=[refill(t0, "30")], readings=[],
                           programs=[cont(t0, "1000", "480")])
    moments = [m for m, _, _ in series]
    assert moments[0] == datetime(2026, 3, 7, 18, 0, tzinfo=UTC)
    assert moments[1] == datetime(2026, 3, 8, 17, 0, tzinfo=UTC)
    assert moments[2] == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)
    # 0.48 mL/day = 0.02 mL/h; from 03-01 18:00 UTC: 6 d = 2.88 -> 27.12; + 23 h = 0.46 ->
    # 26.66; + 46 h = 0.92 -> 26.2.
    assert [v for _, v, _ in series] == [D("27.120"), D("26.660"), D("26.200")]


# ========================================================================= properties

BASE = datetime(2026, 1, 1, tzinfo=UTC)
CONCENTRATIONS = ["50", "500", "1000", "1500", "2000"]
PROP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def program_specs(draw, allow_flex=True):
    conc = draw(st.sampled_from(CONCENTRATIONS))
    bolus = draw(st.one_of(st.none(), st.tuples(st.integers(1, 200), st.integers(1, 8))))
    if allow_flex and draw(st.booleans()):
        minutes = sorted(draw(st.lists(st.integers(0, 1439), min_size=1, max_size=4, unique=True)))
        doses = draw(st.lists(st.integers(0, 80), min_size=len(minutes), max_size=len(minutes)))
        return ("flex", conc, tuple(zip(minutes, doses, strict=True)), bolus)
    return ("continuous", conc, draw(st.integers(1, 1500)), bolus)


def make_program(spec, eff):
    mode, conc, payload, bolus = spec
    kw = {"effective_at": eff, "concentration_mcg_per_ml": D(conc)}
    if bolus:
        kw.update(bolus_mcg=D(bolus[0]), bolus_max_per_day=bolus[1])
    if mode == "flex":
        kw.update(mode=MODE_FLEX, steps=tuple(FlexStep(time(m // 60, m % 60), D(d)) for m, d in payload))
    else:
        kw.update(mode=MODE_CONTINUOUS, daily_dose_mcg=D(payload))
    return ProgramData(**kw)


@st.composite
def scenarios(draw, allow_flex=True, with_reading=True):
    return {
        "t0": draw(st.integers(0, 2 * 365 * 86400)),  # seconds after BASE
        "added": draw(st.integers(0, 400)),  # tenths of mL
        "residual": draw(st.integers(0, 30)),
        "alarm": draw(st.integers(5, 50)),
        "first": draw(program_specs(allow_flex)),
        "first_before": draw(st.integers(0, 30 * 86400)),
        "changes": draw(st.lists(st.tuples(st.integers(1, 200 * 86400), program_specs(allow_flex)),
                                 max_size=2)),
        "reading": draw(st.one_of(st.none(), st.tuples(st.integers(1, 200 * 86400), st.integers(0, 400))))
        if with_reading else None,
        "at": draw(st.integers(0, 800 * 86400)),
    }


def materialize(s, tz, shift=timedelta(0)):
    t0 = BASE + timedelta(seconds=s["t0"]) + shift
    programs = [make_program(s["first"], t0 - timedelta(seconds=s["first_before"]))]
    programs += [make_program(spec, t0 + timedelta(seconds=off)) for off, spec in s["changes"]]
    readings = []
    if s["reading"] is not None:
        off, vol = s["reading"]
        readings.append(ReadingData(read_at=t0 + timedelta(seconds=off), reservoir_volume_ml=D(vol) / 10))
    return {
        "pump": PumpState(tz=tz, alarm_volume_ml=D(s["alarm"]) / 10),
        "refills": [RefillData(performed_at=t0, added_volume_ml=D(s["added"]) / 10,
                           residual_left_ml=D(s["residual"]) / 10)],
        "readings": readings,
        "programs": programs,
    }, t0, t0 + timedelta(seconds=s["at"])


def _inf(moment):
    return moment if moment is not None else datetime.max.replace(tzinfo=UTC)


ZONES = st.sampled_from([CHI, SYD, UTCZ, TYO, AKL])


@PROP
@given(s=scenarios(), tz=ZONES)
def test_property_no_exception_and_no_negative_volume(s, tz):
    kw, t0, at = materialize(s, tz)
    p = project(at=at, **kw)
    assert p.status in STATUSES
    assert p.status != STATUS_INCOMPLETE  # a program is always in force at the refill
    assert p.reservoir_volume_ml >= 0
    assert p.worst_case_volume_ml >= 0
    assert p.worst_case_volume_ml <= p.reservoir_volume_ml
    assert p.daily_volume_ml >= 0
    assert p.worst_case_daily_volume_ml >= p.daily_volume_ml
    anchor = p.anchor_at
    for moment in (p.low_reservoir_alarm_at, p.empty_at, p.expected_low_reservoir_alarm_at,
                   p.expected_empty_at, p.drug_expires_at):
        if moment is not None:
            assert (moment.second, moment.microsecond) == (0, 0)
    for moment in (p.low_reservoir_alarm_at, p.empty_at, p.expected_low_reservoir_alarm_at,
                   p.expected_empty_at):
        if moment is not None:
            assert anchor - MIN < moment <= anchor + 730 * DAY


@PROP
@given(s=scenarios(), tz=ZONES)
def test_property_worst_case_never_later_than_expected(s, tz):
    kw, _, at = materialize(s, tz)
    p = project(at=at, **kw)
    assert _inf(p.low_reservoir_alarm_at) <= _inf(p.expected_low_reservoir_alarm_at)
    assert _inf(p.empty_at) <= _inf(p.expected_empty_at)


@PROP
@given(s=scenarios(), tz=ZONES)
def test_property_lra_never_after_empty(s, tz):
    kw, _, at = materialize(s, tz)
    p = project(at=at, **kw)
    assert _inf(p.low_reservoir_alarm_at) <= _inf(p.empty_at)
    assert _inf(p.expected_low_reservoir_alarm_at) <= _inf(p.expected_empty_at)
    if p.empty_at is not None:
        assert p.low_reservoir_alarm_at is not None


@PROP
@given(s=scenarios(with_reading=False), tz=ZONES, span_days=st.integers(1, 120))
def test_property_volume_series_monotone_non_increasing(s, tz, span_days):
    kw, t0, _ = materialize(s, tz)
    series = volume_series(start=t0, end=t0 + span_days * DAY, points=25, **kw)
    assert len(series) == 25
    for (_, e1, w1), (_, e2, w2) in zip(series, series[1:], strict=False):
        assert e2 <= e1
        assert w2 <= w1
    for _, e, w in series:
        assert 0 <= w <= e


@PROP
@given(s=scenarios(with_reading=False), tz=ZONES,
       offsets=st.lists(st.integers(1, 400 * 86400), min_size=2, max_size=6, unique=True))
def test_property_expected_volume_at_monotone_across_program_changes(s, tz, offsets):
    kw, t0, _ = materialize(s, tz)
    volumes = []
    for off in sorted(offsets):
        vol, _ = expected_volume_at(at=t0 + timedelta(seconds=off), **kw)
        volumes.append(vol)
    assert all(b <= a for a, b in zip(volumes, volumes[1:], strict=False))


@PROP
@given(s=scenarios(), tz=ZONES)
def test_property_reservoir_volume_matches_expected_volume_at(s, tz):
    # Between anchors, project()'s expected volume equals expected_volume_at() (floored, rounded).
    kw, t0, at = materialize(s, tz)
    at = at + timedelta(microseconds=1)  # never exactly on the anchor
    p = project(at=at, **kw)
    vol, empty = expected_volume_at(at=at, **kw)
    assert to_decimal_ml(max(vol, Fraction(0))) == p.reservoir_volume_ml
    assert empty == p.expected_empty_at


def _assert_shifted(p1, p2, days, dates=True):
    delta = timedelta(days=days)
    for name in ("anchor_at", "low_reservoir_alarm_at", "empty_at", "expected_low_reservoir_alarm_at",
                 "expected_empty_at", "drug_expires_at"):
        a, b = getattr(p1, name), getattr(p2, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert b == a + delta, name
    for name in ("reservoir_volume_ml", "worst_case_volume_ml", "daily_volume_ml",
                 "worst_case_daily_volume_ml", "anchor_volume_ml"):
        assert getattr(p1, name) == getattr(p2, name), name
    if dates:
        assert p1.status == p2.status
        if p1.refill_due_on is None:
            assert p2.refill_due_on is None
        else:
            assert p2.refill_due_on == p1.refill_due_on + delta
        assert p1.days_to_due == p2.days_to_due


@PROP
@given(s=scenarios(), days=st.integers(1, 400), tz=st.sampled_from([UTCZ, TYO]))
def test_property_shift_by_whole_days_fixed_offset_zone_all_days_open(s, days, tz):
    # No DST: flex steps repeat every local day, so any whole-day shift shifts everything.
    policy = Policy(open_weekdays=frozenset(range(7)))
    kw1, _, at1 = materialize(s, tz)
    kw2, _, at2 = materialize(s, tz, shift=timedelta(days=days))
    _assert_shifted(project(at=at1, policy=policy, **kw1), project(at=at2, policy=policy, **kw2), days)


@PROP
@given(s=scenarios(), weeks=st.integers(1, 60))
def test_property_shift_by_whole_weeks_utc_default_policy(s, weeks):
    # Monday-Friday clinic: a shift by whole weeks keeps weekday snapping aligned.
    kw1, _, at1 = materialize(s, UTCZ)
    kw2, _, at2 = materialize(s, UTCZ, shift=timedelta(weeks=weeks))
    _assert_shifted(project(at=at1, **kw1), project(at=at2, **kw2), 7 * weeks)


@PROP
@given(s=scenarios(allow_flex=False), weeks=st.integers(1, 60))
def test_property_shift_continuous_in_dst_zone_shifts_instants(s, weeks):
    # Chicago: continuous delivery is real elapsed time, so every instant shifts exactly even
    # when the shift moves them across DST changes. Local dates (due date, status) need not
    # shift with them (an instant at 00:30 CDT is 23:30 CST the previous day), so not asserted.
    kw1, _, at1 = materialize(s, CHI)
    kw2, _, at2 = materialize(s, CHI, shift=timedelta(weeks=weeks))
    _assert_shifted(project(at=at1, **kw1), project(at=at2, **kw2), 7 * weeks, dates=False)


@PROP
@given(s=scenarios(), tz=ZONES)
def test_property_expected_volume_at_unrolls_only_until_empty_and_gives_the_full_result(s, tz):
    # expected_volume_at stops unrolling (flex) segments once the expected volume is spent
    # and ``at`` is covered; the reference unrolls all of them to the two-year horizon.
    from pumps import projection as pjm

    kw, _, at = materialize(s, tz)
    at = at + timedelta(microseconds=1)
    refills = [r for r in kw["refills"] if r.performed_at < at]
    readings = [r for r in kw["readings"] if r.read_at < at]
    programs = sorted((p for p in kw["programs"] if p.effective_at <= at), key=lambda p: p.effective_at)
    anchor = pjm.find_anchor(refills, readings, at)
    if anchor is None or pjm.program_in_force(programs, anchor.at) is None:
        assert expected_volume_at(at=at, **kw) == (None, None)
        return
    t0 = anchor.at.astimezone(UTC)
    horizon = t0 + 730 * DAY
    every = list(pjm._segments(programs, tz, t0, max(horizon, at)))
    empty = pjm._crossings([x for x in every if x.start < horizon], anchor.volume_ml, {"empty": Fraction(0)},
                           False, t0)["empty"]
    assert expected_volume_at(at=at, **kw) == (
        pjm._volume_at(every, anchor.volume_ml, at, False),
        pjm.floor_minute(empty) if empty and empty <= horizon else None,
    )
