"""Refresh of due pumps, the sweep's (``alerting.sweep.sweep_pumps``): set-based on
PostgreSQL, a fixed handful of statements per *chunk* of pumps, with the same result as
the pump-by-pump path (one transaction per pump), which other databases take and which
redoes a chunk that fails.

Per chunk, in one transaction:

1. lock the chunk's pumps that are still due: ``SELECT … FOR UPDATE SKIP LOCKED``, so
   two workers share a burst without waiting for each other (a pump locked by another
   worker, or by a clinical write, is left to it; if it is still due afterwards the next
   sweep takes it);
2. read the records of the whole chunk at once: refills, readings, programs, the
   clinics' closures, the MRI events of the models that stall in an MRI, the booked
   refill appointments, and the pumps' alerts;
3. project every pump with the one projection code (``pumps.history.project_pump``, the
   stored projection of ``pumps.history``: one source of truth) and plan its alerts with
   the one alert plan (``alerting.evaluate.evaluate_pumps``, which ``evaluate_pump`` runs
   for a single pump: the rules of ``alerting.rules.wanted_alerts``);
4. write the stored projections back in one statement (``UPDATE … FROM (VALUES …)``);
5. apply the plan: resolve, raise and re-open alerts (one ``UPDATE`` per resolution
   reason), insert the new alerts (``INSERT … ON CONFLICT DO NOTHING RETURNING``), their
   audit rows and their notifications (``ON CONFLICT DO NOTHING`` on the unique
   constraints): exactly once, two sweeps at once included.

If anything in a chunk fails, the chunk's transaction is rolled back and the chunk is
done again pump by pump (``refresh_one_by_one``), which isolates a broken pump: one bad
record never stops alerting for the others.

Entry points: ``refresh_pumps(ids, now)`` (the sweep's due ids),
``drain(now)`` (claim chunks of due pumps until none is left: any number of workers) and
``reproject_chunk`` (the next chunk of a clinic's pumps, due or not, after a change of its
policy: ``pumps.reprojection``, which also does the fallback pump by pump).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from clinic.models import ClinicClosure

from . import history as pump_history
from .alerting.delivery import one_delivery_trigger
from .alerting.evaluate import Preloads, evaluate_pumps, inactive_reason, refresh_pump
from .models import (
    Appointment,
    Event,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
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


@dataclass
class SweepResult:
    pumps_checked: int = 0
    pumps_failed: int = 0
    chunks_queued: int = 0
    alerts_created: int = 0
    notifications_created: int = 0


def refresh_pumps(ids: list[int], now: datetime, result: SweepResult | None = None) -> SweepResult:
    """Refresh the given due pumps (those still due when locked) in chunks, set-based; a
    chunk that fails is done again pump by pump. Other databases: pump by pump."""
    result = result or SweepResult()
    if not supported():
        return refresh_one_by_one(ids, now, result)
    with one_delivery_trigger():
        for start in range(0, len(ids), CHUNK):
            _chunk_or_fallback(ids[start:start + CHUNK], now, result)
    return result


def drain(now: datetime, *, chunk: int = CHUNK, limit: int | None = None) -> SweepResult:
    """Claim chunks of due pumps (``FOR UPDATE SKIP LOCKED``) and refresh them until none
    is left (or ``limit`` pumps were refreshed). Any number of workers may drain at once:
    each takes pumps the others have not locked."""
    result = SweepResult()
    with one_delivery_trigger():
        while limit is None or result.pumps_checked < limit:
            before = result.pumps_checked + result.pumps_failed
            _chunk_or_fallback(None, now, result, chunk=chunk)
            if result.pumps_checked + result.pumps_failed == before:
                break
    return result


def refresh_one_by_one(ids: list[int], now: datetime, result: SweepResult | None = None) -> SweepResult:
    """The pump-by-pump path: each due pump in its own transaction, locked (waiting) and
    refreshed by ``alerting.evaluate.refresh_pump`` (the same alert plan as a chunk's); a
    pump another sweep refreshed meanwhile is skipped; a pump that fails is logged, stays
    due and is retried by the next sweep, and the others go on."""
    result = result or SweepResult()
    with one_delivery_trigger():
        for pump_id in ids:
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
    return result


def _chunk_or_fallback(ids: list[int] | None, now: datetime, result: SweepResult, *,
                       chunk: int = CHUNK) -> None:
    locked: list[int] = []
    try:
        with transaction.atomic():
            made = _refresh_chunk(ids, now, chunk, locked)
    except Exception:  # noqa: BLE001 - the per-pump path isolates the broken pump
        log.exception("bulk refresh: a chunk of %s pumps failed; it is done pump by pump", len(locked))
        if locked:
            refresh_one_by_one(locked, now, result)
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

    # 2. the alerts: the one plan of alerting.evaluate, with what its rules read per pump
    # read once for the chunk
    made_alerts, made_notes = evaluate_pumps(refreshed, histories, now, _preloads(refreshed, now))
    return len(refreshed), made_alerts, made_notes, failed


def _preloads(pumps: list[Pump], now: datetime) -> Preloads:
    """What ``wanted_alerts`` would read per pump (``mris``, ``refill_appointments``), read
    once for the chunk."""
    active = [p for p in pumps if not inactive_reason(p)]
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
