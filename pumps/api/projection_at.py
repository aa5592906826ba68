"""The projection of one pump as of an instant, for ``GET /pumps/{id}/projection/?at=``.

The pump's stored state is "now"; a question about another instant is answered from the
pump's records as they stood then:

- before the explant (the local date of ``at`` earlier than ``explanted_on``), the pump
  was implanted: it is projected from its records up to ``at`` like any implanted pump;
- on or after the explant date it is ``inactive``, with no volume and no instants ahead
  (an explanted pump neither alarms nor runs dry) — the same rule as the stored status,
  which is inactive once the explant is recorded;
- a patient who is not active (inactive, deceased) makes the pump inactive whatever
  ``at`` is: the patient's status has no date.

``status_reason`` is computed from this projection's own values (and the clinic's lead
and high-risk days), not from the stored row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from pumps import projection as pj
from pumps import services
from pumps.models import Patient, Pump


@dataclass(frozen=True)
class ProjectionAt:
    projection: pj.Projection
    status_reason: str

    def __getattr__(self, name):  # the serializer reads the projection's fields directly
        return getattr(self.projection, name)


def explanted_by(pump: Pump, at: datetime) -> bool:
    """Was the pump explanted on or before the clinic's local date of ``at``?"""
    return pump.explanted_on is not None and pj.local_date(at, pump.clinic.tz) >= pump.explanted_on


def project_at(pump: Pump, at: datetime) -> ProjectionAt:
    clinic, patient = pump.clinic, pump.patient
    tz = clinic.tz
    if explanted_by(pump, at):
        inactive_reason = f"explanted on {pump.explanted_on.isoformat()}"
    elif patient.status != Patient.Status.ACTIVE:
        inactive_reason = f"patient {patient.status}"
    else:
        inactive_reason = ""
    if inactive_reason:
        proj = pj.Projection(at=at, status=pj.STATUS_INACTIVE, tz=tz)
    else:
        history = services.load_history(pump)
        refills, readings, programs = history.inputs()
        state = dataclasses.replace(services.pump_state(pump), active=True)  # implanted at ``at``
        proj = pj.project(
            at=at, pump=state, refills=refills, readings=readings, programs=programs, policy=clinic.policy()
        )
    reason = pj.status_reason(
        proj.status, proj.at, tz=tz, empty_at=proj.empty_at, lra_at=proj.low_reservoir_alarm_at,
        due_on=proj.refill_due_on, drug_expires_at=proj.drug_expires_at, inactive_reason=inactive_reason,
        binding=pj.due_date_binding(
            worst_lra_at=proj.low_reservoir_alarm_at, drug_expires_at=proj.drug_expires_at, tz=tz,
            lead_days=clinic.lead_days, high_risk_extra_days=clinic.high_risk_extra_days,
            high_risk=patient.withdrawal_high_risk,
        ),
    )
    return ProjectionAt(proj, reason)
