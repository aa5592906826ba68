"""Errors of the API contract (README, REST API): 400 maps each field (or ``non_field_errors``) to a list of
messages; 409, 412 and 422 carry ``detail`` and a machine-readable ``code``.

Errors of a nested object are flattened to dotted keys, the way the services name them:
``{"program.daily_dose_mcg": [...]}``, and items of a list get an index:
``{"program.steps[1].dose_mcg_per_hour": [...]}``. So every 400 body is one flat object
of lists of strings, whether the serializer or the service found the problem.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from django.views.defaults import server_error as django_server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView, set_rollback
from rest_framework.views import exception_handler as drf_exception_handler

from pumps.errors import Conflict, Forbidden, PreconditionFailed, ServiceValidationError
from pumps.formats import operation_outcome

log = logging.getLogger("pumps.api")

MSG_SERVER_ERROR = "The server failed to answer this request; the error was logged. Try again, or report it."


class ConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflicting write."
    default_code = "conflict"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for another request."
    default_code = "idempotency_key_reused"


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{"program": {"steps": [{}, {"start": ["x"]}]}}`` → ``{"program.steps[1].start": ["x"]}``."""
    flat: dict[str, list[str]] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for sub, item in value.items():
                if isinstance(sub, int):  # ListField/DictField child errors are keyed by index
                    walk(item, f"{key}[{sub}]")
                else:
                    walk(item, f"{key}.{sub}" if key else str(sub))
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping | list | tuple) for v in value):
            for index, item in enumerate(value):
                if item:  # DRF gives {} for the valid items of a list
                    walk(item, f"{key}[{index}]")
        else:
            messages = value if isinstance(value, list | tuple) else [value]
            flat.setdefault(key or "non_field_errors", []).extend(str(m) for m in messages)

    walk(errors, prefix)
    return flat


@contextmanager
def body_field_names(renames: Mapping[str, str]) -> Iterator[None]:
    """A service's refusal with its fields named as the request body names them, e.g.
    ``withdrawal_plan_reason`` → ``withdrawal_plan.reason`` when the body nests the plan;
    other fields unchanged."""
    try:
        yield
    except ServiceValidationError as exc:
        raise ServiceValidationError({renames.get(k, k): v for k, v in exc.message_dict.items()}) from None


def prefixed(renames: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The same renames inside a nested object: ``{"program.x": "program.y"}``."""
    return {prefix + key: prefix + value for key, value in renames.items()}


def _detail(exc: exceptions.APIException, code: str | None = None) -> dict[str, str]:
    codes = exc.get_codes()
    return {"detail": str(exc.detail), "code": code or (codes if isinstance(codes, str) else exc.default_code)}


def exception_handler(exc, context):
    """DRF's exception handler, answering in the API's error shape: the project's own
    errors first, then DRF's response reshaped; an error no one handles is a 500."""
    response = _own_error(exc)
    if response is not None:
        return response
    response = drf_exception_handler(exc, context)
    if response is None:
        return unexpected_error(exc, context)
    _reshape(exc, response)
    return response


def _own_error(exc) -> Response | None:
    """The answer to an error DRF does not know (the services', Django's validation and
    body size), or whose shape DRF would get wrong (malformed JSON); else None."""
    if isinstance(exc, ServiceValidationError):
        return Response(flatten_errors(exc.message_dict), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        data = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response(flatten_errors(data), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Forbidden):
        return Response({"detail": exc.message, "code": "permission_denied"}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, Conflict):
        return Response({"detail": exc.message, "code": exc.code}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, PreconditionFailed):
        return Response({"detail": exc.message, "code": "stale_version"}, status=status.HTTP_412_PRECONDITION_FAILED)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1_000_000
        return Response(
            {"non_field_errors": [f"The request body is too large (at most {limit:g} MB)."]},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, exceptions.ParseError):
        # Malformed JSON is a 400 like any other bad input: same shape.
        return Response({"non_field_errors": [str(exc.detail)]}, status=status.HTTP_400_BAD_REQUEST)
    return None


def _reshape(exc, response: Response) -> None:
    """DRF's response body in the API's shape: flat field errors, or ``detail`` and ``code``."""
    if isinstance(exc, exceptions.ValidationError):
        response.data = flatten_errors(response.data)
    elif isinstance(exc, exceptions.APIException) and isinstance(response.data, dict) and "detail" in response.data:
        response.data = _detail(exc)
    elif isinstance(exc, Http404):
        response.data = {"detail": str(response.data.get("detail", "Not found.")), "code": "not_found"}
    elif isinstance(exc, DjangoPermissionDenied):
        response.data = {"detail": str(response.data.get("detail", "")), "code": "permission_denied"}

def unexpected_error(exc, context) -> Response | None:
    """An error no handler knows (a bug): 500 in the API's error shape, never an HTML page.
    Logged with its traceback; the request's transaction, if any, is rolled back. A lost
    database is left to ``clinic.middleware.DatabaseUnavailableMiddleware`` (503 with
    Retry-After)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return None
    request = context.get("request")
    log.error(
        "unexpected error in %s %s", getattr(request, "method", "?"), getattr(request, "path", "?"), exc_info=exc
    )
    set_rollback()
    return Response({"detail": MSG_SERVER_ERROR, "code": "server_error"}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def server_error(request, *args, **kwargs):
    """A ``handler500`` for the project's URLconf: JSON under ``/api/`` (and
    ``/fhir/``: an OperationOutcome), Django's page elsewhere. It covers errors raised
    outside the API's views (middleware, URL resolution)."""
    if request.path.startswith("/fhir/"):
        return JsonResponse(
            operation_outcome(500, MSG_SERVER_ERROR), status=500, content_type="application/fhir+json"
        )
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": MSG_SERVER_ERROR, "code": "server_error"}, status=500)
    return django_server_error(request, *args, **kwargs)


class NotRouted(APIView):
    """The last route under ``/api/v1/``: a path no endpoint matches answers 404 in the
    API's error shape (JSON), whatever the method, after authentication like any
    endpoint (an anonymous caller gets 401 and learns nothing of which paths exist)."""

    schema = None  # not an operation of the API

    def _not_found(self, request, *args, **kwargs):
        path = request.path
        hint = ""
        if not path.endswith("/"):
            try:
                match = resolve(path + "/")
            except Resolver404:
                match = None
            if match is not None and getattr(match.func, "view_class", None) is not NotRouted:
                hint = f" Did you mean {path}/ (with the trailing slash)?"
        raise exceptions.NotFound(f"No endpoint at {path}.{hint}")

    get = post = put = patch = delete = head = options = _not_found
