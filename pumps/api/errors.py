"""Errors as SPEC 8 says: 400 maps each field (or ``non_field_errors``) to a list of
messages; 409 and 412 carry ``detail`` and a machine-readable ``code``."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from pumps.services import Conflict, PreconditionFailed, ServiceValidationError


class ConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflicting write."
    default_code = "conflict"


def exception_handler(exc, context):
    if isinstance(exc, ServiceValidationError):
        return Response(exc.message_dict, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        data = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response(data, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Conflict):
        return Response({"detail": exc.message, "code": exc.code}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, PreconditionFailed):
        return Response({"detail": exc.message, "code": "stale_version"}, status=status.HTTP_412_PRECONDITION_FAILED)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError) and isinstance(response.data, list):
        response.data = {"non_field_errors": response.data}
    return response
