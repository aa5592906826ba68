"""``Idempotency-Key`` on writes (README, REST API).

An API client that sends ``Idempotency-Key: <key>`` with a POST or PATCH may retry the
request safely: the first successful answer is kept for
``settings.IDEMPOTENCY_KEY_TTL_HOURS`` and a retry with the same key, endpoint and body
gets that status and body again (with ``Idempotent-Replayed: true``) and changes nothing;
the same key with another endpoint or body answers 422.

Exactly once by construction: the key row is inserted *first*, in the same transaction as
the write, under the unique constraint (client, key). A concurrent retry blocks on that
index entry until the first request commits (and then replays its answer) or rolls back
(and then runs itself). Only a success (2xx) is kept: an error writes nothing, so the key
stays unused and a corrected request with the same key is processed.

Keys are scoped to the API client; staff signed in with a session may send the header
but it is ignored (``IdempotencyRecord`` belongs to an API client).
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from clinic.auth import api_client_of
from clinic.models import ApiClient, IdempotencyRecord

from .errors import ConflictError, IdempotencyKeyReused

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 200
METHODS = ("POST", "PATCH")


def body_hash(raw: bytes) -> str:
    """SHA-256 of the JSON body in canonical form (sorted keys, no whitespace), so that a
    retry that re-serializes the same object matches; raw bytes when it is not JSON."""
    try:
        data = json.loads(raw or b"null", parse_float=Decimal)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode()
    except ValueError:
        canonical = raw
    return hashlib.sha256(canonical).hexdigest()


def _claim(client: ApiClient, key: str, method: str, path: str, digest: str) -> Response | None:
    """Insert the key row (inside the caller's transaction); or, when the key is taken,
    the replayed answer, or 422 when it was used for another request."""
    now = timezone.now()
    cutoff = now - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    # Expired keys of this client are forgotten, so that a key may be reused after the TTL.
    IdempotencyRecord.objects.filter(client=client, created_at__lt=cutoff).delete()
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                client=client, key=key, method=method, path=path, body_hash=digest, created_at=now
            )
        return None
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.get(client=client, key=key)
    if (record.method, record.path, record.body_hash) != (method, path, digest):
        same_endpoint = (record.method, record.path) == (method, path)
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with "
            + ("another body" if same_endpoint else f"another endpoint ({record.method} {record.path})")
            + ": send a new key for a new request."
        )
    if record.status_code is None:  # only visible if a writer committed without storing
        raise ConflictError("A request with this Idempotency-Key is still being processed: retry later.")
    return Response(record.response_body, status=record.status_code, headers={REPLAY_HEADER: "true"})


def _store(client: ApiClient, key: str, response: Response) -> None:
    body = json.loads(JSONRenderer().render(response.data)) if response.data is not None else None
    IdempotencyRecord.objects.filter(client=client, key=key).update(
        status_code=response.status_code, response_body=body
    )


def idempotent(action):
    """Decorate a view action (POST or PATCH) to honour ``Idempotency-Key``."""

    @functools.wraps(action)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        client = api_client_of(request)
        if key is None or client is None or request.method not in METHODS:
            return action(view, request, *args, **kwargs)
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            raise exceptions.ValidationError({HEADER: [f"Give a key of 1 to {MAX_KEY_LENGTH} characters."]})
        # Read the raw body before DRF parses it (the stream can be read once).
        digest = body_hash(request.body)
        with transaction.atomic():
            replay = _claim(client, key, request.method, request.path, digest)
            if replay is not None:
                return replay
            try:
                response = action(view, request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - rendered like any API error, then rolled back
                response = view.handle_exception(exc)
            if 200 <= response.status_code < 300:
                _store(client, key, response)
            else:
                transaction.set_rollback(True)  # the key stays unused
            return response

    return wrapper
