"""``/api/v1/events/`` (MRI, emptied for MRI, alarm reported, withdrawal episode) and
``/api/v1/appointments/`` (with their iCalendar), and ``/api/v1/pumps/{id}/history/``:
the audit trail of a pump and its records (who, when, what changed)."""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from pumps import selectors, services
from pumps.calendar import appointment_ics
from pumps.models import Appointment, Event, Pump
from pumps.services import NOTES_MAX

from . import serializers as s
from .filters import AwareDateTimeFilter, VoidableFilterSet
from .idempotency import idempotent
from .schema import error_responses
from .views import (
    ScopedViewMixin,
    VoidMixin,
    actor_for,
    require_write,
    void_action,
    write_schema,
)

# ---------------------------------------------------------------------------- events


class EventSerializer(s.ClinicSerializer):
    occurred_at = s.ClinicDateTimeField(read_only=True)
    recorded_by = serializers.SerializerMethodField()
    voided_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = s.ClinicDateTimeField(read_only=True)
    updated_at = s.ClinicDateTimeField(read_only=True)

    class Meta:
        model = Event
        fields = ["id", "pump", "kind", "occurred_at", "notes", "recorded_by", "voided_at", "void_reason",
                  "created_at", "updated_at"]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_recorded_by(self, event) -> str | None:
        return event.recorded_by.get_username() if event.recorded_by_id else None


class EventCreateSerializer(serializers.Serializer):
    pump = s.ScopedPrimaryKeyRelatedField(queryset=Pump.objects.all())
    kind = serializers.ChoiceField(choices=Event.Kind.choices)
    occurred_at = s.ClinicDateTimeField()
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=NOTES_MAX)


class EventFilter(VoidableFilterSet):
    kind = django_filters.ChoiceFilter(choices=Event.Kind.choices)

    class Meta:
        model = Event
        fields = ["pump", "patient", "mrn", "serial_number", "kind", "updated_since", "include_voided"]


@extend_schema_view(
    list=extend_schema(summary="Events: MRI scans, emptied for MRI, alarms reported, withdrawal episodes"),
    retrieve=extend_schema(summary="An event", responses={200: EventSerializer, **error_responses(401, 404)}),
    create=write_schema(EventCreateSerializer, EventSerializer, summary="Record an event"),
)
class EventViewSet(
    VoidMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = EventSerializer
    write_serializers = {"create": EventCreateSerializer, "void": s.VoidSerializer}
    filterset_class = EventFilter
    clinic_lookup = "pump__clinic_id"

    def base_queryset(self):
        return Event.objects.select_related("pump__clinic", "recorded_by")

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pump = data.pop("pump")
        require_write(request, pump.clinic_id)
        event = services.record_event(pump=pump, actor=actor_for(request), **data)
        return self.render(event, code=status.HTTP_201_CREATED)

    void = void_action(EventSerializer)


# ---------------------------------------------------------------------- appointments


ASSIGNED_TO_HELP = (
    "Username of the staff member who does the visit: a nurse, pharmacist, prescriber or clinic administrator of the "
    "pump's clinic; null or empty for nobody. Their personal calendar feed lists it."
)


class AppointmentSerializer(s.ClinicSerializer):
    scheduled_for = s.ClinicDateTimeField(read_only=True)
    assigned_to = serializers.SerializerMethodField(help_text=ASSIGNED_TO_HELP)
    voided_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = s.ClinicDateTimeField(read_only=True)
    updated_at = s.ClinicDateTimeField(read_only=True)

    class Meta:
        model = Appointment
        fields = ["id", "pump", "scheduled_for", "kind", "status", "notes", "assigned_to", "voided_at", "void_reason",
                  "created_at", "updated_at"]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.pump.clinic

    def get_assigned_to(self, appointment) -> str | None:
        return appointment.assigned_to.get_username() if appointment.assigned_to_id else None


def _assigned_to_field():
    return serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=150,
                                 help_text=ASSIGNED_TO_HELP)


class AppointmentCreateSerializer(serializers.Serializer):
    pump = s.ScopedPrimaryKeyRelatedField(queryset=Pump.objects.all())
    scheduled_for = s.ClinicDateTimeField()
    kind = serializers.ChoiceField(choices=Appointment.Kind.choices, default=Appointment.Kind.REFILL)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=NOTES_MAX)
    assigned_to = _assigned_to_field()


class AppointmentUpdateSerializer(serializers.Serializer):
    scheduled_for = s.ClinicDateTimeField(required=False)
    status = serializers.ChoiceField(choices=Appointment.Status.choices, required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=NOTES_MAX)
    assigned_to = _assigned_to_field()


class AppointmentFilter(VoidableFilterSet):
    kind = django_filters.ChoiceFilter(choices=Appointment.Kind.choices)
    status = django_filters.ChoiceFilter(choices=Appointment.Status.choices)
    after = AwareDateTimeFilter(field_name="scheduled_for", lookup_expr="gte")
    before = AwareDateTimeFilter(field_name="scheduled_for", lookup_expr="lte")
    assigned_to = django_filters.CharFilter(field_name="assigned_to__username", help_text="Username of the assignee.")

    class Meta:
        model = Appointment
        fields = ["pump", "patient", "mrn", "serial_number", "kind", "status", "after", "before", "assigned_to",
                  "updated_since", "include_voided"]


@extend_schema_view(
    list=extend_schema(summary="Appointments (refills, replacement surgery, reviews)"),
    retrieve=extend_schema(summary="An appointment",
                           responses={200: AppointmentSerializer, **error_responses(401, 404)}),
    create=write_schema(AppointmentCreateSerializer, AppointmentSerializer, summary="Book an appointment"),
    partial_update=write_schema(
        AppointmentUpdateSerializer, AppointmentSerializer, ok=200,
        summary="Reschedule, or mark done / cancelled / missed",
    ),
)
class AppointmentViewSet(
    VoidMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = AppointmentSerializer
    write_serializers = {
        "create": AppointmentCreateSerializer, "partial_update": AppointmentUpdateSerializer,
        "void": s.VoidSerializer,
    }
    filterset_class = AppointmentFilter
    clinic_lookup = "pump__clinic_id"

    def base_queryset(self):
        return Appointment.objects.select_related("pump__clinic", "assigned_to")

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pump = data.pop("pump")
        require_write(request, pump.clinic_id)
        appointment = services.schedule_appointment(pump=pump, actor=actor_for(request), **data)
        return self.render(appointment, code=status.HTTP_201_CREATED)

    @idempotent
    def partial_update(self, request, pk=None):
        appointment = self.get_object()
        require_write(request, appointment.pump.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.update_appointment(appointment=appointment, actor=actor_for(request), **body.validated_data)
        return self.render(appointment)

    @extend_schema(summary="The appointment as iCalendar (text/calendar)",
                   responses={(200, "text/calendar"): OpenApiResponse(OpenApiTypes.BINARY),
                              **error_responses(401, 404)})
    @action(detail=True, methods=["get"], url_path="ics")
    def ics(self, request, pk=None):
        appointment = self.get_object()
        response = HttpResponse(appointment_ics(appointment), content_type="text/calendar; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="appointment-{appointment.pk}.ics"'
        return response

    void = void_action(AppointmentSerializer)


# --------------------------------------------------------------------------- history


class HistoryEntrySerializer(serializers.Serializer):
    record = serializers.CharField(
        help_text="pump, program, refill, reading, event, appointment, assessment, withdrawal_plan or comedication"
    )
    record_id = serializers.IntegerField()
    change = serializers.CharField(help_text="created, changed or deleted")
    at = serializers.DateTimeField()
    by = serializers.CharField(allow_null=True, help_text="Staff username, or null for a system or API change.")
    reason = serializers.CharField(allow_null=True)
    changes = serializers.DictField(
        child=serializers.ListField(), help_text="Field name → [old, new] (values as text)."
    )


CHANGE = {"+": "created", "~": "changed", "-": "deleted"}


#: The API's names of the audited tables of ``selectors.audit_trail``, in its order.
HISTORY_TABLES = {"Pump": "pump", "Program": "program", "Refill": "refill", "Reading": "reading", "Event": "event",
                  "Appointment": "appointment", "Assessment": "assessment", "WithdrawalPlan": "withdrawal_plan",
                  "CoMedication": "comedication"}


def pump_history(pump: Pump, limit: int = 500) -> list[dict]:
    """Every audit row of the pump and its records, newest first, with old and new values
    (the audit trail of ``selectors.audit_trail``; every editable field, by name)."""
    tz = pump.clinic.tz
    order = list(HISTORY_TABLES)
    rows = sorted(selectors.audit_trail(pump, tables=tuple(HISTORY_TABLES)),
                  key=lambda a: (order.index(a.table), a.row.id))  # stable: oldest first within a record
    entries = []
    usernames = _Usernames()
    for a in rows:
        row = a.row
        fields = sorted((f for f in row.tracked_fields if f.editable), key=lambda f: f.name)
        changes = {}
        for f, old, new in a.changes(fields):
            if f.name == "assigned_to":  # a user id: its username
                changes[f.name] = [usernames(old), usernames(new)]
            else:
                changes[f.name] = [_text(old), _text(new)]
        entries.append({
            "record": HISTORY_TABLES[a.table], "record_id": row.id,
            "change": CHANGE.get(row.history_type, row.history_type),
            "at": row.history_date.astimezone(tz),
            "by": row.history_user.get_username() if row.history_user else None,
            "reason": row.history_change_reason, "changes": changes,
        })
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]


def _text(value):
    return None if value is None else str(value)


class _Usernames:
    """User id → username, looked up once each (an appointment's assignee in the history)."""

    def __init__(self):
        self.known: dict = {}

    def __call__(self, user_id):
        if user_id is None:
            return None
        if user_id not in self.known:
            user = get_user_model().objects.filter(pk=user_id).first()
            self.known[user_id] = user.get_username() if user else str(user_id)
        return self.known[user_id]


@extend_schema(summary="Audit history of a pump and its records, newest first",
               responses={200: HistoryEntrySerializer(many=True), **error_responses(401, 404)})
class PumpHistoryView(ScopedViewMixin, generics.GenericAPIView):
    serializer_class = HistoryEntrySerializer
    pagination_class = None
    filter_backends: list = []

    def base_queryset(self):
        return Pump.objects.select_related("clinic")

    def get(self, request, pk):
        if not str(pk).isdigit() or int(pk) >= 2**63:
            raise Http404
        pump = generics.get_object_or_404(self.get_queryset(), pk=int(pk))
        return Response(HistoryEntrySerializer(pump_history(pump), many=True).data)
