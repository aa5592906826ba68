"""The outbox: notifications committed with their alerts are claimed by compare-and-swap
and sent (e-mail or webhook); every attempt is logged, failures retried with backoff.

If a worker dies after the SMTP server accepted a message but before the row was marked
sent, the claim goes stale and the message is sent again after ``STALE_CLAIM``: delivery
is at-least-once, which is the right side to err on for a clinical alert.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from .emails import build_email
from .models import DeliveryAttempt, Notification
from .webhooks import post_webhook

log = logging.getLogger("pumps.outbox")

STALE_CLAIM = timedelta(minutes=10)
MAX_ATTEMPTS = 10


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, … minutes, at most an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def claim(notification_id: int, now: datetime) -> bool:
    """Compare-and-swap: pending and due, or a stale claim of a worker that died."""
    return bool(
        Notification.objects.filter(pk=notification_id)
        .filter(
            Q(status=Notification.PENDING, next_attempt_at__lte=now)
            | Q(status=Notification.SENDING, claimed_at__lt=now - STALE_CLAIM)
        )
        .update(status=Notification.SENDING, claimed_at=now)
    )


def deliverable_ids(now: datetime, limit: int = 1000) -> list[int]:
    return list(
        Notification.objects.filter(
            Q(status=Notification.PENDING, next_attempt_at__lte=now)
            | Q(status=Notification.SENDING, claimed_at__lt=now - STALE_CLAIM)
        )
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )


def deliver_due(now: datetime | None = None, kind: str | None = None) -> int:
    """Deliver every due notification (or those of one kind); returns how many were sent."""
    sent = 0
    ids = deliverable_ids(now or timezone.now())
    if kind is not None:
        ids = list(Notification.objects.filter(pk__in=ids, kind=kind).values_list("id", flat=True))
    for notification_id in ids:
        if deliver(notification_id, now=now):
            sent += 1
    return sent


def deliver(notification_id: int, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    if not claim(notification_id, now):
        return False
    note = Notification.objects.select_related(
        "alert__pump__patient", "alert__pump__model", "clinic", "api_client"
    ).get(
        pk=notification_id
    )
    try:
        if note.channel == Notification.WEBHOOK:
            post_webhook(note, now)
        else:
            build_email(note, now).send(fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        error = f"{exc.__class__.__name__}: {exc}"[:2000]
        attempts = note.attempts + 1
        failed = attempts >= MAX_ATTEMPTS
        Notification.objects.filter(pk=note.pk).update(
            status=Notification.FAILED if failed else Notification.PENDING,
            attempts=attempts, last_error=error, next_attempt_at=now + backoff(attempts), claimed_at=None,
        )
        DeliveryAttempt.objects.create(notification=note, at=now, ok=False, error=error)
        log.warning("notification %s attempt %s failed: %s", note.pk, attempts, error)
        return False
    Notification.objects.filter(pk=note.pk).update(
        status=Notification.SENT, sent_at=now, attempts=note.attempts + 1, last_error=""
    )
    DeliveryAttempt.objects.create(notification=note, at=now, ok=True)
    log.info("notification %s (%s) sent", note.pk, note.kind)
    return True

