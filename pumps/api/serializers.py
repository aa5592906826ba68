"""Serializers of the REST API (README, REST API).

Input serializers only parse and type-check the request; the clinical rules live in
``pumps.services`` (one source of truth), whose field-level errors reach the client
unchanged. Output serializers render what the services saved.

Conventions:
- decimals are read from JSON numbers or strings of any scale, rounded half-up to 0.001
  (``services.q3``), and written as strings with three decimals ("36.000");
- datetimes must carry an offset (``Z`` allowed) and are written in the offset of the
  record's clinic ("2026-04-18T23:20:00-05:00"); dates are YYYY-MM-DD;
- a related pump or patient is looked up among the caller's clinics only, so that another
  clinic's record gets the same 400 as one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clinic.auth import visible_clinic_ids
from clinic.models import Clinic
from pumps import projection as pj
from pumps import selectors
from pumps.formats import rfc3339
from pumps.models import (
    Alert,
    AlertKind,
    DrugProduct,
    Patient,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
    Severity,
)
from pumps.services import NOTES_MAX, REASON_MAX, ProgramInput, q3

MSG_NO_OFFSET = "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."
MSG_BAD_DATETIME = (
    "Datetime has wrong format: use ISO 8601 with an offset, for example 2026-02-02T09:00:00-06:00 "
    "or 2026-02-02T15:00:00Z."
)

MSG_BAD_OFFSET = "Datetime offset out of range: UTC offsets lie between -12:00 and +14:00."
MIN_YEAR, MAX_YEAR = 1900, 2999
MSG_OUT_OF_RANGE = f"Datetime out of range: give an instant between years {MIN_YEAR} and {MAX_YEAR}."
# Free text has the services' limits (NOTES_MAX, REASON_MAX), with DRF's message
# "Ensure this field has no more than N characters."
ML_DIGITS = 9  # pumps.models.ML
DOSE_DIGITS = 12  # pumps.models.DOSE


# --------------------------------------------------------------------------- fields


def parse_aware_datetime(value) -> datetime:
    """ISO 8601 with an offset; raises ``serializers.ValidationError`` otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = parse_datetime(value.strip())
        except ValueError:
            moment = None
        if moment is None:
            raise serializers.ValidationError(MSG_BAD_DATETIME, code="invalid")
    else:
        raise serializers.ValidationError(MSG_BAD_DATETIME, code="invalid")
    if timezone.is_naive(moment):
        raise serializers.ValidationError(MSG_NO_OFFSET, code="naive")
    if abs(moment.utcoffset()) > timedelta(hours=14):
        raise serializers.ValidationError(MSG_BAD_OFFSET, code="invalid")
    if moment.utcoffset() % timedelta(minutes=1):  # RFC 3339: +hh:mm, no seconds
        raise serializers.ValidationError(MSG_BAD_DATETIME, code="invalid")
    try:
        moment = moment.astimezone(UTC)  # years 1 and 9999 with an offset fall off the calendar
    except OverflowError:
        raise serializers.ValidationError(MSG_OUT_OF_RANGE, code="out_of_range") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise serializers.ValidationError(MSG_OUT_OF_RANGE, code="out_of_range")
    return moment


def _clinic_tz(field) -> tzinfo:
    """The zone of the record being rendered: the nearest serializer that knows it."""
    node = field
    while node is not None:
        tz = getattr(node, "_clinic_tz", None)
        if tz is not None:
            return tz
        node = getattr(node, "parent", None)
    return UTC


@extend_schema_field(OpenApiTypes.DATETIME)
class ClinicDateTimeField(serializers.Field):
    """An instant: read with an offset only, written in the offset of the clinic."""

    default_error_messages = {"invalid": MSG_BAD_DATETIME, "naive": MSG_NO_OFFSET}

    def to_internal_value(self, data):
        return parse_aware_datetime(data)

    def to_representation(self, value):
        return rfc3339(value, _clinic_tz(self))


class Decimal3Field(serializers.Field):
    """A decimal of any scale in, rounded half-up to 0.001; a 3-decimal string out."""

    default_error_messages = {
        "invalid": "A valid number is required.",
        "max_whole_digits": "Ensure that there are no more than {max_whole_digits} digits before the decimal point.",
    }

    def __init__(self, *, max_digits: int = ML_DIGITS, **kwargs):
        self.max_whole_digits = max_digits - 3
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float | str | Decimal):
            self.fail("invalid")
        if isinstance(data, float):
            data = repr(data)
        if isinstance(data, str):
            data = data.strip()
            if not data or len(data) > 100:
                self.fail("invalid")
        try:
            value = Decimal(data)
            if not value.is_finite():
                self.fail("invalid")
            if value.adjusted() >= self.max_whole_digits + 1:
                self.fail("max_whole_digits", max_whole_digits=self.max_whole_digits)
            value = q3(value)
        except (InvalidOperation, ValueError, TypeError):
            self.fail("invalid")
        if abs(value) >= Decimal(10) ** self.max_whole_digits:
            self.fail("max_whole_digits", max_whole_digits=self.max_whole_digits)
        return value

    def to_representation(self, value):
        return f"{q3(value):f}"


class Decimal3FieldSchema(OpenApiSerializerFieldExtension):
    """In the schema: requests take a number or a string, responses give a string."""

    target_class = Decimal3Field

    def map_serializer_field(self, auto_schema, direction):
        if direction == "request":
            return {
                "oneOf": [{"type": "string", "format": "decimal"}, {"type": "number"}],
                "description": "A JSON number or a string of any scale; rounded half-up to 0.001.",
                "example": "36",
            }
        return {
            "type": "string",
            "format": "decimal",
            "pattern": r"^-?\d+\.\d{3}$",
            "example": "36.000",
            "description": "A decimal string with three decimals.",
        }


class ScopedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A pump or patient among the caller's clinics: anything else "does not exist"."""

    def __init__(self, *, clinic_field: str = "clinic_id", **kwargs):
        self.clinic_field = clinic_field
        super().__init__(**kwargs)

    def get_queryset(self):
        queryset = super().get_queryset()
        request = self.context.get("request")
        if request is None:
            return queryset.none()
        ids = visible_clinic_ids(request)
        return queryset if ids is None else queryset.filter(**{f"{self.clinic_field}__in": ids})


@extend_schema_field(OpenApiTypes.STR)
class ScopedClinicField(serializers.SlugRelatedField):
    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            return Clinic.objects.none()
        ids = visible_clinic_ids(request)
        return Clinic.objects.all() if ids is None else Clinic.objects.filter(pk__in=ids)


# Not an OpenAPI enum: drf-spectacular would name it "StatusEnum" like the patient status
# and warn of the collision (the names of settings.SPECTACULAR_SETTINGS are not ours).
@extend_schema_field(
    {"type": "string", "example": pj.STATUS_DUE_SOON, "description": f"One of: {', '.join(pj.STATUSES)}."}
)
class PumpStatusField(serializers.CharField):
    """empty, alarm, overdue, due_soon, ok, incomplete, inactive (docs/clinical-rules.md §7)."""


def _clinician(user, external: str) -> str | None:
    if user is not None:
        return user.get_username()
    return external or None


class ClinicSerializer(serializers.ModelSerializer):
    """Renders its instants in the zone of the record's clinic (``clinic_of``)."""

    def clinic_of(self, instance) -> Clinic | None:
        return None

    def to_representation(self, instance):
        clinic = self.clinic_of(instance)
        previous = getattr(self, "_clinic_tz", None)
        if clinic is not None:
            self._clinic_tz = clinic.tz
        try:
            return super().to_representation(instance)
        finally:
            self._clinic_tz = previous


# ------------------------------------------------------------------------- patients


class PatientSerializer(ClinicSerializer):
    """A patient of one of the caller's clinics."""

    clinic = serializers.SlugRelatedField(slug_field="code", read_only=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Patient
        fields = [
            "id", "clinic", "mrn", "family_name", "given_name", "birth_date", "spasticity_origin",
            "withdrawal_high_risk", "high_risk_reason", "phone", "caregiver_phone", "status",
            "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.clinic


class PatientWriteSerializer(serializers.Serializer):
    """POST creates (the first six fields are required); PATCH changes any of them."""

    clinic = ScopedClinicField(
        slug_field="code", required=False, write_only=True,
        help_text="The clinic's code. An API client's clinic is implied; staff who belong to several "
        "clinics name one.",
    )
    mrn = serializers.CharField(max_length=64)
    family_name = serializers.CharField(max_length=100)
    given_name = serializers.CharField(max_length=100)
    birth_date = serializers.DateField()
    spasticity_origin = serializers.ChoiceField(choices=Patient.Origin.choices)
    withdrawal_high_risk = serializers.BooleanField()
    high_risk_reason = serializers.CharField(max_length=300, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    caregiver_phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Patient.Status.choices, required=False)


# ---------------------------------------------------------------------------- pumps


class OpenAlertSerializer(ClinicSerializer):
    """An unresolved alert of a pump (acknowledged ones included: acknowledging stops the
    reminders, not the alert)."""

    kind = serializers.ChoiceField(choices=AlertKind.choices, read_only=True)
    severity = serializers.ChoiceField(choices=Severity.choices, read_only=True)
    raised_at = ClinicDateTimeField(source="created_at", read_only=True, help_text="When the alert was raised.")
    acknowledged_at = ClinicDateTimeField(read_only=True, allow_null=True)
    acknowledged_by = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = ["id", "kind", "severity", "raised_at", "acknowledged_at", "acknowledged_by", "acknowledgement_reason"]
        read_only_fields = fields

    def get_acknowledged_by(self, alert) -> str | None:
        return _clinician(alert.acknowledged_by, alert.acknowledged_by_external)


class PumpSerializer(ClinicSerializer):
    """An implant, with its stored projection (worst case unless named expected) and its
    `version`, the ETag to send in `If-Match`; its open alerts, most severe first, and its
    status in words.

    A list passes ``open_alerts`` (pump id → alerts, ``selectors.open_alerts_by_pump``)
    and ``now`` in the context, so that a page costs one query for every pump's alerts."""

    clinic = serializers.SlugRelatedField(slug_field="code", read_only=True)
    model = serializers.SlugRelatedField(slug_field="code", read_only=True, help_text="Pump model catalog code.")
    model_name = serializers.SerializerMethodField()
    reservoir_ml = Decimal3Field(source="model.reservoir_ml", read_only=True)
    volume_is = serializers.CharField(source="model.volume_is", read_only=True)
    low_reservoir_alarm_ml = Decimal3Field(read_only=True)
    low_reservoir_alarm_at = ClinicDateTimeField(read_only=True, allow_null=True)
    empty_at = ClinicDateTimeField(read_only=True, allow_null=True)
    expected_low_reservoir_alarm_at = ClinicDateTimeField(read_only=True, allow_null=True)
    expected_empty_at = ClinicDateTimeField(read_only=True, allow_null=True)
    drug_expires_at = ClinicDateTimeField(read_only=True, allow_null=True)
    anchor_at = ClinicDateTimeField(read_only=True, allow_null=True)
    projected_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)
    status = PumpStatusField(
        read_only=True,
        help_text="Stored status as of `projected_at` (recomputed at every write and by the alert sweep).",
    )
    status_reason = serializers.SerializerMethodField(
        help_text="The status as of now in words: what binds (the alarm or the drug's stability date) and "
        "since or until when, e.g. \"overdue: drug expired on 2026-10-18 (3 days ago)\"."
    )
    open_alerts = serializers.SerializerMethodField(
        help_text="The pump's unresolved alerts, acknowledged ones included, most severe first, newest first "
        "within a severity."
    )

    class Meta:
        model = Pump
        fields = [
            "id", "clinic", "patient", "model", "model_name", "reservoir_ml", "volume_is", "serial_number",
            "udi", "implanted_on", "explanted_on", "explant_reason", "low_reservoir_alarm_ml",
            "expected_end_of_service", "version", "status", "status_reason", "open_alerts",
            "low_reservoir_alarm_at", "empty_at",
            "expected_low_reservoir_alarm_at", "expected_empty_at", "drug_expires_at", "refill_due_on",
            "anchor_at", "projected_at", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.clinic

    def get_model_name(self, pump) -> str:
        return f"{pump.model.manufacturer} {pump.model.name}"

    def _now(self) -> datetime:
        now = self.context.get("now")
        if now is None:
            now = self.context["now"] = timezone.now()
        return now

    def get_status_reason(self, pump) -> str:
        return pump.status_reason(self._now())

    @extend_schema_field(OpenAlertSerializer(many=True))
    def get_open_alerts(self, pump) -> list[dict]:
        by_pump = self.context.get("open_alerts")
        if by_pump is None or pump.pk not in by_pump:  # one pump rendered alone: its own query
            by_pump = selectors.open_alerts_by_pump([pump.pk])
        nested = OpenAlertSerializer(context=self.context)
        nested.parent = self  # the pump's clinic zone
        return [nested.to_representation(alert) for alert in by_pump[pump.pk]]


class PumpCreateSerializer(serializers.Serializer):
    """An implant: the patient may have no other implanted pump."""

    patient = ScopedPrimaryKeyRelatedField(queryset=Patient.objects.select_related("clinic"))
    model = serializers.SlugRelatedField(
        slug_field="code", queryset=PumpModel.objects.all(),
        error_messages={"does_not_exist": 'Unknown pump model code "{value}".'},
        help_text="Pump model catalog code, e.g. 8637-40.",
    )
    serial_number = serializers.CharField(max_length=64)
    implanted_on = serializers.DateField()
    low_reservoir_alarm_ml = Decimal3Field(
        required=False, allow_null=True, help_text="Default: the model's low-reservoir alarm volume."
    )
    udi = serializers.CharField(max_length=200, required=False, allow_blank=True)


class PumpUpdateSerializer(serializers.Serializer):
    """The fields of an implant that may change."""

    low_reservoir_alarm_ml = Decimal3Field(required=False)
    serial_number = serializers.CharField(max_length=64, required=False)
    udi = serializers.CharField(max_length=200, required=False, allow_blank=True)


class ExplantSerializer(serializers.Serializer):
    """The explant date (local to the clinic) and why."""

    explanted_on = serializers.DateField()
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class WorklistPatientSerializer(serializers.Serializer):
    """The least patient data a worklist needs."""

    id = serializers.IntegerField()
    mrn = serializers.CharField()
    initials = serializers.CharField()
    withdrawal_high_risk = serializers.BooleanField()
    status = serializers.CharField()


class WorklistSerializer(PumpSerializer):
    """A worklist row: the pump, its patient's identifiers and what is due."""

    patient = WorklistPatientSerializer(read_only=True)
    days_to_due = serializers.SerializerMethodField(help_text="From today in the clinic's zone; negative: overdue.")
    next_appointment_at = ClinicDateTimeField(read_only=True, allow_null=True)

    class Meta(PumpSerializer.Meta):
        fields = [*PumpSerializer.Meta.fields, "days_to_due", "next_appointment_at"]
        read_only_fields = fields

    def get_days_to_due(self, pump) -> int | None:
        if pump.refill_due_on is None:
            return None
        return (pump.refill_due_on - pj.local_date(timezone.now(), pump.clinic.tz)).days


class ProjectionSerializer(serializers.Serializer):
    """The projection of one pump as of ``at``; null numbers when incomplete."""

    at = ClinicDateTimeField()
    status = PumpStatusField()
    status_reason = serializers.CharField(
        help_text="The status in words, from this projection: what binds and since or until when."
    )
    reservoir_volume_ml = Decimal3Field(allow_null=True, help_text="Expected volume at `at`, floored at 0.")
    daily_volume_ml = Decimal3Field(allow_null=True, help_text="Expected mL/day of the program in force at `at`.")
    worst_case_daily_volume_ml = Decimal3Field(allow_null=True, help_text="With every allowed on-demand bolus.")
    low_reservoir_alarm_at = ClinicDateTimeField(allow_null=True, help_text="Worst case.")
    empty_at = ClinicDateTimeField(allow_null=True, help_text="Worst case.")
    expected_low_reservoir_alarm_at = ClinicDateTimeField(allow_null=True)
    expected_empty_at = ClinicDateTimeField(allow_null=True)
    drug_expires_at = ClinicDateTimeField(allow_null=True)
    refill_due_on = serializers.DateField(allow_null=True)

    def to_representation(self, instance):
        self._clinic_tz = instance.tz
        return super().to_representation(instance)


# ------------------------------------------------------------------------- programs


class FlexStepSerializer(serializers.Serializer):
    """A flex step: from `start` (local HH:MM) until the next step's start."""

    start = serializers.CharField(help_text="Local wall-clock time in the clinic's zone, HH:MM.")
    dose_mcg_per_hour = Decimal3Field(max_digits=DOSE_DIGITS)


class ProgramFieldsSerializer(serializers.Serializer):
    """The fields of a program, embedded in a refill or posted to /programs/."""

    concentration_mcg_per_ml = Decimal3Field(max_digits=DOSE_DIGITS)
    mode = serializers.ChoiceField(choices=Program.Mode.choices)
    daily_dose_mcg = Decimal3Field(
        max_digits=DOSE_DIGITS, required=False, allow_null=True,
        help_text="Continuous: required. Flex: optional, must equal the total of the steps.",
    )
    steps = FlexStepSerializer(many=True, required=False, help_text="Flex only: sorted by start, cyclic over 24 h.")
    ptm_bolus_mcg = Decimal3Field(max_digits=DOSE_DIGITS, required=False, allow_null=True)
    ptm_max_per_day = serializers.IntegerField(required=False, allow_null=True, max_value=32767)
    override_reason = serializers.CharField(max_length=REASON_MAX, required=False, allow_blank=True, default="")
    entered_by = serializers.CharField(
        max_length=150, required=False, allow_blank=True, allow_null=True,
        help_text="Staff username of the clinic or an external practitioner identifier.",
    )


def program_input(data: dict) -> ProgramInput:
    """The services' ``ProgramInput`` from validated program fields."""
    fields = {k: v for k, v in data.items() if k in ProgramInput.__dataclass_fields__}
    if fields.get("steps") is not None:
        fields["steps"] = [dict(step) for step in fields["steps"]]
    return ProgramInput(**fields)


class ProgramCreateSerializer(ProgramFieldsSerializer):
    """A program change of a pump from `effective_at` (prescribers; titration limit applies)."""

    pump = ScopedPrimaryKeyRelatedField(queryset=Pump.objects.all())
    effective_at = ClinicDateTimeField()

    field_order = ["pump", "effective_at"]


class VerifySerializer(serializers.Serializer):
    """The second clinician who checked the program."""

    verified_by = serializers.CharField(
        max_length=150, required=False, allow_blank=True, allow_null=True,
        help_text="The second clinician. Staff signed in verify as themselves when omitted.",
    )


class VoidSerializer(serializers.Serializer):
    """Why the record is voided (required)."""

    reason = serializers.CharField(max_length=REASON_MAX, required=False, allow_blank=True, default="")


class ProgramSerializer(ClinicSerializer):
    """What the pump delivers from `effective_at`; who entered and verified it."""

    effective_at = ClinicDateTimeField(read_only=True)
    concentration_mcg_per_ml = Decimal3Field(read_only=True)
    daily_dose_mcg = Decimal3Field(read_only=True, help_text="Basal mcg per 24 h (flex: the total of the steps).")
    daily_volume_ml = Decimal3Field(read_only=True, help_text="Basal mL per 24 h.")
    worst_case_daily_volume_ml = Decimal3Field(read_only=True, help_text="With every allowed on-demand bolus.")
    steps = FlexStepSerializer(many=True, read_only=True)
    ptm_bolus_mcg = Decimal3Field(read_only=True, allow_null=True)
    entered_by = serializers.SerializerMethodField()
    verified_by = serializers.SerializerMethodField()
    verified_at = ClinicDateTimeField(read_only=True, allow_null=True)
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Program
        fields = [
            "id", "pump", "refill", "effective_at", "concentration_mcg_per_ml", "mode", "daily_dose_mcg",
            "steps", "ptm_bolus_mcg", "ptm_max_per_day", "daily_volume_ml", "worst_case_daily_volume_ml",
            "override_reason", "entered_by", "verified_by", "verified_at", "voided_at", "void_reason",
            "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_entered_by(self, program) -> str | None:
        return _clinician(program.entered_by, program.entered_by_external)

    def get_verified_by(self, program) -> str | None:
        return _clinician(program.verified_by, program.verified_by_external)


class EmbeddedProgramSerializer(ProgramSerializer):
    """A refill's program: rendered in the refill's clinic zone."""

    def clinic_of(self, instance):
        return None


# -------------------------------------------------------------------------- refills


class RefillCreateSerializer(serializers.Serializer):
    """A refill; `program` (optional) takes effect at `performed_at`, saved with it."""

    pump = ScopedPrimaryKeyRelatedField(queryset=Pump.objects.all())
    performed_at = ClinicDateTimeField()
    extracted_volume_ml = Decimal3Field(
        required=False, allow_null=True, help_text="Null (or absent) for the first fill after implant."
    )
    added_volume_ml = Decimal3Field()
    concentration_mcg_per_ml = Decimal3Field(max_digits=DOSE_DIGITS)
    residual_left_ml = Decimal3Field(required=False, allow_null=True, help_text="Default 0.")
    bridge_bolus_ml = Decimal3Field(required=False, allow_null=True)
    drug_product = serializers.SlugRelatedField(
        slug_field="code", queryset=DrugProduct.objects.select_related("drug"), required=False, allow_null=True,
        error_messages={"does_not_exist": 'Unknown drug product code "{value}".'},
    )
    lot_number = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    lot_expiry = serializers.DateField(required=False, allow_null=True)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=NOTES_MAX)
    performed_by = serializers.CharField(
        max_length=150, required=False, allow_blank=True, allow_null=True,
        help_text="Staff username of the clinic or an external practitioner identifier.",
    )
    confirm_duplicate = serializers.BooleanField(
        required=False, default=False,
        help_text="Record it although another refill of this pump lies within 60 minutes.",
    )
    program = ProgramFieldsSerializer(
        required=False, allow_null=True,
        help_text="A new program taking effect at `performed_at`, saved atomically with the refill.",
    )


class RefillSerializer(ClinicSerializer):
    """A refill with the checks computed when it was recorded (recomputed when earlier
    history changes): expected residual, discrepancy and flags."""

    performed_at = ClinicDateTimeField(read_only=True)
    performed_by = serializers.SerializerMethodField()
    extracted_volume_ml = Decimal3Field(read_only=True, allow_null=True)
    added_volume_ml = Decimal3Field(read_only=True)
    residual_left_ml = Decimal3Field(read_only=True)
    bridge_bolus_ml = Decimal3Field(read_only=True, allow_null=True)
    volume_after_ml = Decimal3Field(read_only=True, help_text="residual left + added − bridge bolus.")
    drug_product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    concentration_mcg_per_ml = Decimal3Field(read_only=True)
    expected_residual_ml = Decimal3Field(read_only=True, allow_null=True)
    discrepancy_ml = Decimal3Field(read_only=True, allow_null=True)
    flags = serializers.ListField(child=serializers.CharField(), read_only=True)
    program = serializers.SerializerMethodField()
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Refill
        fields = [
            "id", "pump", "performed_at", "performed_by", "extracted_volume_ml", "added_volume_ml",
            "residual_left_ml", "bridge_bolus_ml", "volume_after_ml", "drug_product", "concentration_mcg_per_ml",
            "stability_days", "lot_number", "lot_expiry", "expected_residual_ml", "discrepancy_ml",
            "discrepancy_flagged", "refilled_after_empty", "flags", "notes", "program", "voided_at",
            "void_reason", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_performed_by(self, refill) -> str | None:
        return _clinician(refill.performed_by, refill.performed_by_external)

    @extend_schema_field(EmbeddedProgramSerializer(allow_null=True))
    def get_program(self, refill):
        try:
            program = refill.program
        except ObjectDoesNotExist:
            return None
        if program is None:
            return None
        nested = EmbeddedProgramSerializer(context=self.context)
        nested.parent = self  # inherit the refill's clinic zone
        return nested.to_representation(program)


# ------------------------------------------------------------------------- readings


class ReadingCreateSerializer(serializers.Serializer):
    """A pump interrogation; it re-anchors the projection."""

    pump = ScopedPrimaryKeyRelatedField(queryset=Pump.objects.all())
    read_at = ClinicDateTimeField()
    reservoir_volume_ml = Decimal3Field()
    eri = serializers.BooleanField(required=False, default=False, help_text="Elective replacement indicator shown.")
    performed_by = serializers.CharField(max_length=150, required=False, allow_blank=True, allow_null=True)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=NOTES_MAX)


class ReadingSerializer(ClinicSerializer):
    """A pump interrogation: the reservoir volume the pump reported."""

    read_at = ClinicDateTimeField(read_only=True)
    reservoir_volume_ml = Decimal3Field(read_only=True)
    performed_by = serializers.SerializerMethodField()
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Reading
        fields = [
            "id", "pump", "read_at", "reservoir_volume_ml", "eri", "performed_by", "notes", "voided_at",
            "void_reason", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_performed_by(self, reading) -> str | None:
        return _clinician(reading.performed_by, reading.performed_by_external)


# --------------------------------------------------------------------------- errors


class ErrorDetailSerializer(serializers.Serializer):
    """401, 403, 404, 409, 412, 415, 422."""

    detail = serializers.CharField()
    code = serializers.CharField()


VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "Each field (dotted for nested objects, e.g. `program.daily_dose_mcg`, or "
    "`non_field_errors`) mapped to its messages.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "example": {"performed_at": [MSG_NO_OFFSET]},
}
