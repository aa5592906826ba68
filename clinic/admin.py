"""Admin for clinics (policy, closures, alert recipients, memberships), memberships and
API clients.

A clinic's policy and closures decide every pump's due date and status, so saving a
clinic sends ``clinic_changed``, and the pumps app queues the re-projection of its pumps
in the same transaction (run in the background once committed; the clinic's settings
page shows its progress). API tokens
are shown once, when created, and stored only as a hash; a client is revoked, not deleted.
"""

from __future__ import annotations

import zoneinfo

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Q
from django.utils.translation import ngettext
from simple_history.admin import SimpleHistoryAdmin

from .admin_scope import ClinicScopedMixin, granting_clinic_ids, visible_clinic_ids
from .models import WEEKDAY_NAMES, AlertRecipient, ApiClient, Clinic, ClinicClosure, Membership
from .signals import clinic_changed

admin.site.site_header = "Intrathecal pump clinic: administration"
admin.site.site_title = "Pump clinic admin"
admin.site.index_title = "Catalogs, clinics, staff and records"


class ClinicForm(forms.ModelForm):
    timezone = forms.ChoiceField(
        choices=[(name, name) for name in sorted(zoneinfo.available_timezones())],
        help_text="Due dates and flex-step times are local to this zone.",
    )
    open_weekdays = forms.TypedMultipleChoiceField(
        choices=list(enumerate(WEEKDAY_NAMES)),
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
        help_text="A due date that falls on a closed day moves to the nearest earlier open day.",
    )

    class Meta:
        model = Clinic
        fields = (
            "code", "name", "timezone", "lead_days", "high_risk_extra_days", "due_soon_days", "open_weekdays",
            "discrepancy_threshold_small_ml", "discrepancy_threshold_large_ml", "titration_limit_spinal_pct",
            "titration_limit_other_pct", "withdrawal_window_hours", "digest_hour",
        )


class ClinicClosureInline(admin.TabularInline):
    model = ClinicClosure
    extra = 0
    fields = ("date", "reason")


class AlertRecipientInline(admin.TabularInline):
    model = AlertRecipient
    extra = 0
    fields = ("email", "escalation")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "role", "receives_alerts")
    autocomplete_fields = ("user",)


@admin.register(Clinic)
class ClinicAdmin(ClinicScopedMixin, SimpleHistoryAdmin):
    clinic_path = None  # the clinic itself
    grant_access = True  # its settings, alert addresses and memberships: clinic administrators
    form = ClinicForm
    list_display = ("code", "name", "timezone", "lead_days", "due_soon_days", "pump_count")
    search_fields = ("code", "name")
    readonly_fields = ("created_at", "updated_at")
    inlines = (ClinicClosureInline, AlertRecipientInline, MembershipInline)
    fieldsets = (
        (None, {"fields": ("code", "name", "timezone")}),
        (
            "Refill scheduling",
            {
                "fields": ("lead_days", "high_risk_extra_days", "due_soon_days", "open_weekdays"),
                "description": (
                    "Due date = low-reservoir alarm date − lead days (− the high-risk extra days), or the day "
                    "before the drug expires if earlier, moved to an open day."
                ),
            },
        ),
        (
            "Refill and program checks",
            {
                "fields": (
                    "discrepancy_threshold_small_ml",
                    "discrepancy_threshold_large_ml",
                    "titration_limit_spinal_pct",
                    "titration_limit_other_pct",
                ),
                "description": "Defaults: Maino 2017 (1 mL / 2 mL); Saulino 2016 (+30 % spinal, +15 % other).",
            },
        ),
        (
            "Refill planning",
            {
                "fields": ("refill_slots_per_day", "refill_slots_by_weekday", "refill_earliest_days",
                           "refill_first_visit"),
                "description": "Capacity of the refill planner: slots per open day (optionally per weekday), "
                               "the earliest useful refill before the due date, the first visit time.",
            },
        ),
        ("Alerts", {"fields": ("withdrawal_window_hours", "digest_hour")}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    @admin.display(description="implanted pumps")
    def pump_count(self, obj: Clinic) -> int:
        return obj.pumps.filter(explanted_on__isnull=True).count()

    def get_readonly_fields(self, request, obj=None):
        # The code is how integrations and commands name the clinic: fixed once created.
        return (*self.readonly_fields, "code") if obj is not None else self.readonly_fields

    def has_add_permission(self, request):
        # A new clinic belongs to nobody yet: only a superuser creates one.
        return request.user.is_superuser and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if change:
            # the pumps app queues the re-projection of the clinic's pumps (pumps.receivers)
            results = clinic_changed.send(sender=Clinic, clinic=form.instance, user=request.user)
            count = sum(r for _, r in results if isinstance(r, int))
            if count:
                self.message_user(request, ngettext(
                    "Re-projecting %d pump in the background: the clinic's settings page shows the progress.",
                    "Re-projecting %d pumps in the background: the clinic's settings page shows the progress.",
                    count) % count, messages.INFO)


@admin.register(Membership)
class MembershipAdmin(ClinicScopedMixin, SimpleHistoryAdmin):
    grant_access = True  # a membership and its role are granted by the clinic's administrators
    list_display = ("user", "clinic", "role", "receives_alerts")
    list_filter = ("clinic", "role", "receives_alerts")
    search_fields = ("user__username", "user__first_name", "user__last_name", "user__email", "clinic__code")
    autocomplete_fields = ("user",)
    list_select_related = ("user", "clinic")


class ApiClientAddForm(forms.ModelForm):
    class Meta:
        model = ApiClient
        fields = ("clinic", "name", "can_write")


@admin.register(ApiClient)
class ApiClientAdmin(ClinicScopedMixin, admin.ModelAdmin):
    grant_access = True  # tokens are created and revoked by the clinic's administrators
    list_display = ("name", "clinic", "access", "token_hint", "created_at", "last_used_at", "revoked_at")
    list_filter = ("clinic", "can_write", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "token_hint", "clinic__code")
    readonly_fields = ("token_hint", "token_hash", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke_tokens",)
    list_select_related = ("clinic",)

    @admin.display(description="access")
    def access(self, obj: ApiClient) -> str:
        return "read-write" if obj.can_write else "read-only"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiClientAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("clinic", "name", "can_write")
        return ("clinic", "name", "can_write", "token_hint", "token_hash", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*self.readonly_fields, "clinic")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        client, token = ApiClient.create_with_token(
            clinic=form.cleaned_data["clinic"], name=form.cleaned_data["name"], can_write=form.cleaned_data["can_write"]
        )
        # The admin goes on with ``obj`` (logging, redirect): make it the saved client.
        for field in ("pk", "token_hash", "token_hint", "created_at"):
            setattr(obj, field, getattr(client, field))
        obj._state.adding = False
        access = "read-write" if client.can_write else "read-only"
        self.message_user(
            request,
            f"The {access} token of API client '{client.name}' is shown once and stored only as a hash: "
            f"copy it now. Token: {token}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens", permissions=("change",))
    def revoke_tokens(self, request, queryset):
        count = 0
        ids = self.granting_ids(request)
        if ids is not None:  # only the clinics the user administers
            queryset = queryset.filter(clinic__in=ids)
        for client in queryset.filter(revoked_at__isnull=True):
            client.revoke()
            count += 1
        self.message_user(
            request, ngettext("Revoked %d token.", "Revoked %d tokens.", count) % count, messages.SUCCESS
        )

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: the client stays on record with the requests it made.
        return False


# ------------------------------------------------------------------------ users

User = get_user_model()


class ScopedUserAdmin(UserAdmin):
    """Users, scoped like the rest of the admin. Someone who is not a superuser sees the
    members of their clinics (and accounts without any clinic, so that a new colleague
    can be found and given a membership), changes only accounts whose every clinic they
    administer, and can never grant superuser or staff status, groups or permissions."""

    PRIVILEGE_FIELDS = ("is_superuser", "is_staff", "groups", "user_permissions")

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        ids = visible_clinic_ids(request.user)
        return qs.filter(
            Q(pk=request.user.pk)
            | Q(is_superuser=False) & (Q(memberships__clinic__in=ids) | Q(memberships__isnull=True))
        ).distinct()

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if request.user.is_superuser:
            return fields
        return (*fields, *self.PRIVILEGE_FIELDS)

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        if not allowed or obj is None or request.user.is_superuser or obj.pk == request.user.pk:
            return allowed
        if obj.is_superuser:
            return False
        administered = set(granting_clinic_ids(request.user) or ())
        return set(obj.memberships.values_list("clinic_id", flat=True)) <= administered and (
            bool(administered)
        )

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, ScopedUserAdmin)
