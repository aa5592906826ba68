"""Pumps' alerts, by one alert-evaluation plan: which alerts a set of pumps calls for
against the alerts they have, gathered pump by pump (``plan_pump``: the rules of
``rules.wanted_alerts`` and ``resolution_for``), then applied in a few statements for the
whole set (``apply``). ``evaluate_pump`` runs it for one pump (after a clinical write, or
pump by pump in the sweep), ``pumps.bulk_refresh`` for a chunk of pumps: the same wanted
alerts, the same resolutions, the same notifications, whichever path a pump takes. Also
here: re-opening an alert whose condition came back, and queueing the notifications of an
(alert, repeat): the outbox rows.

Applying the plan:

- a pump that is explanted or whose patient is not active: every open alert resolved
  (but the dose-and-response alerts of ``pumps.symptom_alerts``, which outlive an
  explant), the pending notifications of the resolved alerts cancelled;
- an open alert no longer called for: resolved for its reason (one ``UPDATE`` per
  reason, only the rows still open), the pending notifications cancelled in the same
  transaction (a resolved alert is never e-mailed);
- a ``drug_expired`` warning of a pump past empty: raised to critical, never lowered;
- a resolved alert called for again in the same episode: re-opened, told again as its
  next repeat (``reopen``);
- a new alert: inserted with ``INSERT … ON CONFLICT DO NOTHING`` (PostgreSQL; one savepoint
  per alert elsewhere), so an alert a concurrent sweep inserted first is skipped, its audit
  row written as ``Alert.save()`` writes it, and its notifications queued (the outbox)
  with ``ON CONFLICT DO NOTHING`` on their unique constraint: exactly once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from clinic.models import ApiClient, Clinic
from pumps import history as history_io
from pumps import projection as pj
from pumps import symptom_alerts
from pumps.history import PumpHistory
from pumps.models import Alert, AlertKind, Notification, Pump, Severity

from . import delivery
from .recipients import recipients_for
from .rules import EMPTY_EPISODE_SUFFIX, RESERVOIR_KINDS, RULES, Wanted, reservoir_episode, wanted_alerts

#: Why a pending notification was cancelled (its ``last_error``).
CANCELLED_RESOLVED = "not sent: the alert was resolved before delivery"


@transaction.atomic(savepoint=False)  # no caller goes on in a transaction this one failed
def evaluate_pump(pump: Pump, now: datetime, history: PumpHistory | None = None) -> tuple[int, int]:
    """Create the alerts the pump calls for and resolve those it no longer does: the plan
    below for one pump (``evaluate_pumps``), as the set-based sweep applies it to a chunk.
    Returns (alerts created, notifications created). Safe to run concurrently.
    ``history``: the pump's live records as they stand in this transaction, when the
    caller has them.

    Resolving ends the noise in the same transaction: the pending notifications of every
    alert resolved here (explant, patient no longer active, condition cleared, a new
    refill, a "may run empty" alert superseded by the "empty" one) are cancelled, so a
    resolved alert is never e-mailed (one UPDATE, only when something was resolved). An
    open ``drug_expired`` warning becomes critical once the pump is past empty."""
    if not inactive_reason(pump):
        history = history or history_io.load_history(pump)
    return evaluate_pumps([pump], {pump.pk: history}, now)


def refresh_pump(pump: Pump, *, now: datetime) -> tuple[int, int]:
    """Bring a pump whose state may have changed without a new record (time passed, the
    clinic's policy changed) up to ``now``: its stored projection and its alerts, from one
    read of its records, inside the caller's transaction, the pump row locked by the
    caller. Returns (alerts created, notifications created)."""
    records = history_io.load_history(pump)
    history_io.store_projection(pump, now=now, history=records)
    return evaluate_pump(pump, now, records)


def resolution_for(alert: Alert, episode: str, wanted: set[tuple[str, str]]) -> str:
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


def cancel_pending(alerts_filter: Q) -> int:
    """Cancel the pending notifications of resolved alerts (``alerts_filter`` on
    Notification): a resolved alert is never e-mailed."""
    return Notification.objects.filter(
        alerts_filter, alert__resolved_at__isnull=False, status=Notification.PENDING
    ).update(status=Notification.CANCELLED, last_error=CANCELLED_RESOLVED, claimed_at=None)


def settle_dose_alerts(now: datetime, **which) -> None:
    """Resolve the acknowledged dose-and-response alerts whose condition has ended
    (``symptom_alerts.settle``) and cancel their pending notifications."""
    resolved = symptom_alerts.settle(now, **which)
    if resolved:
        cancel_pending(Q(alert_id__in=resolved))


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


# ------------------------------------------------------------ the plan


#: What ``rules.wanted_alerts`` may be given, read for many pumps at once by a caller:
#: {"mris": {pump id: [events]}, "refill_appointments": {pump id: [instants]}}.
Preloads = dict[str, dict[int, list]]


def inactive_reason(pump: Pump) -> str:
    """Why a pump raises no alert and its open ones resolve ("" : it is active)."""
    if pump.explanted_on is not None:
        return "pump explanted"
    if pump.status == pj.STATUS_INACTIVE:
        return "patient not active"
    return ""


@dataclass
class AlertPlan:
    """What a set of pumps' alerts need, gathered pump by pump, then applied."""

    resolve: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # reason -> alert ids
    resolve_all: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # reason -> pump ids
    raise_critical: list[int] = field(default_factory=list)
    reopen: list[tuple[Alert, Wanted]] = field(default_factory=list)
    create: list[Alert] = field(default_factory=list)


def evaluate_pumps(pumps: list[Pump], histories: dict[int, PumpHistory], now: datetime,
                   preloads: Preloads | None = None) -> tuple[int, int]:
    """Plan and apply the alerts of ``pumps`` (their stored projections current, their rows
    locked by the caller, inside its transaction). ``histories``: the live records of the
    active pumps; ``preloads``: what ``wanted_alerts`` would otherwise read per pump.
    Returns (alerts created, notifications created)."""
    if not pumps:
        return 0, 0
    by_pump = existing_alerts(pumps)
    plan = AlertPlan()
    for pump in pumps:
        extra = {name: values[pump.pk] for name, values in preloads.items() if pump.pk in values} if preloads else {}
        plan_pump(plan, pump, by_pump.get(pump.pk, {}), histories.get(pump.pk), now, extra)
    return apply(plan, now)


def existing_alerts(pumps: list[Pump]) -> dict[int, dict[tuple[str, str], Alert]]:
    """Every alert of the pumps (open or not), by pump and (kind, episode): one query."""
    by_pump: dict[int, dict[tuple[str, str], Alert]] = defaultdict(dict)
    clinics = {p.clinic_id: p.clinic for p in pumps}
    for alert in Alert.objects.filter(pump_id__in=[p.pk for p in pumps]):
        alert.clinic = clinics[alert.clinic_id]
        by_pump[alert.pump_id][(alert.kind, alert.episode)] = alert
    return by_pump


def plan_pump(plan: AlertPlan, pump: Pump, existing: dict[tuple[str, str], Alert], history: PumpHistory | None,
              now: datetime, extra: dict) -> None:
    """The alerts one pump calls for against those it has, added to ``plan``."""
    reason = inactive_reason(pump)
    if reason:
        # the dose-and-response alerts outlive an explant (pumps.symptom_alerts resolves them)
        if any(a.resolved_at is None and not symptom_alerts.is_own(a) for a in existing.values()):
            plan.resolve_all[reason].append(pump.pk)
        return
    episode = reservoir_episode(pump, history)
    wanted = wanted_alerts(pump, now, history, episode=episode, **extra)
    keys = {(w.kind, w.episode) for w in wanted}
    for alert in existing.values():
        if alert.resolved_at is not None or (alert.kind, alert.episode) in keys:
            continue
        why = resolution_for(alert, episode, keys)
        if why:
            plan.resolve[why].append(alert.pk)
    for w in wanted:
        known = existing.get((w.kind, w.episode))
        if known is None:
            plan.create.append(new_alert(pump, w, now))
        elif known.resolved_at is not None:
            plan.reopen.append((known, w))
        elif w.severity == Severity.CRITICAL and known.severity != Severity.CRITICAL:
            plan.raise_critical.append(known.pk)


def apply(plan: AlertPlan, now: datetime) -> tuple[int, int]:
    """Apply a plan: a few statements for any number of pumps. Returns (alerts created,
    notifications created)."""
    for reason, pump_ids in plan.resolve_all.items():
        # every open alert of the pump, then the pending notifications of its resolved
        # alerts are cancelled (only for pumps where something resolved)
        done = _resolve(Q(pump_id__in=pump_ids) & ~symptom_alerts.OWN_ALERTS, reason, now, returning="pump_id")
        if done:
            cancel_pending(Q(alert__pump_id__in=sorted(set(done))))
    resolved: list[int] = []
    for reason, alert_ids in plan.resolve.items():
        resolved += _resolve(Q(pk__in=alert_ids), reason, now)
    if resolved:
        cancel_pending(Q(alert_id__in=resolved))
    if plan.raise_critical:
        Alert.objects.filter(pk__in=plan.raise_critical).update(severity=Severity.CRITICAL)  # never lowered again
    notes = 0
    for alert, w in plan.reopen:  # rare: a cleared condition that came back in the same episode
        notes += reopen(alert, w, now)
    inserted = _insert_alerts(plan.create)
    notes += _notify_fresh(inserted, now)
    if notes:
        delivery.queue_delivery_on_commit()
    return len(inserted), notes


def _resolve(which: Q, reason: str, now: datetime, returning: str = "id") -> list[int]:
    """Resolve the open alerts ``which`` selects; returns the ``returning`` column of the
    rows this statement changed (one ``UPDATE … RETURNING`` on PostgreSQL)."""
    rows = Alert.objects.filter(which, resolved_at__isnull=True)
    values = {"resolved_at": now, "resolution": reason, "next_repeat_at": None}
    if connection.vendor == "postgresql":
        table = Alert._meta.db_table
        column = "pump_id" if returning == "pump_id" else "id"
        sql, params = rows.values("id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                f'UPDATE "{table}" SET resolved_at = %s, resolution = %s, next_repeat_at = NULL '
                f'WHERE id IN ({sql}) AND resolved_at IS NULL RETURNING "{column}"', [now, reason, *params])
            return [row[0] for row in cursor.fetchall()]
    # elsewhere writers are serialized (SQLite): the rows read are the rows changed
    changed = list(rows.values_list(returning, flat=True))
    rows.update(**values)
    return changed


def new_alert(pump: Pump, w: Wanted, now: datetime) -> Alert:
    """A new alert's row, as the system creates it (no user in its audit row)."""
    rule = RULES[w.kind]
    alert = Alert(
        clinic=pump.clinic, pump=pump, kind=w.kind, episode=w.episode, severity=w.severity or rule.severity,
        due_at=w.due_at, message=w.message, created_at=now,
        next_repeat_at=(now + rule.repeat_every) if rule.repeat_every and rule.emailed else None,
        escalated_at=now if rule.escalate_after == timedelta(0) else None,
    )
    alert._history_user = None  # created by the system, whoever's request triggered it
    return alert


_ALERT_COLUMNS = ("clinic_id", "pump_id", "kind", "episode", "severity", "due_at", "message", "created_at",
                  "acknowledged_by_external", "acknowledgement_reason", "resolution", "repeat_count",
                  "next_repeat_at", "escalated_at")


def _insert_alerts(rows: list[Alert]) -> list[Alert]:
    """Insert new alerts, skipping any a concurrent sweep inserted first; returns those
    inserted, with their audit rows written. PostgreSQL: one ``INSERT … ON CONFLICT DO
    NOTHING RETURNING`` and one insert of audit rows; elsewhere one savepoint per alert."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        inserted = []
        for alert in rows:
            try:
                with transaction.atomic():  # a savepoint: losing the race is not an error
                    alert.save()
            except IntegrityError:
                continue
            inserted.append(alert)
        return inserted
    table = Alert._meta.db_table
    row = "(" + ", ".join(["%s"] * len(_ALERT_COLUMNS)) + ")"
    params: list = []
    for a in rows:
        params += [a.clinic_id, a.pump_id, a.kind, a.episode, a.severity, a.due_at, a.message, a.created_at,
                   "", "", "", 0, a.next_repeat_at, a.escalated_at]
    sql = (f'INSERT INTO "{table}" ({", ".join(_ALERT_COLUMNS)}) VALUES {", ".join([row] * len(rows))} '
           f"ON CONFLICT DO NOTHING RETURNING id, pump_id, kind, episode")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = {(pump_id, kind, episode): pk for pk, pump_id, kind, episode in cursor.fetchall()}
    inserted = []
    for a in rows:
        pk = ids.get((a.pump_id, a.kind, a.episode))
        if pk is not None:
            a.pk = pk
            a._state.adding = False
            inserted.append(a)
    if inserted:
        Alert.history.bulk_history_create(inserted, default_change_reason=None)
    return inserted


def _notify_fresh(inserted: list[Alert], now: datetime) -> int:
    """The notifications of new alerts (as ``evaluate.notify`` with ``fresh``), in one
    ``INSERT … ON CONFLICT DO NOTHING``; recipients and webhooks read once per clinic."""
    recipients: dict[tuple[int, bool], list[str]] = {}
    hooks: dict[int, list[ApiClient]] = {}
    rows: list[Notification] = []
    for alert in inserted:
        if not RULES[alert.kind].emailed:
            continue
        clinic = alert.clinic
        key = (clinic.pk, alert.escalated_at is not None)
        if key not in recipients:
            recipients[key] = recipients_for(clinic, escalation=key[1])
        if clinic.pk not in hooks:
            hooks[clinic.pk] = list(ApiClient.objects.active().filter(clinic=clinic).exclude(webhook_url=""))
        targets = [(Notification.EMAIL, address, None) for address in recipients[key]]
        targets += [(Notification.WEBHOOK, f"webhook:{c.pk}", c) for c in hooks[clinic.pk]]
        rows += [
            Notification(alert=alert, clinic=clinic, kind=alert.kind, channel=channel, recipient=recipient,
                         api_client=client, repeat_number=0, next_attempt_at=now, created_at=now)
            for channel, recipient, client in targets
        ]
    if rows:
        # fresh alerts: nobody else can have queued these; the constraint still guards them
        Notification.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
