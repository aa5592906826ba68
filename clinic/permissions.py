"""Who may do what in a clinic: the one rule set (docs/safety/hazard-log.md, H-08 to H-10).

Every write goes through a service, and every service asks this module before it writes,
so a refusal holds whatever the entry point: a staff page, the session API, an API token,
the admin, the spreadsheet import, or a write implied by another (a program carried by a
refill; the void of a refill that carried a program). Pages and the API ask the same
questions earlier only to hide a button or answer 403 before parsing a body.

Roles (per clinic membership): a viewer writes nothing; nurses, pharmacists, prescribers
and clinic administrators record clinical data; only a prescriber (physician) enters,
verifies or voids an infusion program; only a clinic administrator changes the clinic's
settings. A superuser may do everything. An API client (a hospital system) writes what
its token allows in its clinic; the clinician it names must hold the role the action
needs (``named_role_allows``).
"""

from __future__ import annotations

from enum import StrEnum

from .models import Membership, Role


class Action(StrEnum):
    RECORD = "record"  # patients, pumps, refills, readings, events, appointments, voids of those
    PROGRAM = "program"  # enter, verify or void an infusion program
    ACKNOWLEDGE = "acknowledge"  # acknowledge an alert
    ADMINISTER = "administer"  # the clinic's settings, recipients, closures, staff


ROLES: dict[Action, frozenset[str]] = {
    Action.RECORD: frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.ADMIN}),
    Action.PROGRAM: frozenset({Role.PRESCRIBER}),
    Action.ACKNOWLEDGE: frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.ADMIN}),
    Action.ADMINISTER: frozenset({Role.ADMIN}),
}

MESSAGES: dict[Action, str] = {
    Action.RECORD: "Your role in this clinic does not allow changes.",
    Action.PROGRAM: "Only a prescriber (physician) enters, verifies or voids a program.",
    Action.ACKNOWLEDGE: "Your role in this clinic does not allow acknowledging alerts.",
    Action.ADMINISTER: "Only a clinic administrator changes the clinic's settings.",
}

# A clinician named by an integration for one of these fields must hold these roles.
NAMED_ROLES: dict[str, frozenset[str]] = {
    "performed_by": ROLES[Action.RECORD],
    "entered_by": ROLES[Action.PROGRAM],
    "verified_by": ROLES[Action.PROGRAM],
}


def role_allows(role: str | None, action: Action) -> bool:
    return role is not None and role in ROLES[action]


def role_of(user, clinic_id: int) -> str | None:
    """The user's role in the clinic, or None (no membership, or not signed in)."""
    if user is None or not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        return None
    return Membership.objects.filter(user=user, clinic_id=clinic_id).values_list("role", flat=True).first()


def user_may(user, clinic_id: int, action: Action) -> bool:
    """May this signed-in user do ``action`` in the clinic?"""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    return role_allows(role_of(user, clinic_id), action)


def clinics_where(user, action: Action) -> set[int] | None:
    """Ids of the clinics in which the user may do ``action``; None: every clinic."""
    if user is None or not getattr(user, "is_authenticated", False):
        return set()
    if getattr(user, "is_superuser", False):
        return None
    return set(
        Membership.objects.filter(user=user, role__in=list(ROLES[action])).values_list("clinic_id", flat=True)
    )


def named_role_allows(role: str | None, field: str) -> bool:
    """May a clinician with ``role`` be named in ``field`` (``performed_by``,
    ``entered_by``, ``verified_by``) by an integration?"""
    return role is not None and role in NAMED_ROLES[field]
