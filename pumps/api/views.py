"""REST API views. Thin: parse with a serializer, call the service with the actor, render
what was saved. Reads go through querysets scoped to the caller's clinics, so another
clinic's record answers 404 and cannot be named in a write.

Who may write is decided by the services (``clinic.permissions``, the one rule set): a
read-write API client anything in its clinic, naming the clinician in ``performed_by`` /
``entered_by`` / ``verified_by`` (a staff username of the clinic holding the role the
action needs, or an external practitioner id); staff signed in with a session act as
themselves, according to their role in the record's clinic (only a prescriber enters,
verifies or voids a program). A service's refusal answers 403 (``Forbidden``) or 400 on
the named field. The views refuse only a read-only token or a caller who may record
nothing in the clinic (a viewer) early, before the body is parsed.
"""

from __future__ import annotations

import codecs
import json
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.utils.json import strict_constant

from clinic import permissions
from clinic.auth import (
    api_client_of,
    can_write_clinic,
    detach_principal,
    visible_clinic_ids,
    writable_clinic_ids,
)
from clinic.models import Clinic
from pumps import selectors, services, tallies
from pumps.access import record_patient_access
from pumps.models import Appointment, Patient, Program, Pump, Reading, Refill

from . import filters
from . import serializers as s
from .access_log import record_list_access
from .errors import body_field_names, prefixed
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import idempotent
from .pagination import TalliedPagination
from .projection_at import project_at
from .schema import error_responses

# ------------------------------------------------------------------------ plumbing


class DecimalJSONParser(JSONParser):
    """JSON numbers with a fraction become ``Decimal`` (never a binary float)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.load(codecs.getreader(encoding)(stream), parse_float=Decimal, parse_constant=strict_constant)
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None
        _reject_unstorable_text(data)
        return data


MAX_JSON_DEPTH = 32


def _reject_unstorable_text(data) -> None:
    """NUL characters and lone surrogates cannot be stored (PostgreSQL text is UTF-8
    without NUL): refuse them at the door rather than fail at the database. No request of
    this API nests deeper than a few levels: refuse absurd nesting too. Iterative, so a
    deep document cannot exhaust the stack here."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, str):
            if "\x00" in value:
                raise exceptions.ParseError("JSON parse error - strings must not contain NUL (\\u0000) characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise exceptions.ParseError("JSON parse error - strings must not contain lone surrogates") from None
        elif isinstance(value, dict):
            stack.extend((key, depth + 1) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def actor_for(request) -> services.Actor:
    """A token acts as its API client (it may name the clinician who acted); a session as
    the signed-in user."""
    client = api_client_of(request)
    if client is not None:
        return services.Actor(None, f"api client {client.name}", client)
    return services.Actor(request.user, "")


def if_match_version(request) -> int | None:
    """The pump version a client sent in ``If-Match``: ``3``, ``"3"`` or ``W/"3"``; ``*``
    or no header: no precondition."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit():
        raise exceptions.ValidationError(
            {"If-Match": ['Send the pump\'s version (its ETag), for example 3 or "3".']}
        )
    return int(value)


def require_write(request, clinic_id: int) -> None:
    """403 before the body is parsed for a read-only token or a caller who may record
    nothing in the clinic (a viewer). Finer rules (who enters a program) are the
    services'."""
    if not can_write_clinic(request, clinic_id):
        raise exceptions.PermissionDenied(permissions.MESSAGES[permissions.Action.RECORD])


def require_version(pump_id: int, version: int | None) -> None:
    """``If-Match`` for the services that take none (void, verify): lock the pump row and
    compare, inside the caller's transaction, before the service locks it again."""
    if version is None:
        return
    current = Pump.objects.select_for_update().values_list("version", flat=True).get(pk=pump_id)
    if current != version:
        raise services.PreconditionFailed(
            f"The pump changed meanwhile (version {current}, not {version}): reload it and try again."
        )


def etag(version: int) -> str:
    return f'"{version}"'


IDEMPOTENCY_PARAM = OpenApiParameter(
    IDEMPOTENCY_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="API clients: retry safely. The first success is replayed for 24 h; the same key with "
    "another body or endpoint answers 422.",
)
IF_MATCH_PARAM = OpenApiParameter(
    "If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="The pump's `version` (its ETag), e.g. 3 or \"3\": 412 when the pump changed meanwhile.",
)


def write_schema(request, response, *, codes=(400, 401, 403, 404, 415, 422), if_match=False, summary="", ok=201):
    params = [IDEMPOTENCY_PARAM] + ([IF_MATCH_PARAM] if if_match else [])
    return extend_schema(
        request=request, responses={ok: response, **error_responses(*codes)}, parameters=params, summary=summary
    )


class ScopedViewMixin:
    """Querysets limited to the caller's clinics; filters apply to lists only."""

    parser_classes = [DecimalJSONParser]
    clinic_lookup = "clinic_id"
    #: the request serializer of each write action; ``serializer_class`` renders records
    write_serializers: dict = {"void": s.VoidSerializer}

    def get_serializer_class(self):
        return self.write_serializers.get(getattr(self, "action", None), self.serializer_class)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        detach_principal(request)

    def base_queryset(self):
        raise TypeError(f"{type(self).__name__} must define base_queryset()")

    def get_queryset(self):
        queryset = self.base_queryset()
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        ids = self.visible_ids = visible_clinic_ids(self.request)
        return queryset if ids is None else queryset.filter(**{f"{self.clinic_lookup}__in": ids})

    def filter_queryset(self, queryset):
        if getattr(self, "action", "list") != "list":
            return queryset
        return super().filter_queryset(queryset)

    #: where a listed record's patient is, for the access log (``access_log.patients_of``);
    #: None: the list shows no patient data
    access_kind: str | None = "pump_record"

    def list(self, request, *args, **kwargs):
        """A page of records; its patients are logged as read (one INSERT)."""
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        records = list(page if page is not None else queryset)
        self.prepare_page(records)
        data = self.get_serializer(records, many=True).data
        if self.access_kind is not None:
            record_list_access(request, records, self.access_kind, "api")
        return self.get_paginated_response(data) if page is not None else Response(data)

    def prepare_page(self, records: list) -> None:
        """Load what the page's rows need beyond their queryset (one query, not one per row)."""

    def render(self, instance, *, code=status.HTTP_200_OK, serializer_class=None, headers=None):
        """Render a saved record as the list and detail endpoints do (same queryset)."""
        fresh = self.get_queryset().get(pk=instance.pk)
        data = (serializer_class or self.serializer_class)(fresh, context=self.get_serializer_context()).data
        headers = dict(headers or {})
        if code == status.HTTP_201_CREATED:
            headers["Location"] = reverse(f"{self.basename}-detail", args=[fresh.pk], request=self.request)
        return Response(data, status=code, headers=headers)


class PumpRowsMixin:
    """Lists of pumps (pumps, the worklist): every row's open alerts in one query."""

    access_kind = "pump"
    open_alerts: dict | None = None

    explant_plans: dict | None = None

    def prepare_page(self, records):
        self.open_alerts = selectors.open_alerts_by_pump(pump.pk for pump in records)
        explanted = [pump.pk for pump in records if pump.explanted_on is not None]
        self.explant_plans = s.explant_plans(explanted) if explanted else None  # no query for implanted pumps

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.open_alerts is not None:
            context["open_alerts"] = self.open_alerts
        if self.explant_plans is not None:
            context["explant_plans"] = self.explant_plans
        return context


class VoidMixin:
    """``POST /<resource>/{id}/void/ {reason}``: the record stays, out of every projection."""

    @idempotent
    def _void(self, request, pk=None):
        record = self.get_object()
        require_write(request, record.pump.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = if_match_version(request)
        with transaction.atomic():
            require_version(record.pump_id, version)
            services.void_record(record=record, reason=body.validated_data["reason"], actor=actor_for(request))
        return self.render(record)


def void_action(serializer_class):
    """A ``void`` action of its own for each resource (its schema names its serializer)."""

    def void(self, request, pk=None):
        return self._void(request, pk)

    return write_schema(
        s.VoidSerializer, serializer_class, codes=(400, 401, 403, 404, 412, 415, 422), if_match=True, ok=200,
        summary="Void the record with a reason (it stays in the history, out of the projection)",
    )(action(detail=True, methods=["post"])(void))


# ------------------------------------------------------------------------- patients


@extend_schema_view(
    list=extend_schema(summary="Patients of the caller's clinics"),
    retrieve=extend_schema(summary="A patient", responses={200: s.PatientSerializer, **error_responses(401, 404)}),
    create=write_schema(s.PatientWriteSerializer, s.PatientSerializer, summary="Register a patient"),
    partial_update=write_schema(
        s.PatientWriteSerializer, s.PatientSerializer, ok=200, summary="Change a patient's details"
    ),
)
class PatientViewSet(ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.PatientSerializer
    write_serializers = {"create": s.PatientWriteSerializer, "partial_update": s.PatientWriteSerializer}
    filterset_class = filters.PatientFilter
    http_method_names = ["get", "post", "patch", "head", "options"]
    access_kind = "patient"

    def base_queryset(self):
        return Patient.objects.select_related("clinic")

    def retrieve(self, request, pk=None):
        patient = self.get_object()
        record_patient_access(request, patient, "api")
        return Response(self.get_serializer(patient).data)

    def _clinic_for_create(self, request, named):
        if named is not None:
            require_write(request, named.pk)
            return named
        client = api_client_of(request)
        if client is not None:
            return client.clinic
        writable = writable_clinic_ids(request)
        if writable is not None and len(writable) == 1:
            return Clinic.objects.get(pk=writable[0])
        raise exceptions.ValidationError({"clinic": ["Name the clinic (its code): you may record in several clinics."]})

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        clinic = self._clinic_for_create(request, data.pop("clinic", None))
        patient = services.create_patient(clinic=clinic, actor=actor_for(request), **data)
        return self.render(patient, code=status.HTTP_201_CREATED)

    @idempotent
    def partial_update(self, request, pk=None):
        patient = self.get_object()
        require_write(request, patient.clinic_id)
        body = self.get_serializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if "clinic" in data:
            raise exceptions.ValidationError({"clinic": ["A patient cannot move to another clinic."]})
        services.update_patient(patient=patient, actor=actor_for(request), **data)
        return self.render(patient)


# ---------------------------------------------------------------------------- pumps


@extend_schema_view(
    list=extend_schema(summary="Pumps (implants) of the caller's clinics, with their stored projection"),
    retrieve=extend_schema(
        summary="A pump; the ETag header carries its version",
        responses={200: s.PumpSerializer, **error_responses(401, 404)},
    ),
    create=write_schema(s.PumpCreateSerializer, s.PumpSerializer, summary="Record an implant"),
    partial_update=write_schema(
        s.PumpUpdateSerializer, s.PumpSerializer, ok=200, if_match=True,
        codes=(400, 401, 403, 404, 412, 415, 422), summary="Change the alarm volume, serial number or UDI",
    ),
)
class PumpViewSet(
    PumpRowsMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = s.PumpSerializer
    write_serializers = {
        "create": s.PumpCreateSerializer, "partial_update": s.PumpUpdateSerializer, "explant": s.ExplantSerializer,
    }
    filterset_class = filters.PumpFilter
    http_method_names = ["get", "post", "patch", "head", "options"]

    def base_queryset(self):
        return Pump.objects.select_related("clinic", "patient", "model")

    def render(self, instance, **kwargs):
        response = super().render(instance, **kwargs)
        response["ETag"] = etag(response.data["version"])
        return response

    def retrieve(self, request, pk=None):
        pump = self.get_object()
        return Response(self.get_serializer(pump).data, headers={"ETag": etag(pump.version)})

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        require_write(request, data["patient"].clinic_id)
        pump = services.implant_pump(
            patient=data["patient"], model=data["model"], serial_number=data["serial_number"],
            implanted_on=data["implanted_on"], low_reservoir_alarm_ml=data.get("low_reservoir_alarm_ml"),
            udi=data.get("udi", ""), actor=actor_for(request),
        )
        return self.render(pump, code=status.HTTP_201_CREATED)

    @idempotent
    def partial_update(self, request, pk=None):
        pump = self.get_object()
        require_write(request, pump.clinic_id)
        body = self.get_serializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.update_pump(
            pump=pump, actor=actor_for(request), if_match=if_match_version(request), **body.validated_data
        )
        return self.render(pump)

    @extend_schema(examples=[
        OpenApiExample("Explant after a completed taper", request_only=True, value={
            "explanted_on": "2026-03-30", "reason": "infection", "withdrawal_plan": {"plan": "taper_completed"},
        }),
        OpenApiExample("Explant with an oral baclofen bridge", request_only=True, value={
            "explanted_on": "2026-03-30", "reason": "infection",
            "withdrawal_plan": {"plan": "oral_bridge", "oral_bridge_dose": "10 mg four times a day"},
        }),
    ])
    @write_schema(
        s.ExplantSerializer, s.PumpSerializer, ok=200, if_match=True, codes=(400, 401, 403, 404, 412, 415, 422),
        summary="Record the explant of the pump, with the plan against withdrawal",
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def explant(self, request, pk=None):
        pump = self.get_object()
        require_write(request, pump.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        with body_field_names(s.PLAN_ERROR_FIELDS):
            services.explant_pump(
                pump=pump, explanted_on=body.validated_data["explanted_on"], reason=body.validated_data["reason"],
                actor=actor_for(request), if_match=if_match_version(request),
                **s.plan_arguments(body.validated_data.get("withdrawal_plan")),
            )
        return self.render(pump)

    @extend_schema(
        summary="The reservoir projection of the pump as of an instant, with its status in words",
        parameters=[
            OpenApiParameter(
                "at", OpenApiTypes.DATETIME, OpenApiParameter.QUERY, required=False,
                description="ISO 8601 with an offset (Z allowed), years 1900 to 2999; default now. Before the "
                "pump's explant date it is projected from its records up to `at`; on or after it, `inactive`.",
            )
        ],
        responses={200: s.ProjectionSerializer, **error_responses(400, 401, 404)},
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def projection(self, request, pk=None):
        pump = self.get_object()
        raw = request.query_params.get("at")
        if raw in (None, ""):
            at = timezone.now()
        else:
            try:
                at = s.parse_aware_datetime(raw)
            except exceptions.ValidationError as exc:
                raise exceptions.ValidationError({"at": exc.detail}) from None
        return Response(s.ProjectionSerializer(project_at(pump, at)).data)


# ------------------------------------------------------------------------- worklist


@extend_schema(
    summary="Implanted pumps of the caller's clinics, most urgent first",
    description="Sorted by stored status (empty, alarm, overdue, due_soon, ok, incomplete, inactive), then "
    "by refill due date, earliest first, then by low-reservoir alarm instant (the staff worklist's order, "
    "read from an index: a page costs the same with 100 pumps or 100,000).",
)
class WorklistView(PumpRowsMixin, ScopedViewMixin, generics.ListAPIView):
    serializer_class = s.WorklistSerializer
    filterset_class = filters.WorklistFilter
    pagination_class = TalliedPagination

    def tallied_count(self) -> int | None:
        """The number of pumps listed, from the status tally (one small sum, whatever the
        number of pumps) when the only filters are the stored status and the clinic, which
        the tally counts by; None (count the rows) for any other filter."""
        filterset = self.filterset_class(self.request.query_params, queryset=Pump.objects.none())
        if not filterset.is_valid():
            return None
        used = {name: value for name, value in filterset.form.cleaned_data.items() if value not in (None, "", [])}
        if set(used) - {"status", "clinic"}:
            return None
        clinics = Clinic.objects.all() if self.visible_ids is None else Clinic.objects.filter(pk__in=self.visible_ids)
        if "clinic" in used:
            clinics = clinics.filter(code=used["clinic"])
        counts = tallies.counts(clinics.values("id"))
        return sum(counts[status] for status in set(used.get("status") or counts))

    def base_queryset(self):
        next_appointment = (
            Appointment.objects.filter(
                pump=OuterRef("pk"), status=Appointment.Status.SCHEDULED, voided_at__isnull=True,
                scheduled_for__gte=timezone.now(),
            )
            .order_by("scheduled_for")
            .values("scheduled_for")[:1]
        )
        return (
            Pump.objects.filter(explanted_on__isnull=True)
            .select_related("clinic", "patient", "model")
            .annotate(next_appointment_at=Subquery(next_appointment))
            .order_by(*selectors.WORKLIST_ORDER)
        )


# ------------------------------------------------------------------------- programs


@extend_schema_view(
    list=extend_schema(summary="Programs (what each pump delivers, from an instant)"),
    retrieve=extend_schema(summary="A program", responses={200: s.ProgramSerializer, **error_responses(401, 404)}),
    create=[extend_schema(examples=[
        OpenApiExample("A dose increase confirmed against the co-medication", request_only=True, value={
            "pump": 12, "effective_at": "2026-02-10T09:00:00-06:00", "concentration_mcg_per_ml": "1000",
            "mode": "continuous", "daily_dose_mcg": "495", "comedication_confirmed": True,
        }),
        OpenApiExample("A program that stops delivery, with no plan and its reason", request_only=True, value={
            "pump": 12, "effective_at": "2026-02-10T09:00:00-06:00", "concentration_mcg_per_ml": "1000",
            "mode": "continuous", "daily_dose_mcg": "0", "override_reason": "pump to be explanted",
            "withdrawal_plan": {"plan": "none", "reason": "the family declined an oral bridge"},
        }),
    ]), write_schema(
        s.ProgramCreateSerializer, s.ProgramSerializer, if_match=True,
        codes=(400, 401, 403, 404, 412, 415, 422), summary="Record a program change (prescribers)",
    )],
)
class ProgramViewSet(
    VoidMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = s.ProgramSerializer
    write_serializers = {"create": s.ProgramCreateSerializer, "verify": s.VerifySerializer, "void": s.VoidSerializer}
    filterset_class = filters.ProgramFilter
    clinic_lookup = "pump__clinic_id"

    def base_queryset(self):
        return Program.objects.select_related(
            "pump__clinic", "entered_by", "verified_by", "withdrawal_plan__recorded_by"
        )

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pump, effective_at = data.pop("pump"), data.pop("effective_at")
        require_write(request, pump.clinic_id)
        with body_field_names(s.PLAN_ERROR_FIELDS):
            program = services.record_program(
                pump=pump, effective_at=effective_at, data=s.program_input(data), actor=actor_for(request),
                if_match=if_match_version(request),
            )
        return self.render(program, code=status.HTTP_201_CREATED)

    @write_schema(
        s.VerifySerializer, s.ProgramSerializer, ok=200, if_match=True, codes=(400, 401, 403, 404, 412, 415, 422),
        summary="A second clinician verifies the program",
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def verify(self, request, pk=None):
        program = self.get_object()
        require_write(request, program.pump.clinic_id)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = if_match_version(request)
        with transaction.atomic():
            require_version(program.pump_id, version)
            services.verify_program(
                program=program, verified_by=body.validated_data.get("verified_by"), actor=actor_for(request)
            )
        return self.render(program)

    void = void_action(s.ProgramSerializer)


# -------------------------------------------------------------------------- refills


@extend_schema_view(
    list=extend_schema(summary="Refills, with their residual checks"),
    retrieve=extend_schema(summary="A refill", responses={200: s.RefillSerializer, **error_responses(401, 404)}),
    create=write_schema(
        s.RefillCreateSerializer, s.RefillSerializer, if_match=True,
        codes=(400, 401, 403, 404, 409, 412, 415, 422),
        summary="Record a refill, optionally with a new program taking effect at the same instant",
    ),
)
class RefillViewSet(
    VoidMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = s.RefillSerializer
    write_serializers = {"create": s.RefillCreateSerializer, "void": s.VoidSerializer}
    filterset_class = filters.RefillFilter
    clinic_lookup = "pump__clinic_id"

    assessment_alerts: dict | None = None

    def base_queryset(self):
        return Refill.objects.select_related(
            "pump__clinic", "performed_by", "drug_product", "program__entered_by", "program__verified_by",
            "program__withdrawal_plan__recorded_by", "assessment__assessed_by",
        )

    def prepare_page(self, records):
        """The alerts of the page's assessments (one query)."""
        self.assessment_alerts = s.alerts_by_assessment(
            [refill.assessment for refill in records if _assessment_of(refill) is not None]
        )

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.assessment_alerts is not None:
            context["assessment_alerts"] = self.assessment_alerts
        return context

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pump, program, assessment = data.pop("pump"), data.pop("program", None), data.pop("assessment", None)
        require_write(request, pump.clinic_id)
        with body_field_names(REFILL_ERROR_FIELDS):
            refill = services.record_refill(
                pump=pump, program=s.program_input(program) if program is not None else None,
                assessment=(
                    s.assessment_input(assessment, assessed_by=data.get("performed_by"))
                    if assessment is not None else None
                ),
                actor=actor_for(request), if_match=if_match_version(request), **data,
            )
        return self.render(refill, code=status.HTTP_201_CREATED)

    void = void_action(s.RefillSerializer)


REFILL_ERROR_FIELDS = {
    **prefixed(s.PLAN_ERROR_FIELDS, "program."),
    **prefixed(s.ASSESSMENT_ERROR_FIELDS, "assessment."),
}


def _assessment_of(refill: Refill):
    try:
        return refill.assessment
    except ObjectDoesNotExist:
        return None


# ------------------------------------------------------------------------- readings


@extend_schema_view(
    list=extend_schema(summary="Readings (pump interrogations)"),
    retrieve=extend_schema(summary="A reading", responses={200: s.ReadingSerializer, **error_responses(401, 404)}),
    create=write_schema(
        s.ReadingCreateSerializer, s.ReadingSerializer, if_match=True,
        codes=(400, 401, 403, 404, 412, 415, 422), summary="Record a pump interrogation",
    ),
)
class ReadingViewSet(
    VoidMixin, ScopedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = s.ReadingSerializer
    write_serializers = {"create": s.ReadingCreateSerializer, "void": s.VoidSerializer}
    filterset_class = filters.ReadingFilter
    clinic_lookup = "pump__clinic_id"

    def base_queryset(self):
        return Reading.objects.select_related("pump__clinic", "performed_by")

    @idempotent
    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pump = data.pop("pump")
        require_write(request, pump.clinic_id)
        reading = services.record_reading(
            pump=pump, actor=actor_for(request), if_match=if_match_version(request), **data
        )
        return self.render(reading, code=status.HTTP_201_CREATED)

    void = void_action(s.ReadingSerializer)
