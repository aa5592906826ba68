"""A clinic's policy or closures changed: every implanted pump's due date and status may
have moved (docs/clinical-rules.md §6.5). The one clinic-wide refresh, used by the clinic
settings page, the admin (through ``clinic.signals.clinic_changed``) and the tests: the
change is committed with a re-projection job, which a worker runs once it is committed
(``pumps.reprojection``): the request that saved the change does not wait for it."""

from __future__ import annotations

from datetime import datetime

from clinic.models import Clinic
from pumps import reprojection
from pumps.models import ClinicReprojection


def request_clinic_reprojection(clinic: Clinic, *, user=None, now: datetime | None = None) -> ClinicReprojection:
    """Record, inside the caller's transaction (the one that saves the change), that every
    implanted pump of ``clinic`` needs a fresh projection and alerts; the job is queued
    when that transaction commits. ``user``: who changed the clinic (from the session)."""
    return reprojection.request(clinic, user=user, now=now)
