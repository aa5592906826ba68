"""The alert rules: each kind's severity, repeats and escalation (``RULES``), how it is
titled and what to do about it (``TITLES``, ``ADVICE``, ``describe``), which alerts a
pump's stored projection and records call for (``wanted_alerts``, one function per
family), and which acknowledgements need a reason (``needs_reason``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pumps import history as history_io
from pumps import projection as pj
from pumps.history import PumpHistory
from pumps.models import Alert, AlertKind, Appointment, Event, Pump, PumpModel, Severity


@dataclass(frozen=True)
class Rule:
    severity: str
    repeat_every: timedelta | None  # None: once
    escalate_after: timedelta | None  # None: never; timedelta(0): at once
    emailed: bool = True  # refill_due_soon and refill_unbooked go in the daily digest only
    until_acknowledged: bool = True


RULES: dict[str, Rule] = {
    AlertKind.REFILL_DUE_SOON: Rule(Severity.INFO, None, None, emailed=False),
    AlertKind.REFILL_OVERDUE: Rule(Severity.WARNING, timedelta(days=1), None),
    AlertKind.LOW_RESERVOIR: Rule(Severity.CRITICAL, timedelta(hours=4), timedelta(hours=4)),
    AlertKind.WITHDRAWAL_RISK: Rule(Severity.CRITICAL, timedelta(hours=2), timedelta(0)),
    AlertKind.RESIDUAL_DISCREPANCY: Rule(Severity.WARNING, None, None),
    AlertKind.BATTERY_REPLACEMENT: Rule(Severity.WARNING, None, None),
    AlertKind.POST_MRI_CHECK: Rule(Severity.CRITICAL, timedelta(hours=4), None),
    AlertKind.UNVERIFIED_PROGRAM: Rule(Severity.WARNING, timedelta(days=1), None),
    AlertKind.ALERTING_STALLED: Rule(Severity.CRITICAL, timedelta(hours=1), None),
    # warning; critical once the pump is also past empty (see _drug_expired_alerts)
    AlertKind.DRUG_EXPIRED: Rule(Severity.WARNING, None, None),
    AlertKind.REFILL_UNBOOKED: Rule(Severity.INFO, None, None, emailed=False),
}

#: How a kind is spelled in a subject or a heading (``get_kind_display().capitalize()``
#: would give "Post-mri check").
TITLES: dict[str, str] = {
    AlertKind.REFILL_DUE_SOON: "Refill due soon",
    AlertKind.REFILL_OVERDUE: "Refill overdue",
    AlertKind.LOW_RESERVOIR: "Low reservoir",
    AlertKind.WITHDRAWAL_RISK: "Withdrawal risk",
    AlertKind.RESIDUAL_DISCREPANCY: "Residual discrepancy",
    AlertKind.BATTERY_REPLACEMENT: "Battery replacement",
    AlertKind.POST_MRI_CHECK: "Post-MRI check",
    AlertKind.UNVERIFIED_PROGRAM: "Unverified program",
    AlertKind.ALERTING_STALLED: "Alerting stalled",
    AlertKind.DRUG_EXPIRED: "Drug expired",
    AlertKind.REFILL_UNBOOKED: "Refill not booked",
}
TITLE_EMPTY = "Withdrawal risk (reservoir empty)"

#: The withdrawal_risk alert of a pump past its worst-case empty instant is an episode of
#: its own (``fill:<id>:empty``): acknowledging "may run empty" does not silence "empty".
EMPTY_EPISODE_SUFFIX = ":empty"

#: Alerts whose acknowledgement needs a reason (a ``drug_expired`` alert too once it is
#: critical): silencing them is a deliberate, recorded decision.
CRITICAL_KINDS = frozenset({
    AlertKind.LOW_RESERVOIR, AlertKind.WITHDRAWAL_RISK, AlertKind.POST_MRI_CHECK, AlertKind.ALERTING_STALLED,
})

RESERVOIR_KINDS = (
    AlertKind.REFILL_DUE_SOON,
    AlertKind.REFILL_UNBOOKED,
    AlertKind.REFILL_OVERDUE,
    AlertKind.LOW_RESERVOIR,
    AlertKind.WITHDRAWAL_RISK,
)

ADVICE = {
    AlertKind.REFILL_DUE_SOON: (
        "The refill is due soon: make sure a refill appointment is booked on or before the due date."
    ),
    AlertKind.REFILL_UNBOOKED: (
        "No refill appointment is booked on or before the due date: book one. The clinic's refill plan "
        "proposes a day within the clinic's refill capacity."
    ),
    AlertKind.REFILL_OVERDUE: "The refill is overdue: contact the patient today and book the refill.",
    AlertKind.LOW_RESERVOIR: (
        "The reservoir is at or below the low-reservoir alarm volume (worst case). Refill now; "
        "confirm the patient is well and can reach the clinic."
    ),
    AlertKind.WITHDRAWAL_RISK: (
        "The reservoir may run empty (worst case) within the withdrawal window. Contact the patient "
        "at once, refill urgently and assess for baclofen withdrawal (fever, altered mental state, "
        "rebound spasticity)."
    ),
    AlertKind.RESIDUAL_DISCREPANCY: "Review the refill and the pump: the residual volume differed from the expected.",
    AlertKind.BATTERY_REPLACEMENT: "Plan the pump replacement before its expected end of service.",
    AlertKind.POST_MRI_CHECK: (
        "An MRI was recorded on a pump that can stall in the scanner: interrogate the pump and "
        "record a reading to confirm it has resumed."
    ),
    AlertKind.UNVERIFIED_PROGRAM: "A second clinician must verify this program.",
    AlertKind.ALERTING_STALLED: (
        "The periodic alert sweep has not completed recently: alerts may not be sent. Check the "
        "worker and beat processes."
    ),
    AlertKind.DRUG_EXPIRED: (
        "The drug in the reservoir is past its stability date: refill with fresh drug (empty the "
        "reservoir first) and book the refill now."
    ),
}
#: The advice of a withdrawal_risk alert once the pump is past empty (worst case).
ADVICE_EMPTY = (
    "The reservoir has run empty (worst case): the patient may be in baclofen withdrawal now. Contact "
    "the patient at once, refill urgently, and assess for withdrawal (fever, altered mental state, "
    "rebound spasticity); treat signs of withdrawal as an emergency."
)


def is_empty_episode(alert: Alert) -> bool:
    return alert.kind == AlertKind.WITHDRAWAL_RISK and alert.episode.endswith(EMPTY_EPISODE_SUFFIX)


def title_for(alert: Alert) -> str:
    """The kind in words for a subject or heading: "Post-MRI check", "Low reservoir"."""
    if is_empty_episode(alert):
        return TITLE_EMPTY
    return TITLES.get(alert.kind, alert.get_kind_display().capitalize())


def advice_for(alert: Alert) -> str:
    """What to do, in the alert's tense (an empty pump is not "may run empty")."""
    if is_empty_episode(alert):
        return ADVICE_EMPTY
    return ADVICE[alert.kind]


def describe(alert: Alert, now: datetime) -> str:
    """The alert's condition as one sentence, in the right tense as of ``now`` (when the
    e-mail is built, so a reminder says "2 days ago", not what was true at creation), with
    every instant on the clinic's wall clock with its zone: "The reservoir has been empty
    (worst case) since 2026-04-23 10:00 CDT (2 hours ago)." Kinds without an instant of
    their own say their stored message."""
    tz = alert.clinic.tz
    due = alert.due_at
    if due is not None:
        when = pj.instant_in_words(due, now, tz)
        if alert.kind == AlertKind.LOW_RESERVOIR:
            return f"The reservoir has been at or below the alarm volume (worst case) since {when}."
        if is_empty_episode(alert):
            return f"The reservoir has been empty (worst case) since {when}."
        if alert.kind == AlertKind.WITHDRAWAL_RISK:
            if due <= now:  # passed empty before the sweep opened the empty episode
                return f"The reservoir has been empty (worst case) since {when}."
            return f"The reservoir may run empty (worst case) at {when}."
        if alert.kind == AlertKind.DRUG_EXPIRED:
            day = pj.local_date(due, tz)
            ago = pj.relative_date(day, pj.local_date(now, tz))
            return (f"The drug in the reservoir passed its stability date on {day.isoformat()} ({ago}): "
                    "refill with fresh drug.")
        if alert.kind == AlertKind.POST_MRI_CHECK:
            return f"An MRI was recorded at {when} and no reading since."
        if alert.kind == AlertKind.ALERTING_STALLED:
            return f"The alert sweep last completed at {when}."
    if alert.kind == AlertKind.REFILL_OVERDUE and alert.pump is not None and alert.pump.refill_due_on:
        day = alert.pump.refill_due_on
        return f"The refill was due on {day.isoformat()} ({pj.relative_date(day, pj.local_date(now, tz))})."
    if alert.kind == AlertKind.REFILL_UNBOOKED and alert.pump is not None and alert.pump.refill_due_on:
        day = alert.pump.refill_due_on
        return (f"The refill is due on {day.isoformat()} ({pj.relative_date(day, pj.local_date(now, tz))}) "
                "and no refill appointment is booked on or before that day.")
    return alert.message




@dataclass(frozen=True)
class Wanted:
    kind: str
    episode: str
    due_at: datetime | None
    message: str
    severity: str | None = None


def reservoir_episode(pump: Pump, history: PumpHistory | None = None) -> str:
    """Reservoir alerts belong to the fill they are about: the latest refill at or before
    the anchor (a reading re-anchors the same fill). ``history``: the pump's live records
    (``services.load_history``), when the caller has them."""
    if pump.anchor_at is None:
        return "fill:none"
    history = history or _load_history(pump)
    fills = [r.pk for r in history.refills if r.performed_at <= pump.anchor_at]  # (performed_at, id) order
    return f"fill:{fills[-1]}" if fills else "fill:none"



def _load_history(pump: Pump) -> PumpHistory:
    return history_io.load_history(pump)


def wanted_alerts(pump: Pump, now: datetime, history: PumpHistory | None = None, *,
                  episode: str | None = None, refill_appointments: list[datetime] | None = None,
                  mris: list[Event] | None = None) -> list[Wanted]:
    """Which alerts the pump's stored projection and records call for as of ``now``
    (``history``: its live records, ``episode``: its ``reservoir_episode``, when the
    caller has them; ``refill_appointments``: the instants of the pump's live, scheduled
    refill appointments from at least the start of its clinic's today, and ``mris``: its
    live MRI events, read for many pumps at once by the caller, so that no query is
    needed here).

    ``withdrawal_risk`` has two episodes per fill: "may run empty" (``fill:<id>``) from the
    withdrawal window until the worst-case empty instant, then "empty" (``fill:<id>:empty``).
    Only one is wanted at a time, so when the empty one opens the earlier one is resolved
    ("superseded"), its acknowledgement kept in its history: staff are told again, and the
    one open alert says what is true now. ``drug_expired`` (``drug:<refill id>``) is wanted
    from the drug's expiry instant, critical when the pump is also past empty.
    Stored messages name instants on the clinic's wall clock with their zone, without
    "ago" (it would go stale); ``describe`` says them relative to the reader's now."""
    if pump.explanted_on is not None or pump.status == pj.STATUS_INACTIVE:
        return []
    tz = pump.clinic.tz
    history = history or _load_history(pump)
    episode = episode or reservoir_episode(pump, history)
    today = pj.local_date(now, tz)
    # The order is the order of the families below, kept stable for callers and tests.
    return [
        *_reservoir_alerts(pump, now, episode),
        *_drug_expired_alerts(pump, now, episode),
        *_refill_alerts(pump, now, today, episode, refill_appointments),
        *_battery_alerts(pump, today),
        *_unverified_program_alerts(history, now),
        *_post_mri_alerts(pump, history, mris),
        *_discrepancy_alerts(history),
    ]


def _reservoir_alerts(pump: Pump, now: datetime, episode: str) -> list[Wanted]:
    """``low_reservoir`` from the alarm instant; ``withdrawal_risk`` "may run empty" from
    the withdrawal window, then "empty" (an episode of its own) from the empty instant."""
    tz = pump.clinic.tz
    out: list[Wanted] = []
    lra, empty = pump.low_reservoir_alarm_at, pump.empty_at
    if lra and now >= lra:
        out.append(Wanted(AlertKind.LOW_RESERVOIR, episode, lra,
                          f"at or below the alarm volume (worst case) since {pj.local_instant(lra, tz)}"))
    if empty and now >= empty:
        # a worsening: its own episode, so that an acknowledged "may run empty" does not
        # silence it; the "may run empty" alert of the same fill resolves (superseded)
        out.append(Wanted(AlertKind.WITHDRAWAL_RISK, episode + EMPTY_EPISODE_SUFFIX, empty,
                          f"empty (worst case) since {pj.local_instant(empty, tz)}"))
    elif empty and now >= empty - timedelta(hours=pump.clinic.withdrawal_window_hours):
        out.append(Wanted(AlertKind.WITHDRAWAL_RISK, episode, empty,
                          f"may run empty (worst case) at {pj.local_instant(empty, tz)}"))
    return out


def _drug_expired_alerts(pump: Pump, now: datetime, episode: str) -> list[Wanted]:
    """``drug_expired`` once per fill from the drug's expiry instant; critical when the
    pump is also past empty (an open warning is raised to critical by evaluate_pump,
    never lowered again)."""
    expires = pump.drug_expires_at
    if not (expires and now >= expires and episode != "fill:none"):
        return []
    empty = pump.empty_at
    past_empty = empty is not None and now >= empty
    return [Wanted(
        AlertKind.DRUG_EXPIRED, "drug:" + episode.removeprefix("fill:"), expires,
        f"the drug passed its stability date on {pj.local_date(expires, pump.clinic.tz).isoformat()}",
        Severity.CRITICAL if past_empty else Severity.WARNING,
    )]


def _refill_alerts(pump: Pump, now: datetime, today: date, episode: str,
                   refill_appointments: list[datetime] | None) -> list[Wanted]:
    """``refill_overdue`` past the due date; before it, ``refill_due_soon`` and
    ``refill_unbooked``.

    The status and the booking are two alerts, each saying one thing (§11.1):
    refill_due_soon while the status is due_soon, booked or not; refill_unbooked while the
    due date is within the due-soon window and no refill is booked for it, the same test as
    the refill planner's (pumps.planning): a live, scheduled refill appointment from the
    start of today to the end of the due date (a visit booked earlier today and not yet
    marked done counts). Both are digest-only."""
    due_on = pump.refill_due_on
    if not due_on:
        return []
    if today > due_on:
        return [Wanted(AlertKind.REFILL_OVERDUE, episode, None, f"refill was due on {due_on}")]
    out: list[Wanted] = []
    if pump.live_status(now) == pj.STATUS_DUE_SOON:
        out.append(Wanted(AlertKind.REFILL_DUE_SOON, episode, None, f"refill due on {due_on}"))
    if (due_on - today).days <= pump.clinic.due_soon_days and not refill_booked_for(
            pump, today, due_on, refill_appointments):
        out.append(Wanted(AlertKind.REFILL_UNBOOKED, episode, None,
                          f"refill due on {due_on}; no refill appointment booked on or before it"))
    return out


def _battery_alerts(pump: Pump, today: date) -> list[Wanted]:
    """``battery_replacement``: 180 days before the expected end of service (info), then
    90 days before it (warning), each an episode of its own."""
    eos = pump.expected_end_of_service
    if not eos:
        return []
    return [
        Wanted(AlertKind.BATTERY_REPLACEMENT, f"eos-{days}:{eos.isoformat()}", None,
               f"expected end of service {eos.isoformat()}", severity)
        for days, severity in ((180, Severity.INFO), (90, Severity.WARNING))
        if today >= eos - timedelta(days=days)
    ]


def _unverified_program_alerts(history: PumpHistory, now: datetime) -> list[Wanted]:
    """``unverified_program``: one per program not verified within 24 hours of entry."""
    return [
        Wanted(AlertKind.UNVERIFIED_PROGRAM, f"program:{program.pk}", None,
               "program not verified by a second clinician within 24 h")
        for program in history.programs
        if program.verified_at is None and program.entered_at <= now - timedelta(hours=24)
    ]


def _post_mri_alerts(pump: Pump, history: PumpHistory, mris: list[Event] | None = None) -> list[Wanted]:
    """``post_mri_check``: one per MRI after the last reading, on a pump model that must
    be interrogated after an MRI (one query, unless the caller read the MRIs)."""
    if pump.model.mri_behaviour != PumpModel.MRI_INTERROGATE:
        return []
    tz = pump.clinic.tz
    last_reading = max((r.read_at for r in history.readings), default=None)
    # An MRI entered a few minutes ahead of the clock counts too: the check is due after it.
    if mris is None:
        mris = Event.objects.live().filter(pump=pump, kind=Event.Kind.MRI)
        if last_reading:
            mris = mris.filter(occurred_at__gt=last_reading)
    else:
        mris = [e for e in mris if last_reading is None or e.occurred_at > last_reading]
    return [
        Wanted(AlertKind.POST_MRI_CHECK, f"mri:{event.pk}", event.occurred_at,
               f"MRI recorded at {pj.local_instant(event.occurred_at, tz)} and no reading since")
        for event in mris
    ]


def _discrepancy_alerts(history: PumpHistory) -> list[Wanted]:
    """``residual_discrepancy``: one per refill flagged for its residual volume or
    refilled after the pump ran empty."""
    return [
        Wanted(AlertKind.RESIDUAL_DISCREPANCY, f"refill:{refill.pk}", refill.performed_at,
               "; ".join(refill.flags)[:300])
        for refill in history.refills
        if refill.discrepancy_flagged or refill.refilled_after_empty
    ]

def refill_booked_for(pump: Pump, today: date, due_on: date, appointments: list[datetime] | None = None) -> bool:
    """Is a refill booked in time: a live, scheduled refill appointment of the pump from
    the start of the clinic's ``today`` to the end of ``due_on`` (as ``pumps.planning``).
    ``appointments``: the instants of its live, scheduled refill appointments from at
    least the start of today, when the caller has read them (else one query)."""
    tz = pump.clinic.tz
    start, end = pj.start_of_local_day(today, tz), pj.start_of_local_day(due_on + pj.DAY, tz)
    if appointments is not None:
        return any(start <= moment < end for moment in appointments)
    return Appointment.objects.live().filter(
        pump=pump, kind=Appointment.Kind.REFILL, status=Appointment.Status.SCHEDULED,
        scheduled_for__gte=start, scheduled_for__lt=end,
    ).exists()




def needs_reason(alert: Alert) -> bool:
    """Acknowledging a critical alert (low_reservoir, withdrawal_risk, post_mri_check,
    alerting_stalled, a critical drug_expired) needs a reason."""
    return alert.kind in CRITICAL_KINDS or alert.severity == Severity.CRITICAL


