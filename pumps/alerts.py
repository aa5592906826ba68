"""Alerting (docs/clinical-rules.md, section 11; README.md, "Alerting"): the sweep, the
alert rules, and the outbox.

Safety rules kept here:
- resolving an alert (explant, patient no longer active, condition cleared, a new refill)
  cancels its pending notifications in the same transaction: a resolved alert is never
  e-mailed;
- acknowledging a critical alert needs a reason (``acknowledge``); acknowledging stops
  repeats, not the alert, and a worsening (a pump past empty) is a new episode that
  alerts again;
- an expired drug is an alert of its own (``drug_expired``), once per fill.

Exactly once, by construction:
- an alert is one row per (pump, kind, episode) under a unique constraint, so two sweeps
  at once (or one run twice) cannot create a second one: the loser's INSERT fails and it
  moves on;
- a notification is one row per (alert, recipient, repeat number), also unique, committed
  in the same transaction as its alert, before anything is sent (the outbox);
- a sender claims a notification with a compare-and-swap ``UPDATE … WHERE status =
  'pending'``; only the one whose UPDATE changed a row sends.

If a worker dies after the SMTP server accepted a message but before the row was marked
sent, the claim goes stale and the message is sent again after ``STALE_CLAIM``: delivery
is at-least-once, which is the right side to err on for a clinical alert.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from clinic import permissions
from clinic.models import AlertRecipient, ApiClient, Clinic, Membership, Role

from . import history as history_io
from . import projection as pj
from . import symptom_alerts, tallies
from .errors import Forbidden, ServiceValidationError
from .history import PumpHistory
from .models import (
    Alert,
    AlertKind,
    Appointment,
    Event,
    Notification,
    Pump,
    PumpModel,
    Severity,
    SweepRun,
)

log = logging.getLogger("pumps.alerts")

SWEEP_INTERVAL = timedelta(seconds=getattr(settings, "ALERT_SWEEP_INTERVAL_SECONDS", 300))
CHUNK = getattr(settings, "ALERT_SWEEP_CHUNK", 500)  # pumps per batch, and per task when the sweep fans out
MAX_DUE_PER_SWEEP = 100_000


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
    # docs/clinical-rules.md §15: to the escalation list at once, every 2 h until acknowledged
    AlertKind.WITHDRAWAL_SYMPTOMS: Rule(Severity.CRITICAL, timedelta(hours=2), timedelta(0)),
    AlertKind.OVERDOSE_SYMPTOMS: Rule(Severity.CRITICAL, timedelta(hours=2), timedelta(0)),
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
    AlertKind.WITHDRAWAL_SYMPTOMS: "Withdrawal symptoms",
    AlertKind.OVERDOSE_SYMPTOMS: "Overdose symptoms",
}
TITLE_EMPTY = "Withdrawal risk (reservoir empty)"

#: The withdrawal_risk alert of a pump past its worst-case empty instant is an episode of
#: its own (``fill:<id>:empty``): acknowledging "may run empty" does not silence "empty".
EMPTY_EPISODE_SUFFIX = ":empty"

#: Alerts whose acknowledgement needs a reason (a ``drug_expired`` alert too once it is
#: critical): silencing them is a deliberate, recorded decision.
CRITICAL_KINDS = frozenset({
    AlertKind.LOW_RESERVOIR, AlertKind.WITHDRAWAL_RISK, AlertKind.POST_MRI_CHECK, AlertKind.ALERTING_STALLED,
    AlertKind.WITHDRAWAL_SYMPTOMS, AlertKind.OVERDOSE_SYMPTOMS,
})
REASON_MAX = 500
#: Why a pending notification was cancelled (its ``last_error``).
CANCELLED_RESOLVED = "not sent: the alert was resolved before delivery"
MSG_ACK_REASON = "Give a reason to acknowledge a critical alert: what was done, or why it can wait."
MSG_ACK_REASON_TOO_LONG = f"Keep the reason under {REASON_MAX} characters."

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
    AlertKind.WITHDRAWAL_SYMPTOMS: (
        "Signs of baclofen withdrawal were recorded: see the patient at once, check the pump, the catheter and "
        "the reservoir, and treat withdrawal as an emergency (restore intrathecal delivery)."
    ),
    AlertKind.OVERDOSE_SYMPTOMS: (
        "Signs of baclofen overdose were recorded: assess the patient at once (breathing, consciousness), "
        "consider stopping or reducing delivery, and review recent dose changes and CNS depressants."
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
    if symptom_alerts.is_stop_episode(alert):
        return symptom_alerts.TITLE_STOP
    return TITLES.get(alert.kind, alert.get_kind_display().capitalize())


def advice_for(alert: Alert) -> str:
    """What to do, in the alert's tense (an empty pump is not "may run empty")."""
    if is_empty_episode(alert):
        return ADVICE_EMPTY
    if symptom_alerts.is_stop_episode(alert):
        return symptom_alerts.ADVICE_STOP
    return ADVICE[alert.kind]


def describe(alert: Alert, now: datetime) -> str:
    """The alert's condition as one sentence, in the right tense as of ``now`` (when the
    e-mail is built, so a reminder says "2 days ago", not what was true at creation), with
    every instant on the clinic's wall clock with its zone: "The reservoir has been empty
    (worst case) since 2026-04-23 10:00 CDT (2 hours ago)." Kinds without an instant of
    their own say their stored message."""
    tz = alert.clinic.tz
    due = alert.due_at
    if symptom_alerts.is_own(alert):  # a stop or a symptom screen: its stored sentence
        return alert.message
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


# ----------------------------------------------------------------------- recipients


def recipients_for(clinic: Clinic, *, escalation: bool = False, admins_only: bool = False) -> list[str]:
    """The clinic's alert addresses and staff who opted in; with ``escalation`` also the
    escalation list; ``admins_only`` for clinic-level alerts to clinic administrators."""
    if admins_only:
        emails = Membership.objects.filter(clinic=clinic, role=Role.ADMIN).exclude(user__email="")
        return sorted({m.user.email.lower() for m in emails.select_related("user")})
    flags = [False, True] if escalation else [False]
    listed = AlertRecipient.objects.filter(clinic=clinic, escalation__in=flags).values_list("email", flat=True)
    staff = (
        Membership.objects.filter(clinic=clinic, receives_alerts=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    # one query (a UNION admits no ORDER BY in its parts on SQLite: the models' orderings are cleared)
    return sorted({a.lower() for a in listed.order_by().union(staff.order_by())})


# --------------------------------------------------------------------- alert rules


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


@transaction.atomic(savepoint=False)  # no caller goes on in a transaction this one failed
def evaluate_pump(pump: Pump, now: datetime, history: PumpHistory | None = None) -> tuple[int, int]:
    """Create the alerts the pump calls for and resolve those it no longer does. Returns
    (alerts created, notifications created). Safe to run concurrently. ``history``: the
    pump's live records as they stand in this transaction, when the caller has them.

    Resolving ends the noise in the same transaction: the pending notifications of every
    alert resolved here (explant, patient no longer active, condition cleared, a new
    refill, a "may run empty" alert superseded by the "empty" one) are cancelled, so a
    resolved alert is never e-mailed (one UPDATE, only when something was resolved). An
    open ``drug_expired`` warning becomes critical once the pump is past empty."""
    created_alerts = created_notes = 0
    # the dose-and-response alerts outlive an explant (pumps.symptom_alerts resolves them)
    open_alerts = Alert.objects.filter(pump=pump, resolved_at__isnull=True).exclude(symptom_alerts.OWN_ALERTS)
    if pump.explanted_on is not None or pump.status == pj.STATUS_INACTIVE:
        reason = "pump explanted" if pump.explanted_on is not None else "patient not active"
        if open_alerts.update(resolved_at=now, resolution=reason, next_repeat_at=None):
            _cancel_pending(Q(alert__pump=pump))
        return 0, 0
    history = history or _load_history(pump)
    episode = reservoir_episode(pump, history)
    wanted = wanted_alerts(pump, now, history, episode=episode)
    keys = {(w.kind, w.episode) for w in wanted}
    # Every alert of the pump, read once: the open ones not wanted any more are resolved,
    # the wanted ones that exist are not created again.
    existing = {(a.kind, a.episode): a for a in Alert.objects.filter(pump=pump).select_related("clinic")}
    resolved: list[int] = []
    for alert in existing.values():
        if alert.resolved_at is not None or (alert.kind, alert.episode) in keys:
            continue
        reason = _resolution(alert, episode, keys)
        if reason and Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(
            resolved_at=now, resolution=reason, next_repeat_at=None
        ):
            resolved.append(alert.pk)
    if resolved:
        _cancel_pending(Q(alert_id__in=resolved))
    for w in wanted:
        known = existing.get((w.kind, w.episode))
        if known is not None:
            if known.resolved_at is not None:
                created_notes += _reopen(known, w, now)
            elif w.severity == Severity.CRITICAL and known.severity != Severity.CRITICAL:
                Alert.objects.filter(pk=known.pk).update(severity=Severity.CRITICAL)  # never lowered again
            continue
        alert = _create_alert(pump.clinic, pump, w, now)
        if alert is None:
            continue
        created_alerts += 1
        created_notes += notify(alert, 0, now, fresh=True)
    return created_alerts, created_notes


def _resolution(alert: Alert, episode: str, wanted: set[tuple[str, str]]) -> str:
    """Why an open alert the pump no longer calls for is resolved ("" : it is not: a
    residual discrepancy or a battery threshold stays until acknowledged)."""
    if symptom_alerts.is_own(alert):  # raised and resolved by pumps.symptom_alerts' rules
        return ""
    if alert.kind == AlertKind.DRUG_EXPIRED:
        same_fill = alert.episode == "drug:" + episode.removeprefix("fill:")
        return "condition cleared" if same_fill else "a new refill was recorded"
    if alert.kind in RESERVOIR_KINDS:
        fill = alert.episode.removesuffix(EMPTY_EPISODE_SUFFIX)
        if fill != episode:
            return "a new refill was recorded"
        if alert.kind == AlertKind.REFILL_UNBOOKED:
            if (AlertKind.REFILL_OVERDUE, episode) in wanted:
                return "the due date has passed: the refill is overdue"
            return "a refill appointment is booked on or before the due date, or the due date moved"
        if alert.kind == AlertKind.WITHDRAWAL_RISK and (alert.kind, episode + EMPTY_EPISODE_SUFFIX) in wanted:
            return "superseded: the pump is past empty (worst case), a new alert says so"
        return "condition cleared"
    if alert.kind in (AlertKind.POST_MRI_CHECK, AlertKind.UNVERIFIED_PROGRAM):
        return "condition cleared"
    return ""


def _cancel_pending(alerts_filter: Q) -> int:
    """Cancel the pending notifications of resolved alerts (``alerts_filter`` on
    Notification): a resolved alert is never e-mailed."""
    return Notification.objects.filter(
        alerts_filter, alert__resolved_at__isnull=False, status=Notification.PENDING
    ).update(status=Notification.CANCELLED, last_error=CANCELLED_RESOLVED, claimed_at=None)


def _reopen(alert: Alert, w: Wanted, now: datetime) -> int:
    """The condition came back within the same episode (a reading that had cleared the
    alarm is overtaken; a refill that had resolved it was voided): the alert opens again
    and staff are told again, as the next repeat number, so nothing is sent twice."""
    rule = RULES[alert.kind]
    number = alert.repeat_count + 1
    changed = Alert.objects.filter(pk=alert.pk, resolved_at__isnull=False, repeat_count=alert.repeat_count).update(
        resolved_at=None, resolution="", acknowledged_at=None, acknowledged_by=None, acknowledged_by_external="",
        acknowledgement_reason="", repeat_count=number, severity=w.severity or rule.severity,
        due_at=w.due_at, message=w.message,
        next_repeat_at=(now + rule.repeat_every) if rule.repeat_every and rule.emailed else None,
    )
    if not changed:
        return 0
    alert.refresh_from_db()
    return notify(alert, number, now)


def _create_alert(clinic: Clinic, pump: Pump | None, w: Wanted, now: datetime) -> Alert | None:
    rule = RULES[w.kind]
    alert = Alert(
        clinic=clinic, pump=pump, kind=w.kind, episode=w.episode, severity=w.severity or rule.severity,
        due_at=w.due_at, message=w.message, created_at=now,
        next_repeat_at=(now + rule.repeat_every) if rule.repeat_every and rule.emailed else None,
        escalated_at=now if rule.escalate_after == timedelta(0) else None,
    )
    alert._history_user = None  # created by the system, whoever's request triggered it
    try:
        with transaction.atomic():  # a savepoint: losing the race is not an error
            alert.save()
    except IntegrityError:
        return None
    return alert


def notify(alert: Alert, repeat_number: int, now: datetime, *, fresh: bool = False) -> int:
    """Queue the notifications of one (alert, repeat): the outbox rows. ``fresh``: the
    alert was inserted by this transaction."""
    rule = RULES[alert.kind]
    if not rule.emailed:
        return 0
    if alert.kind == AlertKind.ALERTING_STALLED:
        addresses = recipients_for(alert.clinic, admins_only=True)
    else:
        addresses = recipients_for(alert.clinic, escalation=alert.escalated_at is not None)
    targets = [(Notification.EMAIL, address, None) for address in addresses]
    if alert.kind != AlertKind.ALERTING_STALLED:
        for client in ApiClient.objects.active().filter(clinic=alert.clinic).exclude(webhook_url=""):
            targets.append((Notification.WEBHOOK, f"webhook:{client.pk}", client))
    rows = [
        Notification(alert=alert, clinic=alert.clinic, kind=alert.kind, channel=channel, recipient=recipient,
                     api_client=client, repeat_number=repeat_number, next_attempt_at=now, created_at=now)
        for channel, recipient, client in targets
    ]
    if fresh:  # nobody else can see the alert yet, so nobody else has queued its notifications
        Notification.objects.bulk_create(rows)
        created = len(rows)
    else:
        created = _insert_missing(rows)
    if created:
        queue_delivery_on_commit()
    return created


def _insert_missing(rows: list[Notification]) -> int:
    """Queue notifications of which some may exist already (a concurrent repeat or
    re-opening): one INSERT, or one by one after a conflict."""
    try:
        with transaction.atomic():  # a savepoint: one INSERT for every recipient
            Notification.objects.bulk_create(rows)
        return len(rows)
    except IntegrityError:  # some were queued already (a race): queue the others one by one
        created = 0
        for row in rows:
            row.pk = None
            try:
                with transaction.atomic():
                    row.save(force_insert=True)
                created += 1
            except IntegrityError:
                continue
        return created


_batch = threading.local()


@contextmanager
def one_delivery_trigger():
    """Inside a sweep (or a chunk of one): one delivery trigger at its end, however many
    pumps and reminders queued notifications, instead of one per transaction."""
    _batch.depth = getattr(_batch, "depth", 0) + 1
    try:
        yield
    finally:
        _batch.depth -= 1
        if _batch.depth == 0 and getattr(_batch, "pending", False):
            _batch.pending = False
            transaction.on_commit(enqueue_delivery)


def queue_delivery_on_commit() -> None:
    """One delivery task per transaction, however many notifications it queued; inside
    ``one_delivery_trigger`` one for the whole batch."""
    if getattr(_batch, "depth", 0):
        _batch.pending = True
        return
    pending = getattr(connection, "run_on_commit", [])
    if not any(entry[1] is enqueue_delivery for entry in pending):
        transaction.on_commit(enqueue_delivery)


def process_repeats(now: datetime, kinds: list[str] | None = None) -> int:
    """Repeat (and escalate) open alerts whose repeat is due. The compare-and-swap on
    ``repeat_count`` lets only one sweep create a given repeat."""
    created = 0
    due = Alert.objects.filter(
        next_repeat_at__lte=now, resolved_at__isnull=True, acknowledged_at__isnull=True
    ).select_related("clinic")
    if kinds is not None:
        due = due.filter(kind__in=kinds)
    for alert in due.iterator(chunk_size=CHUNK):
        rule = RULES[alert.kind]
        number = alert.repeat_count + 1
        escalate = (
            alert.escalated_at is None
            and rule.escalate_after is not None
            and now >= alert.created_at + rule.escalate_after
        )
        with transaction.atomic():
            changed = Alert.objects.filter(
                pk=alert.pk, repeat_count=alert.repeat_count, resolved_at__isnull=True, acknowledged_at__isnull=True
            ).update(
                repeat_count=number,
                next_repeat_at=now + rule.repeat_every,
                **({"escalated_at": now} if escalate else {}),
            )
            if not changed:
                continue
            alert.repeat_count = number
            if escalate:
                alert.escalated_at = now
            created += notify(alert, number, now)
    return created


# ------------------------------------------------------------------------- sweep


@dataclass
class SweepResult:
    pumps_checked: int = 0
    pumps_failed: int = 0
    chunks_queued: int = 0
    alerts_created: int = 0
    notifications_created: int = 0


def due_pumps(now: datetime):
    """The pumps whose stored instants say something changed by ``now``: one range scan
    of the ``next_change_at`` index."""
    return Pump.objects.filter(next_change_at__lte=now).order_by("next_change_at", "id")


def idle_tick(now: datetime, started: datetime) -> bool:
    """The steady state costs one statement (PostgreSQL): True when nothing was due and
    the heartbeat is recorded; False when the sweep has work (or on another database).
    The check is the database function ``pumps_idle_tick`` (migration ``pumps.0010``):
    whether a pump's state changed, an alert is to repeat, a stalled-alerting alert is to
    resolve, a clinic's digests are not settled, or status tallies are to fold; each an
    index probe (or a read of a few small rows) that stops at its first row."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT pumps_idle_tick(%s, %s, %s, %s)", [now, started, timezone.now(), tallies.FOLD_AFTER])
        return cursor.fetchone()[0] is not None


def sweep(now: datetime | None = None, *, fan_out: bool = False) -> SweepResult:
    """One sweep: refresh due pumps, create alerts, repeats and digests, and record the
    heartbeat. The same code runs from beat and from ``manage.py run_alert_sweep``; with
    ``fan_out`` (beat) a due set larger than one chunk is split into tasks. When nothing
    is due (most ticks) one statement checks that and records the heartbeat."""
    now = now or timezone.now()
    started = timezone.now()
    result = SweepResult()
    if idle_tick(now, started):
        return result
    with one_delivery_trigger():
        _sweep_work(now, started, result, fan_out)
    return result


def _sweep_work(now: datetime, started: datetime, result: SweepResult, fan_out: bool) -> None:
    # Reminders of open critical alerts first: a large backlog of state changes must not
    # delay them past the task's time limit.
    result.notifications_created += process_repeats(now)
    ids = list(due_pumps(now).values_list("id", flat=True)[:MAX_DUE_PER_SWEEP])
    if fan_out and len(ids) > CHUNK:
        # Scale out: each chunk is a task that any worker (on any machine) may take. The
        # per-pump lock and the next_change_at re-check keep the exactly-once rules.
        from .tasks import sweep_chunk

        for start in range(0, len(ids), CHUNK):
            sweep_chunk.delay(ids[start:start + CHUNK], now.isoformat())
        result.chunks_queued = -(-len(ids) // CHUNK)
    else:
        sweep_pumps(ids, now, result)
    result.notifications_created += queue_digests(now)
    resolve_stalled(now)
    settle_dose_alerts(now)
    tallies.fold()
    SweepRun.objects.create(
        started_at=started, finished_at=timezone.now(), pumps_checked=result.pumps_checked,
        alerts_created=result.alerts_created, notifications_created=result.notifications_created,
    )


def refresh_pump(pump: Pump, *, now: datetime) -> tuple[int, int]:
    """Bring a pump whose state may have changed without a new record (time passed, the
    clinic's policy changed) up to ``now``: its stored projection and its alerts, from one
    read of its records, inside the caller's transaction, the pump row locked by the
    caller. Returns (alerts created, notifications created)."""
    records = history_io.load_history(pump)
    history_io.store_projection(pump, now=now, history=records)
    return evaluate_pump(pump, now, records)


def sweep_pumps(ids: list[int], now: datetime, result: SweepResult | None = None) -> SweepResult:
    """Refresh the given due pumps and create their alerts, one transaction per pump."""
    result = result or SweepResult()
    with one_delivery_trigger():
        _sweep_chunks(ids, now, result, refresh_pump)
    return result


def _sweep_chunks(ids: list[int], now: datetime, result: SweepResult, refresh_pump) -> None:
    for start in range(0, len(ids), CHUNK):
        for pump_id in ids[start:start + CHUNK]:
            try:
                with transaction.atomic():
                    locked = Pump.objects.select_for_update(of=("self",)).select_related(
                        "clinic", "patient", "model").get(pk=pump_id)
                    if locked.next_change_at is None or locked.next_change_at > now:
                        continue  # another sweep got here first
                    made, notes = refresh_pump(locked, now=now)
            except Exception:  # noqa: BLE001 - one broken pump must not stop alerting for all
                log.exception("sweep: pump %s could not be evaluated; it stays due and is retried", pump_id)
                result.pumps_failed += 1
                continue
            result.pumps_checked += 1
            result.alerts_created += made
            result.notifications_created += notes


# ------------------------------------------------------------------------ digest


def queue_digests(now: datetime) -> int:
    """One digest per clinic, recipient and local day, from the clinic's digest hour on.
    A clinic whose digests are settled until after ``now`` costs nothing here."""
    created = 0
    unsettled = Clinic.objects.filter(Q(digest_settled_until__isnull=True) | Q(digest_settled_until__lte=now))
    for clinic in unsettled:
        local = now.astimezone(clinic.tz)
        today_at = datetime.combine(local.date(), time(clinic.digest_hour), tzinfo=clinic.tz)
        if local.hour < clinic.digest_hour:
            _settle_digests(clinic, today_at)
            continue
        queued = set(
            Notification.objects.filter(clinic=clinic, digest_on=local.date()).values_list("recipient", flat=True)
        )
        for address in recipients_for(clinic):
            if address in queued:
                continue
            try:
                with transaction.atomic():
                    Notification.objects.create(
                        clinic=clinic, kind="digest", recipient=address, digest_on=local.date(),
                        next_attempt_at=now, created_at=now,
                    )
                created += 1
            except IntegrityError:
                continue
        tomorrow_at = datetime.combine(local.date() + timedelta(days=1), time(clinic.digest_hour), tzinfo=clinic.tz)
        _settle_digests(clinic, tomorrow_at)
    if created:
        queue_delivery_on_commit()
    return created


def _settle_digests(clinic: Clinic, until: datetime) -> None:
    """Note that nothing is owed before ``until``. The compare-and-swap keeps a newer
    note; a recipient added in the milliseconds between this clinic's check and this note
    gets digests from the next day on."""
    Clinic.objects.filter(pk=clinic.pk).filter(
        Q(digest_settled_until__isnull=True) if clinic.digest_settled_until is None
        else Q(digest_settled_until=clinic.digest_settled_until)
    ).update(digest_settled_until=until)


# ------------------------------------------------------------------- heartbeat


def last_sweep() -> SweepRun | None:
    return SweepRun.objects.order_by("-finished_at").first()


def is_stale(last: SweepRun | None, now: datetime) -> bool:
    """The one rule for "alerting has stopped": no sweep completed in three intervals."""
    return last is None or now - last.finished_at > 3 * SWEEP_INTERVAL


def sweep_is_stale(now: datetime) -> bool:
    return is_stale(last_sweep(), now)


def raise_stalled(now: datetime) -> int:
    """Called by the watchdog (and /health/): when the sweep has not completed in three
    intervals, tell every clinic's administrators, once per stall."""
    if not sweep_is_stale(now):
        return 0
    # The sweep that would repeat this alert is the thing that stopped: repeat it here.
    repeated = process_repeats(now, kinds=[AlertKind.ALERTING_STALLED])
    last = last_sweep()
    episode = f"since:{last.finished_at.isoformat() if last else 'never'}"
    created = 0
    for clinic in Clinic.objects.all():
        with transaction.atomic():
            alert = _create_alert(
                clinic, None, Wanted(AlertKind.ALERTING_STALLED, episode, last.finished_at if last else None,
                                     "the alert sweep has not completed in 3 intervals"), now,
            )
            if alert is not None:
                created += notify(alert, 0, now)
    return created + repeated


def settle_dose_alerts(now: datetime, **which) -> None:
    """Resolve the acknowledged dose-and-response alerts whose condition has ended
    (``symptom_alerts.settle``) and cancel their pending notifications."""
    resolved = symptom_alerts.settle(now, **which)
    if resolved:
        _cancel_pending(Q(alert_id__in=resolved))


def resolve_stalled(now: datetime) -> None:
    if Alert.objects.filter(kind=AlertKind.ALERTING_STALLED, resolved_at__isnull=True).update(
        resolved_at=now, resolution="the sweep ran again", next_repeat_at=None
    ):
        _cancel_pending(Q(alert__kind=AlertKind.ALERTING_STALLED))


# ---------------------------------------------------------------------- outbox


def enqueue_delivery() -> None:
    """Ask a worker to deliver pending notifications. If the broker is down the rows stay
    pending and the next sweep picks them up: the write that queued them has committed."""
    from .tasks import deliver_pending

    try:
        deliver_pending.delay()
    except Exception as exc:  # noqa: BLE001 - broker outage must not fail the caller
        log.warning("could not queue delivery (%s); the next sweep will deliver", exc.__class__.__name__)



# ----------------------------------------------------------------- acknowledge


def needs_reason(alert: Alert) -> bool:
    """Acknowledging a critical alert (low_reservoir, withdrawal_risk, post_mri_check,
    alerting_stalled, a critical drug_expired) needs a reason."""
    return alert.kind in CRITICAL_KINDS or alert.severity == Severity.CRITICAL


@transaction.atomic
def acknowledge(alert: Alert, *, user=None, external: str = "", reason: str = "",
                now: datetime | None = None) -> Alert:
    """Acknowledgement stops repeats, not the alert: it stays open (unresolved) while its
    condition holds, and a worsening (a pump past empty) is a new alert that is e-mailed.

    Silencing a critical alert is deliberate: it needs a ``reason`` (what was done, or why
    it can wait; at most 500 characters), else ``ServiceValidationError({"reason": …})``.
    Who (``user``, or ``external``: the name an API client gave), when and why are stored
    on the alert, and its audit history keeps them. A user needs a role that may
    acknowledge (``clinic.permissions``), else ``Forbidden``. Acknowledging an alert that
    is acknowledged already changes nothing."""
    now = now or timezone.now()
    if user is not None and not permissions.user_may(user, alert.clinic_id, permissions.Action.ACKNOWLEDGE):
        raise Forbidden(permissions.MESSAGES[permissions.Action.ACKNOWLEDGE])
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise ServiceValidationError({"reason": [MSG_ACK_REASON_TOO_LONG]})
    if not reason and needs_reason(alert):
        raise ServiceValidationError({"reason": [MSG_ACK_REASON]})
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = user
        alert.acknowledged_by_external = external[:100]
        alert.acknowledgement_reason = reason
        alert.next_repeat_at = None
        alert._history_user = user if user is not None and getattr(user, "pk", None) else None
        alert.save()
        if symptom_alerts.is_own(alert):  # acknowledged after its condition ended: it resolves now
            settle_dose_alerts(now, alert_id=alert.pk)
            alert.refresh_from_db()
    return alert
