"""Who is told: a clinic's alert addresses, the staff who opted in, the escalation list,
and its administrators for clinic-level alerts."""

from __future__ import annotations

from clinic.models import AlertRecipient, Clinic, Membership, Role


def recipients_for(clinic: Clinic, *, escalation: bool = False, admins_only: bool = False) -> list[str]:
    """The clinic's alert addresses and staff who opted in; with ``escalation`` also the
    escalation list; ``admins_only`` for clinic-level alerts to clinic administrators."""
    if admins_only:
        emails = Membership.objects.filter(clinic=clinic, role=Role.ADMIN).exclude(user__email="")
        return sorted({m.user.email.lower() for m in emails.select_related("user")})
    flags = [False, True] if escalation else [False]
    listed = AlertRecipient.objects.filter(clinic=clinic, escalation__in=flags).values_list("email", flat=True)
    staff = (
        Membership.objects.filter(clinic=clinic, receives_alerts=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    # one query (a UNION admits no ORDER BY in its parts on SQLite: the models' orderings are cleared)
    return sorted({a.lower() for a in listed.order_by().union(staff.order_by())})


