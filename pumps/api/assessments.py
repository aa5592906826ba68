"""``/api/v1/assessments/`` (visit assessments: Modified Ashworth per limb, Penn spasm
frequency, pain, goal, and the yes/no screen of each withdrawal and overdose sign) and
``/api/v1/comedications/`` (a patient's CNS depressants), docs/clinical-rules.md §15.

The body keys the scores by limb and the signs by their codes (``pumps.symptoms``):
``{"ashworth": {"upper_left": "1+"}, "withdrawal_signs": {"pruritus": true}}``. A sign left
out is answered no; an unknown limb or sign is refused on its field. Any sign answered yes
opens a critical alert (``withdrawal_symptoms`` / ``overdose_symptoms``) for the
assessment, exactly once: the response lists the alerts the assessment opened. The
serializers of an assessment are in ``serializers`` (a refill embeds one).
"""

from __future__ import annotations

import django_filters
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action

from pumps import projection as pj
from pumps import services
from pumps.models import Assessment, CoMedication, Patient

from . import serializers as s
from .errors import body_field_names
from .filters import AwareDateTimeFilter, IdFilter, VoidableFilterSet
from .idempotency import idempotent
from .schema import error_responses
from .views import (
    ScopedViewMixin,
    VoidMixin,
    actor_for,
    if_match_version,
    require_write,
    void_action,
    write_schema,
)

# ------------------------------------------------------------------------- filters


class AssessmentFilter(VoidableFilterSet):
    since = AwareDateTimeFilter(field_name="assessed_at", lookup_expr="gte", help_text="Assessed at or after.")
    before = AwareDateTimeFilter(field_name="assessed_at", lookup_expr="lte", help_text="Assessed at or before.")

    class Meta:
        model = Assessment
        fields = ["pump", "patient", "mrn", "serial_number", "since", "before", "updated_since", "include_voided"]


# -------------------------------------------------------------------------- views


ASSESSMENT_EXAMPLES = [
    OpenApiExample(
        "A visit assessment with an overdose sign", request_only=True, value=s.ASSESSMENT_EXAMPLE,
        description="Signs left out are answered no; limbs left out were not assessed.",
    ),
]


@extend_schema_view(
    list=extend_schema(summary="Visit assessments (spasticity scores and the withdrawal / overdose sign screen)"),
    retrieve=extend_schema(
        summary="A visit assessment", responses={200: s.AssessmentSerializer, **error_responses(401, 404)}
    ),
)
class AssessmentViewSet(
    VoidMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = s.AssessmentSerializer
    write_serializers = {"create": s.AssessmentCreateSerializer, "void": s.VoidSerializer}
    filterset_class = AssessmentFilter
    clinic_lookup = "pump__clinic_id"
    assessment_alerts: dict | None = None

    def base_queryset(self):
        return Assessment.objects.select_related("pump__clinic", "assessed_by")

    def prepare_page(self, records):
        self.assessment_alerts = s.alerts_by_assessment(records)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.assessment_alerts is not None:
            context["assessment_alerts"] = self.assessment_alerts
        return context

    @extend_schema(examples=ASSESSMENT_EXAMPLES)
    @write_schema(
        s.AssessmentCreateSerializer, s.AssessmentSerializer, if_match=True,
        codes=(400, 401, 403, 404, 412, 415, 422),
        summary="Record a visit assessment; a sign answered yes opens a critical alert at once",
    )
    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pump, assessed_at = data.pop("pump"), data.pop("assessed_at")
        require_write(request, pump.clinic_id)
        with body_field_names(s.ASSESSMENT_ERROR_FIELDS):
            assessment = services.record_assessment(
                pump=pump, assessed_at=assessed_at, data=s.assessment_input(data), actor=actor_for(request),
                if_match=if_match_version(request),
            )
        return self.render(assessment, code=status.HTTP_201_CREATED)

    void = void_action(s.AssessmentSerializer)


# ------------------------------------------------------------------ co-medication


class CoMedicationSerializer(s.ClinicSerializer):
    """A CNS depressant the patient takes besides the pump: active from ``started_on``
    until ``stopped_on`` (inclusive; open when null)."""

    patient = serializers.IntegerField(source="patient_id", read_only=True)
    category = serializers.ChoiceField(choices=CoMedication.Category.choices, read_only=True)
    active = serializers.SerializerMethodField(help_text="Taken today (in the clinic's zone) and not voided.")
    recorded_by = serializers.SerializerMethodField()
    voided_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = s.ClinicDateTimeField(read_only=True)
    updated_at = s.ClinicDateTimeField(read_only=True)

    class Meta:
        model = CoMedication
        fields = [
            "id", "patient", "name", "category", "started_on", "stopped_on", "active", "notes", "recorded_by",
            "voided_at", "void_reason", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.patient.clinic

    def get_active(self, comedication) -> bool:
        today = self.context.get("today") or {}
        clinic = comedication.patient.clinic
        if clinic.pk not in today:
            today[clinic.pk] = local_today(clinic)
            self.context["today"] = today
        return comedication.is_active_on(today[clinic.pk])

    def get_recorded_by(self, comedication) -> str | None:
        return s._clinician(comedication.recorded_by, comedication.recorded_by_external)


def local_today(clinic):
    return pj.local_date(timezone.now(), clinic.tz)


class CoMedicationFilter(django_filters.FilterSet):
    patient = IdFilter(field_name="patient_id")
    mrn = django_filters.CharFilter(field_name="patient__mrn", help_text="The patient's MRN.")
    category = django_filters.ChoiceFilter(choices=CoMedication.Category.choices)
    updated_since = AwareDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    include_voided = django_filters.BooleanFilter(
        method="_include_voided", help_text="Also list voided records (default: live records only)."
    )

    class Meta:
        model = CoMedication
        fields = ["patient", "mrn", "category", "updated_since", "include_voided"]

    def _include_voided(self, queryset, name, value):
        return queryset  # applied in filter_queryset, also when the parameter is absent

    def filter_queryset(self, queryset):
        if not self.form.cleaned_data.get("include_voided"):
            queryset = queryset.filter(voided_at__isnull=True)
        return super().filter_queryset(queryset)


class CoMedicationCreateSerializer(serializers.Serializer):
    """A CNS depressant the patient takes: active from `started_on` to `stopped_on` (inclusive; open when absent)."""

    patient = s.ScopedPrimaryKeyRelatedField(queryset=Patient.objects.select_related("clinic"))
    name = serializers.CharField(
        max_length=CoMedication._meta.get_field("name").max_length,
        help_text="Drug and dose as prescribed, e.g. oxycodone 10 mg twice a day.",
    )
    category = serializers.ChoiceField(choices=CoMedication.Category.choices)
    started_on = serializers.DateField()
    stopped_on = serializers.DateField(required=False, allow_null=True)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=s.NOTES_MAX)


class CoMedicationStopSerializer(serializers.Serializer):
    """The patient's last day of it (inclusive)."""

    stopped_on = serializers.DateField()


@extend_schema_view(
    list=extend_schema(summary="Co-medication: the CNS depressants of the caller's clinics' patients"),
    retrieve=extend_schema(
        summary="A co-medication", responses={200: CoMedicationSerializer, **error_responses(401, 404)}
    ),
    create=[extend_schema(examples=[OpenApiExample(
        "An opioid taken since January", request_only=True,
        value={"patient": 7, "name": "oxycodone 10 mg twice a day", "category": "opioid", "started_on": "2026-01-20"},
    )]), write_schema(CoMedicationCreateSerializer, CoMedicationSerializer,
                     summary="Record a CNS depressant a patient takes")],
    partial_update=write_schema(
        CoMedicationStopSerializer, CoMedicationSerializer, ok=200,
        summary="Stop it: the patient's last day of it (stopped_on)",
    ),
)
class CoMedicationViewSet(ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = CoMedicationSerializer
    write_serializers = {
        "create": CoMedicationCreateSerializer, "partial_update": CoMedicationStopSerializer,
        "void": s.VoidSerializer,
    }
    filterset_class = CoMedicationFilter
    clinic_lookup = "patient__clinic_id"
    access_kind = "patient_record"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def base_queryset(self):
        return CoMedication.objects.select_related("patient__clinic", "recorded_by")

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        patient = data.pop("patient")
        require_write(request, patient.clinic_id)
        comedication = services.record_comedication(patient=patient, actor=actor_for(request), **data)
        return self.render(comedication, code=status.HTTP_201_CREATED)

    @idempotent
    def partial_update(self, request, pk=None):
        comedication = self.get_object()
        require_write(request, comedication.patient.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.stop_comedication(
            comedication=comedication, stopped_on=body.validated_data["stopped_on"], actor=actor_for(request)
        )
        return self.render(comedication)

    @write_schema(s.VoidSerializer, CoMedicationSerializer, ok=200, codes=(400, 401, 403, 404, 415, 422),
                  summary="Void a co-medication recorded in error (it stays in the history)")
    @action(detail=True, methods=["post"])
    @idempotent
    def void(self, request, pk=None):
        comedication = self.get_object()
        require_write(request, comedication.patient.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.void_comedication(
            comedication=comedication, reason=body.validated_data["reason"], actor=actor_for(request)
        )
        return self.render(comedication)
