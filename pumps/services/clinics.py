"""A clinic's settings: its policy, closures, alert addresses and refill capacity, each
saved in one transaction by a clinic administrator, its audit row naming who.

A change to the policy or the closures may move every implanted pump's due date and
status (docs/clinical-rules.md §6): ``refresh_clinic_pumps`` is the one clinic-wide
refresh, used by these services, the admin (through ``clinic.signals.clinic_changed``)
and the tests."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from clinic import permissions
from clinic.models import AlertRecipient, Clinic, ClinicClosure
from pumps.alerting.sweep import refresh_pump
from pumps.history import lock_pump
from pumps.models import Pump

from .base import Actor, _stamp, authorize


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


@transaction.atomic
def save_clinic_policy(*, clinic: Clinic, actor: Actor, now: datetime | None = None) -> Clinic:
    """Save the clinic's policy (the caller set its fields) and refresh its pumps."""
    authorize(actor, clinic.pk, permissions.Action.ADMINISTER)
    _stamp(clinic, actor)
    clinic.save()
    refresh_clinic_pumps(clinic, now)
    return clinic


@transaction.atomic
def save_refill_capacity(*, clinic: Clinic, fields: list[str], actor: Actor) -> Clinic:
    """Save the clinic's refill capacity (``fields``, which the caller set): the refill
    planner reads it; no due date moves."""
    authorize(actor, clinic.pk, permissions.Action.ADMINISTER)
    _stamp(clinic, actor)
    clinic.save(update_fields=fields)
    return clinic


@transaction.atomic
def add_closure(*, closure: ClinicClosure, actor: Actor, now: datetime | None = None) -> ClinicClosure:
    """Mark a day closed (the caller built the row) and refresh the clinic's pumps."""
    authorize(actor, closure.clinic_id, permissions.Action.ADMINISTER)
    _stamp(closure, actor)
    closure.save()
    refresh_clinic_pumps(closure.clinic, now)
    return closure


@transaction.atomic
def remove_closure(*, closure: ClinicClosure, actor: Actor, now: datetime | None = None) -> None:
    """Open a closed day again and refresh the clinic's pumps."""
    authorize(actor, closure.clinic_id, permissions.Action.ADMINISTER)
    clinic = closure.clinic
    _stamp(closure, actor)
    closure.delete()
    refresh_clinic_pumps(clinic, now)


@transaction.atomic
def add_alert_recipient(*, recipient: AlertRecipient, actor: Actor) -> AlertRecipient:
    """Add an alert address (the caller built the row)."""
    authorize(actor, recipient.clinic_id, permissions.Action.ADMINISTER)
    _stamp(recipient, actor)
    recipient.save()
    return recipient


@transaction.atomic
def remove_alert_recipient(*, recipient: AlertRecipient, actor: Actor) -> None:
    authorize(actor, recipient.clinic_id, permissions.Action.ADMINISTER)
    _stamp(recipient, actor)
    recipient.delete()
