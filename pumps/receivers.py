"""The pumps app's answers to the clinic domain's signals (connected in ``apps.py``)."""

from __future__ import annotations

from django.db import transaction

from . import services


def refresh_after_clinic_change(sender, *, clinic, **kwargs) -> int:
    """A clinic's policy or closures changed: refresh its pumps (one transaction)."""
    with transaction.atomic():
        return services.refresh_clinic_pumps(clinic)
