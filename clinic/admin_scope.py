"""Clinic scoping of the admin, shared by every ``ModelAdmin`` of ``clinic`` and ``pumps``.

A superuser sees and changes everything. Anyone else (``is_staff`` with model
permissions) sees only the objects of the clinics they are a member of — change lists,
change pages, the audit history of a record and the choices of every foreign key — and
another clinic's object answers 404 as if it did not exist. Granting access to a clinic
(a membership and its role, an API client) or changing the clinic itself takes the role
"admin" (clinic administrator) in that clinic. The shared catalogs (pump models, drugs)
are read-only for everyone but a superuser, since a change there moves every clinic's
projections.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.http import Http404

from .models import Clinic, Membership, Role

#: Roles that may grant access to a clinic in the admin.
GRANTING_ROLES = frozenset({Role.ADMIN})


def visible_clinic_ids(user) -> list[int] | None:
    """The clinics whose objects ``user`` may see in the admin; ``None``: every clinic."""
    if user.is_superuser:
        return None
    return list(Membership.objects.filter(user=user).values_list("clinic_id", flat=True))


def granting_clinic_ids(user) -> list[int] | None:
    """The clinics in which ``user`` may grant memberships, roles and API clients and
    change the clinic's settings; ``None``: every clinic."""
    if user.is_superuser:
        return None
    return list(
        Membership.objects.filter(user=user, role__in=list(GRANTING_ROLES)).values_list("clinic_id", flat=True)
    )


def _request_cache(request, name, compute):
    """One query per request and helper (a change list asks for every row)."""
    cache = request.__dict__.setdefault("_admin_scope", {})
    if name not in cache:
        cache[name] = compute(request.user)
    return cache[name]


class ScopedClinicListFilter(admin.RelatedFieldListFilter):
    """The sidebar filter by clinic lists only the clinics the user may see."""

    def field_choices(self, field, request, model_admin):
        ids = _request_cache(request, "visible", visible_clinic_ids)
        if ids is None:
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(include_blank=False, ordering=ordering, limit_choices_to={"pk__in": ids})


class ClinicScopedMixin:
    """Put first in the bases of a ``ModelAdmin`` whose objects belong to one clinic.

    ``clinic_path`` is the lookup from the model to its clinic (``"clinic"``,
    ``"pump__clinic"``); ``None`` when the model is ``Clinic`` itself. With
    ``grant_access = True`` (memberships, API clients, the clinic) adding, changing and
    deleting also take the role "admin" in the object's clinic, and only those clinics are
    offered as choices.
    """

    clinic_path: str | None = "clinic"
    grant_access = False

    # --------------------------------------------------------------- which clinics

    def visible_ids(self, request) -> list[int] | None:
        return _request_cache(request, "visible", visible_clinic_ids)

    def granting_ids(self, request) -> list[int] | None:
        return _request_cache(request, "granting", granting_clinic_ids)

    def clinic_of(self, obj) -> Clinic | None:
        if obj is None:
            return None
        if self.clinic_path is None:
            return obj
        target = obj
        for part in self.clinic_path.split("__"):
            target = getattr(target, part, None)
            if target is None:
                return None
        return target

    def _clinic_lookup(self) -> str:
        return "pk__in" if self.clinic_path is None else f"{self.clinic_path}__in"

    # ---------------------------------------------------------------- what is seen

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        ids = self.visible_ids(request)
        return qs if ids is None else qs.filter(**{self._clinic_lookup(): ids})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        ids = self.visible_ids(request)
        related = db_field.related_model
        if ids is not None:
            if related is Clinic:
                allowed = self.granting_ids(request) if self.grant_access else ids
                kwargs["queryset"] = Clinic.objects.filter(pk__in=allowed)
            elif hasattr(related, "clinic") and related._meta.get_field("clinic").related_model is Clinic:
                # Patients, pumps, API clients, ...: only the user's clinics.
                kwargs["queryset"] = related._default_manager.filter(clinic__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        scoped = []
        for item in super().get_list_filter(request):
            if isinstance(item, str) and (item == "clinic" or item.endswith("__clinic")):
                item = (item, ScopedClinicListFilter)
            scoped.append(item)
        return scoped

    def require_visible(self, request, object_id) -> None:
        """404 unless the object is one of the user's clinics' (the audit history pages
        read the historical rows directly, not through ``get_queryset``)."""
        if self.visible_ids(request) is None:
            return
        if not self.get_queryset(request).filter(pk=unquote(object_id)).exists():
            raise Http404("No such object.")

    def history_view(self, request, object_id, extra_context=None):
        self.require_visible(request, object_id)
        return super().history_view(request, object_id, extra_context=extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self.require_visible(request, object_id)
        return super().history_form_view(request, object_id, version_id, extra_context=extra_context)

    # -------------------------------------------------------- granting access

    def may_grant(self, request, obj=None) -> bool:
        """Whether the user administers the object's clinic (any clinic, for ``None``)."""
        ids = self.granting_ids(request)
        if ids is None:
            return True
        if obj is None:
            return bool(ids)
        clinic = self.clinic_of(obj)
        return clinic is not None and clinic.pk in ids

    def has_add_permission(self, request, *args):
        allowed = super().has_add_permission(request, *args)
        return allowed and (not self.grant_access or self.may_grant(request))

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (not self.grant_access or self.may_grant(request, obj))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (not self.grant_access or self.may_grant(request, obj))

    def save_model(self, request, obj, form, change):
        # The form's choices already refuse another clinic; this guards any other path.
        if self.grant_access and not self.may_grant(request, obj):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied("Only an administrator of this clinic may do this.")
        super().save_model(request, obj, form, change)


class SharedCatalogMixin:
    """Catalogs shared by every clinic: readable with the view permission, written only
    by a superuser."""

    def has_add_permission(self, request, *args):
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)
