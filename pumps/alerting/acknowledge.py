"""Acknowledging an alert: who, when and why; a critical alert needs a reason."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from clinic import permissions
from pumps import symptom_alerts
from pumps.errors import Forbidden, ServiceValidationError
from pumps.history import lock_pump
from pumps.models import Alert

from .evaluate import settle_dose_alerts
from .rules import needs_reason

REASON_MAX = 500
MSG_ACK_REASON = "Give a reason to acknowledge a critical alert: what was done, or why it can wait."
MSG_ACK_REASON_TOO_LONG = f"Keep the reason under {REASON_MAX} characters."


@transaction.atomic
def acknowledge(alert: Alert, *, user=None, external: str = "", reason: str = "",
                now: datetime | None = None) -> Alert:
    """Acknowledgement stops repeats, not the alert: it stays open (unresolved) while its
    condition holds, and a worsening (a pump past empty) is a new alert that is e-mailed.

    Silencing a critical alert is deliberate: it needs a ``reason`` (what was done, or why
    it can wait; at most 500 characters), else ``ServiceValidationError({"reason": …})``.
    Who (``user``, or ``external``: the name an API client gave), when and why are stored
    on the alert, and its audit history keeps them. A user needs a role that may
    acknowledge (``clinic.permissions``), else ``Forbidden``. Acknowledging an alert that
    is acknowledged already changes nothing."""
    now = now or timezone.now()
    if user is not None and not permissions.user_may(user, alert.clinic_id, permissions.Action.ACKNOWLEDGE):
        raise Forbidden(permissions.MESSAGES[permissions.Action.ACKNOWLEDGE])
    if alert.pump_id is not None and symptom_alerts.is_own(alert):
        # settling it reads the pump's assessments: the pump lock first, as their writes take it
        lock_pump(alert.pump_id)
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise ServiceValidationError({"reason": [MSG_ACK_REASON_TOO_LONG]})
    if not reason and needs_reason(alert):
        raise ServiceValidationError({"reason": [MSG_ACK_REASON]})
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = user
        alert.acknowledged_by_external = external[:100]
        alert.acknowledgement_reason = reason
        alert.next_repeat_at = None
        alert._history_user = user if user is not None and getattr(user, "pk", None) else None
        alert.save()
        if symptom_alerts.is_own(alert):  # acknowledged after its condition ended: it resolves now
            settle_dose_alerts(now, alert_id=alert.pk)
            alert.refresh_from_db()
    return alert
