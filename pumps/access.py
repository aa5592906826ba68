"""The access audit (SPEC 9): reading a patient's record is itself recorded, who viewed
what, when, and through which door (a staff page, the REST API, FHIR).

Only the views that show one patient's record call ``record_patient_access``, after the
record was found in the caller's clinics (a 404 is not an access); lists and searches do
not record, so a worklist of a hundred patients does not write a hundred rows.
"""

from __future__ import annotations

from clinic.models import ApiClient

from .models import Patient, PatientAccess

PATH_MAX = PatientAccess._meta.get_field("path").max_length


def record_patient_access(request, patient: Patient, channel: str) -> PatientAccess:
    """One ``PatientAccess`` row for this request. ``request`` is a Django request (staff
    pages) or a DRF request (API, FHIR): an API client is recorded as such, a signed-in
    user as the user."""
    if channel not in {PatientAccess.PAGE, PatientAccess.API, PatientAccess.FHIR}:
        raise ValueError(f"unknown access channel {channel!r}")
    auth = getattr(request, "auth", None)
    client = auth if isinstance(auth, ApiClient) else None
    user = None
    if client is None:
        candidate = getattr(request, "user", None)
        if candidate is not None and candidate.is_authenticated and candidate.pk is not None:
            user = candidate
    return PatientAccess.objects.create(
        patient_id=patient.pk, clinic_id=patient.clinic_id, user=user, api_client=client, channel=channel,
        path=request.path[:PATH_MAX],
    )
