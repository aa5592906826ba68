"""Admin for the catalogs and the clinical records.

Clinical records are written through ``pumps.services``, here as everywhere: an add (or
change) form first runs its service inside a savepoint that is rolled back, so the
service's field-level messages appear on the form and nothing is saved; when the form is
valid the service runs for real. Clinical records are never deleted here (a record is
voided with a reason, through the services); refills, readings, programs and events
cannot be edited after the fact either, only viewed with their audit history.

Staff who are not superusers see only their clinics' records, as in the API and pages.
Dates and times are shown and entered in the clinic's time zone when the page concerns
one clinic (the record's, or the user's only clinic); otherwise in UTC.
"""

from __future__ import annotations

from contextlib import nullcontext
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import ngettext
from simple_history.admin import SimpleHistoryAdmin

from clinic import admin_scope
from clinic.models import CLINICAL_WRITERS, PROGRAM_WRITERS, Clinic, Membership

from . import services
from .alerting.acknowledge import acknowledge
from .models import (
    Alert,
    Appointment,
    DeliveryAttempt,
    Drug,
    DrugProduct,
    Event,
    Notification,
    Patient,
    PatientAccess,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
    SweepRun,
)
from .services import Actor, Conflict, PreconditionFailed, ProgramInput, ServiceValidationError

# ------------------------------------------------------------------------ catalogs


@admin.register(PumpModel)
class PumpModelAdmin(admin_scope.SharedCatalogMixin, SimpleHistoryAdmin):
    list_display = (
        "code", "manufacturer", "name", "reservoir_ml", "default_alarm_ml", "volume_is", "battery_months",
        "mri_behaviour",
    )
    list_filter = ("manufacturer", "volume_is")
    search_fields = ("code", "manufacturer", "name")


class DrugProductInline(admin.TabularInline):
    model = DrugProduct
    extra = 0
    fields = ("code", "name", "concentration_mcg_per_ml", "stability_days")


@admin.register(Drug)
class DrugAdmin(admin_scope.SharedCatalogMixin, admin.ModelAdmin):
    list_display = ("code", "name", "default_stability_days")
    search_fields = ("code", "name")
    inlines = (DrugProductInline,)


@admin.register(DrugProduct)
class DrugProductAdmin(admin_scope.SharedCatalogMixin, SimpleHistoryAdmin):
    list_display = ("code", "name", "drug", "concentration_mcg_per_ml", "stability_days", "effective_stability")
    list_filter = ("drug",)
    search_fields = ("code", "name")

    @admin.display(description="in-pump stability (days)")
    def effective_stability(self, obj: DrugProduct) -> int:
        return obj.effective_stability_days


# ------------------------------------------------------------------- scoping, time


def visible_clinic_ids(user) -> list[int] | None:
    """``None``: every clinic (a superuser)."""
    return admin_scope.visible_clinic_ids(user)


def may_write(user, clinic: Clinic | None, roles=CLINICAL_WRITERS) -> bool:
    if user.is_superuser:
        return True
    if clinic is None:
        return Membership.objects.filter(user=user, role__in=list(roles)).exists()
    return Membership.objects.filter(user=user, clinic=clinic, role__in=list(roles)).exists()


class ClinicScoped(admin_scope.ClinicScopedMixin):
    """Querysets, choices, list filters and audit history limited to the user's clinics
    (``clinic.admin_scope``); pages in the clinic's zone."""

    clinic_path = "clinic"  # lookup from the model to its clinic

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.related_model is Pump and field is not None:
            field.queryset = field.queryset.select_related("model")
        return field

    def page_timezone(self, request, obj=None):
        """The zone of the record's clinic, or of the user's clinics if they share one."""
        clinic = self.clinic_of(obj) if obj is not None else None
        if clinic is not None:
            return clinic.tz
        ids = visible_clinic_ids(request.user)
        qs = Clinic.objects.all() if ids is None else Clinic.objects.filter(pk__in=ids)
        zones = set(qs.values_list("timezone", flat=True)[:50])
        return ZoneInfo(zones.pop()) if len(zones) == 1 else None

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        obj = self.get_object(request, object_id) if object_id else None
        tz = self.page_timezone(request, obj)
        with timezone.override(tz) if tz else nullcontext():
            return super().changeform_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        tz = self.page_timezone(request)
        with timezone.override(tz) if tz else nullcontext():
            return super().changelist_view(request, extra_context)

    def has_delete_permission(self, request, obj=None):
        # Nothing clinical is ever hard-deleted: records are voided with a reason.
        return False


class ClinicScopedAdmin(ClinicScoped, SimpleHistoryAdmin):
    """A clinic-scoped admin with the audit history (django-simple-history) of a record."""


# ----------------------------------------------------------- writes via the services


class _DryRun(Exception):
    """Raised to roll back the savepoint of a validation run."""


class ServiceForm(forms.ModelForm):
    """A model form whose writes are the admin's ``write`` (a service call). ``clean``
    runs the service in a savepoint that is always rolled back, to turn its validation
    errors into form errors before anything is saved."""

    admin_site_model = None  # the ServiceAdmin, set by ``get_form``
    request = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone_name()
        for field in self.fields.values():
            if isinstance(field, forms.DateTimeField):
                field.help_text = f"Local time in {zone}."

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        instance = self.instance if self.instance.pk else None
        try:
            with transaction.atomic():
                self.admin_site_model.write(self.request, instance, cleaned)
                raise _DryRun
        except _DryRun:
            pass
        except ServiceValidationError as exc:
            self.add_service_errors(exc.message_dict)
        except (Conflict, PreconditionFailed) as exc:
            self.add_error(None, exc.message)
        except PermissionError as exc:
            self.add_error(None, str(exc))
        return cleaned

    def add_service_errors(self, errors, prefix: str = "") -> None:
        for field, messages_ in errors.items():
            if isinstance(messages_, dict):
                self.add_service_errors(messages_, prefix=f"{prefix}{field}.")
                continue
            name = f"{prefix}{field}"
            for message in messages_ if isinstance(messages_, list) else [messages_]:
                if name in self.fields and name in self.cleaned_data:
                    self.add_error(name, message)
                elif name == "non_field_errors":
                    self.add_error(None, message)
                else:
                    self.add_error(None, f"{name.replace('_', ' ')}: {message}")


class ServiceAdmin(ClinicScopedAdmin):
    """Adds (and, where a service exists, changes) go through ``write``."""

    form = ServiceForm
    write_roles = CLINICAL_WRITERS

    def write(self, request, obj, data):
        """Call the service: ``obj`` is None for an add. Returns the saved record.
        Each subclass names its service; a subclass without one is a programming error."""
        raise TypeError(f"{type(self).__name__} must define write()")

    def actor(self, request) -> Actor:
        return Actor(request.user, "admin")

    def check_role(self, request, clinic: Clinic | None) -> None:
        if not may_write(request.user, clinic, self.write_roles):
            raise PermissionError("Your role in this clinic does not allow this change.")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"admin_site_model": self, "request": request})

    def save_model(self, request, obj, form, change):
        saved = self.write(request, obj if change else None, form.cleaned_data)
        # The admin goes on with ``obj`` (log entry, redirect): make it the saved record.
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass  # the service saved everything there is

    def has_change_permission(self, request, obj=None):
        return False


def _voided_fields():
    return ("voided_at", "voided_by", "void_reason", "created_at", "updated_at")


# ------------------------------------------------------------------------ patients


@admin.register(Patient)
class PatientAdmin(ServiceAdmin):
    list_display = ("mrn", "family_name", "given_name", "clinic", "spasticity_origin", "withdrawal_high_risk", "status")
    list_filter = ("clinic", "status", "spasticity_origin", "withdrawal_high_risk")
    search_fields = ("mrn", "family_name", "given_name")
    list_select_related = ("clinic",)
    fields = (
        "clinic", "mrn", "family_name", "given_name", "birth_date", "spasticity_origin", "withdrawal_high_risk",
        "high_risk_reason", "phone", "caregiver_phone", "status", "created_at", "updated_at",
    )
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "clinic") if obj is not None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return ClinicScopedAdmin.has_change_permission(self, request, obj)

    def write(self, request, obj, data):
        values = {k: data[k] for k in services.PATIENT_FIELDS if k in data}
        if obj is None:
            self.check_role(request, data["clinic"])
            return services.create_patient(clinic=data["clinic"], actor=self.actor(request), **values)
        self.check_role(request, obj.clinic)
        return services.update_patient(patient=obj, actor=self.actor(request), **values)


# --------------------------------------------------------------------------- pumps


class PumpForm(ServiceForm):
    low_reservoir_alarm_ml = forms.DecimalField(
        required=False, max_digits=9, decimal_places=3, label="Low-reservoir alarm volume (mL)",
        help_text="Empty: the pump model's default (raise it, e.g. to 4 mL, for a patient with withdrawal "
        "before the alarm).",
    )

    class Meta:
        model = Pump
        fields = (
            "patient", "model", "serial_number", "udi", "implanted_on", "low_reservoir_alarm_ml",
            "expected_end_of_service", "explanted_on", "explant_reason",
        )


PROJECTION_FIELDS = (
    "status", "refill_due_on", "low_reservoir_alarm_at", "empty_at", "expected_low_reservoir_alarm_at",
    "expected_empty_at", "drug_expires_at", "anchor_at", "next_change_at", "projected_at",
)


@admin.register(Pump)
class PumpAdmin(ServiceAdmin):
    form = PumpForm
    list_display = (
        "serial_number", "model", "patient", "clinic", "status", "refill_due_on", "low_reservoir_alarm_at",
        "empty_at", "implanted_on", "explanted_on",
    )
    list_filter = ("clinic", "status", "model")
    search_fields = ("serial_number", "udi", "patient__mrn", "patient__family_name")
    list_select_related = ("clinic", "patient", "model")
    date_hierarchy = "implanted_on"
    fieldsets = (
        (None, {"fields": ("patient", "model", "serial_number", "udi", "implanted_on", "low_reservoir_alarm_ml",
                           "expected_end_of_service")}),
        ("Explant", {"fields": ("explanted_on", "explant_reason")}),
        ("Stored projection (recomputed by every write)", {"fields": PROJECTION_FIELDS}),
        ("Record", {"fields": ("clinic", "version", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    readonly_fields = (*PROJECTION_FIELDS, "clinic", "version", "created_at", "updated_at")

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("patient", "model", "serial_number", "udi", "implanted_on",
                                       "low_reservoir_alarm_ml")}),)
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        fixed = ("patient", "model", "implanted_on")
        if obj.explanted_on is not None:
            fixed = (*fixed, "explanted_on", "explant_reason")
        return (*self.readonly_fields, *fixed)

    def has_change_permission(self, request, obj=None):
        return ClinicScopedAdmin.has_change_permission(self, request, obj)

    def write(self, request, obj, data):
        actor = self.actor(request)
        if obj is None:
            self.check_role(request, data["patient"].clinic)
            return services.implant_pump(
                patient=data["patient"], model=data["model"], serial_number=data["serial_number"],
                implanted_on=data["implanted_on"], low_reservoir_alarm_ml=data.get("low_reservoir_alarm_ml"),
                udi=data.get("udi") or "", actor=actor,
            )
        self.check_role(request, obj.clinic)
        current = Pump.objects.get(pk=obj.pk)
        changes = {
            key: data[key] for key in ("serial_number", "udi", "low_reservoir_alarm_ml", "expected_end_of_service")
            if key in data and data[key] is not None and data[key] != getattr(current, key)
        }
        pump = current
        if changes:
            pump = services.update_pump(pump=current, actor=actor, **changes)
        if data.get("explanted_on") and current.explanted_on is None:
            pump = services.explant_pump(
                pump=pump, explanted_on=data["explanted_on"], reason=data.get("explant_reason") or "", actor=actor
            )
        return Pump.objects.get(pk=pump.pk)


# ------------------------------------------------------------------------ programs


class ProgramForm(ServiceForm):
    daily_dose_mcg = forms.DecimalField(
        required=False, max_digits=12, decimal_places=3,
        help_text="Continuous: the daily dose. Flex: optional; it must agree with the steps.",
    )

    class Meta:
        model = Program
        fields = (
            "pump", "effective_at", "concentration_mcg_per_ml", "mode", "daily_dose_mcg", "steps", "ptm_bolus_mcg",
            "ptm_max_per_day", "override_reason",
        )


@admin.register(Program)
class ProgramAdmin(ServiceAdmin):
    clinic_path = "pump__clinic"
    form = ProgramForm
    write_roles = PROGRAM_WRITERS
    list_display = (
        "pump", "effective_at", "mode", "daily_dose_mcg", "concentration_mcg_per_ml", "ptm_bolus_mcg",
        "ptm_max_per_day", "verified_at", "voided_at",
    )
    list_filter = ("pump__clinic", "mode", ("verified_at", admin.EmptyFieldListFilter))
    search_fields = ("pump__serial_number", "pump__patient__mrn")
    list_select_related = ("pump__model", "pump__clinic")
    date_hierarchy = "effective_at"
    actions = ("verify_programs",)
    add_fields = (
        "pump", "effective_at", "concentration_mcg_per_ml", "mode", "daily_dose_mcg", "steps", "ptm_bolus_mcg",
        "ptm_max_per_day", "override_reason",
    )

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return (
            *self.add_fields, "refill", "entered_by", "entered_by_external", "entered_at", "verified_by",
            "verified_by_external", "verified_at", *_voided_fields(),
        )

    def write(self, request, obj, data):
        self.check_role(request, data["pump"].clinic)
        return services.record_program(
            pump=data["pump"], effective_at=data["effective_at"], actor=self.actor(request),
            data=ProgramInput(
                concentration_mcg_per_ml=data.get("concentration_mcg_per_ml"), mode=data.get("mode"),
                daily_dose_mcg=data.get("daily_dose_mcg"), steps=data.get("steps") or None,
                ptm_bolus_mcg=data.get("ptm_bolus_mcg"), ptm_max_per_day=data.get("ptm_max_per_day"),
                override_reason=data.get("override_reason") or "",
            ),
        )

    @admin.action(description="Verify selected programs (as the second clinician)")
    def verify_programs(self, request, queryset):
        done = 0
        for program in queryset.select_related("pump__clinic"):
            if not may_write(request.user, program.pump.clinic, PROGRAM_WRITERS):
                self.message_user(request, f"{program}: only a prescriber may verify a program.", messages.ERROR)
                continue
            try:
                services.verify_program(program=program, actor=self.actor(request))
            except ServiceValidationError as exc:
                text = "; ".join(m for msgs in exc.message_dict.values() for m in msgs)
                self.message_user(request, f"{program.pump}: {text}", messages.ERROR)
                continue
            done += 1
        if done:
            self.message_user(
                request, ngettext("Verified %d program.", "Verified %d programs.", done) % done, messages.SUCCESS
            )


# ------------------------------------------------------------------------- refills


class RefillForm(ServiceForm):
    confirm_duplicate = forms.BooleanField(
        required=False, help_text="Record it although another refill of this pump is within 60 minutes."
    )

    class Meta:
        model = Refill
        fields = (
            "pump", "performed_at", "extracted_volume_ml", "added_volume_ml", "residual_left_ml", "bridge_bolus_ml",
            "drug_product", "concentration_mcg_per_ml", "lot_number", "lot_expiry", "notes",
        )


@admin.register(Refill)
class RefillAdmin(ServiceAdmin):
    clinic_path = "pump__clinic"
    form = RefillForm
    list_display = (
        "pump", "performed_at", "extracted_volume_ml", "added_volume_ml", "concentration_mcg_per_ml",
        "expected_residual_ml", "discrepancy_ml", "discrepancy_flagged", "refilled_after_empty", "voided_at",
    )
    list_filter = ("pump__clinic", "discrepancy_flagged", "refilled_after_empty", "drug_product")
    search_fields = ("pump__serial_number", "pump__patient__mrn", "lot_number")
    list_select_related = ("pump__model", "pump__clinic")
    date_hierarchy = "performed_at"
    add_fields = (
        "pump", "performed_at", "extracted_volume_ml", "added_volume_ml", "residual_left_ml", "bridge_bolus_ml",
        "drug_product", "concentration_mcg_per_ml", "lot_number", "lot_expiry", "notes", "confirm_duplicate",
    )

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return (
            *self.add_fields[:-1], "stability_days", "performed_by", "performed_by_external", "expected_residual_ml",
            "discrepancy_ml", "discrepancy_flagged", "refilled_after_empty", "flags", *_voided_fields(),
        )

    def write(self, request, obj, data):
        self.check_role(request, data["pump"].clinic)
        return services.record_refill(
            pump=data["pump"], performed_at=data["performed_at"], actor=self.actor(request),
            extracted_volume_ml=data.get("extracted_volume_ml"), added_volume_ml=data.get("added_volume_ml"),
            residual_left_ml=data.get("residual_left_ml"), bridge_bolus_ml=data.get("bridge_bolus_ml"),
            drug_product=data.get("drug_product"), concentration_mcg_per_ml=data.get("concentration_mcg_per_ml"),
            lot_number=data.get("lot_number") or "", lot_expiry=data.get("lot_expiry"), notes=data.get("notes") or "",
            confirm_duplicate=bool(data.get("confirm_duplicate")),
        )


# ------------------------------------------------------------ readings and events


@admin.register(Reading)
class ReadingAdmin(ServiceAdmin):
    clinic_path = "pump__clinic"
    list_display = ("pump", "read_at", "reservoir_volume_ml", "eri", "voided_at")
    list_filter = ("pump__clinic", "eri")
    search_fields = ("pump__serial_number", "pump__patient__mrn")
    list_select_related = ("pump__model", "pump__clinic")
    date_hierarchy = "read_at"
    add_fields = ("pump", "read_at", "reservoir_volume_ml", "eri", "notes")

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return (*self.add_fields, "performed_by", "performed_by_external", *_voided_fields())

    def write(self, request, obj, data):
        self.check_role(request, data["pump"].clinic)
        return services.record_reading(
            pump=data["pump"], read_at=data["read_at"], reservoir_volume_ml=data.get("reservoir_volume_ml"),
            eri=bool(data.get("eri")), notes=data.get("notes") or "", actor=self.actor(request),
        )


@admin.register(Event)
class EventAdmin(ServiceAdmin):
    clinic_path = "pump__clinic"
    list_display = ("pump", "kind", "occurred_at", "voided_at")
    list_filter = ("pump__clinic", "kind")
    search_fields = ("pump__serial_number", "pump__patient__mrn", "notes")
    list_select_related = ("pump__model", "pump__clinic")
    date_hierarchy = "occurred_at"
    add_fields = ("pump", "kind", "occurred_at", "notes")

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return (*self.add_fields, "recorded_by", *_voided_fields())

    def write(self, request, obj, data):
        self.check_role(request, data["pump"].clinic)
        return services.record_event(
            pump=data["pump"], kind=data["kind"], occurred_at=data["occurred_at"], notes=data.get("notes") or "",
            actor=self.actor(request),
        )


@admin.register(Appointment)
class AppointmentAdmin(ServiceAdmin):
    clinic_path = "pump__clinic"
    list_display = ("pump", "scheduled_for", "kind", "status", "voided_at")
    list_filter = ("pump__clinic", "kind", "status")
    search_fields = ("pump__serial_number", "pump__patient__mrn")
    list_select_related = ("pump__model", "pump__clinic")
    date_hierarchy = "scheduled_for"

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("pump", "scheduled_for", "kind", "notes")
        return ("pump", "kind", "scheduled_for", "status", "notes", *_voided_fields())

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("pump", "kind", *_voided_fields())

    def has_change_permission(self, request, obj=None):
        return ClinicScopedAdmin.has_change_permission(self, request, obj)

    def write(self, request, obj, data):
        actor = self.actor(request)
        if obj is None:
            self.check_role(request, data["pump"].clinic)
            return services.schedule_appointment(
                pump=data["pump"], scheduled_for=data["scheduled_for"], kind=data["kind"],
                notes=data.get("notes") or "", actor=actor,
            )
        self.check_role(request, obj.pump.clinic)
        return services.update_appointment(
            appointment=obj, actor=actor, status=data.get("status"), scheduled_for=data.get("scheduled_for"),
            notes=data.get("notes"),
        )


# ------------------------------------------------------------------------ alerting


class ReadOnly:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnly, ClinicScopedAdmin):
    list_display = (
        "kind", "severity", "pump", "clinic", "created_at", "acknowledged_at", "resolved_at", "repeat_count",
    )
    list_filter = ("clinic", "kind", "severity", ("acknowledged_at", admin.EmptyFieldListFilter),
                   ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("pump__serial_number", "pump__patient__mrn", "message")
    list_select_related = ("clinic", "pump__model")
    date_hierarchy = "created_at"
    actions = ("acknowledge_alerts",)

    @admin.action(description="Acknowledge selected alerts (stops repeats)")
    def acknowledge_alerts(self, request, queryset):
        count = 0
        ids = admin_scope.visible_clinic_ids(request.user)
        if ids is not None:  # a viewer acknowledges nothing
            writable = Membership.objects.filter(user=request.user, role__in=list(CLINICAL_WRITERS))
            queryset = queryset.filter(clinic__in=writable.values("clinic_id"))
        needs_reason = 0
        for alert in queryset.filter(acknowledged_at__isnull=True):
            try:
                with transaction.atomic():
                    acknowledge(alert, user=request.user)
            except ServiceValidationError:  # a critical alert is acknowledged with a reason
                needs_reason += 1
                continue
            except PermissionDenied:
                continue
            count += 1
        if needs_reason:
            self.message_user(
                request,
                ngettext(
                    "%d critical alert needs a reason: acknowledge it on the alerts page.",
                    "%d critical alerts need a reason: acknowledge them on the alerts page.",
                    needs_reason,
                ) % needs_reason,
                messages.WARNING,
            )
        self.message_user(
            request, ngettext("Acknowledged %d alert.", "Acknowledged %d alerts.", count) % count, messages.SUCCESS
        )


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    fields = ("at", "ok", "error")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnly, ClinicScoped, admin.ModelAdmin):
    """The outbox: every e-mail queued, its status and each delivery attempt."""

    list_display = ("kind", "recipient", "clinic", "status", "attempts", "created_at", "sent_at", "next_attempt_at")
    list_filter = ("clinic", "status", "kind")
    search_fields = ("recipient", "last_error")
    list_select_related = ("clinic",)
    date_hierarchy = "created_at"
    inlines = (DeliveryAttemptInline,)


@admin.register(SweepRun)
class SweepRunAdmin(admin.ModelAdmin):
    """The alerting heartbeat."""

    list_display = ("finished_at", "started_at", "pumps_checked", "alerts_created", "notifications_created")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# ------------------------------------------------------------------- access audit


@admin.register(PatientAccess)
class PatientAccessAdmin(ReadOnly, ClinicScoped, admin.ModelAdmin):
    """Who viewed which patient record, when, through which channel (README, Security). The log is
    read-only: nothing here adds, changes or deletes a row."""

    list_display = ("at", "patient", "clinic", "who", "channel", "path")
    list_filter = ("clinic", "channel", ("at", admin.DateFieldListFilter))
    search_fields = ("patient__mrn", "user__username", "api_client__name")
    list_select_related = ("patient", "clinic", "user", "api_client__clinic")
    date_hierarchy = "at"
    fields = ("at", "patient", "clinic", "user", "api_client", "channel", "path")
    readonly_fields = fields

    @admin.display(description="viewed by")
    def who(self, obj: PatientAccess) -> str:
        if obj.user is not None:
            return obj.user.get_username()
        if obj.api_client is not None:
            return f"API client {obj.api_client.name}"
        return "—"
