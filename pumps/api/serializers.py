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

from collections import defaultdict
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
from pumps import selectors, symptom_alerts, symptoms
from pumps.formats import rfc3339
from pumps.models import (
    Alert,
    AlertKind,
    Assessment,
    DrugProduct,
    Patient,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
    Severity,
    WithdrawalPlan,
)
from pumps.services import NOTES_MAX, REASON_MAX, AssessmentInput, ProgramInput, q3

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

    def nested(self, serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
        """The serializer of a nested record, made once per serializer: making one copies
        its declared fields, which for a page of a hundred pumps cost more than rendering
        them. Its instants are in this record's clinic zone (its parent)."""
        made = self.__dict__.setdefault("_nested_serializers", {})
        if serializer_class not in made:
            made[serializer_class] = serializer_class(context=self.context)
            made[serializer_class].parent = self
        return made[serializer_class]

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


class WithdrawalPlanInputSerializer(serializers.Serializer):
    """What was done against withdrawal when delivery stops (docs/clinical-rules.md §15):
    `taper_completed`, `oral_bridge` (with `oral_bridge_dose`) or `none` (with `reason`:
    a critical withdrawal_risk alert then stays open for the clinic's withdrawal window)."""

    plan = serializers.ChoiceField(choices=WithdrawalPlan.Plan.choices)
    oral_bridge_dose = serializers.CharField(
        max_length=WithdrawalPlan._meta.get_field("oral_bridge_dose").max_length, required=False, allow_blank=True,
        default="",
        help_text="oral_bridge only: the oral baclofen dose, e.g. 10 mg four times a day.",
    )
    reason = serializers.CharField(
        max_length=REASON_MAX, required=False, allow_blank=True, default="",
        help_text="none only: why there is no plan against withdrawal.",
    )


WITHDRAWAL_PLAN_HELP = (
    "Required when delivery stops (an explant; a program of 0 mcg/day without on-demand bolus), refused "
    "otherwise: the plan against baclofen withdrawal."
)

#: The services name the plan's fields flat; the API's body nests them under withdrawal_plan.
PLAN_ERROR_FIELDS = {
    "oral_bridge_dose": "withdrawal_plan.oral_bridge_dose",
    "withdrawal_plan_reason": "withdrawal_plan.reason",
}


def plan_arguments(plan: dict | None) -> dict:
    """The services' keyword arguments of a validated ``withdrawal_plan`` object."""
    if not plan:
        return {"withdrawal_plan": None, "oral_bridge_dose": "", "withdrawal_plan_reason": ""}
    return {
        "withdrawal_plan": plan["plan"], "oral_bridge_dose": plan.get("oral_bridge_dose", ""),
        "withdrawal_plan_reason": plan.get("reason", ""),
    }


class WithdrawalPlanSerializer(ClinicSerializer):
    """The withdrawal plan recorded when delivery stopped."""

    stopped_at = ClinicDateTimeField(read_only=True, help_text="When delivery stopped (explant: the start of its day).")
    recorded_by = serializers.SerializerMethodField()
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = WithdrawalPlan
        fields = ["id", "stop", "stopped_at", "plan", "oral_bridge_dose", "reason", "recorded_by", "voided_at"]
        read_only_fields = fields

    def get_recorded_by(self, plan) -> str | None:
        return _clinician(plan.recorded_by, plan.recorded_by_external)


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
    withdrawal_plan = serializers.SerializerMethodField(
        help_text="The plan against withdrawal recorded with the explant; null while implanted."
    )

    class Meta:
        model = Pump
        fields = [
            "id", "clinic", "patient", "model", "model_name", "reservoir_ml", "volume_is", "serial_number",
            "udi", "implanted_on", "explanted_on", "explant_reason", "withdrawal_plan", "low_reservoir_alarm_ml",
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
        nested = self.nested(OpenAlertSerializer)
        return [nested.to_representation(alert) for alert in by_pump[pump.pk]]

    @extend_schema_field(WithdrawalPlanSerializer(allow_null=True))
    def get_withdrawal_plan(self, pump):
        if pump.explanted_on is None:
            return None  # no query for an implanted pump
        plans = self.context.get("explant_plans")
        if plans is None or pump.pk not in plans:  # one pump rendered alone: its own query
            plans = explant_plans([pump.pk])
        if plans.get(pump.pk) is None:
            return None
        nested = self.nested(WithdrawalPlanSerializer)
        return nested.to_representation(plans[pump.pk])


def explant_plans(pump_ids) -> dict:
    """Pump id → the live withdrawal plan of its explant, or None (one query)."""
    ids = list(pump_ids)
    plans: dict = dict.fromkeys(ids)
    if ids:
        rows = WithdrawalPlan.objects.live().filter(pump_id__in=ids, stop=WithdrawalPlan.Stop.EXPLANT)
        for plan in rows.select_related("recorded_by").order_by("stopped_at", "id"):
            plans[plan.pump_id] = plan
    return plans


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
    """The explant date (local to the clinic), why, and the plan against withdrawal."""

    explanted_on = serializers.DateField()
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    withdrawal_plan = WithdrawalPlanInputSerializer(required=False, allow_null=True, help_text=WITHDRAWAL_PLAN_HELP)


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
    comedication_confirmed = serializers.BooleanField(
        required=False, default=False,
        help_text="The prescriber confirms a dose increase while the patient takes a CNS depressant "
        "(see /comedications/): without it such an increase answers 400 on this field, naming them.",
    )
    withdrawal_plan = WithdrawalPlanInputSerializer(required=False, allow_null=True, help_text=WITHDRAWAL_PLAN_HELP)


def program_input(data: dict) -> ProgramInput:
    """The services' ``ProgramInput`` from validated program fields."""
    fields = {k: v for k, v in data.items() if k in ProgramInput.__dataclass_fields__}
    if fields.get("steps") is not None:
        fields["steps"] = [dict(step) for step in fields["steps"]]
    fields.update(plan_arguments(data.get("withdrawal_plan")))
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
    comedication_summary = serializers.CharField(
        read_only=True, help_text="The CNS depressants the prescriber confirmed the dose increase with; empty if none."
    )
    withdrawal_plan = serializers.SerializerMethodField(
        help_text="A program that stops delivery: the plan against withdrawal recorded with it; else null."
    )
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Program
        fields = [
            "id", "pump", "refill", "effective_at", "concentration_mcg_per_ml", "mode", "daily_dose_mcg",
            "steps", "ptm_bolus_mcg", "ptm_max_per_day", "daily_volume_ml", "worst_case_daily_volume_ml",
            "override_reason", "entered_by", "verified_by", "verified_at", "comedication_confirmed",
            "comedication_summary", "withdrawal_plan", "voided_at", "void_reason", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_entered_by(self, program) -> str | None:
        return _clinician(program.entered_by, program.entered_by_external)

    def get_verified_by(self, program) -> str | None:
        return _clinician(program.verified_by, program.verified_by_external)

    @extend_schema_field(WithdrawalPlanSerializer(allow_null=True))
    def get_withdrawal_plan(self, program):
        try:
            plan = program.withdrawal_plan
        except ObjectDoesNotExist:
            return None
        nested = self.nested(WithdrawalPlanSerializer)
        return nested.to_representation(plan)


class EmbeddedProgramSerializer(ProgramSerializer):
    """A refill's program: rendered in the refill's clinic zone."""

    def clinic_of(self, instance):
        return None


# ----------------------------------------------------------------------- assessments

LIMB_CODES = [code for code, _ in symptoms.LIMBS]
GRADE_CODES = [code for code, _ in symptoms.ASHWORTH_GRADES]
WITHDRAWAL_CODES = [code for code, _ in symptoms.WITHDRAWAL_SIGNS]
OVERDOSE_CODES = [code for code, _ in symptoms.OVERDOSE_SIGNS]

MSG_BAD_GRADE = f"Give a Modified Ashworth grade: {', '.join(GRADE_CODES)} (or null: not assessed)."
MSG_NOT_AN_OBJECT = "Give an object, e.g. {example}."


# A pattern, not an OpenAPI enum: drf-spectacular would name one enum per limb for one set of grades.
@extend_schema_field({
    "type": "string", "nullable": True, "example": "1+", "pattern": r"^(0|1|1\+|2|3|4)?$",
    "description": f"Modified Ashworth grade: {', '.join(GRADE_CODES)}; null: not assessed.",
})
class GradeField(serializers.Field):
    """A Modified Ashworth grade ("0", "1", "1+", "2", "3", "4"); null or "": not assessed."""

    default_error_messages = {"invalid": MSG_BAD_GRADE}

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool):
            data = str(data)
        if not isinstance(data, str):
            self.fail("invalid")
        data = data.strip()
        if data not in GRADE_CODES and data != "":
            self.fail("invalid")
        return data

    def validate_empty_values(self, data):
        if data is None:
            return True, ""
        return super().validate_empty_values(data)

    def to_representation(self, value):
        return value or None


class _KeyedSerializer(serializers.Serializer):
    """An object whose keys are codes: a key it does not know is refused on the object's field."""

    noun = "key"
    example = "{}"

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(MSG_NOT_AN_OBJECT.format(example=self.example))
        unknown = [str(key) for key in data if key not in self.fields]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown {self.noun} {', '.join(repr(key) for key in unknown)}: use {', '.join(self.fields)}."
            )
        return super().to_internal_value(data)


class AshworthSerializer(_KeyedSerializer):
    """Modified Ashworth grade of each limb; a limb left out (or null) was not assessed."""

    noun = "limb"
    example = '{"upper_left": "1+", "lower_right": "2"}'
    upper_left = GradeField(help_text="Left arm.")
    upper_right = GradeField(help_text="Right arm.")
    lower_left = GradeField(help_text="Left leg.")
    lower_right = GradeField(help_text="Right leg.")


def _sign_fields(signs) -> dict:
    return {
        code: serializers.BooleanField(required=False, default=False, help_text=words.capitalize() + ".")
        for code, words in signs
    }


WithdrawalSignsSerializer = type(
    "WithdrawalSignsSerializer", (_KeyedSerializer,), {
        "__doc__": "Each withdrawal sign of the product label, true when present; a sign left out: no.",
        "noun": "withdrawal sign", "example": '{"pruritus": true}', **_sign_fields(symptoms.WITHDRAWAL_SIGNS),
    },
)
OverdoseSignsSerializer = type(
    "OverdoseSignsSerializer", (_KeyedSerializer,), {
        "__doc__": "Each overdose sign of the product label, true when present; a sign left out: no.",
        "noun": "overdose sign", "example": '{"drowsiness": true}', **_sign_fields(symptoms.OVERDOSE_SIGNS),
    },
)


ASSESSMENT_EXAMPLE = {
    "pump": 12,
    "assessed_at": "2026-02-02T09:00:00-06:00",
    "ashworth": {"upper_left": "1", "upper_right": "1", "lower_left": "1+", "lower_right": "2"},
    "penn_spasm_frequency": 2,
    "pain_score": 3,
    "goal_note": "Walk to the mailbox with a cane.",
    "withdrawal_signs": {"pruritus": False},
    "overdose_signs": {"drowsiness": True},
    "assessed_by": "nina",
}


class AssessmentFieldsSerializer(serializers.Serializer):
    """The scores and the sign screen of a visit assessment (posted alone, or embedded in a
    refill as ``assessment``)."""

    ashworth = AshworthSerializer(required=False, help_text="Modified Ashworth grade by limb.")
    penn_spasm_frequency = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=32767, help_text="Penn Spasm Frequency Scale, 0-4."
    )
    pain_score = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=32767, help_text="Pain 0 (none) to 10 (worst)."
    )
    goal_note = serializers.CharField(
        required=False, allow_blank=True, default="",
        help_text="The patient's goal, free text (at most 1000 characters).",
    )
    withdrawal_signs = WithdrawalSignsSerializer(required=False)
    overdose_signs = OverdoseSignsSerializer(required=False)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=NOTES_MAX)
    assessed_by = serializers.CharField(
        max_length=150, required=False, allow_blank=True, allow_null=True,
        help_text="Staff username of the clinic or an external practitioner identifier (API clients). Staff "
        "signed in are the assessor: naming someone else answers 400.",
    )


def assessment_input(data: dict, *, assessed_by: str | None = None) -> AssessmentInput:
    """The services' ``AssessmentInput`` from validated assessment fields: the limbs as
    ``ashworth_<limb>`` ("" not assessed), the signs as ``withdrawal_<code>`` /
    ``overdose_<code>`` (every sign; left out: no). ``assessed_by``: who, when the body
    names nobody (a refill's performer)."""
    ashworth = data.get("ashworth") or {}
    withdrawal = data.get("withdrawal_signs") or {}
    overdose = data.get("overdose_signs") or {}
    signs = {symptoms.WITHDRAWAL_FIELD_PREFIX + c: bool(withdrawal.get(c, False)) for c in WITHDRAWAL_CODES}
    signs.update({symptoms.OVERDOSE_FIELD_PREFIX + c: bool(overdose.get(c, False)) for c in OVERDOSE_CODES})
    return AssessmentInput(
        **{f"ashworth_{limb}": ashworth.get(limb) or "" for limb in LIMB_CODES},
        penn_spasm_frequency=data.get("penn_spasm_frequency"), pain_score=data.get("pain_score"),
        goal_note=data.get("goal_note", ""), notes=data.get("notes", ""), signs=signs,
        assessed_by=data.get("assessed_by") or assessed_by,
    )


#: The services name an assessment's fields as the model does; the API's body keys them by limb and sign.
ASSESSMENT_ERROR_FIELDS = {
    **{f"ashworth_{limb}": f"ashworth.{limb}" for limb in LIMB_CODES},
    **{symptoms.WITHDRAWAL_FIELD_PREFIX + c: f"withdrawal_signs.{c}" for c in WITHDRAWAL_CODES},
    **{symptoms.OVERDOSE_FIELD_PREFIX + c: f"overdose_signs.{c}" for c in OVERDOSE_CODES},
}


class AssessmentCreateSerializer(AssessmentFieldsSerializer):
    """A visit assessment of a pump's patient at ``assessed_at``."""

    pump = ScopedPrimaryKeyRelatedField(queryset=Pump.objects.select_related("clinic", "patient"))
    assessed_at = ClinicDateTimeField()



class AssessmentAlertSerializer(ClinicSerializer):
    """An alert the assessment opened."""

    raised_at = ClinicDateTimeField(source="created_at", read_only=True)
    acknowledged_at = ClinicDateTimeField(read_only=True, allow_null=True)
    acknowledged_by = serializers.SerializerMethodField()
    resolved_at = ClinicDateTimeField(read_only=True, allow_null=True)
    state = serializers.SerializerMethodField(help_text="open, acknowledged or resolved.")

    class Meta:
        model = Alert
        fields = ["id", "kind", "severity", "state", "message", "raised_at", "acknowledged_at", "acknowledged_by",
                  "resolved_at"]
        read_only_fields = fields

    def get_acknowledged_by(self, alert) -> str | None:
        return _clinician(alert.acknowledged_by, alert.acknowledged_by_external)

    def get_state(self, alert) -> str:
        if alert.resolved_at is not None:
            return "resolved"
        return "acknowledged" if alert.acknowledged_at is not None else "open"


class AshworthScoresSerializer(serializers.Serializer):
    """The grade of each limb; null: not assessed."""

    upper_left = GradeField(source="ashworth_upper_left", read_only=True)
    upper_right = GradeField(source="ashworth_upper_right", read_only=True)
    lower_left = GradeField(source="ashworth_lower_left", read_only=True)
    lower_right = GradeField(source="ashworth_lower_right", read_only=True)


def _signs_out(name: str, prefix: str, signs) -> type[serializers.Serializer]:
    fields = {
        code: serializers.BooleanField(source=prefix + code, read_only=True, help_text=words.capitalize() + ".")
        for code, words in signs
    }
    return type(name, (serializers.Serializer,), {"__doc__": "Each sign: true when present.", **fields})


WithdrawalScreenSerializer = _signs_out("WithdrawalScreenSerializer", symptoms.WITHDRAWAL_FIELD_PREFIX,
                                        symptoms.WITHDRAWAL_SIGNS)
OverdoseScreenSerializer = _signs_out("OverdoseScreenSerializer", symptoms.OVERDOSE_FIELD_PREFIX,
                                      symptoms.OVERDOSE_SIGNS)


class AssessmentSerializer(ClinicSerializer):
    """A visit assessment, with the alerts it opened (critical ``withdrawal_symptoms`` /
    ``overdose_symptoms``, one per kind at most)."""

    patient = serializers.IntegerField(source="pump.patient_id", read_only=True)
    assessed_at = ClinicDateTimeField(read_only=True)
    assessed_by = serializers.SerializerMethodField()
    ashworth = AshworthScoresSerializer(source="*", read_only=True)
    withdrawal_signs = WithdrawalScreenSerializer(source="*", read_only=True)
    overdose_signs = OverdoseScreenSerializer(source="*", read_only=True)
    alerts = serializers.SerializerMethodField(
        help_text="The alerts this assessment opened, whatever their state now; empty when no sign was present."
    )
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Assessment
        fields = [
            "id", "pump", "patient", "refill", "assessed_at", "assessed_by", "ashworth", "penn_spasm_frequency",
            "pain_score", "goal_note", "withdrawal_signs", "overdose_signs", "notes", "alerts", "voided_at",
            "void_reason", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_assessed_by(self, assessment) -> str | None:
        return _clinician(assessment.assessed_by, assessment.assessed_by_external)

    @extend_schema_field(AssessmentAlertSerializer(many=True))
    def get_alerts(self, assessment) -> list[dict]:
        by_assessment = self.context.get("assessment_alerts")
        if by_assessment is None or assessment.pk not in by_assessment:  # rendered alone: its own query
            by_assessment = alerts_by_assessment([assessment])
        nested = self.nested(AssessmentAlertSerializer)
        return [nested.to_representation(alert) for alert in by_assessment[assessment.pk]]


class EmbeddedAssessmentSerializer(AssessmentSerializer):
    """A refill's assessment: rendered in the refill's clinic zone."""

    def clinic_of(self, instance):
        return None


def alerts_by_assessment(assessments) -> dict[int, list[Alert]]:
    """Assessment id → the alerts it opened (one query for a page)."""
    wanted = {f"{symptom_alerts.ASSESSMENT_EPISODE}{a.pk}": a for a in assessments}
    found: dict[int, list[Alert]] = defaultdict(list)
    for a in assessments:
        found[a.pk] = []
    if not wanted:
        return found
    rows = (
        Alert.objects.filter(episode__in=wanted, pump_id__in={a.pump_id for a in wanted.values()})
        .select_related("acknowledged_by")
        .order_by("kind", "id")
    )
    for alert in rows:
        assessment = wanted[alert.episode]
        if alert.pump_id == assessment.pump_id:
            found[assessment.pk].append(alert)
    return found


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
    assessment = AssessmentFieldsSerializer(
        required=False, allow_null=True,
        help_text="A visit assessment at `performed_at`, saved atomically with the refill; its assessor defaults "
        "to `performed_by`. Its errors are named `assessment.<field>`.",
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
    assessment = serializers.SerializerMethodField()
    voided_at = ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = ClinicDateTimeField(read_only=True)
    updated_at = ClinicDateTimeField(read_only=True)

    class Meta:
        model = Refill
        fields = [
            "id", "pump", "performed_at", "performed_by", "extracted_volume_ml", "added_volume_ml",
            "residual_left_ml", "bridge_bolus_ml", "volume_after_ml", "drug_product", "concentration_mcg_per_ml",
            "stability_days", "lot_number", "lot_expiry", "expected_residual_ml", "discrepancy_ml",
            "discrepancy_flagged", "refilled_after_empty", "flags", "notes", "program", "assessment", "voided_at",
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
        nested = self.nested(EmbeddedProgramSerializer)
        return nested.to_representation(program)

    @extend_schema_field(EmbeddedAssessmentSerializer(allow_null=True))
    def get_assessment(self, refill):
        try:
            assessment = refill.assessment
        except ObjectDoesNotExist:
            return None
        nested = self.nested(EmbeddedAssessmentSerializer)
        return nested.to_representation(assessment)


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
