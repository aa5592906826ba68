"""Set-based refresh of due pumps (PostgreSQL): the same result as ``alerting.sweep.sweep_pumps``
(one transaction per pump) for a fixed handful of statements per *chunk* of pumps.

Per chunk, in one transaction:

1. lock the chunk's pumps that are still due: ``SELECT … FOR UPDATE SKIP LOCKED``, so
   two workers share a burst without waiting for each other (a pump locked by another
   worker, or by a clinical write, is left to it; if it is still due afterwards the next
   sweep takes it);
2. read the records of the whole chunk at once: refills, readings, programs, the
   clinics' closures, the MRI events of the models that stall in an MRI, the booked
   refill appointments, and the pumps' alerts;
3. project every pump with the one projection code (``pumps.history.project_pump``, the
   stored projection of ``pumps.history``: one source of truth) and its alerts with
   ``alerting.rules.wanted_alerts`` (the rules stay there);
4. write the stored projections back in one statement (``UPDATE … FROM (VALUES …)``);
5. resolve, raise and re-open alerts (one ``UPDATE`` per resolution reason), insert the
   new alerts (``INSERT … ON CONFLICT DO NOTHING RETURNING``), their audit rows and their
   notifications (``ON CONFLICT DO NOTHING`` on the unique constraints): exactly once,
   as on the per-pump path.

If anything in a chunk fails, the chunk's transaction is rolled back and the chunk is
done again by the per-pump path (``alerting.sweep.sweep_pumps``), which isolates a broken pump:
one bad record never stops alerting for the others.

Entry points: ``refresh_pumps(ids, now)`` (the sweep's due ids, as ``sweep_pumps``),
``drain(now)`` (claim chunks of due pumps until none is left: any number of workers) and
``reproject_chunk`` (the next chunk of a clinic's pumps, due or not, after a change of its
policy: ``pumps.reprojection``, which also does the fallback pump by pump).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from clinic.models import ApiClient, ClinicClosure

from . import history as pump_history
from . import projection as pj
from .alerting import delivery, evaluate, rules
from .alerting import sweep as alert_sweep
from .alerting.recipients import recipients_for
from .models import (
    Alert,
    Appointment,
    Event,
    Notification,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
    Severity,
)

log = logging.getLogger("pumps.bulk_refresh")

#: Pumps per transaction: the row locks of a chunk are held for its ~0.5 s.
CHUNK = int(getattr(settings, "ALERT_BULK_CHUNK", 250))

#: The stored projection, as ``pumps.history.store_projection`` writes it.
STORED_FIELDS = pump_history.STORED_FIELDS
_SQL_TYPES = {
    "status": "varchar", "urgency": "smallint", "refill_due_on": "date",
}


def supported() -> bool:
    return connection.vendor == "postgresql"


# ------------------------------------------------------------------ entry points


def refresh_pumps(ids: list[int], now: datetime,
                  result: alert_sweep.SweepResult | None = None) -> alert_sweep.SweepResult:
    """Refresh the given due pumps (those still due when locked) in chunks: the set-based
    twin of ``alerting.sweep.sweep_pumps``, with the same result. Other databases: the per-pump
    path."""
    result = result or alert_sweep.SweepResult()
    if not supported():
        return _per_pump(ids, now, result)
    with delivery.one_delivery_trigger():
        for start in range(0, len(ids), CHUNK):
            _chunk_or_fallback(ids[start:start + CHUNK], now, result)
    return result


def drain(now: datetime, *, chunk: int = CHUNK, limit: int | None = None) -> alert_sweep.SweepResult:
    """Claim chunks of due pumps (``FOR UPDATE SKIP LOCKED``) and refresh them until none
    is left (or ``limit`` pumps were refreshed). Any number of workers may drain at once:
    each takes pumps the others have not locked."""
    result = alert_sweep.SweepResult()
    with delivery.one_delivery_trigger():
        while limit is None or result.pumps_checked < limit:
            before = result.pumps_checked + result.pumps_failed
            _chunk_or_fallback(None, now, result, chunk=chunk)
            if result.pumps_checked + result.pumps_failed == before:
                break
    return result


def _per_pump(ids: list[int], now: datetime, result: alert_sweep.SweepResult) -> alert_sweep.SweepResult:
    """The per-pump path: ``alert_sweep.sweep_pumps_one_by_one`` once ``sweep_pumps`` itself
    takes this module's path (the hook), ``alerting.sweep.sweep_pumps`` until then."""
    path = getattr(alert_sweep, "sweep_pumps_one_by_one", None) or alert_sweep.sweep_pumps
    return path(ids, now, result)


def _chunk_or_fallback(ids: list[int] | None, now: datetime, result: alert_sweep.SweepResult, *,
                       chunk: int = CHUNK) -> None:
    locked: list[int] = []
    try:
        with transaction.atomic():
            made = _refresh_chunk(ids, now, chunk, locked)
    except Exception:  # noqa: BLE001 - the per-pump path isolates the broken pump
        log.exception("bulk refresh: a chunk of %s pumps failed; it is done pump by pump", len(locked))
        if locked:
            _per_pump(locked, now, result)
        return
    result.pumps_checked += made[0]
    result.alerts_created += made[1]
    result.notifications_created += made[2]
    result.pumps_failed += made[3]


# ------------------------------------------------------------------ one chunk


def _lock(ids: list[int] | None, now: datetime, chunk: int) -> list[Pump]:
    rows = Pump.objects.select_for_update(skip_locked=True, of=("self",)).select_related(
        "clinic", "patient", "model").filter(next_change_at__lte=now)
    if ids is not None:
        rows = rows.filter(pk__in=ids).order_by("id")
    else:
        rows = rows.order_by("next_change_at", "id")[:chunk]
    return list(rows)


def _histories(pump_ids: list[int]) -> dict[int, pump_history.PumpHistory]:
    """Each pump's live records in ``pumps.history.load_history``'s order: three queries for
    the chunk."""
    refills, readings, programs = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in Refill.objects.live().filter(pump_id__in=pump_ids).order_by("pump_id", "performed_at", "id"):
        refills[r.pump_id].append(r)
    for r in Reading.objects.live().filter(pump_id__in=pump_ids).order_by("pump_id", "read_at", "id"):
        readings[r.pump_id].append(r)
    for p in Program.objects.live().filter(pump_id__in=pump_ids).order_by("pump_id", "effective_at", "id"):
        programs[p.pump_id].append(p)
    return {pid: pump_history.PumpHistory(refills=refills[pid], readings=readings[pid], programs=programs[pid])
            for pid in pump_ids}


def _share_clinics(pumps: list[Pump]) -> None:
    """One clinic object per clinic, its closures read once for the chunk (the policy of
    ``Clinic.policy()`` then asks no query per pump)."""
    clinics = {}
    for pump in pumps:
        clinics.setdefault(pump.clinic_id, pump.clinic)
        pump.clinic = clinics[pump.clinic_id]
    closures = defaultdict(set)
    for clinic_id, day in ClinicClosure.objects.filter(clinic_id__in=list(clinics)).values_list("clinic_id", "date"):
        closures[clinic_id].add(day)
    for clinic_id, clinic in clinics.items():
        dates = frozenset(closures[clinic_id])
        clinic.closure_dates = lambda dates=dates: dates  # this instance only


def _stored_projection(pump: Pump, now: datetime, history: pump_history.PumpHistory) -> dict:
    """The stored projection's values for ``pump`` as of ``now`` (set on ``pump`` too),
    without writing them: the one computation of ``pumps.history``."""
    return pump_history.projection_values(pump, now=now, history=history)


def _write_projections(values: dict[int, dict]) -> None:
    """One ``UPDATE … FROM (VALUES …)`` for the chunk."""
    if not values:
        return
    columns = ["id", *STORED_FIELDS]
    row = "(" + ", ".join(
        ["%s::bigint"] + [f"%s::{_SQL_TYPES.get(f, 'timestamptz')}" for f in STORED_FIELDS]) + ")"
    params: list = []
    for pump_id, v in values.items():
        params.append(pump_id)
        params.extend(v[f] for f in STORED_FIELDS)
    table = Pump._meta.db_table
    sets = ", ".join(f'"{f}" = v."{f}"' for f in STORED_FIELDS)
    sql = (f'UPDATE "{table}" SET {sets} FROM (VALUES {", ".join([row] * len(values))}) '
           f'AS v({", ".join(columns)}) WHERE "{table}"."id" = v.id')
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _refresh_chunk(ids: list[int] | None, now: datetime, chunk: int,
                   locked_ids: list[int]) -> tuple[int, int, int, int]:
    return _refresh_locked(_lock(ids, now, chunk), now, locked_ids)


def reproject_chunk(clinic_id: int, after_id: int, now: datetime, *, chunk: int = CHUNK,
                    locked_ids: list[int], failed_ids: list[int]) -> tuple[int, int, int, int]:
    """Re-project the next ``chunk`` implanted pumps of a clinic after pump ``after_id``
    (in id order), due or not: its policy, open days or closures changed
    (``pumps.reprojection``). Inside the caller's transaction. The locks wait
    (``FOR UPDATE`` without ``SKIP LOCKED``): a pump held by a clinical write or the sweep
    is re-projected once they commit, never skipped, so each pump ends with a projection
    read after the change was committed. ``locked_ids`` receives the chunk's pump ids and
    ``failed_ids`` those whose projection failed (neither written nor evaluated); returns
    (pumps refreshed, alerts created, notifications created, pumps failed)."""
    pumps = list(
        Pump.objects.select_for_update(of=("self",)).select_related("clinic", "patient", "model")
        .filter(clinic_id=clinic_id, explanted_on__isnull=True, pk__gt=after_id).order_by("id")[:chunk]
    )
    return _refresh_locked(pumps, now, locked_ids, failed_ids)


def _refresh_locked(pumps: list[Pump], now: datetime, locked_ids: list[int],
                    failed_ids: list[int] | None = None) -> tuple[int, int, int, int]:
    """Project, write back and evaluate the alerts of locked pumps (one chunk)."""
    if not pumps:
        return 0, 0, 0, 0
    locked_ids.extend(p.pk for p in pumps)
    pump_ids = [p.pk for p in pumps]
    histories = _histories(pump_ids)
    _share_clinics(pumps)

    # 1. the stored projections; a pump whose projection fails stays due (as per pump)
    values: dict[int, dict] = {}
    refreshed: list[Pump] = []
    failed = 0
    for pump in pumps:
        try:
            values[pump.pk] = _stored_projection(pump, now, histories[pump.pk])
        except Exception:  # noqa: BLE001 - one broken pump must not stop alerting for all
            log.exception("sweep: pump %s could not be evaluated; it stays due and is retried", pump.pk)
            failed += 1
            if failed_ids is not None:
                failed_ids.append(pump.pk)
            continue
        refreshed.append(pump)
    _write_projections(values)

    # 2. the alerts: the rules of rules.wanted_alerts, the bookkeeping of evaluate_pump
    made_alerts, made_notes = _evaluate(refreshed, histories, now)
    return len(refreshed), made_alerts, made_notes, failed


def _inactive(pump: Pump) -> str:
    if pump.explanted_on is not None:
        return "pump explanted"
    if pump.status == pj.STATUS_INACTIVE:
        return "patient not active"
    return ""


def _preloads(pumps: list[Pump], now: datetime) -> dict[str, dict[int, list]]:
    """What ``wanted_alerts`` would read per pump (``mris``, ``refill_appointments``), read
    once for the chunk."""
    active = [p for p in pumps if not _inactive(p)]
    interrogate = [p.pk for p in active if p.model.mri_behaviour == PumpModel.MRI_INTERROGATE]
    mris = defaultdict(list)
    if interrogate:
        for event in Event.objects.live().filter(pump_id__in=interrogate, kind=Event.Kind.MRI).order_by(
                "pump", "occurred_at", "id"):
            mris[event.pump_id].append(event)
    # a superset (from two days back: the start of any zone's "today"); the rule
    # (alerting.rules.refill_booked_for) picks the ones that count
    with_due_date = [p.pk for p in active if p.refill_due_on]
    booked = defaultdict(list)
    if with_due_date:
        for pump_id, at in Appointment.objects.live().filter(
            pump_id__in=with_due_date, kind=Appointment.Kind.REFILL, status=Appointment.Status.SCHEDULED,
            scheduled_for__gte=now - timedelta(days=2),
        ).order_by("pump_id", "scheduled_for").values_list("pump_id", "scheduled_for"):
            booked[pump_id].append(at)
    return {"mris": {p.pk: mris[p.pk] for p in active},
            "refill_appointments": {p.pk: booked[p.pk] for p in active}}


@dataclass
class _Plan:
    """What the chunk's alerts need, gathered pump by pump, then applied in a few
    statements (as ``alerting.evaluate.evaluate_pump`` does one pump at a time)."""

    resolve: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # reason -> alert ids
    resolve_all: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # reason -> pump ids
    raise_critical: list[int] = field(default_factory=list)
    reopen: list[tuple[Alert, rules.Wanted]] = field(default_factory=list)
    create: list[Alert] = field(default_factory=list)


def _evaluate(pumps: list[Pump], histories: dict[int, pump_history.PumpHistory], now: datetime) -> tuple[int, int]:
    if not pumps:
        return 0, 0
    by_pump = _existing_alerts(pumps)
    preloads = _preloads(pumps, now)
    plan = _Plan()
    for pump in pumps:
        existing = by_pump.get(pump.pk, {})
        reason = _inactive(pump)
        if reason:
            if any(a.resolved_at is None for a in existing.values()):
                plan.resolve_all[reason].append(pump.pk)
            continue
        extra = {name: values[pump.pk] for name, values in preloads.items()}
        _plan_pump(plan, pump, existing, histories[pump.pk], now, extra)
    return _apply(plan, now)


def _existing_alerts(pumps: list[Pump]) -> dict[int, dict[tuple[str, str], Alert]]:
    by_pump: dict[int, dict[tuple[str, str], Alert]] = defaultdict(dict)
    clinics = {p.clinic_id: p.clinic for p in pumps}
    for alert in Alert.objects.filter(pump_id__in=[p.pk for p in pumps]):
        alert.clinic = clinics[alert.clinic_id]
        by_pump[alert.pump_id][(alert.kind, alert.episode)] = alert
    return by_pump


def _plan_pump(plan: _Plan, pump: Pump, existing: dict, history: pump_history.PumpHistory, now: datetime,
               extra: dict) -> None:
    """The alerts one active pump calls for against those it has (the rules of
    ``alerting.rules.wanted_alerts`` and ``alerting.evaluate.resolution_for``)."""
    episode = rules.reservoir_episode(pump, history)
    wanted = rules.wanted_alerts(pump, now, history, episode=episode, **extra)
    keys = {(w.kind, w.episode) for w in wanted}
    for alert in existing.values():
        if alert.resolved_at is not None or (alert.kind, alert.episode) in keys:
            continue
        why = evaluate.resolution_for(alert, episode, keys)
        if why:
            plan.resolve[why].append(alert.pk)
    for w in wanted:
        known = existing.get((w.kind, w.episode))
        if known is None:
            plan.create.append(_new_alert(pump, w, now))
        elif known.resolved_at is not None:
            plan.reopen.append((known, w))
        elif w.severity == Severity.CRITICAL and known.severity != Severity.CRITICAL:
            plan.raise_critical.append(known.pk)


def _apply(plan: _Plan, now: datetime) -> tuple[int, int]:
    for reason, pump_ids in plan.resolve_all.items():
        # as evaluate_pump: every open alert of the pump, then the pending notifications
        # of its resolved alerts are cancelled (only for pumps where something resolved)
        done = _resolve("pump_id", pump_ids, reason, now, returning="pump_id")
        if done:
            evaluate.cancel_pending(Q(alert__pump_id__in=sorted(set(done))))
    resolved: list[int] = []
    for reason, alert_ids in plan.resolve.items():
        resolved += _resolve("id", alert_ids, reason, now)
    if resolved:
        evaluate.cancel_pending(Q(alert_id__in=resolved))
    if plan.raise_critical:
        Alert.objects.filter(pk__in=plan.raise_critical).update(severity=Severity.CRITICAL)
    notes = 0
    for alert, w in plan.reopen:  # rare: a cleared condition that came back in the same episode
        notes += evaluate.reopen(alert, w, now)
    inserted = _insert_alerts(plan.create)
    notes += _notify_fresh(inserted, now)
    if notes:
        delivery.queue_delivery_on_commit()
    return len(inserted), notes


def _resolve(column: str, ids: list[int], reason: str, now: datetime, returning: str = "id") -> list[int]:
    """Resolve the open alerts whose ``column`` is in ``ids``: one UPDATE; returns the
    ``returning`` column of the rows it changed."""
    table = Alert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" SET resolved_at = %s, resolution = %s, next_repeat_at = NULL '
            f'WHERE "{column}" = ANY(%s) AND resolved_at IS NULL RETURNING "{returning}"',
            [now, reason, list(ids)],
        )
        return [row[0] for row in cursor.fetchall()]


def _new_alert(pump: Pump, w: rules.Wanted, now: datetime) -> Alert:
    """The row ``alerting.evaluate.create_alert`` would save."""
    rule = rules.RULES[w.kind]
    alert = Alert(
        clinic=pump.clinic, pump=pump, kind=w.kind, episode=w.episode, severity=w.severity or rule.severity,
        due_at=w.due_at, message=w.message, created_at=now,
        next_repeat_at=(now + rule.repeat_every) if rule.repeat_every and rule.emailed else None,
        escalated_at=now if rule.escalate_after == timedelta(0) else None,
    )
    alert._history_user = None
    return alert


_ALERT_COLUMNS = ("clinic_id", "pump_id", "kind", "episode", "severity", "due_at", "message", "created_at",
                  "acknowledged_by_external", "acknowledgement_reason", "resolution", "repeat_count",
                  "next_repeat_at", "escalated_at")


def _insert_alerts(rows: list[Alert]) -> list[Alert]:
    """One ``INSERT … ON CONFLICT DO NOTHING RETURNING`` for the chunk's new alerts (an
    alert a concurrent sweep inserted first is skipped, as ``create_alert`` skips it),
    and their audit rows, as ``Alert.save()`` would write them."""
    if not rows:
        return []
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
    """The notifications of the chunk's new alerts (``alerting.evaluate.notify`` with ``fresh``), in
    one ``INSERT … ON CONFLICT DO NOTHING``; recipients and webhooks read once per clinic."""
    recipients: dict[tuple[int, bool], list[str]] = {}
    hooks: dict[int, list[ApiClient]] = {}
    rows: list[Notification] = []
    for alert in inserted:
        if not rules.RULES[alert.kind].emailed:
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

