"""``/api/v1/alerts/``: list and read alerts, ``POST /alerts/{id}/acknowledge/``.
Acknowledging stops an alert's repeats; a critical alert needs a reason (the service,
``pumps.alerting.acknowledge``, refuses without one: 400 ``{"reason": [...]}``)."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action

from pumps.alerting.acknowledge import acknowledge
from pumps.models import Alert, AlertKind, Severity
from pumps.services import clinician_for, resolve_clinician

from . import serializers as s
from .filters import AwareDateTimeFilter, CommaChoicesFilter, IdFilter
from .idempotency import idempotent
from .views import ScopedViewMixin, _errors, actor_for, require_write, write_schema


class AlertSerializer(s.ClinicSerializer):
    """One alert: one per (pump, kind, episode)."""

    clinic = serializers.SlugRelatedField(slug_field="code", read_only=True)
    patient = serializers.SerializerMethodField()
    due_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    created_at = s.ClinicDateTimeField(read_only=True)
    acknowledged_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    acknowledged_by = serializers.SerializerMethodField()
    acknowledgement_reason = serializers.CharField(
        read_only=True, help_text="Why it was acknowledged (required for critical alerts); empty if not given."
    )
    resolved_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    escalated_at = s.ClinicDateTimeField(read_only=True, allow_null=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = [
            "id", "clinic", "pump", "patient", "kind", "severity", "episode", "state", "message", "due_at",
            "created_at", "acknowledged_at", "acknowledged_by", "acknowledgement_reason", "resolved_at", "resolution",
            "escalated_at", "repeat_count",
        ]
        read_only_fields = fields

    def clinic_of(self, instance):
        return instance.clinic

    def get_patient(self, alert) -> int | None:
        return alert.pump.patient_id if alert.pump_id else None

    def get_acknowledged_by(self, alert) -> str | None:
        return s._clinician(alert.acknowledged_by, alert.acknowledged_by_external)

    def get_state(self, alert) -> str:
        """open, acknowledged or resolved."""
        if alert.resolved_at is not None:
            return "resolved"
        return "acknowledged" if alert.acknowledged_at is not None else "open"


class AcknowledgeSerializer(serializers.Serializer):
    """Who acknowledged and why: staff signed in acknowledge as themselves; an API client
    names the clinician, or is recorded as itself."""

    acknowledged_by = serializers.CharField(
        required=False, allow_blank=True, max_length=100,
        help_text="API clients: the clinician who acknowledged, a staff username of the clinic or an external "
        "practitioner identifier (default: the API client itself). Staff signed in acknowledge as themselves: "
        "naming someone else answers 400.",
    )
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=s.REASON_MAX, default="",
        help_text="Why the alert can be silenced (what was done, or why it can wait). Required for critical "
        "alerts (low_reservoir, withdrawal_risk, post_mri_check, alerting_stalled, and drug_expired once "
        "critical): without it, 400 {\"reason\": [...]}.",
    )


class AlertFilter(django_filters.FilterSet):
    pump = IdFilter(field_name="pump_id")
    patient = IdFilter(field_name="pump__patient_id")
    kind = CommaChoicesFilter(field_name="kind", values=AlertKind.values, noun="kind")
    severity = CommaChoicesFilter(field_name="severity", values=Severity.values, noun="severity")
    state = django_filters.ChoiceFilter(
        method="_state", choices=[("open", "open"), ("acknowledged", "acknowledged"), ("resolved", "resolved")],
    )
    created_since = AwareDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Alert
        fields = ["pump", "patient", "kind", "severity", "state", "created_since"]

    def _state(self, queryset, name, value):
        if value == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        queryset = queryset.filter(resolved_at__isnull=True)
        return queryset.filter(acknowledged_at__isnull=(value == "open"))


@extend_schema_view(
    list=extend_schema(summary="Alerts of the caller's clinics, newest first"),
    retrieve=extend_schema(summary="An alert", responses={200: AlertSerializer, **_errors(401, 404)}),
)
class AlertViewSet(ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = AlertSerializer
    write_serializers = {"acknowledge": AcknowledgeSerializer}
    filterset_class = AlertFilter
    access_kind = "alert"

    def base_queryset(self):
        return Alert.objects.select_related("clinic", "pump", "acknowledged_by").order_by("-created_at", "-id")

    @write_schema(AcknowledgeSerializer, AlertSerializer, ok=200, codes=(400, 401, 403, 404, 415, 422),
                  summary="Acknowledge an alert with a reason (required for critical alerts): its repeats stop")
    @action(detail=True, methods=["post"])
    @idempotent
    def acknowledge(self, request, pk=None):
        alert = self.get_object()
        require_write(request, alert.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        named = body.validated_data.get("acknowledged_by")
        actor = actor_for(request)
        if actor.client is not None:
            user, external = resolve_clinician(alert.clinic, named)
            if user is None and not external:
                external = actor.label
        else:  # signed in: as themselves; naming someone else is a 400 on acknowledged_by
            user, external = clinician_for(actor, alert.clinic, "acknowledged_by", named)
        acknowledge(alert, user=user, external=external, reason=body.validated_data["reason"])
        return self.render(alert)
