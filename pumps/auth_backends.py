"""Login throttling (django-axes) for the staff sign-in."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes refuses a sign-in while the username is locked out from that address.

    Axes needs the HTTP request to know the address. Every password sign-in of this app
    comes through the login view, which passes it; code that checks a password without a
    request (the test client's ``login()``, a shell) has no attempt to throttle, so this
    backend steps aside instead of raising ``AxesBackendRequestParameterRequired``.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
