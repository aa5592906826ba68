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

from dataclasses import dataclass
from datetime import datetime

from pumps import projection as pj  # noqa: F401
from pumps import services
from pumps.models import Pump


@dataclass(frozen=True)
class ProjectionAt:
    projection: pj.Projection
    status_reason: str

    def __getattr__(self, name):  # the serializer reads the projection's fields directly
        return getattr(self.projection, name)


def project_at(pump: Pump, at: datetime) -> ProjectionAt:
    proj = services.project_pump(pump, at)
    return ProjectionAt(proj, services.projection_reason(pump, proj))
