"""A pump's records in, its projection out: load the live records once, project them (the
pure engine, docs/clinical-rules.md §3-§7), store the result on the pump row, and lock the
row. Reads and the stored projection only: no validation, no alerts (those are above)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F
from django.utils import timezone

from . import projection as pj
from .errors import PreconditionFailed
from .models import Patient, Program, Pump, Reading, Refill


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


def policy_of(clinic, closures: frozenset | None = None) -> pj.Policy:
    """The clinic's policy as the projection takes it (docs/clinical-rules.md §6, §10): lead
    days, open days and closures (read once here unless given), the due-soon and
    withdrawal windows."""
    return pj.Policy(
        lead_days=clinic.lead_days,
        high_risk_extra_days=clinic.high_risk_extra_days,
        due_soon_days=clinic.due_soon_days,
        open_weekdays=frozenset(clinic.open_weekdays),
        closures=clinic.closure_dates() if closures is None else closures,
        withdrawal_window_hours=clinic.withdrawal_window_hours,
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
        policy=policy_of(pump.clinic),
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


STORED_FIELDS = (
    "status", "urgency", "low_reservoir_alarm_at", "empty_at", "expected_low_reservoir_alarm_at",
    "expected_empty_at", "drug_expires_at", "refill_due_on", "anchor_at", "next_change_at", "projected_at",
)


def store_projection(pump: Pump, *, now: datetime, history: PumpHistory | None = None,
                     bump_version: bool = False) -> Pump:
    """Store a fresh projection of one pump on its row (inside the caller's transaction):
    status, instants, due date and ``next_change_at``, the next instant the sweep must look
    again; with ``bump_version`` (after a clinical write) also its version, in the same
    UPDATE. The one verb for "store a fresh projection"."""
    values = projection_values(pump, now=now, history=history)
    if bump_version:
        values.update(_version_bump(pump))
    # The stored projection is derived data: no audit row for it.
    Pump.objects.filter(pk=pump.pk).update(**values)
    if bump_version:
        pump.version += 1
    return pump


def projection_values(pump: Pump, *, now: datetime, history: PumpHistory | None = None) -> dict:
    """The stored projection of one pump as of ``now``, set on ``pump`` and returned as
    {field: value}, not written: ``store_projection`` writes one pump's, the set-based
    refresh (``pumps.bulk_refresh``) a chunk's in one UPDATE."""
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
    stored = {  # what the status and its next change are computed from
        "tz": pump.clinic.tz, "active": proj.status != pj.STATUS_INACTIVE,
        "complete": proj.status != pj.STATUS_INCOMPLETE, "empty_at": proj.empty_at,
        "lra_at": proj.low_reservoir_alarm_at, "due_on": proj.refill_due_on,
        "due_soon_days": pump.clinic.due_soon_days,
    }
    pump.status = pj.status_at(now, **stored)
    pump.urgency = pj.STATUSES.index(pump.status)
    pump.low_reservoir_alarm_at = proj.low_reservoir_alarm_at
    pump.empty_at = proj.empty_at
    pump.expected_low_reservoir_alarm_at = proj.expected_low_reservoir_alarm_at
    pump.expected_empty_at = proj.expected_empty_at
    pump.drug_expires_at = proj.drug_expires_at
    pump.refill_due_on = proj.refill_due_on
    pump.anchor_at = proj.anchor_at
    pump.next_change_at = pj.next_status_change(now, **stored, extra_instants=extra)
    pump.projected_at = now
    return {f: getattr(pump, f) for f in STORED_FIELDS}


def _version_bump(pump: Pump) -> dict:
    """The columns of a version bump (the one way to bump it: ``bump_version`` alone, or
    ``store_projection(bump_version=True)`` in the same UPDATE as the projection)."""
    pump.updated_at = timezone.now()
    return {"version": F("version") + 1, "updated_at": pump.updated_at}


def bump_version(pump: Pump) -> None:
    """The pump's version is its ETag (If-Match): every clinical write bumps it."""
    Pump.objects.filter(pk=pump.pk).update(**_version_bump(pump))
    pump.version += 1


def lock_pump(pump: Pump | int, if_match: int | None = None) -> Pump:
    """The one row lock: the pump row until the end of the transaction (PostgreSQL), so
    that writes for one pump run one after another; SQLite serializes writers by itself.
    With ``if_match`` (a client's If-Match) a stale version is refused (412)."""
    pump_id = pump if isinstance(pump, int) else pump.pk
    locked = Pump.objects.select_for_update(of=("self",)).select_related("clinic", "patient", "model").get(pk=pump_id)
    if if_match is not None and locked.version != if_match:
        raise PreconditionFailed(
            f"The pump changed meanwhile (version {locked.version}, not {if_match}): reload it and try again."
        )
    return locked
