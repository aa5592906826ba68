"""FHIR R4 read endpoints (README, REST API): read by id and search, under ``/fhir/r4/``.

- ``GET /fhir/r4/metadata``: the CapabilityStatement;
- ``GET /fhir/r4/<Type>/<id>``: one resource; the ids are the REST API's ids;
- ``GET /fhir/r4/<Type>?patient=<id>``: a ``searchset`` Bundle (``_id``, ``_count`` and
  ``_offset`` also apply; ``Patient`` searches by ``_id`` and ``identifier`` instead).

Same Bearer tokens (or staff session) and clinic scoping as the REST API: another
clinic's record answers 404, exactly like one that does not exist, and a search only
ever finds records of the caller's clinics. Every answer, errors included, is
``application/fhir+json``; errors are OperationOutcomes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from clinic.auth import IsClinicMember, detach_principal, visible_clinic_ids
from clinic.models import Clinic
from pumps.access import record_patient_access
from pumps.api.access_log import record_list_access
from pumps.api.errors import unexpected_error
from pumps.api.serializers import parse_aware_datetime
from pumps.formats import operation_outcome
from pumps.models import Alert, Appointment, Assessment, Patient, Program, Pump, Refill, Severity

from . import mapping as m

DEFAULT_COUNT = 100
MAX_COUNT = 500
JSON_FORMATS = {"json", "application/json", "application/fhir+json", "fhir+json"}


# ------------------------------------------------------------------------ plumbing


class FHIRJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir+json"
    charset = "utf-8"


class FHIRContentNegotiation(BaseContentNegotiation):
    """One representation: FHIR JSON, whatever ``Accept`` says (``application/json``
    and ``*/*`` included). ``_format`` may name JSON; any other format is 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        wanted = request.query_params.get("_format")
        # "+" in a query string decodes to a space: application/fhir+json arrives as "application/fhir json"
        if wanted is not None and wanted.strip().lower().replace(" ", "+") not in JSON_FORMATS:
            raise exceptions.NotAcceptable(f"_format={wanted}: this server answers in JSON only.")
        return renderers[0], renderers[0].media_type


def fhir_exception_handler(exc, context):
    """The REST API's status codes, with an OperationOutcome body."""
    response = drf_exception_handler(exc, context) or unexpected_error(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data:
        diagnostics = str(data["detail"])
    elif isinstance(data, dict):
        diagnostics = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in data.items())
    else:
        diagnostics = " ".join(map(str, data)) if isinstance(data, list) else str(data)
    response.data = operation_outcome(response.status_code, diagnostics)
    return response


class BadSearch(exceptions.ValidationError):
    pass


def _bad(message: str) -> BadSearch:
    return BadSearch({"detail": message})


@extend_schema(exclude=True)  # FHIR has its own contract: /fhir/r4/metadata, not the OpenAPI schema
class FHIRView(APIView):
    renderer_classes = [FHIRJSONRenderer]
    content_negotiation_class = FHIRContentNegotiation
    permission_classes = [IsClinicMember]
    http_method_names = ["get", "head"]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        detach_principal(request)

    def get_exception_handler(self):
        return fhir_exception_handler


# ---------------------------------------------------------------- resource types


def _programs() -> QuerySet:
    """Programs with the instant the next live program of their pump took over."""
    later = (
        Program.objects.filter(pump=OuterRef("pump"), voided_at__isnull=True, effective_at__gt=OuterRef("effective_at"))
        .order_by("effective_at")
        .values("effective_at")[:1]
    )
    return Program.objects.select_related(
        "pump__clinic", "pump__patient", "pump__model", "entered_by", "verified_by", "withdrawal_plan"
    ).annotate(superseded_at=Subquery(later))


@dataclass(frozen=True)
class ResourceType:
    name: str
    queryset: Callable[[], QuerySet]
    to_resource: Callable[[Any], dict]
    clinic_lookup: str
    patient_lookup: str | None
    order: tuple[str, ...]
    #: where a found record's patient is, for the access log (``api.access_log.patients_of``)
    access_kind: str = "pump_record"
    #: what a search finds beyond the scoping (Flag: only active alerts)
    search_filter: dict = field(default_factory=dict)
    #: the instant the ``date`` search parameter compares (None: not searchable by date)
    date_field: str | None = None
    documentation: str = ""


RESOURCES: dict[str, ResourceType] = {
    r.name: r
    for r in (
        ResourceType(
            "Patient",
            lambda: Patient.objects.select_related("clinic"),
            m.patient_resource,
            "clinic_id",
            None,
            ("id",),
            access_kind="patient",
            documentation="A patient; the MRN is an identifier of type MR. Search by _id or identifier "
            "(the MRN, optionally system|MRN).",
        ),
        ResourceType(
            "Device",
            lambda: Pump.objects.select_related("clinic", "patient", "model"),
            m.device_resource,
            "clinic_id",
            "patient_id",
            ("id",),
            access_kind="pump",
            documentation="An implanted (active) or explanted (inactive) intrathecal pump, with the stored "
            "reservoir projection as an extension.",
        ),
        ResourceType(
            "MedicationRequest",
            _programs,
            lambda p: m.medication_request_resource(p, superseded_at=p.superseded_at),
            "pump__clinic_id",
            "pump__patient_id",
            ("effective_at", "id"),
            documentation="A pump program: active while in force, completed once superseded, stopped when the "
            "pump was explanted, entered-in-error when voided.",
        ),
        ResourceType(
            "MedicationAdministration",
            lambda: Refill.objects.select_related(
                "pump__clinic", "pump__patient", "pump__model", "performed_by", "drug_product", "program"
            ),
            m.medication_administration_resource,
            "pump__clinic_id",
            "pump__patient_id",
            ("performed_at", "id"),
            documentation="A reservoir refill: dosage.dose is the volume added; device is the pump.",
        ),
        ResourceType(
            "Appointment",
            lambda: Appointment.objects.select_related("pump__clinic", "pump__patient", "pump__model"),
            m.appointment_resource,
            "pump__clinic_id",
            "pump__patient_id",
            ("scheduled_for", "id"),
            documentation="A refill, review or replacement-surgery appointment of a pump.",
        ),
        ResourceType(
            "Flag",
            lambda: Alert.objects.filter(severity=Severity.CRITICAL, pump__isnull=False).select_related(
                "clinic", "pump__patient", "pump__model"
            ),
            m.flag_resource,
            "clinic_id",
            "pump__patient_id",
            ("created_at", "id"),
            search_filter={"resolved_at__isnull": True},
            access_kind="alert",
            documentation="A critical alert of a pump. A search finds the active (unresolved) ones; a read "
            "also returns a resolved one, as inactive.",
        ),
        ResourceType(
            "Observation",
            lambda: Assessment.objects.select_related(
                "pump__clinic", "pump__patient", "pump__model", "assessed_by"
            ),
            m.observation_resource,
            "pump__clinic_id",
            "pump__patient_id",
            ("assessed_at", "id"),
            date_field="assessed_at",
            documentation="A visit assessment: Modified Ashworth grade per limb, Penn spasm frequency, pain and "
            "the yes/no screen of each withdrawal and overdose sign, as components; entered-in-error when voided.",
        ),
    )
}


def _resource_type(name: str) -> ResourceType:
    try:
        return RESOURCES[name]
    except KeyError:
        raise exceptions.NotFound(
            f"Resource type {name!r} is not served here; served: {', '.join(RESOURCES)}."
        ) from None


def _scoped(request, kind: ResourceType) -> QuerySet:
    queryset = kind.queryset()
    ids = visible_clinic_ids(request)
    return queryset if ids is None else queryset.filter(**{f"{kind.clinic_lookup}__in": ids})


# ------------------------------------------------------------------------ read


class ReadView(FHIRView):
    """``GET /fhir/r4/<Type>/<id>``."""

    def get(self, request, resource_type: str, pk: str):
        kind = _resource_type(resource_type)
        record = _scoped(request, kind).filter(pk=int(pk)).first() if pk.isdigit() else None
        if record is None:
            raise exceptions.NotFound(f"{resource_type}/{pk} was not found.")
        if kind.name == "Patient":
            record_patient_access(request, record, "fhir")
        return Response(kind.to_resource(record))


# ---------------------------------------------------------------------- search


_PATIENT = re.compile(r"(?:(?:.*/)?Patient/)?(\d+)")


MAX_ID = 2**63 - 1  # the database's 64-bit keys


def _ids(values: list[str], name: str, pattern: re.Pattern, example: str) -> list[int]:
    ids = []
    for value in ",".join(values).split(","):
        match = pattern.fullmatch(value.strip())
        if not match or int(match.group(1)) > MAX_ID:
            raise _bad(f"{name}={value}: give {example}.")
        ids.append(int(match.group(1)))
    return ids


def _non_negative(params, name: str, default: int, maximum: int | None = None) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw.strip()):
        raise _bad(f"{name}={raw}: give a whole number, 0 or more.")
    value = int(raw)
    return min(value, maximum) if maximum is not None else value


def _identifier_filter(values: list[str]) -> Q:
    """``identifier=MRN`` or ``identifier=system|MRN`` (the system names the clinic)."""
    prefix = m.mrn_system_prefix()
    condition = Q(pk__in=[])
    for value in ",".join(values).split(","):
        system, bar, mrn = value.partition("|")
        if not bar:
            condition |= Q(mrn=value.strip())
        elif not system:
            condition |= Q(mrn=mrn.strip())
        elif system.startswith(prefix) and system[len(prefix) :]:
            condition |= Q(clinic__code=system[len(prefix) :], mrn=mrn.strip())
    return condition


_DATE = re.compile(r"(eq|ge|gt|le|lt)?(\d{4}-\d{2}-\d{2})(T.+)?")
MSG_DATE = (
    "date={value}: give a date or an instant with an offset, optionally prefixed with eq, ge, gt, le or lt, e.g. "
    "date=ge2026-02-01 or date=lt2026-02-02T09:00:00-06:00."
)


def _date_range(value: str, tz) -> tuple[str, datetime, datetime]:
    """(prefix, start, end) of a ``date`` search value: a day (in the zone ``tz``) or an
    instant to the second, as the half-open range [start, end) FHIR compares with."""
    match = _DATE.fullmatch(value.strip())
    if not match:
        raise _bad(MSG_DATE.format(value=value))
    prefix, day, clock = match.group(1) or "eq", match.group(2), match.group(3)
    try:
        if clock is None:
            start = datetime.combine(date.fromisoformat(day), time(0), tz)
            return prefix, start, datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(0), tz)
        start = parse_aware_datetime(day + clock)
    except (ValueError, exceptions.ValidationError):
        raise _bad(MSG_DATE.format(value=value)) from None
    return prefix, start, start + timedelta(seconds=1)


def _date_filter(values: list[str], kind: ResourceType, clinics: list) -> Q:
    """``date=[prefix]value`` (repeatable, all must hold): a day is a day in the record's
    clinic's zone, so the condition is built for each clinic the caller sees."""
    condition = Q(pk__in=[])
    for clinic in clinics:
        per_clinic = Q(**{kind.clinic_lookup: clinic.pk})
        for value in values:
            prefix, start, end = _date_range(value, clinic.tz)
            per_clinic &= {
                "eq": Q(**{f"{kind.date_field}__gte": start, f"{kind.date_field}__lt": end}),
                "ge": Q(**{f"{kind.date_field}__gte": start}),
                "gt": Q(**{f"{kind.date_field}__gte": end}),
                "le": Q(**{f"{kind.date_field}__lt": end}),
                "lt": Q(**{f"{kind.date_field}__lt": start}),
            }[prefix]
        condition |= per_clinic
    return condition


class SearchView(FHIRView):
    """``GET /fhir/r4/<Type>?...``: a ``searchset`` Bundle of the caller's clinics' records."""

    def get(self, request, resource_type: str):
        kind = _resource_type(resource_type)
        params = request.query_params
        queryset = _scoped(request, kind).filter(**kind.search_filter)
        used: list[tuple[str, str]] = []

        if "_id" in params:
            wanted = [v for v in ",".join(params.getlist("_id")).split(",") if v.strip()]
            queryset = queryset.filter(
                pk__in=[int(v) for v in wanted if re.fullmatch(r"[0-9]{1,18}", v.strip())]
            )
            used.append(("_id", ",".join(wanted)))
        if "patient" in params and kind.patient_lookup is not None:
            patients = _ids(
                params.getlist("patient"), "patient", _PATIENT, "a Patient id, e.g. patient=12 or Patient/12"
            )
            queryset = queryset.filter(**{f"{kind.patient_lookup}__in": patients})
            used.append(("patient", ",".join(params.getlist("patient"))))
        if "date" in params and kind.date_field is not None:
            ids = visible_clinic_ids(request)
            clinics = list(Clinic.objects.all() if ids is None else Clinic.objects.filter(pk__in=ids))
            for value in params.getlist("date"):
                _date_range(value, UTC)  # a bad value is refused whatever clinics the caller sees
            queryset = queryset.filter(_date_filter(params.getlist("date"), kind, clinics))
            used.extend(("date", value) for value in params.getlist("date"))
        if "identifier" in params and kind.name == "Patient":
            queryset = queryset.filter(_identifier_filter(params.getlist("identifier")))
            used.append(("identifier", ",".join(params.getlist("identifier"))))
        count = _non_negative(params, "_count", DEFAULT_COUNT, MAX_COUNT)
        offset = _non_negative(params, "_offset", 0)

        total = queryset.count()
        records = list(queryset.order_by(*kind.order)[offset : offset + count]) if count else []
        base = f"{m.base_url()}/{kind.name}"

        def link(relation: str, at: int) -> dict[str, str]:
            query = [*used, ("_count", str(count))] + ([("_offset", str(at))] if at else [])
            return {"relation": relation, "url": f"{base}?{urlencode(query)}"}

        links = [link("self", offset)]
        if count and offset + count < total:
            links.append(link("next", offset + count))
        if count and offset > 0:
            links.append(link("previous", max(offset - count, 0)))
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": timezone.now().isoformat()},
            "type": "searchset",
            "total": total,
            "link": links,
        }
        record_list_access(request, records, kind.access_kind, "fhir")  # the patients shown: one INSERT
        if records:
            bundle["entry"] = [
                {"fullUrl": f"{base}/{record.pk}", "resource": kind.to_resource(record), "search": {"mode": "match"}}
                for record in records
            ]
        return Response(bundle)


# -------------------------------------------------------------------- metadata


def capability_statement() -> dict[str, Any]:
    resources = []
    for kind in RESOURCES.values():
        search_params = [{"name": "_id", "type": "token", "documentation": "Logical id (the REST API id)."}]
        if kind.name == "Patient":
            search_params.append({"name": "identifier", "type": "token", "documentation": "The MRN, or system|MRN."})
        else:
            search_params.append(
                {"name": "patient", "type": "reference", "documentation": "The patient: an id or Patient/<id>."}
            )
        if kind.date_field is not None:
            search_params.append(
                {"name": "date", "type": "date", "documentation": "When it was assessed: a day (in the clinic's "
                 "zone) or an instant with an offset, prefixed eq (default), ge, gt, le or lt; repeat for a range."}
            )
        resources.append(
            {
                "type": kind.name,
                "documentation": kind.documentation,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "versioning": "no-version",
                "readHistory": False,
                "searchParam": search_params,
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "url": f"{m.base_url()}/metadata",
        "name": "IntrathecalPumpClinicFHIRServer",
        "title": "Intrathecal pump clinic: FHIR R4 read API",
        "status": "active",
        "date": timezone.now().isoformat(),
        "publisher": "Intrathecal pump clinic tracker",
        "description": "Read-only FHIR R4 view of the clinic's patients, implanted pumps, programs, refills, "
        "appointments, critical alerts and visit assessments.",
        "kind": "instance",
        "software": {"name": "pumpclinic"},
        "implementation": {"description": "Intrathecal pump clinic tracker", "url": m.base_url()},
        "fhirVersion": m.FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Search results are paged with _count (default 100, at most 500) and _offset.",
                "security": {
                    "cors": False,
                    "description": "Authorization: Bearer <token> of an API client (one clinic); staff may use "
                    "their signed-in session. Another clinic's record answers 404.",
                },
                "resource": resources,
            }
        ],
    }


class MetadataView(FHIRView):
    """``GET /fhir/r4/metadata``: sign-in is required here too (README, Security)."""

    def get(self, request):
        return Response(capability_statement())
