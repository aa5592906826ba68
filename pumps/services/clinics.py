"""A clinic's policy or closures changed: every implanted pump's due date and status may
have moved (docs/clinical-rules.md §6). The one clinic-wide refresh, used by the clinic
settings page, the admin (through ``clinic.signals.clinic_changed``) and the tests."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from clinic.models import Clinic
from pumps.history import lock_pump
from pumps.models import Pump

from .base import refresh_pump


def refresh_clinic_pumps(clinic: Clinic, now: datetime | None = None) -> int:
    """Store a fresh projection, and raise or resolve the alerts it calls for, of every
    implanted pump of ``clinic``, each under its row lock, inside the caller's
    transaction. Returns the number of pumps refreshed."""
    now = now or timezone.now()
    count = 0
    for pump_id in Pump.objects.filter(clinic=clinic, explanted_on__isnull=True).values_list("pk", flat=True):
        refresh_pump(lock_pump(pump_id), now=now)
        count += 1
    return count
