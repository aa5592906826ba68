"""The sweep's heartbeat: the last completed sweep, the one rule for "alerting has
stopped" (``is_stale``), and the ``alerting_stalled`` alert raised by the watchdog and
resolved by the next sweep."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from clinic.models import Clinic
from pumps.models import Alert, AlertKind, SweepRun

from .evaluate import cancel_pending, create_alert, notify
from .repeats import process_repeats
from .rules import Wanted

SWEEP_INTERVAL = timedelta(seconds=getattr(settings, "ALERT_SWEEP_INTERVAL_SECONDS", 300))


def last_sweep() -> SweepRun | None:
    return SweepRun.objects.order_by("-finished_at").first()


def is_stale(last: SweepRun | None, now: datetime) -> bool:
    """The one rule for "alerting has stopped": no sweep completed in three intervals."""
    return last is None or now - last.finished_at > 3 * SWEEP_INTERVAL


def sweep_is_stale(now: datetime) -> bool:
    return is_stale(last_sweep(), now)


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


