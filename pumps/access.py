"""The access audit (README, Security): reading a patient's record is itself recorded, who viewed
what, when, and through which door (a staff page, the REST API, FHIR).

A view that shows one patient's record calls ``record_patient_access`` after the record
was found in the caller's clinics (a 404 is not an access). A list or search that returns
patients (API lists, FHIR searches, the worklist search) calls ``record_patients_access``
once with the ids it returned.

What is stored is the path alone, never the query string: search terms and names typed
into a search must not reach the log (``request.path`` has no query string; ``_path``
cuts at a "?" all the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.db import connection
from django.utils import timezone

from clinic.models import ApiClient

from .models import Patient, PatientAccess

PATH_MAX = PatientAccess._meta.get_field("path").max_length
CHANNELS = {PatientAccess.PAGE, PatientAccess.API, PatientAccess.FHIR}


def _path(request) -> str:
    return request.path.split("?", 1)[0][:PATH_MAX]


def _who(request):
    """(user, api_client) of the request: an API client is recorded as such, a signed-in
    user as the user."""
    auth = getattr(request, "auth", None)
    client = auth if isinstance(auth, ApiClient) else None
    user = None
    if client is None:
        candidate = getattr(request, "user", None)
        if candidate is not None and candidate.is_authenticated and candidate.pk is not None:
            user = candidate
    return user, client


def record_patient_access(request, patient: Patient, channel: str) -> PatientAccess:
    """One ``PatientAccess`` row for this request. ``request`` is a Django request (staff
    pages) or a DRF request (API, FHIR)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown access channel {channel!r}")
    user, client = _who(request)
    return PatientAccess.objects.create(
        patient_id=patient.pk, clinic_id=patient.clinic_id, user=user, api_client=client, channel=channel,
        path=_path(request),
    )


def record_patients_access(
    request,
    patient_ids: Iterable[int],
    clinic_ids: Mapping[int, int] | None,
    channel: str,
    *,
    list_read: bool = True,
) -> int:
    """Record that this request returned the patients ``patient_ids`` (a list, a search,
    a page of results): one statement for a page of up to a thousand patients. Call it
    with the ids actually returned (the page, not the whole match) after scoping.

    ``clinic_ids`` maps each patient id to its clinic id when the caller has them at hand
    (saves a query); ``None`` looks them up. ``list_read`` marks a list or search read, as
    opposed to the opening of one record. Returns the number of patients recorded.

    Today a ``PatientAccess`` row names one patient, so a read of N patients writes N rows
    (same instant, same path), an ``INSERT`` per thousand. Duplicated ids count once. The
    rows go in as plain values, not as models through ``bulk_create``: making a model for
    each row and compiling its insert cost an API list a sixth of its time.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown access channel {channel!r}")
    ids = list(dict.fromkeys(int(pk) for pk in patient_ids))
    if not ids:
        return 0
    if clinic_ids is None or any(pk not in clinic_ids for pk in ids):
        clinic_ids = dict(Patient.objects.filter(pk__in=ids).values_list("pk", "clinic_id"))
    user, client = _who(request)
    path = _path(request)
    at = _AT.get_db_prep_save(timezone.now(), connection)
    user_id, client_id = (user.pk if user else None), (client.pk if client else None)
    rows = [(pk, clinic_ids[pk], user_id, client_id, channel, path, at, list_read) for pk in ids if pk in clinic_ids]
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _ROWS_PER_INSERT):  # SQLite takes at most 32,766 parameters
            chunk = rows[start:start + _ROWS_PER_INSERT]
            cursor.execute(f"{_INSERT} {', '.join([_ROW] * len(chunk))}", [value for row in chunk for value in row])
    return len(rows)


_AT = PatientAccess._meta.get_field("at")
_COLUMNS = ("patient_id", "clinic_id", "user_id", "api_client_id", "channel", "path", "at", "list_read")
_INSERT = (f"INSERT INTO {connection.ops.quote_name(PatientAccess._meta.db_table)} "
           f"({', '.join(connection.ops.quote_name(c) for c in _COLUMNS)}) VALUES")
_ROWS_PER_INSERT = 1000
_ROW = f"({', '.join(['%s'] * len(_COLUMNS))})"
