"""Every clinical write. Each service is one transaction: it locks the pump row (writes for
one pump are serialized), asks the permission rule set whether the actor may act, validates
with field-level messages (docs/clinical-rules.md §9), saves, stores the pump's fresh
projection and the write-time values of later records, raises the alerts, and stamps the
audit history with who acted. On any error nothing is saved.

Services take keyword arguments, an ``Actor`` (who acted) and ``now`` (tests control the
clock). One file per thing written: patients, pumps, programs, refills, records (readings,
events, appointments, voids), clinics (settings, closures, alert addresses, the
clinic-wide refresh); ``previews`` shows what a refill or program would give before it is
saved, with the save's own checks; what they share is in ``base``. Entry points (pages,
API, FHIR, admin, import, commands) import from this package only.
"""

from pumps.alerting.evaluate import refresh_pump
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

from .assessments import AssessmentInput, record_assessment, void_assessment
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
    resolve_clinician,
)
from .calendar_feeds import clinic_feed, create_clinic_feed, create_own_feed, own_feed, revoke_feed
from .clinics import (
    add_alert_recipient,
    add_closure,
    remove_alert_recipient,
    remove_closure,
    request_clinic_reprojection,
    save_clinic_policy,
    save_refill_capacity,
)
from .comedications import (
    Interaction,
    active_comedications,
    check_interaction,
    record_comedication,
    stop_comedication,
    void_comedication,
)
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
from .refills import RefillInput, record_refill, stability_days, validate_refill
from .withdrawal import stops_delivery

__all__ = [
    "Actor", "AssessmentInput", "Conflict", "Forbidden", "Interaction", "MSG_CONTROL_CHARACTERS",
    "MSG_VOID_CARRIED_PROGRAM", "NOTES_MAX", "PATIENT_FIELDS", "PreconditionFailed", "ProgramInput", "ProgramPreview",
    "PumpHistory", "REASON_MAX", "RefillInput", "RefillPreview", "ServiceValidationError", "active_comedications",
    "add_alert_recipient", "add_closure", "after_write", "authorize", "bump_version", "check_interaction",
    "clinic_feed", "clinician_for", "create_clinic_feed", "create_own_feed", "create_patient", "explant_pump",
    "explanted_by", "has_control_characters", "implant_pump", "inactive_reason", "load_history", "lock_pump",
    "own_feed", "program_preview", "program_projection", "project_pump", "projection_reason", "pump_state", "q3",
    "recompute_refill_checks", "record_assessment", "record_comedication", "record_event", "record_program",
    "record_reading", "record_refill", "refill_check_values", "refill_preview", "refresh_pump",
    "remove_alert_recipient", "remove_closure", "replace_pump", "request_clinic_reprojection", "resolve_clinician",
    "revoke_feed", "save_clinic_policy", "save_refill_capacity", "schedule_appointment", "stability_days",
    "stop_comedication", "stops_delivery", "store_projection", "update_appointment", "update_patient", "update_pump",
    "validate_refill", "verify_program", "void_assessment", "void_comedication", "void_record",
]
