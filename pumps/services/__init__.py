"""Every clinical write. Each service is one transaction: it locks the pump row (writes for
one pump are serialized), asks the permission rule set whether the actor may act, validates
with field-level messages (docs/clinical-rules.md §9), saves, stores the pump's fresh
projection and the write-time values of later records, raises the alerts, and stamps the
audit history with who acted. On any error nothing is saved.

Services take keyword arguments, an ``Actor`` (who acted) and ``now`` (tests control the
clock). One file per thing written: patients, pumps, programs, refills, records (readings,
events, appointments, voids); what they share is in ``base``. Entry points (pages, API,
FHIR, admin, import, commands) import from this package only.
"""

from pumps.errors import Conflict, Forbidden, PreconditionFailed, ServiceValidationError
from pumps.history import (
    PumpHistory,
    bump_version,
    explanted_by,
    inactive_reason,
    load_history,
    lock_pump,
    project_pump,
    projection_reason,
    pump_state,
    store_projection,
)

from .base import (
    MSG_CONTROL_CHARACTERS,
    MSG_VOID_CARRIED_PROGRAM,
    NOTES_MAX,
    REASON_MAX,
    Actor,
    after_write,
    authorize,
    clinician_for,
    has_control_characters,
    q3,
    recompute_refill_checks,
    refill_check_values,
    refresh_pump,
    resolve_clinician,
)
from .clinics import request_clinic_reprojection
from .patients import PATIENT_FIELDS, create_patient, update_patient
from .previews import ProgramPreview, RefillPreview, program_preview, program_projection, refill_preview
from .programs import ProgramInput, record_program, verify_program
from .pumps import explant_pump, implant_pump, replace_pump, update_pump
from .records import (
    record_event,
    record_reading,
    schedule_appointment,
    update_appointment,
    void_record,
)
from .refills import RefillInput, record_refill, validate_refill

__all__ = [
    "Actor", "Conflict", "Forbidden", "MSG_CONTROL_CHARACTERS", "MSG_VOID_CARRIED_PROGRAM", "NOTES_MAX",
    "PATIENT_FIELDS", "PreconditionFailed", "ProgramInput", "ProgramPreview", "PumpHistory", "REASON_MAX",
    "RefillInput", "RefillPreview", "ServiceValidationError", "after_write", "authorize", "bump_version",
    "clinician_for", "create_patient", "explant_pump", "explanted_by", "has_control_characters", "implant_pump",
    "inactive_reason", "load_history", "lock_pump", "program_preview", "program_projection", "project_pump",
    "projection_reason", "pump_state", "q3", "recompute_refill_checks", "record_event", "record_program",
    "record_reading", "record_refill", "refill_check_values", "refill_preview", "request_clinic_reprojection",
    "refresh_pump", "replace_pump", "resolve_clinician", "schedule_appointment", "store_projection",
    "update_appointment", "update_patient", "update_pump", "validate_refill", "verify_program", "void_record",
]
