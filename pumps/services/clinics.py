"""A clinic's policy or closures changed: every implanted pump's due date and status may
have moved (docs/clinical-rules.md §6.5). The one clinic-wide refresh, used by the clinic
settings page, the admin (through ``clinic.signals.clinic_changed``) and the tests: the
change is committed with a re-projection job, which a worker runs once it is committed
(``pumps.reprojection``): the request that saved the change does not wait for it."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from clinic.models import Clinic
from pumps import reprojection, tasks
from pumps.models import ClinicReprojection

log = logging.getLogger("pumps.reprojection")


def request_clinic_reprojection(clinic: Clinic, *, user=None, now: datetime | None = None) -> ClinicReprojection:
    """Record, inside the caller's transaction (the one that saves the change), that every
    implanted pump of ``clinic`` needs a fresh projection and alerts; the job is queued
    when that transaction commits. ``user``: who changed the clinic (from the session)."""
    job = reprojection.request(clinic, user=user, now=now)
    transaction.on_commit(lambda: queue_reprojection(job.pk))
    return job


def queue_reprojection(job_id: int) -> None:
    """Queue a job's task. If the broker is down the job stays unfinished and beat queues
    it again (``pumps.tasks.resume_reprojections``): the change has been committed."""
    try:
        tasks.reproject_clinic.delay(job_id)
    except Exception as exc:  # noqa: BLE001 - a broker outage must not fail the saved change
        log.warning("could not queue re-projection %s (%s); beat queues it again", job_id, exc.__class__.__name__)
