"""Password-reset requests, throttled per e-mail address and per client address.

Over either limit (``PASSWORD_RESET_LIMIT_PER_EMAIL`` and ``PASSWORD_RESET_LIMIT_PER_IP``
an hour) the page answers as usual — "if the address is known, a link was sent" — but no
e-mail goes out, so the form can neither flood a colleague's mailbox nor tell anybody
whether an address has an account. Every request counts, known address or not.
"""

from __future__ import annotations

import logging

from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.views import PasswordResetView

from .throttling import client_ip, password_reset_per_email, password_reset_per_ip

log = logging.getLogger("clinic.security")


class ThrottledPasswordResetForm(PasswordResetForm):
    def save(self, *args, request=None, **kwargs):
        email = self.cleaned_data["email"].strip().lower()
        address = client_ip(request) if request is not None else "none"
        over_ip = password_reset_per_ip().hit(address) > password_reset_per_ip().limit
        over_email = password_reset_per_email().hit(email) > password_reset_per_email().limit
        if over_ip or over_email:
            log.warning("password reset request over the %s limit: no e-mail sent", "address" if over_ip else "e-mail")
            return
        super().save(*args, request=request, **kwargs)


class ThrottledPasswordResetView(PasswordResetView):
    form_class = ThrottledPasswordResetForm
