"""``/api/v1/refill-plan/``: the clinic's refill plan (``pumps.planning``), and booking its
proposals.

``GET /api/v1/refill-plan/?horizon_days=56`` answers the capacity (with each day's
load), the proposals and the shortfalls. ``POST /api/v1/refill-plan/book/`` with
``{"pumps": [ids]}`` books the named pumps on the days the plan proposes now, in one
transaction; a pump the plan does not propose is listed in ``skipped`` with the reason.
``Idempotency-Key`` is honoured. A token sees its own clinic; staff with a session name
it with ``?clinic=<code>`` when they belong to several. Booking needs a read-write
token (or a role that records).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from clinic.auth import api_client_of, detach_principal, visible_clinic_ids
from clinic.models import Clinic

from .. import planner as pl
from .. import planning
from ..access import record_patients_access
from ..errors import Forbidden
from .idempotency import idempotent
from .schema import error_responses
from .views import DecimalJSONParser, actor_for, require_write, write_schema

MAX_PUMPS = 500


def _clinic(request) -> Clinic:
    client = api_client_of(request)
    code = request.query_params.get("clinic")
    if client is not None:
        if code and code != client.clinic.code:  # another clinic does not exist for this token
            raise exceptions.NotFound("No such clinic.")
        return client.clinic
    ids = visible_clinic_ids(request)
    clinics = Clinic.objects.all() if ids is None else Clinic.objects.filter(pk__in=ids)
    if code:
        clinic = clinics.filter(code=code).first()
        if clinic is None:
            raise exceptions.NotFound("No such clinic.")
        return clinic
    found = list(clinics[:2])
    if len(found) != 1:
        raise exceptions.ValidationError({"clinic": ["Name the clinic (?clinic=<code>): you belong to several."]})
    return found[0]


def _horizon(value) -> int:
    if value in (None, ""):
        return pl.DEFAULT_HORIZON_DAYS
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = 0
    if not 1 <= days <= pl.MAX_HORIZON_DAYS:
        raise exceptions.ValidationError(
            {"horizon_days": [f"Give a whole number of days, 1 to {pl.MAX_HORIZON_DAYS}."]}
        )
    return days


def plan_json(cp: planning.ClinicPlan) -> dict:
    clinic, plan = cp.clinic, cp.plan
    return {
        "clinic": clinic.code,
        "timezone": clinic.timezone,
        "today": plan.today,
        "first_day": plan.first_day,
        "last_day": plan.last_day,
        "horizon_days": cp.horizon_days,
        "capacity": {
            "slots_per_day": clinic.refill_slots_per_day,
            "slots_by_weekday": list(clinic.refill_slots_by_weekday or [None] * 7),
            "earliest_days": clinic.refill_earliest_days,
            "first_visit": clinic.refill_first_visit.strftime("%H:%M"),
            "open_weekdays": sorted(clinic.open_weekdays),
            "days": [{"date": d.day, "capacity": d.capacity, "booked": d.booked, "proposed": d.proposed,
                      "suggested": d.suggested, "free": d.free} for d in plan.days],
        },
        "proposals": [{
            "pump": row.pump.pk, "patient": row.pump.patient_id, "refill_due_on": row.due_on, "date": row.day,
            "window_start": row.proposal.window_start, "status": row.pump.status,
            "booked_after_due": row.booked_late,
        } for row in cp.proposals],
        "shortfalls": [{
            "pump": row.pump.pk, "patient": row.pump.patient_id, "refill_due_on": row.due_on,
            "reason": row.shortfall.reason, "reason_text": row.shortfall.reason_text, "suggested_date": row.day,
            "status": row.pump.status, "booked_after_due": row.booked_late,
        } for row in cp.shortfalls],
    }


class BookSerializer(serializers.Serializer):
    pumps = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**31 - 1),
                                  allow_empty=False, max_length=MAX_PUMPS)
    horizon_days = serializers.IntegerField(required=False, min_value=1, max_value=pl.MAX_HORIZON_DAYS)


CLINIC_PARAM = OpenApiParameter("clinic", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False,
                                description="Staff sessions in several clinics: the clinic's code.")


class RefillPlanView(APIView):
    parser_classes = [DecimalJSONParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        detach_principal(request)

    @extend_schema(
        summary="The clinic's refill plan: capacity, proposals and shortfalls",
        parameters=[OpenApiParameter("horizon_days", OpenApiTypes.INT, OpenApiParameter.QUERY, required=False,
                                     description="Days ahead, 1 to 366 (default 56)."), CLINIC_PARAM],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400, 401, 404)},
    )
    def get(self, request):
        clinic = _clinic(request)
        cp = planning.clinic_plan(clinic, horizon_days=_horizon(request.query_params.get("horizon_days")))
        record_patients_access(request, [row.pump.patient_id for row in cp.rows.values()],
                               {row.pump.patient_id: clinic.pk for row in cp.rows.values()}, "api")
        return Response(plan_json(cp))


class RefillPlanBookView(APIView):
    parser_classes = [DecimalJSONParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        detach_principal(request)

    @write_schema(BookSerializer, OpenApiTypes.OBJECT, ok=200, codes=(400, 401, 403, 404, 415, 422),
                  summary="Book the named pumps on the days the plan proposes (one transaction)")
    @idempotent
    def post(self, request):
        clinic = _clinic(request)
        require_write(request, clinic.pk)
        body = BookSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = planning.book_planned(
                clinic, body.validated_data["pumps"], actor=actor_for(request),
                horizon_days=body.validated_data.get("horizon_days", pl.DEFAULT_HORIZON_DAYS),
            )
        except Forbidden as exc:
            raise exceptions.PermissionDenied(exc.message) from exc
        return Response({
            "booked": [{"pump": b.pump.pk, "appointment": b.appointment.pk, "date": b.day,
                        "scheduled_for": b.appointment.scheduled_for} for b in result.booked],
            "skipped": [{"pump": s.pump_id, "code": s.code, "reason": s.reason} for s in result.skipped],
        })
