"""The daily digest: one per clinic, recipient and local day, from the clinic's digest
hour on (its content is ``pumps.emails``)."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q

from clinic.models import Clinic
from pumps.models import Notification

from . import delivery
from .recipients import recipients_for


def queue_digests(now: datetime) -> int:
    """One digest per clinic, recipient and local day, from the clinic's digest hour on.
    A clinic whose digests are settled until after ``now`` costs nothing here."""
    created = 0
    unsettled = Clinic.objects.filter(Q(digest_settled_until__isnull=True) | Q(digest_settled_until__lte=now))
    for clinic in unsettled:
        local = now.astimezone(clinic.tz)
        today_at = datetime.combine(local.date(), time(clinic.digest_hour), tzinfo=clinic.tz)
        if local.hour < clinic.digest_hour:
            _settle_digests(clinic, today_at)
            continue
        queued = set(
            Notification.objects.filter(clinic=clinic, digest_on=local.date()).values_list("recipient", flat=True)
        )
        for address in recipients_for(clinic):
            if address in queued:
                continue
            try:
                with transaction.atomic():
                    Notification.objects.create(
                        clinic=clinic, kind="digest", recipient=address, digest_on=local.date(),
                        next_attempt_at=now, created_at=now,
                    )
                created += 1
            except IntegrityError:
                continue
        tomorrow_at = datetime.combine(local.date() + timedelta(days=1), time(clinic.digest_hour), tzinfo=clinic.tz)
        _settle_digests(clinic, tomorrow_at)
    if created:
        delivery.queue_delivery_on_commit()
    return created


def _settle_digests(clinic: Clinic, until: datetime) -> None:
    """Note that nothing is owed before ``until``. The compare-and-swap keeps a newer
    note; a recipient added in the milliseconds between this clinic's check and this note
    gets digests from the next day on."""
    Clinic.objects.filter(pk=clinic.pk).filter(
        Q(digest_settled_until__isnull=True) if clinic.digest_settled_until is None
        else Q(digest_settled_until=clinic.digest_settled_until)
    ).update(digest_settled_until=until)


