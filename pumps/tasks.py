"""Thin Celery tasks: they take ids (or nothing) and call ``pumps.alerts``."""

from celery import shared_task
from django.utils import timezone

from . import alerts, outbox


@shared_task(name="pumps.sweep", ignore_result=True)
def run_sweep() -> dict:
    """Beat runs this every 5 minutes: the sweep, then delivery of the outbox."""
    result = alerts.sweep(fan_out=True)
    deliver_pending.delay()
    return {"pumps_checked": result.pumps_checked, "alerts_created": result.alerts_created,
            "chunks_queued": result.chunks_queued}


@shared_task(name="pumps.sweep_chunk", ignore_result=True)
def sweep_chunk(pump_ids: list[int], now_iso: str) -> int:
    """One chunk of a large due set: pump ids and the sweep's instant (ISO 8601)."""
    from datetime import datetime

    result = alerts.sweep_pumps(pump_ids, datetime.fromisoformat(now_iso))
    if result.notifications_created:
        deliver_pending.delay()
    return result.pumps_checked


@shared_task(name="pumps.deliver_pending", ignore_result=True)
def deliver_pending() -> int:
    return outbox.deliver_due()


@shared_task(name="pumps.deliver_notification", ignore_result=True)
def deliver_notification(notification_id: int) -> bool:
    return outbox.deliver(notification_id)


@shared_task(name="pumps.watchdog", ignore_result=True)
def watchdog() -> int:
    """Raise ``alerting_stalled`` to clinic admins when the sweep stopped completing
    (a crashing sweep task does not stop this one)."""
    created = alerts.raise_stalled(timezone.now())
    if created:
        outbox.deliver_due(kind="alerting_stalled")
    return created
