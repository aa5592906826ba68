"""Calendar feeds (README, "Refill planning"): a clinic's subscription URL of booked
refills, created and revoked by its administrators, and a staff member's own feed of the
refills assigned to them. The secret is returned once, at creation; only its hash is kept."""

from __future__ import annotations

from django.db import transaction

from clinic import permissions
from clinic.models import CalendarFeed, Clinic
from pumps.errors import Forbidden

from .base import Actor, authorize


@transaction.atomic
def create_clinic_feed(*, clinic: Clinic, name: str, actor: Actor) -> tuple[CalendarFeed, str]:
    """A new feed of the clinic's booked refills: (the feed, its secret, shown once)."""
    authorize(actor, clinic.pk, permissions.Action.ADMINISTER)
    return CalendarFeed.create_with_secret(clinic=clinic, name=name, created_by=actor.user)


@transaction.atomic
def create_own_feed(*, name: str, actor: Actor) -> tuple[CalendarFeed, str]:
    """The signed-in staff member's own feed (the refills assigned to them in every clinic
    they belong to): (the feed, its secret, shown once)."""
    if actor.user is None:
        raise ValueError("A personal calendar feed belongs to a signed-in user.")
    return CalendarFeed.create_with_secret(user=actor.user, name=name, created_by=actor.user)


def clinic_feed(clinic: Clinic, ident: str) -> CalendarFeed | None:
    """The clinic's feed with this id (as posted), or None."""
    return CalendarFeed.objects.filter(clinic=clinic, pk=ident).first() if ident.isdigit() else None


def own_feed(user, ident: str) -> CalendarFeed | None:
    """The user's own feed with this id (as posted), or None."""
    return CalendarFeed.objects.filter(user=user, pk=ident).first() if ident.isdigit() else None


@transaction.atomic
def revoke_feed(*, feed: CalendarFeed, actor: Actor) -> CalendarFeed:
    """Revoke a feed: its URL answers 404 from now on. A clinic's feed needs an
    administrator of that clinic; a personal feed, its owner."""
    if feed.clinic_id is not None:
        authorize(actor, feed.clinic_id, permissions.Action.ADMINISTER)
    elif actor.user is None or actor.user.pk != feed.user_id:
        raise Forbidden("Only its owner revokes a personal calendar feed.")
    feed.revoke()
    return feed

