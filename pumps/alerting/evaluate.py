"""One pump's alerts: create those its projection and records call for, resolve those it
no longer does (cancelling their pending notifications in the same transaction),
re-open an alert whose condition came back, raise a ``drug_expired`` warning to
critical, and queue the notifications of an (alert, repeat): the outbox rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q

from clinic.models import ApiClient, Clinic
from pumps import history as history_io
from pumps import projection as pj
from pumps.history import PumpHistory
from pumps.models import Alert, AlertKind, Notification, Pump, Severity

from . import delivery
from .recipients import recipients_for
from .rules import EMPTY_EPISODE_SUFFIX, RESERVOIR_KINDS, RULES, Wanted, reservoir_episode, wanted_alerts

#: Why a pending notification was cancelled (its ``last_error``).
CANCELLED_RESOLVED = "not sent: the alert was resolved before delivery"


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
    open_alerts = Alert.objects.filter(pump=pump, resolved_at__isnull=True)
    if pump.explanted_on is not None or pump.status == pj.STATUS_INACTIVE:
        reason = "pump explanted" if pump.explanted_on is not None else "patient not active"
        if open_alerts.update(resolved_at=now, resolution=reason, next_repeat_at=None):
            cancel_pending(Q(alert__pump=pump))
        return 0, 0
    history = history or history_io.load_history(pump)
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
        reason = resolution_for(alert, episode, keys)
        if reason and Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(
            resolved_at=now, resolution=reason, next_repeat_at=None
        ):
            resolved.append(alert.pk)
    if resolved:
        cancel_pending(Q(alert_id__in=resolved))
    for w in wanted:
        known = existing.get((w.kind, w.episode))
        if known is not None:
            if known.resolved_at is not None:
                created_notes += reopen(known, w, now)
            elif w.severity == Severity.CRITICAL and known.severity != Severity.CRITICAL:
                Alert.objects.filter(pk=known.pk).update(severity=Severity.CRITICAL)  # never lowered again
            continue
        alert = create_alert(pump.clinic, pump, w, now)
        if alert is None:
            continue
        created_alerts += 1
        created_notes += notify(alert, 0, now, fresh=True)
    return created_alerts, created_notes


def resolution_for(alert: Alert, episode: str, wanted: set[tuple[str, str]]) -> str:
    """Why an open alert the pump no longer calls for is resolved ("" : it is not: a
    residual discrepancy or a battery threshold stays until acknowledged)."""
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


def cancel_pending(alerts_filter: Q) -> int:
    """Cancel the pending notifications of resolved alerts (``alerts_filter`` on
    Notification): a resolved alert is never e-mailed."""
    return Notification.objects.filter(
        alerts_filter, alert__resolved_at__isnull=False, status=Notification.PENDING
    ).update(status=Notification.CANCELLED, last_error=CANCELLED_RESOLVED, claimed_at=None)


def reopen(alert: Alert, w: Wanted, now: datetime) -> int:
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


def create_alert(clinic: Clinic, pump: Pump | None, w: Wanted, now: datetime) -> Alert | None:
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
        delivery.queue_delivery_on_commit()
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


