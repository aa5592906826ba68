"""Signals of the clinic domain, so that it needs to know nothing of the apps above it."""

from django.dispatch import Signal

#: Sent (``clinic=``, ``user=``: who changed it) after a clinic's policy, open days or
#: closures changed in the admin; receivers return how many pumps they queued for
#: re-projection (``pumps.receivers``).
clinic_changed = Signal()
