"""A clinic's policy, open days or closures changed (docs/clinical-rules.md §6.5): every
implanted pump's stored projection and alerts are brought up to date in the background,
not inside the request that saved the change.

The change and a ``ClinicReprojection`` row are committed together; once committed, a
task (``pumps.tasks.reproject_clinic``, registered at start-up with ``register_queue``)
runs the job:

- in chunks of pumps in id order after ``last_pump_id``, each chunk one transaction with
  the job's progress: the pumps locked (waiting, never skipped), their records read in a
  handful of queries, projected, written back in one statement and their alerts raised
  or resolved in bulk (``pumps.bulk_refresh.reproject_chunk``, the sweep's set-based
  machinery: alerts and notifications exactly once under the same unique constraints);
- a chunk that fails as a whole is done again pump by pump, each pump in its own
  transaction; a pump that still fails is left due (``next_change_at`` = now), so the
  sweep retries it (and logs why) every tick, and the job counts it as failed;
- other databases than PostgreSQL (SQLite under ``make run``) take the pump-by-pump path;
- a task stops after ``BUDGET_SECONDS`` and queues its successor, so one large clinic
  never holds a worker for long;
- a job whose task was lost (broker or worker down) is queued again by beat
  (``resume_stalled``) once it has made no progress for ``STALLED_AFTER``.

A newer change of the same clinic (a second save while a job runs) supersedes the job: it
stops at its next chunk and the newer job re-projects every pump. Each chunk reads the
clinic when it locks its pumps, after the change that queued it was committed, so the
last pump written always carries the newest policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clinic.models import Clinic

from . import bulk_refresh
from .alerting.delivery import one_delivery_trigger
from .alerting.evaluate import refresh_pump
from .history import lock_pump
from .models import ClinicReprojection, Pump

log = logging.getLogger("pumps.reprojection")

#: Pumps per chunk (one transaction, the row locks held for about half a second).
CHUNK = int(getattr(settings, "REPROJECTION_CHUNK", bulk_refresh.CHUNK))
#: How long one task works before it queues its successor.
BUDGET_SECONDS = float(getattr(settings, "REPROJECTION_BUDGET_SECONDS", 60))
#: A running job that made no progress for this long has lost its task: queue it again.
STALLED_AFTER = timedelta(seconds=int(getattr(settings, "REPROJECTION_STALLED_AFTER_SECONDS", 300)))

ERROR_MAX = 300


_queue: Callable[[int], None] | None = None


def register_queue(queue: Callable[[int], None]) -> None:
    """Set how a job is handed to a worker (at start-up: ``pumps.apps`` registers
    ``pumps.tasks.queue_reprojection``; this module does not import the tasks)."""
    global _queue
    _queue = queue


def request(clinic: Clinic, *, user=None, now: datetime | None = None) -> ClinicReprojection:
    """Record that ``clinic``'s pumps need re-projecting, inside the caller's transaction
    (the one that saved the change); the job is handed to a worker once it commits."""
    now = now or timezone.now()
    total = Pump.objects.filter(clinic=clinic, explanted_on__isnull=True).count()
    job = ClinicReprojection.objects.create(
        clinic=clinic, requested_at=now, requested_by=user if getattr(user, "pk", None) else None,
        total=total, updated_at=now,
    )
    transaction.on_commit(lambda: queue(job.pk))
    return job


def queue(job_id: int) -> None:
    """Hand a job to a worker. If that fails (the broker is down, or nothing is
    registered) the job stays unfinished and beat queues it again (``stalled``): the
    change has been committed."""
    if _queue is None:
        log.warning("re-projection %s: no queue is registered; beat queues it", job_id)
        return
    try:
        _queue(job_id)
    except Exception as exc:  # noqa: BLE001 - a broker outage must not fail the saved change
        log.warning("could not queue re-projection %s (%s); beat queues it again", job_id, exc.__class__.__name__)


def latest(clinic: Clinic | int) -> ClinicReprojection | None:
    """The clinic's newest job (the one that counts), or None."""
    clinic_id = clinic if isinstance(clinic, int) else clinic.pk
    return ClinicReprojection.objects.filter(clinic_id=clinic_id).order_by("-id").first()


@dataclass
class _Step:
    refreshed: int = 0
    failed: list[int] | None = None
    last_id: int = 0
    finished: bool = False


def run(job_id: int, *, budget_seconds: float | None = None, chunk: int | None = None) -> bool:
    """Work on a job for about ``budget_seconds``. Returns True when work is left (the
    caller queues the next task), False when the job is finished or superseded."""
    budget = BUDGET_SECONDS if budget_seconds is None else budget_seconds
    chunk = chunk or CHUNK
    deadline = time.monotonic() + budget
    with one_delivery_trigger():
        while True:
            more = step(job_id, chunk=chunk)
            if not more:
                return False
            if time.monotonic() >= deadline:
                return True


def step(job_id: int, *, chunk: int | None = None) -> bool:
    """One chunk of a job, committed with the job's progress. Returns True when work is left."""
    chunk = chunk or CHUNK
    job = ClinicReprojection.objects.filter(pk=job_id).first()
    if job is None or job.finished_at is not None:
        return False
    if bulk_refresh.supported():
        locked: list[int] = []
        failed: list[int] = []
        try:
            with transaction.atomic():
                job = _claim(job_id)
                if job is None:
                    return False
                now = timezone.now()
                refreshed, _, _, _ = bulk_refresh.reproject_chunk(
                    job.clinic_id, job.last_pump_id, now, chunk=chunk, locked_ids=locked, failed_ids=failed)
                _leave_due(failed, now)
                return _advance(job, _Step(refreshed, failed, max(locked, default=0), len(locked) < chunk), now)
        except Exception:  # noqa: BLE001 - the pump-by-pump path isolates a broken pump
            if not locked:
                raise
            log.exception("re-projection %s: a chunk of %s pumps failed; it is done pump by pump", job_id,
                          len(locked))
            ids, finished = locked, len(locked) < chunk
    else:
        ids = list(Pump.objects.filter(clinic_id=job.clinic_id, explanted_on__isnull=True, pk__gt=job.last_pump_id)
                   .order_by("id").values_list("pk", flat=True)[:chunk])
        finished = len(ids) < chunk
    return _one_by_one(job_id, ids, finished)


def _claim(job_id: int) -> ClinicReprojection | None:
    """Lock the job row (one chunk at a time per job); None when it is finished or, a newer
    job of its clinic existing, now marked superseded."""
    job = ClinicReprojection.objects.select_for_update().get(pk=job_id)
    if job.finished_at is not None:
        return None
    if ClinicReprojection.objects.filter(clinic_id=job.clinic_id, pk__gt=job.pk).exists():
        now = timezone.now()
        job.superseded, job.finished_at, job.updated_at = True, now, now
        job.save(update_fields=["superseded", "finished_at", "updated_at"])
        return None
    return job


def _one_by_one(job_id: int, ids: list[int], finished: bool) -> bool:
    """The chunk pump by pump, each in its own transaction; a pump that fails is left due."""
    refreshed, failed = 0, []
    for pump_id in ids:
        try:
            with transaction.atomic():
                pump = lock_pump(pump_id)
                refresh_pump(pump, now=timezone.now())
        except Exception:  # noqa: BLE001 - one broken pump must not stop the others
            log.exception("re-projection %s: pump %s could not be re-projected; it stays due", job_id, pump_id)
            failed.append(pump_id)
            continue
        refreshed += 1
    with transaction.atomic():
        job = _claim(job_id)
        if job is None:
            return False
        now = timezone.now()
        _leave_due(failed, now)
        return _advance(job, _Step(refreshed, failed, max(ids, default=job.last_pump_id), finished), now)


def _leave_due(pump_ids: list[int], now: datetime) -> None:
    """A pump that could not be re-projected is due now: the sweep tries it again every
    tick (and logs why), as it does any pump whose evaluation fails."""
    if pump_ids:
        Pump.objects.filter(pk__in=pump_ids).update(next_change_at=now)


def _advance(job: ClinicReprojection, step: _Step, now: datetime) -> bool:
    job.done += step.refreshed
    if step.failed:
        job.failed += len(step.failed)
        job.error = _failure_text(job.failed)
    job.last_pump_id = max(job.last_pump_id, step.last_id)
    job.updated_at = now
    job.total = max(job.total, job.done + job.failed)
    if step.finished:
        job.finished_at = now
        job.total = job.done + job.failed  # pumps implanted or explanted meanwhile: as counted
    job.save(update_fields=["done", "failed", "error", "last_pump_id", "updated_at", "total", "finished_at"])
    return not step.finished


def _failure_text(count: int) -> str:
    pumps = "1 pump" if count == 1 else f"{count} pumps"
    return (f"{pumps} could not be re-projected; they stay due and the alert sweep retries them "
            f"(see the worker's log)")[:ERROR_MAX]


def stalled(now: datetime) -> list[int]:
    """Unfinished jobs that made no progress for ``STALLED_AFTER`` (their task was lost),
    touched so that they are not picked again before another ``STALLED_AFTER``."""
    with transaction.atomic():
        ids = list(ClinicReprojection.objects.select_for_update(skip_locked=True).filter(
            finished_at__isnull=True, updated_at__lte=now - STALLED_AFTER).values_list("pk", flat=True))
        if ids:
            ClinicReprojection.objects.filter(pk__in=ids).update(updated_at=now)
    return ids
