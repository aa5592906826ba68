"""Query filters of the list endpoints (django-filter).

Common to several resources: ``?patient=<id>``, ``?pump=<id>``, ``?mrn=``,
``?serial_number=``, ``?status=a,b`` (comma-separated), ``?updated_since=<datetime with
offset>``; pumps and the worklist add ``?due_before=`` / ``?due_after=`` (dates,
inclusive: due on or before / on or after). Refills, readings and programs leave voided
records out unless ``?include_voided=true`` (a client that syncs with ``updated_since``
wants them, to learn of corrections).
"""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clinic.models import Clinic
from pumps import projection as pj
from pumps.models import Patient, Program, Pump, Reading, Refill

from .serializers import parse_aware_datetime

ISO_DATE = ["%Y-%m-%d"]


class AwareDateTimeFormField(forms.Field):
    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return parse_aware_datetime(value)
        except serializers.ValidationError as exc:
            raise forms.ValidationError(str(exc.detail[0])) from None


@extend_schema_field(OpenApiTypes.DATETIME)
class AwareDateTimeFilter(django_filters.Filter):
    """An instant with an offset (``Z`` allowed); without one, 400."""

    field_class = AwareDateTimeFormField


class IdFormField(forms.IntegerField):
    """A record id: a whole number that fits the database's 64-bit key."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(**kwargs)


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.Filter):
    field_class = IdFormField


class CommaChoicesFormField(forms.Field):
    def __init__(self, *, values=(), noun="status", **kwargs):
        self.valid = tuple(values)
        self.noun = noun
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        values = [v.strip() for v in str(value).split(",") if v.strip()]
        unknown = [v for v in values if v not in self.valid]
        if unknown or not values:
            # django-filter %-formats messages: a % typed by the client must stay a %
            given = ", ".join(unknown).replace("%", "%%")
            raise forms.ValidationError(f"Unknown {self.noun} {given}: use {', '.join(self.valid)}.")
        return values


@extend_schema_field(OpenApiTypes.STR)
class CommaChoicesFilter(django_filters.Filter):
    """``?status=alarm,empty``: any of the listed values."""

    field_class = CommaChoicesFormField

    def __init__(self, *args, values=(), noun="status", **kwargs):
        kwargs.setdefault("lookup_expr", "in")
        super().__init__(*args, values=values, noun=noun, **kwargs)


class VoidableFilterSet(django_filters.FilterSet):
    include_voided = django_filters.BooleanFilter(
        method="_include_voided", help_text="Also list voided records (default: live records only)."
    )
    pump = IdFilter(field_name="pump_id")
    patient = IdFilter(field_name="pump__patient_id")
    mrn = django_filters.CharFilter(field_name="pump__patient__mrn", help_text="The patient's MRN.")
    serial_number = django_filters.CharFilter(field_name="pump__serial_number", help_text="The pump's serial number.")
    updated_since = AwareDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    def _include_voided(self, queryset, name, value):
        return queryset  # applied in filter_queryset, also when the parameter is absent

    def filter_queryset(self, queryset):
        if not self.form.cleaned_data.get("include_voided"):
            queryset = queryset.filter(voided_at__isnull=True)
        return super().filter_queryset(queryset)


class PatientFilter(django_filters.FilterSet):
    mrn = django_filters.CharFilter(field_name="mrn")
    status = CommaChoicesFilter(field_name="status", values=Patient.Status.values)
    clinic = django_filters.CharFilter(field_name="clinic__code", help_text="The clinic's code.")
    updated_since = AwareDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Patient
        fields = ["mrn", "status", "clinic", "updated_since"]


class WorklistFilter(django_filters.FilterSet):
    patient = IdFilter(field_name="patient_id")
    mrn = django_filters.CharFilter(field_name="patient__mrn", help_text="The patient's MRN.")
    serial_number = django_filters.CharFilter(field_name="serial_number")
    status = CommaChoicesFilter(
        field_name="status", values=pj.STATUSES, help_text="Stored status, e.g. alarm,empty.", method="_status"
    )
    due_before = django_filters.DateFilter(
        field_name="refill_due_on", lookup_expr="lte", input_formats=ISO_DATE,
        help_text="Refill due on or before this date (YYYY-MM-DD).",
    )
    due_after = django_filters.DateFilter(
        field_name="refill_due_on", lookup_expr="gte", input_formats=ISO_DATE,
        help_text="Refill due on or after this date (YYYY-MM-DD).",
    )
    clinic = django_filters.CharFilter(field_name="clinic_id", help_text="The clinic's code.", method="_clinic")
    updated_since = AwareDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Pump
        fields = ["patient", "mrn", "serial_number", "status", "due_before", "due_after", "clinic", "updated_since"]

    # The two filters below hand the database what its indexes of the worklist order
    # (``pump_urgency_idx``, ``pump_clinic_urgency_idx``) start with: the clinic's id as a
    # value, not a join on its code, and the status as its rank (``urgency``, which the
    # constraint ``pump_urgency_is_status_rank`` ties to it). A page of one clinic's pumps
    # of one status is then a range of an index, not a walk of the clinic's pumps
    # (README "Scale and benchmarks").

    def _status(self, queryset, name, value):
        return queryset.filter(urgency__in=[pj.STATUSES.index(v) for v in value])

    def _clinic(self, queryset, name, value):
        return queryset.filter(clinic_id__in=list(Clinic.objects.filter(code=value).values_list("id", flat=True)))


class PumpFilter(WorklistFilter):
    implanted = django_filters.BooleanFilter(
        field_name="explanted_on", lookup_expr="isnull", help_text="true: implanted; false: explanted."
    )

    class Meta(WorklistFilter.Meta):
        fields = [*WorklistFilter.Meta.fields, "implanted"]


class ProgramFilter(VoidableFilterSet):
    mode = django_filters.ChoiceFilter(choices=Program.Mode.choices)
    verified = django_filters.BooleanFilter(field_name="verified_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Program
        fields = ["pump", "patient", "mrn", "serial_number", "mode", "verified", "updated_since", "include_voided"]


class RefillFilter(VoidableFilterSet):
    performed_after = AwareDateTimeFilter(field_name="performed_at", lookup_expr="gte")
    performed_before = AwareDateTimeFilter(field_name="performed_at", lookup_expr="lte")
    discrepancy_flagged = django_filters.BooleanFilter()

    class Meta:
        model = Refill
        fields = [
            "pump", "patient", "mrn", "serial_number", "performed_after", "performed_before",
            "discrepancy_flagged", "updated_since", "include_voided",
        ]


class ReadingFilter(VoidableFilterSet):
    read_after = AwareDateTimeFilter(field_name="read_at", lookup_expr="gte")
    read_before = AwareDateTimeFilter(field_name="read_at", lookup_expr="lte")

    class Meta:
        model = Reading
        fields = [
            "pump", "patient", "mrn", "serial_number", "read_after", "read_before", "updated_since", "include_voided",
        ]
