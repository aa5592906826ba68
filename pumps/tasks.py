"""Thin Celery tasks: they take ids (or nothing) and call ``pumps.alerting`` and
``pumps.outbox``. Alerting does not import them: the sweep is handed
``queue_sweep_chunk`` to fan out, and ``trigger_delivery`` is registered at start-up
(``pumps.apps``) as the trigger that asks a worker to deliver the outbox.

Queues: the sweep, the watchdog and the delivery dispatcher run on the default queue
(``celery``); e-mail batches on ``email`` and webhook batches (one task per endpoint) on
``webhooks``, so that a slow webhook endpoint never holds an e-mail back, nor another
clinic's webhook. A worker consumes the queues named with ``-Q``; every queue needs one.
"""

from __future__ import annotations

import os
from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from . import outbox, reprojection
from .alerting.stalled import raise_stalled
from .alerting.sweep import sweep, sweep_pumps
from .models import Notification

TRIGGER_KEY = "pumps.deliver_pending.scheduled"
COALESCE_SECONDS = 1  # triggers within this second share one dispatch


def _setting(name: str, default: str) -> str:
    return getattr(settings, name, None) or os.environ.get(name) or default


def email_queue() -> str:
    return _setting("CELERY_EMAIL_QUEUE", "email")


def webhook_queue() -> str:
    return _setting("CELERY_WEBHOOK_QUEUE", "webhooks")


@shared_task(name="pumps.sweep", ignore_result=True)
def run_sweep() -> dict:
    """Beat runs this every 5 minutes: the sweep, then delivery of the outbox."""
    result = sweep(fan_out=queue_sweep_chunk)
    deliver_pending.delay()
    return {"pumps_checked": result.pumps_checked, "alerts_created": result.alerts_created,
            "chunks_queued": result.chunks_queued}


def queue_sweep_chunk(pump_ids: list[int], now: datetime) -> None:
    """The sweep's fan-out: one task per chunk of a large due set, for any worker."""
    sweep_chunk.delay(pump_ids, now.isoformat())


@shared_task(name="pumps.sweep_chunk", ignore_result=True)
def sweep_chunk(pump_ids: list[int], now_iso: str) -> int:
    """One chunk of a large due set: pump ids and the sweep's instant (ISO 8601)."""
    result = sweep_pumps(pump_ids, datetime.fromisoformat(now_iso))
    if result.notifications_created:
        deliver_pending.delay()
    return result.pumps_checked


def trigger_delivery() -> None:
    """Alerting's delivery trigger (registered in ``pumps.apps``): queue ``deliver_pending``."""
    deliver_pending.delay()


@shared_task(name="pumps.deliver_pending", ignore_result=True)
def deliver_pending() -> int:
    """"Something was queued": coalesced. The first call schedules one dispatch a second
    later; calls until that dispatch starts return at once (they are covered by it, as
    it reads the outbox after they were committed). Returns 1 when it scheduled one."""
    if not cache.add(TRIGGER_KEY, 1, timeout=30):
        return 0
    try:
        deliver_outbox.apply_async(countdown=COALESCE_SECONDS)
    except Exception:
        cache.delete(TRIGGER_KEY)
        raise
    return 1


@shared_task(name="pumps.deliver_outbox", ignore_result=True)
def deliver_outbox() -> dict:
    """The dispatcher (also run by beat every ``DELIVERY_TICK_SECONDS``): one batch task
    for e-mail and one per webhook endpoint with due notifications, each on its queue.
    A quiet tick is one indexed read."""
    cache.delete(TRIGGER_KEY)
    email, clients = outbox.due_channels(timezone.now())
    if email:
        deliver_email.apply_async(queue=email_queue())
    for client_id in clients:
        deliver_webhooks.apply_async((client_id,), queue=webhook_queue())
    return {"email": email, "webhook_clients": clients}


@shared_task(name="pumps.deliver_email", ignore_result=True)
def deliver_email(helper: int = 0) -> int:
    """An e-mail batch: one SMTP connection, critical alerts first, claims taken a few
    dozen at a time (``outbox.deliver_emails``). One batch holds the ``email`` lock (a
    second one started meanwhile exits at once); when it finds a backlog (a full claim) it
    queues helpers, ``outbox.email_parallel() - 1`` batches that run on other workers at
    once, each in a slot of its own (``helper``: its number). A batch that stops at its
    time budget with work left queues its successor: a backlog drains continuously
    rather than one batch per dispatcher tick."""
    with outbox.batch_lock("email" if not helper else f"email:{helper}") as got:
        if not got:
            return 0

        def backlog() -> None:
            if not helper:
                for number in range(1, outbox.email_parallel()):
                    deliver_email.apply_async((number,), queue=email_queue())

        result = outbox.deliver_emails(on_backlog=backlog)
        if result.more and "email" not in result.skipped_by_breaker:
            deliver_email.apply_async((helper,) if helper else (), queue=email_queue())
        return result.sent


@shared_task(name="pumps.deliver_webhooks", ignore_result=True)
def deliver_webhooks(api_client_id: int) -> int:
    """The due webhooks of one API client: a slow endpoint delays only its own."""
    with outbox.batch_lock(f"webhook:{api_client_id}") as got:
        if not got:
            return 0
        return outbox.deliver_due(channel=Notification.WEBHOOK, api_client_id=api_client_id)


def queue_reprojection(job_id: int) -> None:
    """How ``pumps.reprojection`` hands a job to a worker (registered in ``pumps.apps``)."""
    reproject_clinic.delay(job_id)


@shared_task(name="pumps.reproject_clinic", ignore_result=True)
def reproject_clinic(job_id: int) -> bool:
    """A clinic's re-projection job (``pumps.reprojection``): chunks for about a minute,
    then this task again for the rest, so one large clinic never holds a worker long.
    Returns True when it queued its successor."""
    more = reprojection.run(job_id)
    if more:
        reproject_clinic.delay(job_id)
    return more


@shared_task(name="pumps.resume_reprojections", ignore_result=True)
def resume_reprojections() -> int:
    """Beat: queue again the re-projection jobs whose task was lost (a broker or worker
    outage); a quiet tick is one indexed read of the unfinished jobs."""
    ids = reprojection.stalled(timezone.now())
    for job_id in ids:
        reproject_clinic.delay(job_id)
    return len(ids)


@shared_task(name="pumps.watchdog", ignore_result=True)
def watchdog() -> int:
    """Raise ``alerting_stalled`` to clinic admins when the sweep stopped completing
    (a crashing sweep task does not stop this one), and send it from here: the worker
    that runs the sweep and the dispatcher may be what stopped."""
    created = raise_stalled(timezone.now())
    if created:
        outbox.deliver_due(kind="alerting_stalled")
    return created
