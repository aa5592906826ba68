"""The access audit of API lists and FHIR searches: a list or search that returns patient
data (patients, pumps, their records, the worklist, alerts) is a read of each patient it
shows. ``pumps.access.record_patients_access`` writes the rows (one INSERT per request,
the path without its query string); this module only gathers, from the records a page
already loaded, which patients it showed and their clinics, so that no query is added
besides that INSERT.
"""

from __future__ import annotations

from collections.abc import Iterable

from pumps.access import record_patients_access

#: where a listed record's patient and clinic are
KINDS = ("patient", "pump", "pump_record", "patient_record", "alert")


def patients_of(records: Iterable, kind: str) -> dict[int, int]:
    """``{patient_id: clinic_id}`` of the listed records, in the order shown, from what
    the list already loaded: ``kind`` is ``patient`` (the records are patients), ``pump``
    (pumps), ``pump_record`` (records with a loaded ``pump``: refills, programs, ...),
    ``patient_record`` (records with a loaded ``patient``: co-medication) or ``alert``
    (a clinic-wide alert has no pump, hence no patient)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    shown: dict[int, int] = {}
    for record in records:
        if kind == "patient":
            shown.setdefault(record.pk, record.clinic_id)
        elif kind == "pump":
            shown.setdefault(record.patient_id, record.clinic_id)
        elif kind == "patient_record":
            shown.setdefault(record.patient_id, record.patient.clinic_id)
        elif record.pump_id is not None:
            shown.setdefault(record.pump.patient_id, record.pump.clinic_id)
    return shown


def record_list_access(request, records: Iterable, kind: str, channel: str) -> int:
    """Log the patients shown by this page of ``records``: one INSERT, none for a page
    that shows no patient. Returns the number of patients logged."""
    shown = patients_of(records, kind)
    if not shown:
        return 0
    return record_patients_access(request, list(shown), shown, channel)
