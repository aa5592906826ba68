"""Every clinical write. Each service is one transaction: it locks the pump row (writes for
one pump are serialized), validates against SPEC 5 with field-level messages, saves,
recomputes the pump's stored projection and the write-time values of later records, and
stamps the audit history with who acted. On any error nothing is saved.

Services take keyword arguments and an ``Actor`` (who acted, for the audit trail), and
``now`` so that tests control the clock.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from clinic import permissions
from clinic.models import Clinic, Membership, Role

from . import checks
from . import projection as pj
from .errors import Conflict, Forbidden, PreconditionFailed, ServiceValidationError  # noqa: F401 (re-exported)
from .models import (
    Appointment,
    Drug,
    DrugProduct,
    Event,
    Patient,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
)

Q3 = Decimal("0.001")


# ------------------------------------------------------------------------- errors


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


def _lock_pump(pump: Pump | int, if_match: int | None = None) -> Pump:
    """Lock the pump row until the end of the transaction (PostgreSQL) so that writes for
    one pump run one after another; SQLite serializes writers by itself."""
    pump_id = pump if isinstance(pump, int) else pump.pk
    locked = Pump.objects.select_for_update(of=("self",)).select_related("clinic", "patient", "model").get(pk=pump_id)
    if if_match is not None and locked.version != if_match:
        raise PreconditionFailed(
            f"The pump changed meanwhile (version {locked.version}, not {if_match}): reload it and try again."
        )
    return locked


def _require_implanted(errors: _Errors, pump: Pump, moment: datetime | None) -> None:
    if pump.explanted_on is not None and moment is not None and not timezone.is_naive(moment):
        if pj.local_date(moment, pump.clinic.tz) > pump.explanted_on:
            errors.add("pump", f"This pump was explanted on {pump.explanted_on.isoformat()}.")


# --------------------------------------------------------------- projection I/O


@dataclass(frozen=True)
class PumpHistory:
    refills: list[Refill]
    readings: list[Reading]
    programs: list[Program]

    def inputs(self):
        return (
            [r.to_projection() for r in self.refills],
            [r.to_projection() for r in self.readings],
            [p.to_projection() for p in self.programs],
        )


def load_history(pump: Pump) -> PumpHistory:
    return PumpHistory(
        refills=list(pump.refills.live().order_by("performed_at", "id")),
        readings=list(pump.readings.live().order_by("read_at", "id")),
        programs=list(pump.programs.live().order_by("effective_at", "id")),
    )


def explanted_by(pump: Pump, at: datetime) -> bool:
    """Was the pump explanted on or before the clinic's local date of ``at``?"""
    return pump.explanted_on is not None and pj.local_date(at, pump.clinic.tz) >= pump.explanted_on


def inactive_reason(pump: Pump, at: datetime | None = None) -> str:
    """Why the pump is inactive as of ``at`` (None: as recorded now), or "" when it is not:
    explanted by then, or a patient who is not active (that status has no date)."""
    if (pump.explanted_on is not None) if at is None else explanted_by(pump, at):
        return f"explanted on {pump.explanted_on.isoformat()}"
    if pump.patient.status != Patient.Status.ACTIVE:
        return f"patient {pump.patient.status}"
    return ""


def pump_state(pump: Pump, at: datetime | None = None) -> pj.PumpState:
    """The pump and patient as the projection needs them, as of ``at`` (None: now): a pump
    asked about before its explant date is projected like any implanted pump."""
    return pj.PumpState(
        tz=pump.clinic.tz,
        alarm_volume_ml=pump.low_reservoir_alarm_ml,
        high_risk=pump.patient.withdrawal_high_risk,
        active=not inactive_reason(pump, at),
    )


def project_pump(pump: Pump, at: datetime, history: PumpHistory | None = None) -> pj.Projection:
    """The projection (docs/clinical-rules.md §3-§7) of one pump as of ``at``, from its
    records up to ``at``: the page, the API, FHIR, the sweep and the e-mails all call this
    one function."""
    state = pump_state(pump, at)
    if not state.active:  # an explanted pump neither alarms nor runs dry: nothing ahead
        return pj.Projection(at=at, status=pj.STATUS_INACTIVE, tz=state.tz)
    history = history or load_history(pump)
    refills, readings, programs = history.inputs()
    return pj.project(
        at=at,
        pump=state,
        refills=refills,
        readings=readings,
        programs=programs,
        policy=pump.clinic.policy(),
    )


def projection_reason(pump: Pump, proj: pj.Projection) -> str:
    """``proj``'s status in words, from its own values (not the stored row)."""
    clinic = pump.clinic
    return pj.status_reason(
        proj.status, proj.at, tz=clinic.tz, empty_at=proj.empty_at, lra_at=proj.low_reservoir_alarm_at,
        due_on=proj.refill_due_on, drug_expires_at=proj.drug_expires_at, inactive_reason=inactive_reason(pump, proj.at),
        binding=pj.due_date_binding(
            worst_lra_at=proj.low_reservoir_alarm_at, drug_expires_at=proj.drug_expires_at, tz=clinic.tz,
            lead_days=clinic.lead_days, high_risk_extra_days=clinic.high_risk_extra_days,
            high_risk=pump.patient.withdrawal_high_risk,
        ),
    )


def recompute_pump(pump: Pump, *, now: datetime, history: PumpHistory | None = None,
                   bump_version: bool = False) -> Pump:
    """Refresh the stored projection of one pump (inside the caller's transaction); with
    ``bump_version`` (after a clinical write) also its version, in the same UPDATE."""
    history = history or load_history(pump)
    latest = max(
        [r.performed_at for r in history.refills] + [r.read_at for r in history.readings]
        + [p.effective_at for p in history.programs] + [now],
    )
    proj = project_pump(pump, max(now, latest), history)
    extra = []
    if proj.empty_at is not None:
        extra.append(proj.empty_at - timedelta(hours=pump.clinic.withdrawal_window_hours))
    if pump.expected_end_of_service is not None:
        for days in (180, 90):
            extra.append(pj.start_of_local_day(pump.expected_end_of_service - timedelta(days=days), pump.clinic.tz))
    extra.extend(p.entered_at + timedelta(hours=24) for p in history.programs if p.verified_at is None)
    extra.append(proj.drug_expires_at)  # the drug_expired alert falls due at that instant
    pump.status = pj.status_at(
        now,
        tz=pump.clinic.tz,
        active=proj.status != pj.STATUS_INACTIVE,
        complete=proj.status != pj.STATUS_INCOMPLETE,
        empty_at=proj.empty_at,
        lra_at=proj.low_reservoir_alarm_at,
        due_on=proj.refill_due_on,
        due_soon_days=pump.clinic.due_soon_days,
    )
    pump.urgency = pj.STATUSES.index(pump.status)
    pump.low_reservoir_alarm_at = proj.low_reservoir_alarm_at
    pump.empty_at = proj.empty_at
    pump.expected_low_reservoir_alarm_at = proj.expected_low_reservoir_alarm_at
    pump.expected_empty_at = proj.expected_empty_at
    pump.drug_expires_at = proj.drug_expires_at
    pump.refill_due_on = proj.refill_due_on
    pump.anchor_at = proj.anchor_at
    pump.next_change_at = pj.next_status_change(
        now,
        tz=pump.clinic.tz,
        active=proj.status != pj.STATUS_INACTIVE,
        complete=proj.status != pj.STATUS_INCOMPLETE,
        empty_at=proj.empty_at,
        lra_at=proj.low_reservoir_alarm_at,
        due_on=proj.refill_due_on,
        due_soon_days=pump.clinic.due_soon_days,
        extra_instants=extra,
    )
    pump.projected_at = now
    fields = [
        "status", "urgency", "low_reservoir_alarm_at", "empty_at", "expected_low_reservoir_alarm_at",
        "expected_empty_at", "drug_expires_at", "refill_due_on", "anchor_at", "next_change_at",
        "projected_at",
    ]
    values = {f: getattr(pump, f) for f in fields}
    if bump_version:
        pump.updated_at = timezone.now()
        values.update(version=F("version") + 1, updated_at=pump.updated_at)
    # The stored projection is derived data: no audit row for it.
    Pump.objects.filter(pk=pump.pk).update(**values)
    if bump_version:
        pump.version += 1
    return pump


def _bump_version(pump: Pump) -> None:
    Pump.objects.filter(pk=pump.pk).update(version=F("version") + 1, updated_at=timezone.now())
    pump.version += 1


def refresh_pump(pump: Pump, *, now: datetime) -> tuple[int, int]:
    """Bring a pump whose state may have changed without a new record (time passed, the
    clinic's policy changed) up to ``now``: its stored projection and its alerts, from one
    read of its records, inside the caller's transaction, the pump row locked by the
    caller. Returns (alerts created, notifications created)."""
    from .alerts import evaluate_pump

    history = load_history(pump)
    recompute_pump(pump, now=now, history=history)
    return evaluate_pump(pump, now, history)


def _recompute_refill_checks(pump: Pump, history: PumpHistory, since: datetime | None = None) -> None:
    """SPEC 4.7: expected residual, discrepancy and flags of each refill depend on the
    history before it; after a back-filled insert or a void, recompute the later ones."""
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
        values = _refill_check_values(refill, state, refills, readings, programs, threshold)
        if any(getattr(refill, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(refill, k, v)
            _stamp(refill, Actor.system(), "recomputed after an earlier record changed")
            refill.save(update_fields=[*values.keys(), "updated_at"])


def _refill_check_values(refill: Refill, state, refills, readings, programs, threshold) -> dict[str, Any]:
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


# ----------------------------------------------------------------------- patients


PATIENT_FIELDS = (
    "mrn", "family_name", "given_name", "birth_date", "spasticity_origin", "withdrawal_high_risk",
    "high_risk_reason", "phone", "caregiver_phone", "status",
)


def _patient_errors(data: Mapping[str, Any], today: date) -> _Errors:
    errors = _Errors()
    for field in ("mrn", "family_name", "given_name", "phone", "caregiver_phone"):
        _identifier(errors, field, data.get(field))
    _text(errors, "high_risk_reason", data.get("high_risk_reason"), 300)
    if "mrn" in data and not str(data["mrn"] or "").strip():
        errors.add("mrn", "This field may not be blank.")
    birth = data.get("birth_date")
    if birth is not None and birth > today:
        errors.add("birth_date", "The birth date is in the future.")
    if data.get("spasticity_origin") not in (None, *Patient.Origin.values):
        errors.add("spasticity_origin", f"Must be one of: {', '.join(Patient.Origin.values)}.")
    if data.get("status") not in (None, *Patient.Status.values):
        errors.add("status", f"Must be one of: {', '.join(Patient.Status.values)}.")
    return errors


@transaction.atomic
def create_patient(*, clinic: Clinic, actor: Actor, now: datetime | None = None, **data) -> Patient:
    now = now or timezone.now()
    authorize(actor, clinic, permissions.Action.RECORD)
    errors = _patient_errors(data, pj.local_date(now, clinic.tz))
    mrn = str(data.get("mrn") or "").strip()
    if mrn and Patient.objects.filter(clinic=clinic, mrn=mrn).exists():
        errors.add("mrn", "A patient with this MRN already exists in this clinic.")
    errors.raise_if_any()
    patient = Patient(clinic=clinic, **{k: v for k, v in data.items() if k in PATIENT_FIELDS})
    patient.mrn = mrn
    _stamp(patient, actor)
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError:
        raise ServiceValidationError({"mrn": ["A patient with this MRN already exists in this clinic."]}) from None
    return patient


@transaction.atomic
def update_patient(*, patient: Patient, actor: Actor, now: datetime | None = None, **data) -> Patient:
    now = now or timezone.now()
    patient = Patient.objects.select_for_update(of=("self",), no_key=True).select_related("clinic").get(pk=patient.pk)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    errors = _patient_errors(data, pj.local_date(now, patient.clinic.tz))
    if "mrn" in data:
        data["mrn"] = str(data["mrn"] or "").strip()
        if Patient.objects.filter(clinic=patient.clinic, mrn=data["mrn"]).exclude(pk=patient.pk).exists():
            errors.add("mrn", "A patient with this MRN already exists in this clinic.")
    errors.raise_if_any()
    for key, value in data.items():
        if key in PATIENT_FIELDS:
            setattr(patient, key, value)
    _stamp(patient, actor)
    patient.save()
    # High-risk days and patient status change due dates and status of the implanted pump.
    for pump_id in Pump.objects.filter(patient=patient).values_list("id", flat=True):
        pump = _lock_pump(pump_id)
        recompute_pump(pump, now=now)
        _evaluate_alerts(pump, now)
    return patient


# -------------------------------------------------------------------------- pumps


def _end_of_service(implanted_on: date, battery_months: int | None) -> date | None:
    if not battery_months:
        return None
    month = implanted_on.month - 1 + battery_months
    year, month = implanted_on.year + month // 12, month % 12 + 1
    day = min(implanted_on.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
                                 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1])
    return date(year, month, day)


def _check_alarm_volume(errors: _Errors, alarm: Decimal | None, model: PumpModel) -> None:
    if alarm is None:
        return
    if alarm < 0:
        errors.add("low_reservoir_alarm_ml", "Must be zero or more.")
    elif alarm >= model.reservoir_ml:
        errors.add("low_reservoir_alarm_ml", f"Must be below the reservoir capacity of {_n(model.reservoir_ml)} mL.")


@transaction.atomic
def implant_pump(
    *,
    patient: Patient,
    model: PumpModel,
    serial_number: str,
    implanted_on: date,
    actor: Actor,
    low_reservoir_alarm_ml: Decimal | None = None,
    udi: str = "",
    now: datetime | None = None,
) -> Pump:
    now = now or timezone.now()
    patient = Patient.objects.select_for_update(of=("self",), no_key=True).select_related("clinic").get(pk=patient.pk)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    if not str(serial_number or "").strip():
        errors.add("serial_number", "This field may not be blank.")
    _identifier(errors, "serial_number", serial_number)
    _identifier(errors, "udi", udi)
    if implanted_on > pj.local_date(now, patient.clinic.tz):
        errors.add("implanted_on", "The implant date is in the future.")
    _check_alarm_volume(errors, low_reservoir_alarm_ml, model)
    if Pump.objects.filter(patient=patient, explanted_on__isnull=True).exists():
        errors.add(
            "patient",
            "This patient already has an implanted pump: record its explant (or a replacement) first.",
        )
    if patient.status != Patient.Status.ACTIVE:
        errors.add("patient", f"This patient is {patient.status}.")
    errors.raise_if_any()
    pump = Pump(
        clinic=patient.clinic,
        patient=patient,
        model=model,
        serial_number=serial_number.strip(),
        udi=udi or "",
        implanted_on=implanted_on,
        low_reservoir_alarm_ml=q3(low_reservoir_alarm_ml if low_reservoir_alarm_ml is not None else model.default_alarm_ml),
        expected_end_of_service=_end_of_service(implanted_on, model.battery_months),
    )
    _stamp(pump, actor)
    try:
        with transaction.atomic():
            pump.save()
    except IntegrityError:
        raise ServiceValidationError(
            {"patient": ["This patient already has an implanted pump: record its explant (or a replacement) first."]}
        ) from None
    recompute_pump(pump, now=now)
    return pump


@transaction.atomic
def update_pump(
    *, pump: Pump, actor: Actor, now: datetime | None = None, if_match: int | None = None, **data
) -> Pump:
    """Change the alarm volume, UDI or serial number of an implanted pump."""
    now = now or timezone.now()
    pump = _lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _check_alarm_volume(errors, data.get("low_reservoir_alarm_ml"), pump.model)
    _identifier(errors, "serial_number", data.get("serial_number"))
    _identifier(errors, "udi", data.get("udi"))
    if "serial_number" in data and not str(data["serial_number"] or "").strip():
        errors.add("serial_number", "This field may not be blank.")
    errors.raise_if_any()
    for key in ("low_reservoir_alarm_ml", "udi", "serial_number", "expected_end_of_service"):
        if key in data and data[key] is not None:
            setattr(pump, key, q3(data[key]) if key == "low_reservoir_alarm_ml" else data[key])
    _stamp(pump, actor)
    pump.save()
    _bump_version(pump)
    recompute_pump(pump, now=now)
    _evaluate_alerts(pump, now)
    return pump


@transaction.atomic
def explant_pump(
    *, pump: Pump, explanted_on: date, actor: Actor, reason: str = "", now: datetime | None = None,
    if_match: int | None = None,
) -> Pump:
    now = now or timezone.now()
    pump = _lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _text(errors, "reason", reason, 300)
    if pump.explanted_on is not None:
        errors.add("pump", f"This pump was already explanted on {pump.explanted_on.isoformat()}.")
    if explanted_on < pump.implanted_on:
        errors.add("explanted_on", f"The explant date is before the implant date ({pump.implanted_on.isoformat()}).")
    if explanted_on > pj.local_date(now, pump.clinic.tz):
        errors.add("explanted_on", "The explant date is in the future.")
    errors.raise_if_any()
    pump.explanted_on = explanted_on
    pump.explant_reason = reason or ""
    _stamp(pump, actor, "explant")
    pump.save()
    _bump_version(pump)
    recompute_pump(pump, now=now)
    _evaluate_alerts(pump, now)
    return pump


@transaction.atomic
def replace_pump(
    *, old: Pump, model: PumpModel, serial_number: str, replaced_on: date, actor: Actor,
    low_reservoir_alarm_ml: Decimal | None = None, udi: str = "", reason: str = "replacement",
    now: datetime | None = None,
) -> Pump:
    """Explant the old pump and implant the new one in one transaction."""
    explant_pump(pump=old, explanted_on=replaced_on, actor=actor, reason=reason, now=now)
    return implant_pump(
        patient=old.patient, model=model, serial_number=serial_number, implanted_on=replaced_on,
        actor=actor, low_reservoir_alarm_ml=low_reservoir_alarm_ml, udi=udi, now=now,
    )


# ----------------------------------------------------------------------- programs


@dataclass(frozen=True)
class ProgramInput:
    concentration_mcg_per_ml: Decimal | None
    mode: str = Program.Mode.CONTINUOUS
    daily_dose_mcg: Decimal | None = None
    steps: list | None = None
    ptm_bolus_mcg: Decimal | None = None
    ptm_max_per_day: int | None = None
    override_reason: str = ""
    entered_by: str | None = None  # a clinician named by an integration

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProgramInput:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


def _validate_program(
    errors: _Errors, prefix: str, pump: Pump, data: ProgramInput, effective_at: datetime, programs: list[Program],
    refills: list[Refill], reservoir_concentration: Decimal | None,
) -> tuple[Decimal, list] | None:
    """Validate a program; returns (basal daily dose, stored steps) or None on error."""

    def add(field, message):
        errors.add(prefix + field, message)

    before = len(errors.errors)
    _text(errors, prefix + "override_reason", data.override_reason, REASON_MAX)
    conc = data.concentration_mcg_per_ml
    if conc is None:
        add("concentration_mcg_per_ml", "This field is required.")
    elif conc <= 0:
        add("concentration_mcg_per_ml", "Must be greater than zero.")
    elif reservoir_concentration is not None and q3(conc) != q3(reservoir_concentration):
        add(
            "concentration_mcg_per_ml",
            f"The reservoir holds {_n(reservoir_concentration)} mcg/mL: a program must use the "
            "concentration of the drug in the pump (a concentration change needs a refill with a new program).",
        )
    daily: Decimal | None = None
    stored_steps: list = []
    if data.mode == Program.Mode.FLEX:
        try:
            steps = checks.parse_flex_steps(data.steps or [])
            daily = checks.check_flex_daily_dose(steps, data.daily_dose_mcg)
            stored_steps = [
                {"start": s.start.strftime("%H:%M"), "dose_mcg_per_hour": str(q3(s.dose_mcg_per_hour))} for s in steps
            ]
        except checks.CheckError as exc:
            add(exc.field, exc.message)
    elif data.mode == Program.Mode.CONTINUOUS:
        if data.steps:
            add("steps", "Steps belong to a flex program; a continuous program has a daily dose only.")
        if data.daily_dose_mcg is None:
            add("daily_dose_mcg", "This field is required for a continuous program.")
        elif data.daily_dose_mcg <= 0:
            add("daily_dose_mcg", "Must be greater than zero.")
        else:
            daily = q3(data.daily_dose_mcg)
    else:
        add("mode", "Must be continuous or flex.")
    bolus, per_day = data.ptm_bolus_mcg, data.ptm_max_per_day
    if (bolus is None) != (per_day is None) and not (bolus == 0 or per_day == 0):
        add("ptm_bolus_mcg" if bolus is None else "ptm_max_per_day",
            "An on-demand bolus needs both a dose (ptm_bolus_mcg) and a maximum per day (ptm_max_per_day).")
    if bolus is not None and bolus < 0:
        add("ptm_bolus_mcg", "Must be zero or more.")
    if per_day is not None and per_day < 0:
        add("ptm_max_per_day", "Must be zero or more.")
    if len(errors.errors) > before or daily is None:
        return None
    # Titration (Saulino 2016): against the program in force 24 hours before.
    previous = [p for p in programs if p.effective_at <= effective_at - timedelta(hours=24)]
    if previous:
        limit = checks.titration_limit_pct(
            pump.patient.spasticity_origin,
            spinal_pct=pump.clinic.titration_limit_spinal_pct,
            other_pct=pump.clinic.titration_limit_other_pct,
        )
        try:
            checks.check_titration(
                new_daily_mcg=Fraction(daily),
                old_daily_mcg=previous[-1].to_projection().basal_daily_dose_mcg(),
                limit_pct=limit,
                override_reason=data.override_reason,
            )
        except checks.CheckError as exc:
            add(exc.field, exc.message)
            return None
    return daily, stored_steps


def _reservoir_concentration(refills: list[Refill], at: datetime) -> Decimal | None:
    """Concentration of the drug in the reservoir at ``at``: that of the latest refill."""
    earlier = [r for r in refills if r.performed_at <= at]
    return earlier[-1].concentration_mcg_per_ml if earlier else None


def _make_program(
    pump: Pump, data: ProgramInput, effective_at: datetime, daily: Decimal, steps: list, actor: Actor,
    now: datetime, refill: Refill | None = None,
) -> Program:
    entered_user, entered_external = clinician_for(actor, pump.clinic, "entered_by", data.entered_by)
    program = Program(
        pump=pump,
        effective_at=effective_at,
        concentration_mcg_per_ml=q3(data.concentration_mcg_per_ml),
        mode=data.mode,
        daily_dose_mcg=daily,
        steps=steps,
        ptm_bolus_mcg=q3(data.ptm_bolus_mcg) if data.ptm_bolus_mcg is not None else None,
        ptm_max_per_day=data.ptm_max_per_day,
        override_reason=(data.override_reason or "").strip(),
        entered_at=now,
        entered_by=entered_user,
        entered_by_external=entered_external,
        refill=refill,
    )
    _stamp(program, actor)
    program.save()
    return program


@transaction.atomic
def record_program(
    *, pump: Pump, effective_at: datetime, data: ProgramInput, actor: Actor, now: datetime | None = None,
    if_match: int | None = None,
) -> Program:
    now = now or timezone.now()
    pump = _lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
    errors = _Errors()
    _check_instant(errors, "effective_at", effective_at, pump, now)
    _require_implanted(errors, pump, effective_at)
    errors.raise_if_any()
    history = load_history(pump)
    if any(p.effective_at == effective_at for p in history.programs):
        raise ServiceValidationError({"effective_at": ["Another program of this pump takes effect at this instant."]})
    result = _validate_program(
        errors, "", pump, data, effective_at, history.programs, history.refills,
        _reservoir_concentration(history.refills, effective_at),
    )
    errors.raise_if_any()
    daily, steps = result
    program = _make_program(pump, data, effective_at, daily, steps, actor, now)
    _after_write(pump, now, since=effective_at)
    return program


@transaction.atomic
def verify_program(*, program: Program, actor: Actor, verified_by: str | None = None, now: datetime | None = None) -> Program:
    """A second clinician confirms the program: not the one who entered it."""
    now = now or timezone.now()
    pump = _lock_pump(program.pump_id)
    authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
    program = Program.objects.select_for_update().get(pk=program.pk)
    user, external = clinician_for(actor, pump.clinic, "verified_by", verified_by)
    errors = _Errors()
    if program.is_voided:
        errors.add("non_field_errors", "This program was voided.")
    if program.verified_at is not None:
        errors.add("non_field_errors", "This program was already verified.")
    if user is None and not external:
        errors.add("verified_by", "Name the clinician who verified the program.")
    same_user = user is not None and program.entered_by_id == user.pk
    same_external = external and program.entered_by_external == external
    if same_user or same_external:
        errors.add("verified_by", "A second clinician must verify: not the one who entered the program.")
    errors.raise_if_any()
    program.verified_by, program.verified_by_external, program.verified_at = user, external, now
    _stamp(program, actor, "verified")
    program.save(update_fields=["verified_by", "verified_by_external", "verified_at", "updated_at"])
    recompute_pump(pump, now=now)
    _evaluate_alerts(pump, now)
    return program


# ------------------------------------------------------------------------ refills


def _stability_days(product: DrugProduct | None) -> int:
    if product is not None:
        return product.effective_stability_days
    baclofen = Drug.objects.filter(code="baclofen").first()
    return baclofen.default_stability_days if baclofen else 180


@transaction.atomic
def record_refill(
    *,
    pump: Pump,
    performed_at: datetime,
    added_volume_ml: Decimal | None,
    concentration_mcg_per_ml: Decimal | None,
    actor: Actor,
    extracted_volume_ml: Decimal | None = None,
    residual_left_ml: Decimal | None = None,
    bridge_bolus_ml: Decimal | None = None,
    drug_product: DrugProduct | None = None,
    lot_number: str = "",
    lot_expiry: date | None = None,
    notes: str = "",
    performed_by: str | None = None,
    program: ProgramInput | None = None,
    confirm_duplicate: bool = False,
    if_match: int | None = None,
    now: datetime | None = None,
) -> Refill:
    """Record a refill, with an optional new program taking effect at the same instant,
    saved atomically with it (SPEC 3, 4.7, 5)."""
    now = now or timezone.now()
    pump = _lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    if program is not None:  # a dose change, whichever form carries it (H-08)
        authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
    errors = _Errors()
    _check_instant(errors, "performed_at", performed_at, pump, now)
    _require_implanted(errors, pump, performed_at)
    _identifier(errors, "lot_number", lot_number)
    _text(errors, "notes", notes, NOTES_MAX)
    errors.raise_if_any()

    history = load_history(pump)
    capacity = pump.model.reservoir_ml
    residual_left = residual_left_ml if residual_left_ml is not None else Decimal(0)
    bridge = bridge_bolus_ml if bridge_bolus_ml is not None else Decimal(0)
    first_fill = not any(r.performed_at < performed_at for r in history.refills)

    if added_volume_ml is None:
        errors.add("added_volume_ml", "This field is required.")
    _positive(errors, "added_volume_ml", added_volume_ml)
    _positive(errors, "extracted_volume_ml", extracted_volume_ml, allow_zero=True)
    _positive(errors, "residual_left_ml", residual_left_ml, allow_zero=True)
    _positive(errors, "bridge_bolus_ml", bridge_bolus_ml, allow_zero=True)
    if first_fill:
        if extracted_volume_ml is not None:
            errors.add("extracted_volume_ml", "A first fill after implant has no extracted volume: leave it empty.")
        if residual_left:
            errors.add("residual_left_ml", "A first fill after implant has no residual left in the pump.")
    elif extracted_volume_ml is None:
        errors.add(
            "extracted_volume_ml",
            "A refill after the first fill needs the extracted volume (0 if nothing could be drawn).",
        )
    if extracted_volume_ml is not None and extracted_volume_ml > capacity:
        errors.add(
            "extracted_volume_ml",
            f"The extracted volume ({_n(q3(extracted_volume_ml))} mL) exceeds the reservoir capacity "
            f"of {_n(capacity)} mL.",
        )
    if added_volume_ml is not None and added_volume_ml > 0:
        # The reservoir holds residual + added before the bridge bolus leaves it.
        after = residual_left + added_volume_ml
        if after > capacity:
            errors.add(
                "added_volume_ml",
                f"The volume after the refill ({_n(q3(after))} mL) exceeds the reservoir capacity "
                f"of {_n(capacity)} mL.",
            )
        if bridge > residual_left + added_volume_ml:
            errors.add("bridge_bolus_ml", "The bridge bolus is larger than the volume in the reservoir.")

    if concentration_mcg_per_ml is None:
        errors.add("concentration_mcg_per_ml", "This field is required.")
    elif concentration_mcg_per_ml <= 0:
        errors.add("concentration_mcg_per_ml", "Must be greater than zero.")
    elif (
        drug_product is not None
        and drug_product.concentration_mcg_per_ml is not None
        and q3(concentration_mcg_per_ml) != drug_product.concentration_mcg_per_ml
    ):
        errors.add(
            "concentration_mcg_per_ml",
            f"{drug_product.name} is {_n(drug_product.concentration_mcg_per_ml)} mcg/mL, not "
            f"{_n(q3(concentration_mcg_per_ml))}.",
        )
    else:
        in_force = [p for p in history.programs if p.effective_at <= performed_at]
        if program is None and in_force and q3(concentration_mcg_per_ml) != in_force[-1].concentration_mcg_per_ml:
            errors.add(
                "concentration_mcg_per_ml",
                f"The program in force is at {_n(in_force[-1].concentration_mcg_per_ml)} mcg/mL: "
                f"{checks.MSG_CONCENTRATION_CHANGE}.",
            )
    if lot_expiry is not None and not errors.errors.get("performed_at"):
        if lot_expiry < pj.local_date(performed_at, pump.clinic.tz):
            errors.add("lot_expiry", "This lot had expired when the refill was performed.")

    program_result = None
    if program is not None:
        if program.concentration_mcg_per_ml is not None and concentration_mcg_per_ml is not None and q3(
            program.concentration_mcg_per_ml
        ) != q3(concentration_mcg_per_ml):
            errors.add(
                "program.concentration_mcg_per_ml",
                "The new program's concentration differs from the refill's: they must be the same drug.",
            )
        else:
            if any(p.effective_at == performed_at for p in history.programs):
                errors.add("performed_at", "Another program of this pump takes effect at this instant.")
            program_result = _validate_program(
                errors, "program.", pump, program, performed_at, history.programs, history.refills, None
            )
    errors.raise_if_any()

    window = timedelta(minutes=settings.PUMPS_DUPLICATE_REFILL_MINUTES)
    near = [r for r in history.refills if abs(r.performed_at - performed_at) < window]
    if near and not confirm_duplicate:
        raise Conflict(
            f"Another refill of this pump was recorded at {near[0].performed_at.astimezone(pump.clinic.tz):%Y-%m-%d %H:%M}"
            f" (within {settings.PUMPS_DUPLICATE_REFILL_MINUTES} minutes): probably a duplicate. "
            "Send confirm_duplicate: true if this is really a second refill.",
            code="probable_duplicate",
        )

    user, external = clinician_for(actor, pump.clinic, "performed_by", performed_by)
    refill = Refill(
        pump=pump,
        performed_at=performed_at,
        performed_by=user,
        performed_by_external=external,
        extracted_volume_ml=q3(extracted_volume_ml) if extracted_volume_ml is not None else None,
        added_volume_ml=q3(added_volume_ml),
        residual_left_ml=q3(residual_left),
        bridge_bolus_ml=q3(bridge_bolus_ml) if bridge_bolus_ml is not None else None,
        drug_product=drug_product,
        concentration_mcg_per_ml=q3(concentration_mcg_per_ml),
        stability_days=_stability_days(drug_product),
        lot_number=lot_number or "",
        lot_expiry=lot_expiry,
        notes=notes or "",
    )
    refill_history = PumpHistory(history.refills + [refill], history.readings, history.programs)
    refill_history.refills.sort(key=lambda r: r.performed_at)
    threshold = checks.discrepancy_threshold_ml(
        capacity, small=pump.clinic.discrepancy_threshold_small_ml, large=pump.clinic.discrepancy_threshold_large_ml
    )
    values = _refill_check_values(refill, pump_state(pump), *refill_history.inputs(), threshold)
    for key, value in values.items():
        setattr(refill, key, value)
    _stamp(refill, actor)
    refill.save()
    programs = history.programs
    if program is not None and program_result is not None:
        daily, steps = program_result
        made = _make_program(pump, program, performed_at, daily, steps, actor, now, refill=refill)
        programs = sorted([*programs, made], key=lambda p: p.effective_at)  # no two at one instant
    # The history as it now stands in the database, in load_history's order (the new
    # refill has the highest id, so it sorts last among refills at the same instant).
    _after_write(pump, now, since=performed_at,
                 history=PumpHistory(refill_history.refills, history.readings, programs))
    refill.refresh_from_db()
    return refill


def _after_write(pump: Pump, now: datetime, *, since: datetime | None, history: PumpHistory | None = None) -> None:
    """After any clinical write: later records' computed values, the stored projection,
    and the pump version (its ETag). ``history``: the pump's live records after the
    write, when the caller has them already (else they are loaded)."""
    history = history or load_history(pump)
    later = [r for r in history.refills if since is None or r.performed_at > since]
    if later:
        _recompute_refill_checks(pump, history, since=min(r.performed_at for r in later))
    recompute_pump(pump, now=now, history=history, bump_version=True)
    _evaluate_alerts(pump, now, history)


def _evaluate_alerts(pump: Pump, now: datetime, history: PumpHistory | None = None) -> None:
    """Alerts are part of the write's transaction (the outbox): they commit with it and
    are sent after it."""
    from .alerts import evaluate_pump

    evaluate_pump(pump, now, history)


# ----------------------------------------------------------------------- readings


@transaction.atomic
def record_reading(
    *, pump: Pump, read_at: datetime, reservoir_volume_ml: Decimal | None, actor: Actor, eri: bool = False,
    performed_by: str | None = None, notes: str = "", now: datetime | None = None, if_match: int | None = None,
) -> Reading:
    now = now or timezone.now()
    pump = _lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _check_instant(errors, "read_at", read_at, pump, now)
    _text(errors, "notes", notes, NOTES_MAX)
    _require_implanted(errors, pump, read_at)
    if reservoir_volume_ml is None:
        errors.add("reservoir_volume_ml", "This field is required.")
    elif reservoir_volume_ml < 0:
        errors.add("reservoir_volume_ml", "Must be zero or more.")
    elif reservoir_volume_ml > pump.model.reservoir_ml:
        errors.add(
            "reservoir_volume_ml",
            f"Exceeds the reservoir capacity of {_n(pump.model.reservoir_ml)} mL.",
        )
    errors.raise_if_any()
    user, external = clinician_for(actor, pump.clinic, "performed_by", performed_by)
    reading = Reading(
        pump=pump, read_at=read_at, reservoir_volume_ml=q3(reservoir_volume_ml), eri=eri,
        performed_by=user, performed_by_external=external, notes=notes or "",
    )
    _stamp(reading, actor)
    reading.save()
    if eri:
        # Medtronic: the pump stops 90 days after the elective replacement indicator.
        eos = pj.local_date(read_at, pump.clinic.tz) + timedelta(days=90)
        if pump.expected_end_of_service is None or eos < pump.expected_end_of_service:
            pump.expected_end_of_service = eos
            _stamp(pump, actor, "ERI reading")
            pump.save(update_fields=["expected_end_of_service", "updated_at"])
    _after_write(pump, now, since=read_at)
    return reading


# ------------------------------------------------------------------------- events


@transaction.atomic
def record_event(
    *, pump: Pump, kind: str, occurred_at: datetime, actor: Actor, notes: str = "", now: datetime | None = None,
) -> Event:
    now = now or timezone.now()
    pump = _lock_pump(pump)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _text(errors, "notes", notes, NOTES_MAX)
    if kind not in Event.Kind.values:
        errors.add("kind", f"Must be one of: {', '.join(Event.Kind.values)}.")
    _check_instant(errors, "occurred_at", occurred_at, pump, now)
    errors.raise_if_any()
    event = Event(pump=pump, kind=kind, occurred_at=occurred_at, notes=notes or "", recorded_by=actor.user)
    _stamp(event, actor)
    event.save()
    _bump_version(pump)
    _evaluate_alerts(pump, now)
    return event


# ------------------------------------------------------------------- appointments


@transaction.atomic
def schedule_appointment(
    *, pump: Pump, scheduled_for: datetime, actor: Actor, kind: str = Appointment.Kind.REFILL, notes: str = "",
    now: datetime | None = None,
) -> Appointment:
    now = now or timezone.now()
    pump = _lock_pump(pump)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _text(errors, "notes", notes, NOTES_MAX)
    if kind not in Appointment.Kind.values:
        errors.add("kind", f"Must be one of: {', '.join(Appointment.Kind.values)}.")
    if scheduled_for is None or timezone.is_naive(scheduled_for):
        errors.add("scheduled_for", "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z).")
    if pump.explanted_on is not None:
        errors.add("pump", f"This pump was explanted on {pump.explanted_on.isoformat()}.")
    errors.raise_if_any()
    appointment = Appointment(pump=pump, scheduled_for=scheduled_for, kind=kind, notes=notes or "")
    _stamp(appointment, actor)
    appointment.save()
    _evaluate_alerts(pump, now)
    return appointment


@transaction.atomic
def update_appointment(*, appointment: Appointment, actor: Actor, status: str | None = None,
                       scheduled_for: datetime | None = None, notes: str | None = None) -> Appointment:
    pump = _lock_pump(appointment.pump_id)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    appointment = Appointment.objects.select_for_update().get(pk=appointment.pk)
    errors = _Errors()
    _text(errors, "notes", notes, NOTES_MAX)
    if status is not None and status not in Appointment.Status.values:
        errors.add("status", f"Must be one of: {', '.join(Appointment.Status.values)}.")
    if scheduled_for is not None and timezone.is_naive(scheduled_for):
        errors.add("scheduled_for", "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z).")
    errors.raise_if_any()
    if status is not None:
        appointment.status = status
    if scheduled_for is not None:
        appointment.scheduled_for = scheduled_for
    if notes is not None:
        appointment.notes = notes
    _stamp(appointment, actor)
    appointment.save()
    # a cancelled refill appointment brings the due-soon alert back
    _evaluate_alerts(pump, timezone.now())
    return appointment


# -------------------------------------------------------------------------- voids


@transaction.atomic
def void_record(*, record, reason: str, actor: Actor, now: datetime | None = None):
    """Void a refill, reading, program, event or appointment: it stays in the history but
    takes no part in projections; later records' computed values are recomputed."""
    now = now or timezone.now()
    pump = _lock_pump(record.pump_id)
    record = type(record).objects.select_for_update().get(pk=record.pk)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    carried = Program.objects.filter(refill=record, voided_at__isnull=True).first() if isinstance(record, Refill) else None
    if isinstance(record, Program) or carried is not None:
        # A refill that carried a program stands or falls with it, and only a prescriber
        # voids a program: the void of such a refill is a prescriber's too (H-09).
        try:
            authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
        except Forbidden:
            if carried is None:
                raise
            raise Forbidden(MSG_VOID_CARRIED_PROGRAM) from None
    if not (reason or "").strip():
        raise ServiceValidationError({"reason": ["Give the reason for voiding this record."]})
    if len(reason) > REASON_MAX:
        raise ServiceValidationError({"reason": [f"Ensure this field has no more than {REASON_MAX} characters."]})
    if record.is_voided:
        raise ServiceValidationError({"non_field_errors": ["This record is already voided."]})
    record.voided_at, record.void_reason = now, reason.strip()
    record.voided_by = actor.user if actor.user is not None and actor.user.pk else None
    _stamp(record, actor, "void")
    record.save()
    if carried is not None:  # a program saved with a refill stands or falls with it
        carried.voided_at, carried.void_reason = now, f"refill voided: {reason.strip()}"[:REASON_MAX]
        carried.voided_by = record.voided_by
        _stamp(carried, actor, "void with its refill")
        carried.save()
    moment = getattr(record, "performed_at", None) or getattr(record, "read_at", None) or getattr(
        record, "effective_at", None
    )
    if isinstance(record, Refill | Reading | Program):
        _after_write(pump, now, since=moment)
    else:
        _bump_version(pump)
        _evaluate_alerts(pump, now)
    return record
