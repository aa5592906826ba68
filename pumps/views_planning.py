"""The refill planning page (``/clinics/<code>/planning/``): the clinic's proposed refill
days with each day's load against its capacity, shortfalls first; booking one pump, a
day's proposals or all of them (one transaction each, ``pumps.planning.book``); moving a
pump to another day; and, for clinic administrators, the refill capacity and the
calendar feeds. Every member of the clinic sees the plan; those who may record
(nurses, pharmacists, prescribers, administrators) book, the refills they book assigned
to themselves unless they untick "Assign to me"; administrators change the capacity and
the clinic's feeds (``clinic.permissions``). Every member creates and revokes their own
calendar feed ("My calendar feed", ``/calendar/me/<secret>.ics``: the refills assigned
to them)."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from clinic.models import WEEKDAY_NAMES, CalendarFeed, Clinic, Membership
from clinic.permissions import MESSAGES, Action, user_may

from . import planner as pl
from . import planning, services
from . import projection as pj
from .errors import Forbidden
from .views import actor_of, render_page

HORIZONS = (14, 28, 56, 84, 112)
FEED_NAME_MAX = 200


def _clinic_for(request, code: str) -> Clinic:
    """A clinic the user belongs to (any role), or 404."""
    clinic = Clinic.objects.filter(code=code).first()
    if clinic is None or not (request.user.is_superuser
                              or Membership.objects.filter(user=request.user, clinic=clinic).exists()):
        raise Http404("No such clinic.")
    return clinic


def _may(request, clinic: Clinic, action: Action) -> bool:
    return user_may(request.user, clinic.pk, action)


def _require(request, clinic: Clinic, action: Action) -> None:
    if not _may(request, clinic, action):
        raise PermissionDenied(MESSAGES[action])


def _planning_url(clinic: Clinic, horizon: int | None = None, *, assign: bool = True) -> str:
    url = reverse("planning", args=[clinic.code])
    query = {"horizon": horizon} if horizon and horizon != pl.DEFAULT_HORIZON_DAYS else {}
    if not assign:
        query["assign"] = "0"
    return url + ("?" + urlencode(query) if query else "")


class CapacityForm(forms.ModelForm):
    """The clinic's refill capacity; a weekday left empty takes the daily number."""

    class Meta:
        model = Clinic
        fields = ["refill_slots_per_day", "refill_earliest_days", "refill_first_visit"]
        labels = {
            "refill_slots_per_day": "Refill slots per open day",
            "refill_earliest_days": "Earliest useful refill (days before the due date)",
            "refill_first_visit": "First refill visit of the day (local time, HH:MM)",
        }
        widgets = {"refill_first_visit": forms.TimeInput(format="%H:%M", attrs={"type": "time"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        current = self.instance.refill_slots_by_weekday or [None] * 7
        for index, name in enumerate(WEEKDAY_NAMES):
            self.fields[f"slots_{index}"] = forms.IntegerField(
                label=f"{name} slots (empty: the daily number)", required=False, min_value=0, max_value=500,
                initial=current[index] if len(current) == 7 else None,
            )

    def weekday_fields(self):
        return [self[f"slots_{i}"] for i in range(7)]

    def main_fields(self):
        return [self[name] for name in self.Meta.fields]

    def save_with(self, *, actor) -> Clinic:
        clinic = self.save(commit=False)
        clinic.refill_slots_by_weekday = [self.cleaned_data.get(f"slots_{i}") for i in range(7)]
        return services.save_refill_capacity(clinic=clinic, fields=[*self.Meta.fields, "refill_slots_by_weekday"],
                                             actor=actor)


class FeedForm(forms.Form):
    name = forms.CharField(label="Feed name (who subscribes)", max_length=FEED_NAME_MAX)


class MyFeedForm(forms.Form):
    name = forms.CharField(label="Feed name (optional, e.g. 'Phone')", max_length=FEED_NAME_MAX, required=False)


MY_FEED_DEFAULT_NAME = "My calendar"


def assign_to_me(query) -> bool:
    """The "Assign to me" choice of a page or a booking form: on unless its last
    ``assign`` value is "0" (the page sends a hidden 0 before the checkbox's 1)."""
    values = query.getlist("assign")
    return not values or values[-1] != "0"


def _context(request, clinic: Clinic, *, capacity: CapacityForm | None = None, feed_form: FeedForm | None = None,
             new_feed_url: str = "", my_feed_form: MyFeedForm | None = None, new_my_feed_url: str = "") -> dict:
    now = timezone.now()
    horizon = planning.horizon_or_default(request.GET.get("horizon"))
    moves = planning.parse_moves(request.GET.getlist("move"))
    plan = planning.clinic_plan(clinic, at=now, horizon_days=horizon, moves=moves)
    can_admin = _may(request, clinic, Action.ADMINISTER)
    clinics = list(Clinic.objects.order_by("code")) if request.user.is_superuser else list(
        Clinic.objects.filter(memberships__user=request.user).order_by("code"))
    return {
        "clinic": clinic, "clinics": clinics, "cp": plan, "plan": plan.plan, "now": now, "horizon": horizon,
        "horizons": HORIZONS if horizon in HORIZONS else sorted({*HORIZONS, horizon}),
        "moves": [f"{k}:{d.isoformat()}" for k, d in moves.items()],
        "refused_moves": [plan.rows[k] for k in plan.plan.refused_moves if k in plan.rows],
        "can_book": _may(request, clinic, Action.RECORD), "can_admin": can_admin,
        "capacity": capacity or (CapacityForm(instance=clinic) if can_admin else None),
        "feed_form": feed_form or (FeedForm() if can_admin else None),
        "feeds": list(clinic.calendar_feeds.all()) if can_admin else [],
        "new_feed_url": new_feed_url, "reasons": pl.REASONS, "today": pj.local_date(now, clinic.tz),
        "assign": assign_to_me(request.GET), "my_feed_form": my_feed_form or MyFeedForm(),
        "my_feeds": list(CalendarFeed.objects.filter(user=request.user).order_by("-created_at", "id")),
        "new_my_feed_url": new_my_feed_url,
    }


@login_required
@require_GET
def planning_index(request):
    clinic = (Clinic.objects.order_by("code").first() if request.user.is_superuser
              else Clinic.objects.filter(memberships__user=request.user).order_by("code").first())
    if clinic is None:
        raise Http404("You belong to no clinic.")
    return redirect("planning", code=clinic.code)


@login_required
@require_GET
def planning_page(request, code: str):
    clinic = _clinic_for(request, code)
    context = _context(request, clinic)
    if request.htmx and request.htmx.target == "planning-plan":
        return render(request, "pumps/planning_plan.html", context)
    return render_page(request, "pumps/planning.html", context, now=context["now"])


def _who(row) -> str:
    return f"MRN {row.pump.patient.mrn} ({row.pump.patient.initials})"


@login_required
@require_POST
def planning_book(request, code: str):
    """Book the posted ``item`` values (``<pump id>:<day>``): one pump, a day's proposals
    or all of them, as the page showed them. ``late`` names pumps booked outside their
    window (a shortfall on its suggested or chosen day). The refills are assigned to the
    signed-in user unless ``assign`` is "0" ("Assign to me" unticked)."""
    clinic = _clinic_for(request, code)
    _require(request, clinic, Action.RECORD)
    items = [item for item in map(planning.parse_item, request.POST.getlist("item")) if item is not None]
    late = {item[0] for item in map(planning.parse_item, request.POST.getlist("late")) if item is not None}
    horizon = planning.horizon_or_default(request.POST.get("horizon"))
    assign = assign_to_me(request.POST)
    if not items:
        messages.error(request, "Nothing to book: choose a proposal.")
        return redirect(_planning_url(clinic, horizon, assign=assign))
    try:
        result = planning.book(clinic, items, actor=actor_of(request), late_allowed=late,
                               assigned_to=request.user if assign else None)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc
    tz = clinic.tz
    if result.booked:
        booked = ", ".join(f"MRN {b.pump.patient.mrn} ({b.pump.patient.initials}) on "
                           f"{pj.local_instant(b.appointment.scheduled_for, tz)}" for b in result.booked)
        count = len(result.booked)
        whom = "Assigned to you." if assign else "Assigned to nobody."
        messages.success(request, f"Booked {count} refill{'' if count == 1 else 's'}: {booked}. {whom}")
    if result.skipped:
        count = len(result.skipped)
        skipped = "; ".join(str(s) for s in result.skipped)
        messages.warning(request, f"Skipped {count} (nothing booked for {'it' if count == 1 else 'them'}): {skipped}.")
    return redirect(_planning_url(clinic, horizon, assign=assign))


@login_required
@require_POST
def planning_capacity(request, code: str):
    clinic = _clinic_for(request, code)
    _require(request, clinic, Action.ADMINISTER)
    form = CapacityForm(request.POST, instance=clinic)
    if form.is_valid():
        form.save_with(actor=actor_of(request))
        messages.success(request, "Refill capacity saved; the plan below uses it.")
        return redirect(reverse("planning", args=[clinic.code]) + "#capacity-heading")
    clinic.refresh_from_db()
    return render_page(request, "pumps/planning.html", _context(request, clinic, capacity=form), status=400)


@login_required
@require_POST
def planning_feeds(request, code: str):
    """Create a calendar feed (its URL shown once, on this answer only) or revoke one."""
    clinic = _clinic_for(request, code)
    _require(request, clinic, Action.ADMINISTER)
    if request.POST.get("action") == "revoke":
        feed = services.clinic_feed(clinic, request.POST.get("id") or "")
        if feed is None:
            raise Http404("No such calendar feed.")
        services.revoke_feed(feed=feed, actor=actor_of(request))
        messages.success(request, f"Calendar feed “{feed.name}” revoked: its URL now answers 404.")
        return redirect(reverse("planning", args=[clinic.code]) + "#feeds-heading")
    form = FeedForm(request.POST)
    if not form.is_valid():
        return render_page(request, "pumps/planning.html", _context(request, clinic, feed_form=form), status=400)
    _feed, secret = services.create_clinic_feed(clinic=clinic, name=form.cleaned_data["name"], actor=actor_of(request))
    url = request.build_absolute_uri(reverse("calendar_feed", args=[clinic.code, secret]))
    response = render_page(request, "pumps/planning.html", _context(request, clinic, new_feed_url=url))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def planning_my_feed(request, code: str):
    """The signed-in user's own calendar feed (the refills assigned to them, in every
    clinic they belong to): create one (its URL shown once, on this answer only) or
    revoke one of theirs. ``code`` only says which planning page to show."""
    clinic = _clinic_for(request, code)
    action = request.POST.get("action")
    if action == "revoke":
        feed = services.own_feed(request.user, request.POST.get("id") or "")
        if feed is None:
            raise Http404("No such calendar feed.")
        services.revoke_feed(feed=feed, actor=actor_of(request))
        messages.success(request, f"Your calendar feed “{feed.name}” revoked: its URL now answers 404.")
        return redirect(reverse("planning", args=[clinic.code]) + "#my-feed-heading")
    if action != "create":
        return HttpResponseBadRequest("Create or revoke a calendar feed.")
    form = MyFeedForm(request.POST)
    if not form.is_valid():
        return render_page(request, "pumps/planning.html", _context(request, clinic, my_feed_form=form), status=400)
    _feed, secret = services.create_own_feed(
        name=form.cleaned_data["name"].strip() or MY_FEED_DEFAULT_NAME, actor=actor_of(request),
    )
    url = request.build_absolute_uri(reverse("user_calendar_feed", args=[secret]))
    response = render_page(request, "pumps/planning.html", _context(request, clinic, new_my_feed_url=url))
    response["Cache-Control"] = "no-store"
    return response
