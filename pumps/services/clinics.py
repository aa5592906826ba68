"""A clinic's settings: its policy, closures, alert addresses and refill capacity, each
saved in one transaction by a clinic administrator, its audit row naming who.

A change to the policy or the closures may move every implanted pump's due date and
status (docs/clinical-rules.md §6.5): ``request_clinic_reprojection`` is the one
clinic-wide refresh, used by these services, the admin (through
``clinic.signals.clinic_changed``) and the tests. The change is committed with a
re-projection job, which a worker runs once it is committed (``pumps.reprojection``):
the request that saved the change does not wait for it."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from clinic import permissions
from clinic.models import AlertRecipient, Clinic, ClinicClosure
from pumps import reprojection
from pumps.models import ClinicReprojection

from .base import Actor, _stamp, authorize


def request_clinic_reprojection(clinic: Clinic, *, user=None, now: datetime | None = None) -> ClinicReprojection:
    """Record, inside the caller's transaction (the one that saves the change), that every
    implanted pump of ``clinic`` needs a fresh projection and alerts; the job is queued
    when that transaction commits. ``user``: who changed the clinic (from the session)."""
    return reprojection.request(clinic, user=user, now=now)


@transaction.atomic
def save_clinic_policy(*, clinic: Clinic, actor: Actor, now: datetime | None = None) -> Clinic:
    """Save the clinic's policy (the caller set its fields); its pumps are re-projected in the
    background once it is committed."""
    authorize(actor, clinic.pk, permissions.Action.ADMINISTER)
    _stamp(clinic, actor)
    clinic.save()
    request_clinic_reprojection(clinic, user=actor.user, now=now)
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
    """Mark a day closed (the caller built the row); the clinic's pumps are re-projected."""
    authorize(actor, closure.clinic_id, permissions.Action.ADMINISTER)
    _stamp(closure, actor)
    closure.save()
    request_clinic_reprojection(closure.clinic, user=actor.user, now=now)
    return closure


@transaction.atomic
def remove_closure(*, closure: ClinicClosure, actor: Actor, now: datetime | None = None) -> None:
    """Open a closed day again; the clinic's pumps are re-projected."""
    authorize(actor, closure.clinic_id, permissions.Action.ADMINISTER)
    clinic = closure.clinic
    _stamp(closure, actor)
    closure.delete()
    request_clinic_reprojection(clinic, user=actor.user, now=now)


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
