"""Where a webhook may be sent, and deadlines for network calls.

A webhook URL names a host that the clinic's integrator controls, but the request leaves
from inside the hospital network: without checks it could be pointed at the database, a
cloud metadata service (169.254.169.254) or an admin page on loopback (SSRF). So:

- https only, except to networks the operator listed in ``WEBHOOK_ALLOWED_NETWORKS``
  (comma-separated CIDR list, e.g. ``10.20.0.0/16,127.0.0.0/8``), where plain http is
  allowed too;
- no credentials in the URL (the body is signed; a password in a URL ends up in logs);
- the host is resolved and refused when ANY of its addresses is loopback, private,
  link-local, multicast, reserved, unspecified or otherwise not globally routable,
  unless that address is inside ``WEBHOOK_ALLOWED_NETWORKS``.

The check runs when the URL is registered and again at every send, on the addresses the
sender then connects to (``vet`` resolves once; the sender connects to those addresses
and sends the host name as ``Host`` and TLS SNI): a DNS answer that changed after
registration cannot redirect an alert to a private address.

``Deadline``: every delivery attempt has one overall deadline (connect, send, read);
``cut_at`` closes the socket when it passes, whatever the peer is doing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Tests replace this with a stub (no DNS traffic leaves the machine).
getaddrinfo: Callable = socket.getaddrinfo

_resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class TargetRefused(ValueError):
    """The URL may not receive webhooks; the message says why (shown to the API client)."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def delivery_deadline_seconds() -> float:
    return float(
        getattr(settings, "DELIVERY_DEADLINE_SECONDS", None) or os.environ.get("DELIVERY_DEADLINE_SECONDS") or 10
    )


def allowed_networks() -> list[IPNetwork]:
    """``WEBHOOK_ALLOWED_NETWORKS``: a list, or a comma-separated string, of CIDR networks."""
    value = getattr(settings, "WEBHOOK_ALLOWED_NETWORKS", None)
    if value is None:
        value = os.environ.get("WEBHOOK_ALLOWED_NETWORKS", "")
    if isinstance(value, str):
        value = value.split(",")
    return [ipaddress.ip_network(item.strip(), strict=False) for item in value if item and item.strip()]


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("The URL is not valid.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise TargetRefused("Use an https URL.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetRefused("The URL may not contain a user name or password: deliveries are authenticated by "
                            "their signature (X-Clinic-Signature).")
    host = parts.hostname
    if not host:
        raise TargetRefused("The URL has no host.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path)


def not_public(address: IPAddress) -> str | None:
    """Why the address may not receive a webhook (a word for the message), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            reason = not_public(mapped)
            if reason:
                return reason
    for reason, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return reason
    if not address.is_global:
        return "non-public"
    return None


def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Every address of ``host`` (an IP literal is its own address), within ``timeout``."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    future = _resolver_pool.submit(getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(timeout, 0.01))
    except FutureTimeout:
        raise TargetRefused(f"The host name {host} could not be resolved within {timeout:g} seconds.") from None
    except (OSError, UnicodeError):
        raise TargetRefused(f"The host name {host} could not be resolved.") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TargetRefused(f"The host name {host} could not be resolved.")
    return addresses


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_addresses(target: Target, addresses: list[IPAddress]) -> None:
    allowed = allowed_networks()

    def is_allowed(address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in allowed)

    for address in addresses:
        if is_allowed(address):
            continue
        reason = not_public(address)
        if reason:
            shown = "" if _literal(target.host) == address else f" resolves to {address}, which"
            article = "an" if reason[0] in "aeiou" else "a"
            raise TargetRefused(
                f"{target.host}{shown} is {article} {reason} address: webhooks are not sent to loopback, private, "
                "link-local, multicast or reserved addresses unless the operator allows the network "
                "(WEBHOOK_ALLOWED_NETWORKS)."
            )
    if target.scheme == "http" and not all(is_allowed(a) for a in addresses):
        raise TargetRefused("Use an https URL: plain http is allowed only to networks the operator allows "
                            "(WEBHOOK_ALLOWED_NETWORKS).")


def vet(url: str, timeout: float) -> tuple[Target, list[IPAddress]]:
    """Parse, resolve once and check ``url``; returns the addresses to connect to.
    Raises ``TargetRefused`` with a message for the API client."""
    target = parse_target(url)
    addresses = resolve(target.host, target.port, timeout)
    check_addresses(target, addresses)
    return target, addresses


class Deadline:
    """An overall deadline, measured on the monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(self.at - self.clock(), 0.0)

    @property
    def passed(self) -> bool:
        return self.clock() >= self.at


@contextmanager
def cut_at(deadline: Deadline, current_socket: Callable[[], socket.socket | None]) -> Iterator[threading.Event]:
    """Shut down the socket ``current_socket()`` returns once the deadline passes: a peer
    that answers one byte at a time cannot hold the caller past it (a socket timeout
    bounds each read, not their sum). Yields an event that is set when it cut."""
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        sock = current_socket()
        if sock is not None:
            try:
                # the plain socket's shutdown, also under TLS: wakes a blocked read at once
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(deadline.remaining(), cut)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
