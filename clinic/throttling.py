"""The client's address behind trusted proxies, and counters of failures in the cache.

``client_ip`` is the one place that reads a client's address: sign-in throttling
(django-axes, ``AXES_CLIENT_IP_CALLABLE``), bad bearer tokens and password-reset requests
all key on it. ``TRUSTED_PROXY_COUNT`` is the number of reverse proxies in front of the
app that append the address they received from to ``X-Forwarded-For``. With 0 (the
default) the address is the connection's (``REMOTE_ADDR``) and ``X-Forwarded-For`` is
ignored, since anybody can send one. With N, the address is the N-th entry from the
right of ``X-Forwarded-For``: entries further left were written by the client and prove
nothing.

Counters live in the Django cache (``CACHE_URL``; per process by default, shared through
Redis): fixed windows, one key per window, counted with ``add`` + ``incr``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

from django.conf import settings
from django.core.cache import cache


def _valid(address: str) -> str | None:
    address = address.strip()
    if address.startswith("[") and "]" in address:  # [2001:db8::1]:443
        address = address[1 : address.index("]")]
    elif address.count(":") == 1:  # 203.0.113.7:51000
        address = address.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def client_ip(request) -> str:
    """The client's address as the last trusted proxy saw it (see the module's doc)."""
    meta = getattr(request, "META", {})
    remote = _valid(meta.get("REMOTE_ADDR", "")) or "0.0.0.0"
    count = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if count <= 0:
        return remote
    forwarded = [part for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < count:
        # Fewer entries than proxies: the request did not come through all of them.
        return remote
    return _valid(forwarded[-count]) or remote


class FixedWindow:
    """At most ``limit`` events per ``seconds`` for one key (e.g. an address)."""

    def __init__(self, name: str, limit: int, seconds: int):
        self.name, self.limit, self.seconds = name, limit, seconds

    def _key(self, ident: str, now: float) -> str:
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]  # no address or e-mail in the key
        return f"throttle:{self.name}:{digest}:{int(now // self.seconds)}"

    def count(self, ident: str, now: float | None = None) -> int:
        return cache.get(self._key(ident, time.time() if now is None else now), 0)

    def exceeded(self, ident: str, now: float | None = None) -> bool:
        return self.count(ident, now) >= self.limit

    def hit(self, ident: str, now: float | None = None) -> int:
        """Count one event; returns the count in this window, this one included."""
        key = self._key(ident, time.time() if now is None else now)
        if cache.add(key, 1, self.seconds + 1):
            return 1
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, self.seconds + 1)
            return 1

    def retry_after(self, now: float | None = None) -> int:
        """Seconds until the current window ends."""
        now = time.time() if now is None else now
        return max(1, int(self.seconds - (now % self.seconds)) + 1)


def bearer_failures() -> FixedWindow:
    return FixedWindow("bearer-fail", settings.API_AUTH_FAILURE_LIMIT, 60)


def password_reset_per_email() -> FixedWindow:
    return FixedWindow("reset-email", settings.PASSWORD_RESET_LIMIT_PER_EMAIL, 3600)


def password_reset_per_ip() -> FixedWindow:
    return FixedWindow("reset-ip", settings.PASSWORD_RESET_LIMIT_PER_IP, 3600)
