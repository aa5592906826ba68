"""Formats the REST API (``pumps.api``) and FHIR (``pumps.fhir``) share: instants in
RFC 3339 with the clinic's offset, and FHIR's OperationOutcome (also the answer of the
project's server-error handler under ``/fhir/``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any


def rfc3339(moment: datetime, tz: tzinfo) -> str:
    """An instant in the zone ``tz``, RFC 3339 with a whole-minute offset. Zones whose
    historical offset had seconds (local mean time: Europe/Amsterdam +00:19:32 until
    1937, Africa/Monrovia -00:44:30 until 1972) cannot be written so: such an instant is
    given in UTC instead, never with a rounded (wrong) offset."""
    local = moment.astimezone(tz)
    offset = local.utcoffset()
    if offset is None or offset % timedelta(minutes=1):
        return moment.astimezone(UTC).isoformat()
    return local.isoformat()


#: FHIR issue codes by HTTP status.
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    429: "throttled",
}


def operation_outcome(status_code: int, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status_code < 500 else "fatal",
                "code": ISSUE_CODES.get(status_code, "processing" if status_code < 500 else "exception"),
                "diagnostics": diagnostics,
            }
        ],
    }
