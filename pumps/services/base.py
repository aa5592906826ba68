"""What every service shares: who acts (``Actor``) and what they may do (``authorize``,
the one permission rule set of clinic/permissions.py), who is named as having acted
(``clinician_for``), the field validators, the audit stamp, and what follows every
clinical write (``after_write``: later refills' checks, the stored projection and version,
the alerts, in the write's transaction)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from clinic import permissions
from clinic.models import Clinic, Membership, Role
from pumps import checks
from pumps import projection as pj
from pumps.alerting.evaluate import evaluate_pump
from pumps.errors import Forbidden, ServiceValidationError
from pumps.history import (
    PumpHistory,
    load_history,
    pump_state,
    store_projection,
)
from pumps.models import (
    Pump,
    Refill,
)

Q3 = Decimal("0.001")


class _Errors:
    def __init__(self):
        self.errors: dict[str, Any] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ServiceValidationError(self.errors)


# -------------------------------------------------------------------------- actor


@dataclass(frozen=True)
class Actor:
    """Who acts. A signed-in user (pages, the session API, the admin) acts as themselves:
    ``user`` is set and their role in the record's clinic decides what they may do. An
    integration (an API token: ``client``; the spreadsheet import or the demo: neither)
    acts for a system and may name the clinician who acted (``performed_by``,
    ``entered_by``, ``verified_by``): a staff username of the clinic, who must hold the
    role the action needs, or an external practitioner identifier, stored as such
    (docs/safety/hazard-log.md, H-08 to H-10)."""

    user: Any = None  # a User or None
    label: str = ""  # e.g. "api client EHR" or "system"
    client: Any = None  # the ApiClient of a token, or None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(None, label)

    @property
    def is_person(self) -> bool:
        return self.user is not None and getattr(self.user, "pk", None) is not None


def authorize(actor: Actor, clinic: Clinic | int, action: permissions.Action) -> None:
    """Refuse (``Forbidden``) what the actor may not do in the clinic: the one check that
    every service makes before it writes, whatever the entry point."""
    clinic_id = clinic if isinstance(clinic, int) else clinic.pk
    if actor.client is not None:
        if not actor.client.can_write or actor.client.clinic_id != clinic_id:
            raise Forbidden("This token is read-only." if actor.client.clinic_id == clinic_id
                            else permissions.MESSAGES[action])
        return
    if actor.user is None:
        return  # the system itself (import, demo data, the sweep): what it names is checked
    if not permissions.user_may(actor.user, clinic_id, action):
        raise Forbidden(permissions.MESSAGES[action])


MSG_CONTROL_CHARACTERS = "Remove line breaks, tabs and other control characters from this field."


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def _identifier(errors: _Errors, field: str, value) -> None:
    """Identifiers (MRN, serial and lot numbers, names, codes, practitioner ids) go into
    e-mail headers, file names and other systems: no control characters (H-11)."""
    if isinstance(value, str) and has_control_characters(value):
        errors.add(field, MSG_CONTROL_CHARACTERS)


def _text(errors: _Errors, field: str, value, limit: int) -> None:
    """Free text keeps line breaks but has a maximum length."""
    if isinstance(value, str) and len(value) > limit:
        errors.add(field, f"Ensure this field has no more than {limit} characters.")


NOTES_MAX = 2000
REASON_MAX = 500
MSG_VOID_CARRIED_PROGRAM = (
    "This refill carried a new program: only a prescriber (physician) voids it, and its program with it."
)


def resolve_clinician(clinic: Clinic, name: str | None) -> tuple[Any, str]:
    """A clinician named by an integration: (user, "") when ``name`` is the username of a
    member of the clinic, else (None, name) as an external practitioner identifier."""
    if not name:
        return None, ""
    user = (
        get_user_model()
        .objects.filter(username=name, memberships__clinic=clinic)
        .first()
    )
    return (user, "") if user is not None else (None, name[:100])


def clinician_for(actor: Actor, clinic: Clinic, field: str, name: str | None) -> tuple[Any, str]:
    """Who did it, as (user, external id), for ``field`` (performed_by, entered_by,
    verified_by). A signed-in user is the one who acted: naming anyone else is refused.
    An integration may name a staff username of the clinic, who must hold the role the
    field needs, or an external practitioner id; naming nobody leaves it to the system."""
    name = (name or "").strip() if isinstance(name, str) else name
    if actor.user is not None:
        if name and name != actor.user.username:
            raise ServiceValidationError({field: [
                f"You are signed in as {actor.user.username}: this is recorded as yours. "
                f"Leave {field} empty (only an integration names another clinician)."
            ]})
        return actor.user, ""
    if not name:
        return None, ""
    errors = _Errors()
    _identifier(errors, field, name)
    if len(name) > 100:
        errors.add(field, "Ensure this field has no more than 100 characters.")
    errors.raise_if_any()
    membership = Membership.objects.filter(user__username=name, clinic=clinic).select_related("user").first()
    if membership is None:
        return None, name
    if not permissions.named_role_allows(membership.role, field):
        roles = " or ".join(sorted(Role(r).label.lower() for r in permissions.NAMED_ROLES[field]))
        raise ServiceValidationError({field: [
            f"{name} is a {Role(membership.role).label.lower()} in this clinic: {field} must be a {roles}."
        ]})
    return membership.user, ""


def _stamp(instance, actor: Actor, reason: str = "") -> None:
    """Tell django-simple-history who made this change (and through what)."""
    instance._history_user = actor.user if actor.user is not None and actor.user.pk else None
    label = actor.label if actor.user is None else ""
    text = "; ".join(p for p in (label, reason) if p)
    if text:
        instance._change_reason = text[:100]


MSG_VOID_REASON = "Give the reason for voiding this record."
MSG_ALREADY_VOIDED = "This record is already voided."


def mark_voided(record, *, reason: str, actor: Actor, now: datetime) -> None:
    """The one void of a clinical record (it stays in the history, marked): a reason is
    needed (at most ``REASON_MAX`` characters), a voided record is not voided again; who
    voided it comes from the actor. Saved, with its audit row, in the caller's transaction."""
    if not (reason or "").strip():
        raise ServiceValidationError({"reason": [MSG_VOID_REASON]})
    if len(reason) > REASON_MAX:
        raise ServiceValidationError({"reason": [f"Ensure this field has no more than {REASON_MAX} characters."]})
    if record.is_voided:
        raise ServiceValidationError({"non_field_errors": [MSG_ALREADY_VOIDED]})
    record.voided_at, record.void_reason = now, reason.strip()
    record.voided_by = actor.user if actor.user is not None and actor.user.pk else None
    _stamp(record, actor, "void")
    record.save()


# ------------------------------------------------------------------- validation


def _n(value: Decimal) -> str:
    """A decimal for messages: 40 not 40.000 (nor 4E+1)."""
    return f"{Decimal(value).normalize():f}"


def q3(value) -> Decimal:
    """Decimals are stored rounded half-up to 0.001."""
    return Decimal(value).quantize(Q3, rounding=ROUND_HALF_UP)


def _check_instant(errors: _Errors, field: str, moment: datetime | None, pump: Pump, now: datetime) -> None:
    if moment is None:
        errors.add(field, "This field is required.")
        return
    if timezone.is_naive(moment):
        errors.add(field, "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z).")
        return
    tolerance = timedelta(seconds=settings.PUMPS_FUTURE_TOLERANCE_SECONDS)
    if moment > now + tolerance:
        errors.add(field, "This time is in the future; record what has happened (at most 5 minutes ahead).")
    local = pj.local_date(moment, pump.clinic.tz)
    if local < pump.implanted_on:
        errors.add(field, f"This time is before the pump's implant date ({pump.implanted_on.isoformat()}).")


def _positive(errors: _Errors, field: str, value, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        errors.add(field, "Must be zero or more." if allow_zero else "Must be greater than zero.")


def _check_concentration_value(errors: _Errors, conc: Decimal | None) -> None:
    """A concentration is greater than zero (whether it is required is the caller's)."""
    _positive(errors, "concentration_mcg_per_ml", conc)


def _require_implanted(errors: _Errors, pump: Pump, moment: datetime | None) -> None:
    if pump.explanted_on is not None and moment is not None and not timezone.is_naive(moment):
        if pj.local_date(moment, pump.clinic.tz) > pump.explanted_on:
            errors.add("pump", f"This pump was explanted on {pump.explanted_on.isoformat()}.")


def recompute_refill_checks(pump: Pump, history: PumpHistory, since: datetime | None = None) -> None:
    """docs/clinical-rules.md §8: expected residual, discrepancy and flags of each refill
    depend on the history before it; after a back-filled insert or a void, recompute the
    later ones."""
    state = pump_state(pump)
    refills, readings, programs = history.inputs()
    threshold = checks.discrepancy_threshold_ml(
        pump.model.reservoir_ml,
        small=pump.clinic.discrepancy_threshold_small_ml,
        large=pump.clinic.discrepancy_threshold_large_ml,
    )
    for refill in history.refills:
        if since is not None and refill.performed_at < since:
            continue
        values = refill_check_values(refill, state, refills, readings, programs, threshold)
        if any(getattr(refill, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(refill, k, v)
            _stamp(refill, Actor.system(), "recomputed after an earlier record changed")
            refill.save(update_fields=[*values.keys(), "updated_at"])


def refill_check_values(refill: Refill, state, refills, readings, programs, threshold) -> dict[str, Any]:
    expected, expected_empty = pj.expected_volume_at(
        at=refill.performed_at, pump=state, refills=refills, readings=readings, programs=programs
    )
    result = checks.residual_discrepancy(
        expected_volume=expected,
        extracted_ml=refill.extracted_volume_ml,
        residual_left_ml=refill.residual_left_ml,
        threshold_ml=threshold,
    )
    after_empty = expected_empty is not None and refill.performed_at >= expected_empty
    flags = []
    if result.flagged:
        flags.append(result.meaning)
    if after_empty:
        flags.append(checks.MSG_AFTER_EMPTY)
    return {
        "expected_residual_ml": result.expected_residual_ml,
        "discrepancy_ml": result.discrepancy_ml,
        "discrepancy_flagged": result.flagged,
        "refilled_after_empty": after_empty,
        "flags": flags,
    }


def after_write(pump: Pump, now: datetime, *, since: datetime | None, history: PumpHistory | None = None) -> None:
    """After any clinical write: later records' computed values, the stored projection,
    and the pump version (its ETag). ``history``: the pump's live records after the
    write, when the caller has them already (else they are loaded)."""
    history = history or load_history(pump)
    later = [r for r in history.refills if since is None or r.performed_at > since]
    if later:
        recompute_refill_checks(pump, history, since=min(r.performed_at for r in later))
    store_projection(pump, now=now, history=history, bump_version=True)
    evaluate_alerts(pump, now, history)


def evaluate_alerts(pump: Pump, now: datetime, history: PumpHistory | None = None) -> None:
    """Alerts are part of the write's transaction (the outbox): they commit with it and
    are sent after it."""
    evaluate_pump(pump, now, history)
