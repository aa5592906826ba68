"""API authentication and clinic scoping.

A hospital system authenticates with ``Authorization: Bearer <token>``; the token belongs
to one API client bound to one clinic, read-only or read-write. Staff signed in to the web
app may use the same API with their session, scoped to the clinics of their memberships.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling

from . import permissions as roles
from .models import CLINICAL_WRITERS, PROGRAM_WRITERS, ApiClient, Clinic, Membership, hash_token
from .throttling import bearer_failures, client_ip


@dataclass(frozen=True)
class ApiClientPrincipal:
    """Stands in for ``request.user`` when a hospital system calls the API."""

    client: ApiClient
    is_authenticated: bool = True
    is_active: bool = True
    is_superuser: bool = False
    is_staff: bool = False
    is_anonymous: bool = False

    @property
    def pk(self):
        return None

    @property
    def username(self) -> str:
        return f"api-client:{self.client.pk}"

    def __str__(self) -> str:
        return f"API client {self.client.name}"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        # Bad tokens are counted per client address (API_AUTH_FAILURE_LIMIT a minute);
        # past the limit every bearer request from that address answers 429 with
        # Retry-After until the minute is over, whatever its token.
        failures = bearer_failures()
        address = client_ip(request)
        if failures.exceeded(address):
            raise exceptions.Throttled(
                wait=failures.retry_after(), detail="Too many requests with an invalid token from this address."
            )
        if len(header) != 2:
            failures.hit(address)
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            token = header[1].decode()
        except UnicodeError:
            failures.hit(address)
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        client = ApiClient.objects.select_related("clinic").filter(token_hash=hash_token(token)).first()
        if client is None or client.is_revoked:
            failures.hit(address)
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        now = timezone.now()
        if client.last_used_at is None or (now - client.last_used_at).total_seconds() > 60:
            ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
        return ApiClientPrincipal(client), client

    def authenticate_header(self, request):
        return self.keyword


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Documents the Bearer token in the OpenAPI schema (drf-spectacular)."""

    target_class = "clinic.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API client's token: `Authorization: Bearer <token>` (`create_api_client`).",
        }


def detach_principal(request) -> None:
    """DRF also sets ``request.user`` on the Django request; for an API client that is an
    ``ApiClientPrincipal``, not a ``User``, and code below the API that reads the Django
    request's user (django-simple-history's middleware, for audit rows of models saved
    without an explicit ``_history_user``) must see an anonymous user instead. Call it
    from ``APIView.initial`` after authentication."""
    if api_client_of(request) is not None:
        from django.contrib.auth.models import AnonymousUser

        request._request.user = AnonymousUser()


def api_client_of(request) -> ApiClient | None:
    return request.auth if isinstance(request.auth, ApiClient) else None


def visible_clinic_ids(request_or_user) -> list[int] | None:
    """Clinic ids the caller may see; ``None`` means every clinic (a superuser)."""
    client = api_client_of(request_or_user) if hasattr(request_or_user, "auth") else None
    if client is not None:
        return [client.clinic_id]
    user = getattr(request_or_user, "user", request_or_user)
    if user is None or not user.is_authenticated:
        return []
    if user.is_superuser:
        return None
    return list(Membership.objects.filter(user=user).values_list("clinic_id", flat=True))


def writable_clinic_ids(request, *, roles=CLINICAL_WRITERS) -> list[int] | None:
    """Clinic ids in which the caller may record (``roles`` for staff); ``None``: every clinic."""
    client = api_client_of(request)
    if client is not None:
        return [client.clinic_id] if client.can_write else []
    user = request.user
    if user is None or not user.is_authenticated:
        return []
    if user.is_superuser:
        return None
    return list(Membership.objects.filter(user=user, role__in=list(roles)).values_list("clinic_id", flat=True))


def can_write_clinic(request, clinic: Clinic | int, *, roles=CLINICAL_WRITERS) -> bool:
    clinic_id = clinic if isinstance(clinic, int) else clinic.pk
    client = api_client_of(request)
    if client is not None:
        return client.can_write and client.clinic_id == clinic_id
    user = request.user
    if user.is_superuser:
        return True
    return Membership.objects.filter(user=user, clinic_id=clinic_id, role__in=list(roles)).exists()


class IsClinicMember(permissions.BasePermission):
    """Authenticated as an API client or as staff with a membership; a read-only token
    (or a viewer) gets 403 on any write."""

    message = "This token is read-only."

    def has_permission(self, request, view):
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        client = api_client_of(request)
        if request.method in permissions.SAFE_METHODS:
            return True
        if client is not None:
            return client.can_write
        if user.is_superuser:
            return True
        self.message = roles.MESSAGES[roles.Action.RECORD]
        return Membership.objects.filter(user=user, role__in=list(CLINICAL_WRITERS)).exists()


def can_write_programs(request, clinic: Clinic | int) -> bool:
    """Only a prescriber enters or verifies a program (README, Security); a read-write API client
    names the clinician who did."""
    return can_write_clinic(request, clinic, roles=PROGRAM_WRITERS)


class ApiClientRateThrottle(throttling.SimpleRateThrottle):
    """Per-client request rate (``API_THROTTLE_RATE``, e.g. ``600/min``): one API client
    cannot starve the others; staff sessions are limited per user. Over the rate: 429
    with ``Retry-After``."""

    scope = "api_client"

    def get_cache_key(self, request, view):
        client = api_client_of(request)
        if client is not None:
            ident = f"client-{client.pk}"
        elif request.user is not None and getattr(request.user, "is_authenticated", False):
            ident = f"user-{request.user.pk}"
        else:
            ident = f"anon-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
