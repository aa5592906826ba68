"""The ``alerting_stalled`` alert: raised by the watchdog to every clinic's
administrators when the sweep has stopped completing (``heartbeat.is_stale``), repeated
hourly, and resolved by the next sweep."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q

from clinic.models import Clinic
from pumps.models import Alert, AlertKind

from .evaluate import cancel_pending, create_alert, notify
from .heartbeat import last_sweep, sweep_is_stale
from .repeats import process_repeats
from .rules import Wanted


def raise_stalled(now: datetime) -> int:
    """Called by the watchdog (and /health/): when the sweep has not completed in three
    intervals, tell every clinic's administrators, once per stall."""
    if not sweep_is_stale(now):
        return 0
    # The sweep that would repeat this alert is the thing that stopped: repeat it here.
    repeated = process_repeats(now, kinds=[AlertKind.ALERTING_STALLED])
    last = last_sweep()
    episode = f"since:{last.finished_at.isoformat() if last else 'never'}"
    created = 0
    for clinic in Clinic.objects.all():
        with transaction.atomic():
            alert = create_alert(
                clinic, None, Wanted(AlertKind.ALERTING_STALLED, episode, last.finished_at if last else None,
                                     "the alert sweep has not completed in 3 intervals"), now,
            )
            if alert is not None:
                created += notify(alert, 0, now)
    return created + repeated


def resolve_stalled(now: datetime) -> None:
    if Alert.objects.filter(kind=AlertKind.ALERTING_STALLED, resolved_at__isnull=True).update(
        resolved_at=now, resolution="the sweep ran again", next_repeat_at=None
    ):
        cancel_pending(Q(alert__kind=AlertKind.ALERTING_STALLED))


