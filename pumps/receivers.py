"""The pumps app's answers to the clinic domain's signals (connected in ``apps.py``)."""

from __future__ import annotations

from django.db import transaction

from . import services


def refresh_after_clinic_change(sender, *, clinic, user=None, **kwargs) -> int:
    """A clinic's policy or closures changed: queue the re-projection of its pumps (in the
    sender's transaction; the job runs once it commits). Returns how many pumps it covers."""
    with transaction.atomic():
        return services.request_clinic_reprojection(clinic, user=user).total
