"""What a service refuses, for every entry point to translate: the API into 400, 403,
409 and 412, the pages into field messages, the admin and the import into their own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied


class ServiceValidationError(Exception):
    """Bad input: ``message_dict`` maps each field (or ``non_field_errors``) to messages;
    a nested object (an embedded program) maps to a dict of its own."""

    def __init__(self, errors: Mapping[str, Any]):
        self.message_dict = {k: (v if isinstance(v, dict | list) else [v]) for k, v in errors.items()}
        super().__init__(str(self.message_dict))


class Conflict(Exception):
    """409: the write conflicts with another (a probable duplicate refill, a race)."""

    def __init__(self, message: str, code: str = "conflict"):
        super().__init__(message)
        self.message = message
        self.code = code


class PreconditionFailed(Exception):
    """412: ``If-Match`` named a pump version that is no longer current."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Forbidden(PermissionDenied):
    """403: the actor's role does not allow this action (``clinic.permissions``). A
    ``PermissionDenied``, so that any view that lets it through answers 403 with the
    message, never 500."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
