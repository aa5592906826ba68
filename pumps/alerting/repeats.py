"""Repeats and escalation of open, unacknowledged alerts whose repeat is due."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from pumps.models import Alert

from .evaluate import notify
from .rules import RULES

READ_CHUNK = 500  # alerts read per round trip


def process_repeats(now: datetime, kinds: list[str] | None = None) -> int:
    """Repeat (and escalate) open alerts whose repeat is due. The compare-and-swap on
    ``repeat_count`` lets only one sweep create a given repeat."""
    created = 0
    due = Alert.objects.filter(
        next_repeat_at__lte=now, resolved_at__isnull=True, acknowledged_at__isnull=True
    ).select_related("clinic")
    if kinds is not None:
        due = due.filter(kind__in=kinds)
    for alert in due.iterator(chunk_size=READ_CHUNK):
        rule = RULES[alert.kind]
        number = alert.repeat_count + 1
        escalate = (
            alert.escalated_at is None
            and rule.escalate_after is not None
            and now >= alert.created_at + rule.escalate_after
        )
        with transaction.atomic():
            changed = Alert.objects.filter(
                pk=alert.pk, repeat_count=alert.repeat_count, resolved_at__isnull=True, acknowledged_at__isnull=True
            ).update(
                repeat_count=number,
                next_repeat_at=now + rule.repeat_every,
                **({"escalated_at": now} if escalate else {}),
            )
            if not changed:
                continue
            alert.repeat_count = number
            if escalate:
                alert.escalated_at = now
            created += notify(alert, number, now)
    return created


