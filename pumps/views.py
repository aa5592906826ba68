"""Staff web pages (README, Security). Thin: selectors read, forms parse, services write (one
transaction per action) and their field-level messages go back on the form. Every page
needs sign-in; another clinic's record answers 404; roles limit what can be changed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clinic.models import AlertRecipient, Clinic, ClinicClosure
from clinic.permissions import MESSAGES, Action, role_allows, user_may

from . import charts, forms, reprojection, selectors, services
from . import projection as pj
from .access import record_patient_access
from .alerting.acknowledge import acknowledge
from .alerting.rules import ADVICE
from .calendar import appointment_ics
from .errors import Forbidden
from .models import Alert, AlertKind, Appointment, Assessment, Event, Program, Reading, Refill, Severity

# The one rule set's words (clinic.permissions): pages refuse as the services do.
MSG_VIEWER = MESSAGES[Action.RECORD]
MSG_PRESCRIBER = MESSAGES[Action.PROGRAM]
MSG_ADMIN = MESSAGES[Action.ADMINISTER]


def actor_of(request) -> services.Actor:
    return services.Actor(request.user, "")


def render_page(request, template: str, context: dict, *, status: int = 200, now: datetime | None = None):
    """Every full page shows whether alerting runs (red when stale), in the clinic's time:
    the page's clinic, else the user's first clinic (``page_tz``)."""
    now = now or timezone.now()
    context.setdefault("now", now)
    if "page_tz" not in context:
        clinic = context.get("clinic")
        context["page_tz"] = clinic.tz if isinstance(clinic, Clinic) else selectors.user_timezone(request.user)
    if not getattr(request, "htmx", False):
        context["alerting"] = selectors.alerting_health(now)
        context["sweep_interval_minutes"] = settings.ALERT_SWEEP_INTERVAL_SECONDS // 60
        context["nav_admin_clinics"] = selectors.admin_clinics(request.user)
        context["undelivered"] = selectors.undelivered_notifications(request.user)
    return render(request, template, context, status=status)


def require(allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


def plain(value) -> str | None:
    """A stored decimal as typed: 1000, not 1000.000 nor 1E+3."""
    return None if value is None else f"{value.normalize():f}"


def pump_url(pump, anchor: str = "") -> str:
    return reverse("pump", args=[pump.pk]) + (f"#{anchor}" if anchor else "")


# After a save the pump page opens on its summary band, where the confirmation is shown.
SUMMARY = "summary"

# The pages poll every 30 seconds with "anything changed since <since>": the page's own
# time less a margin, so that a write whose transaction began before the page was read
# and committed after it is still seen (it is then shown once more, harmlessly).
POLL_MARGIN = timedelta(seconds=15)


def poll_since(now: datetime) -> int:
    return int((now - POLL_MARGIN).timestamp())


def _since(request) -> datetime | None:
    """The ``since`` of a poll (seconds since the epoch), or None."""
    try:
        return datetime.fromtimestamp(int(request.GET.get("since", "")), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


# ------------------------------------------------------------------------ worklist


def _int_or_none(value: str | None) -> int | None:
    """An id from a query string; anything else (or out of the database's range) is None."""
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return number if number is not None and 0 < number < 2**31 else None


@login_required
@require_GET
def worklist(request):
    """The worklist. An htmx poll (``since``) answers 204 when no pump or alert of the
    user's clinics changed since then, else the results fragment."""
    now = timezone.now()
    since = _since(request)
    if request.htmx and since is not None and not selectors.changed_since(request.user, since):
        return HttpResponse(status=204)
    filters = selectors.WorklistFilters(
        status=request.GET.get("status", "") if request.GET.get("status", "") in pj.STATUSES else "",
        clinic=request.GET.get("clinic", ""),
        prescriber=_int_or_none(request.GET.get("prescriber")),
        q=request.GET.get("q", "")[:100],
    )
    data = selectors.worklist_for(request.user, filters, now)
    page = Paginator(data.rows, settings.WORKLIST_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    if page.number == 1:  # no open critical alert waits on a later page: the band lists it here
        page.object_list = selectors.first_page_rows(data, rows, now)
    else:
        page.object_list = selectors.with_alerts(rows, now)  # one query for the page's alerts
    band, rest = selectors.split_band(page.object_list)
    query = request.GET.copy()
    query.pop("since", None)
    poll = query.copy()
    query.pop("page", None)
    poll["since"] = str(poll_since(now))
    context = {
        "worklist": data, "page": page, "band": band, "rest": rest, "filters": filters, "statuses": pj.STATUSES,
        "query": query.urlencode(), "poll_query": poll.urlencode(), "status_labels": selectors.STATUS_LABELS,
        "many_clinics": len(data.clinics) > 1,
        "page_tz": data.clinics[0].tz if data.clinics else selectors.UTC_ZONE,
    }
    if request.htmx and request.htmx.target == "worklist-results":
        return render(request, "partials/worklist_results.html", {**context, "now": now})
    return render_page(request, "pumps/worklist.html", context, now=now)


# ---------------------------------------------------------------- patient and pump


@login_required
@require_GET
def patient_detail(request, pk: int):
    data = selectors.patient_page(request.user, pk, timezone.now())
    record_patient_access(request, data.patient, "page")
    return render_page(request, "pumps/patient.html", {"data": data, "patient": data.patient,
                                                        "clinic": data.patient.clinic, "can": data.permissions})


@login_required
@require_http_methods(["GET", "POST"])
def patient_edit(request, pk: int):
    patient = selectors.patient_for(request.user, pk)
    require(selectors.permissions_for(request.user, patient.clinic_id).can_write, MSG_VIEWER)
    form = forms.PatientForm(request.POST or None, instance=patient)
    if request.method == "POST" and form.is_valid():
        try:
            form.save_with(actor=actor_of(request))
        except services.ServiceValidationError as exc:
            forms.apply_service_errors(form, exc)
        else:
            messages.success(request, "Patient details saved.")
            return redirect("patient", pk=patient.pk)
    return render_page(request, "pumps/patient_edit.html", {"form": form, "patient": patient})


def pump_charts(page: selectors.PumpPage, now: datetime, dose: selectors.DoseResponse | None = None) -> dict:
    tz = page.pump.clinic.tz
    return {
        "response": charts.response_chart(programs=page.programs, assessments=dose.assessments, now=now, tz=tz)
        if dose is not None else None,
        "volume": charts.volume_chart(
            pump_state=services.pump_state(page.pump), history_inputs=page.history.inputs(),
            projection=page.projection, capacity_ml=page.pump.model.reservoir_ml,
            program_times=[p.effective_at for p in page.history.programs], now=now, tz=tz,
        ),
        "dose": charts.dose_chart(programs=page.programs, refills=page.refills, now=now, tz=tz),
        "discrepancy": charts.discrepancy_chart(refills=page.refills, threshold_ml=page.threshold_ml, tz=tz),
    }


def _may_acknowledge(permissions: selectors.Permissions) -> bool:
    return permissions.superuser or role_allows(permissions.role, Action.ACKNOWLEDGE)


@login_required
@require_GET
def pump_detail(request, pk: int):
    """The pump page. An htmx poll (``since``) answers 204 when neither the pump nor its
    alerts changed since then, else the page (the poll keeps its ``#pump-live`` part)."""
    now = timezone.now()
    since = _since(request)
    polling = bool(request.htmx) and since is not None
    if polling:
        selectors.pump_for(request.user, pk, related=())  # 404 for another clinic's pump
        if not selectors.pump_changed_since(pk, since):
            return HttpResponse(status=204)
    page = selectors.pump_page(request.user, pk, now)
    if not polling:  # a poll refreshes the page already opened (and logged)
        record_patient_access(request, page.pump.patient, "page")
    dose = selectors.dose_response(page.pump, now, page.alerts)
    context = {
        "data": page, "pump": page.pump, "patient": page.pump.patient, "clinic": page.pump.clinic,
        "p": page.projection, "can": page.permissions, "charts": pump_charts(page, now, dose), "dose": dose,
        "comedication_form": forms.CoMedicationForm(initial={"started_on": dose.day.isoformat()}),
        "comedication_fields": forms.comedication_fields_html(dose.day.isoformat()),
        "writable": None if _may_acknowledge(page.permissions) else set(), "advice": ADVICE,
        "flex": any(prog.mode == Program.Mode.FLEX for prog in page.history.programs),
        "poll_since": poll_since(now), "next_action": next_action(page),
    }
    return render_page(request, "pumps/pump.html", context, now=now)


def next_action(page: selectors.PumpPage) -> str:
    """The pump page's next step: "refill" (record it: empty, alarm, overdue, due soon),
    "book" (no refill appointment booked), or "" (booked, or nothing applies)."""
    if page.safety.explanted or page.projection.status == pj.STATUS_INACTIVE:
        return ""
    if page.safety.status in (pj.STATUS_EMPTY, pj.STATUS_ALARM, pj.STATUS_OVERDUE, pj.STATUS_DUE_SOON):
        return "refill"
    if page.safety.status == pj.STATUS_INCOMPLETE:
        return "refill"
    return "" if page.next_refill_appointment is not None else "book"


# -------------------------------------------------------------------------- refills


REFILL_PREVIEWED = ("performed_at", "extracted_volume_ml", "residual_left_ml", "added_volume_ml", "bridge_bolus_ml",
                    "concentration_mcg_per_ml", "drug_product")
PROGRAM_PREVIEWED = ("effective_at", "concentration_mcg_per_ml", "mode", "daily_dose_mcg", "steps", "ptm_bolus_mcg",
                     "ptm_max_per_day")


def _unparsed(form, names) -> dict[str, str]:
    """The first message of each field in ``names`` that did not parse ("Enter a volume in
    mL, e.g. 1.5"); an empty field is not a problem for a preview (it says what is missing)."""
    problems = {}
    for name, errors in form.errors.as_data().items():
        if name in names:
            for error in errors:
                if error.code != "required":
                    problems[name] = error.messages[0]
                    break
    return problems


def preview_problems(form, preview) -> list[tuple[str, str, str]]:
    """(input id, label, message) of each value the preview would not compute with."""
    return [(form[name].auto_id, form[name].label, message) for name, message in preview.problems.items()
            if name in form.fields]


def _refill_preview(form: forms.RefillForm, pump, now: datetime) -> services.RefillPreview:
    """The preview computes only on values that parse and that the services would take:
    otherwise it shows the fields' messages (``problems``)."""
    form.is_valid()  # the preview uses whatever parses; the save reports the rest
    data = getattr(form, "cleaned_data", {})
    changes_program = bool(data.get("changes_program"))
    names = REFILL_PREVIEWED + (tuple(f"program_{n}" for n in PROGRAM_PREVIEWED) if changes_program else ())
    unparsed = _unparsed(form, names)
    if unparsed:
        return services.RefillPreview(first_fill=False, capacity_ml=pump.model.reservoir_ml, problems=unparsed)
    program = form.program_or_none() if changes_program else None
    return services.refill_preview(
        pump,
        performed_at=data.get("performed_at"),
        extracted_volume_ml=data.get("extracted_volume_ml"),
        added_volume_ml=data.get("added_volume_ml"),
        residual_left_ml=data.get("residual_left_ml"),
        bridge_bolus_ml=data.get("bridge_bolus_ml"),
        concentration_mcg_per_ml=data.get("concentration_mcg_per_ml"),
        stability_days=services.stability_days(data.get("drug_product")),
        program=program,
        now=now,
    )


def _refill_initial(pump, now: datetime) -> dict:
    history = services.load_history(pump)
    in_force = [p for p in history.programs if p.effective_at <= now]
    last = history.refills[-1] if history.refills else None
    initial = {"performed_at": forms.now_local_input(pump.clinic.tz, now), "residual_left_ml": 0}
    if in_force:
        initial["concentration_mcg_per_ml"] = plain(in_force[-1].concentration_mcg_per_ml)
    if last is not None and last.drug_product is not None:
        initial["drug_product"] = last.drug_product.code
    return initial


def assessment_done(assessment) -> tuple[str, bool]:
    """The confirmation after a save: what was found and the alerts it opened (a warning
    when a sign was answered yes)."""
    signs = []
    if assessment.withdrawal_signs():
        signs.append(f"withdrawal signs: {', '.join(assessment.withdrawal_signs())}")
    if assessment.overdose_signs():
        signs.append(f"overdose signs: {', '.join(assessment.overdose_signs())}")
    if not signs:
        return "Assessment recorded.", False
    episode = selectors.ASSESSMENT_EPISODE.format(assessment.pk)
    opened = Alert.objects.filter(pump_id=assessment.pump_id, episode=episode)
    kinds = sorted(a.get_kind_display() for a in opened)
    alerted = f" Critical alert raised: {' and '.join(kinds)}." if kinds else ""
    return f"Assessment recorded with {'; '.join(signs)}.{alerted}", True


@login_required
@require_http_methods(["GET", "POST"])
def refill_create(request, pk: int):
    now = timezone.now()
    pump = selectors.pump_for(request.user, pk)
    require(selectors.permissions_for(request.user, pump.clinic_id).can_write, MSG_VIEWER)
    conflict = ""
    if request.method == "POST":
        form = forms.RefillForm(request.POST, pump=pump)
        if form.is_valid():
            try:
                refill = form.save(actor=actor_of(request))
            except Forbidden as exc:  # e.g. a program carried by a refill, entered by a nurse
                raise PermissionDenied(exc.message) from exc
            except services.ServiceValidationError as exc:
                forms.apply_service_errors(form, exc, prefix_map={"program.": "program_", "assessment.": "assessment_"})
            except services.Conflict as exc:
                conflict = exc.message.split(" Send confirm_duplicate")[0]
            else:
                text = "Refill recorded."
                assessment = Assessment.objects.filter(refill=refill).first()
                signs = assessment_done(assessment) if assessment is not None else ("", False)
                if refill.discrepancy_flagged or refill.refilled_after_empty:
                    text = f"{text} Flagged: {'; '.join(refill.flags)}."
                if signs[1]:
                    text = f"{text} {signs[0]}"
                if refill.discrepancy_flagged or refill.refilled_after_empty or signs[1]:
                    messages.warning(request, text)
                else:
                    messages.success(request, text)
                return redirect(pump_url(pump, SUMMARY))
    else:
        form = forms.RefillForm(initial=_refill_initial(pump, now), pump=pump)
    # A fresh form: the service's messages took their fields out of ``form.cleaned_data``.
    preview_form = forms.RefillForm(request.POST if request.method == "POST" else _initial_as_data(form), pump=pump)
    preview = _refill_preview(preview_form, pump, now)
    context = {"form": form, "pump": pump, "patient": pump.patient, "clinic": pump.clinic, "preview": preview,
               "problems": preview_problems(preview_form, preview),
               "can_program": selectors.permissions_for(request.user, pump.clinic_id).can_program,
               "conflict": conflict,
               # active on the refill's day, as the save checks it (docs/clinical-rules.md §15)
               "comedications": services.active_comedications(pump.patient_id, pj.local_date(
                   getattr(preview_form, "cleaned_data", {}).get("performed_at") or now, pump.clinic.tz)),
               "show_assessment": bool(form["assessment_recorded"].value()) or any(
                   name.startswith("assessment_") for name in form.errors),
               "show_program": bool(form["changes_program"].value()) or preview.concentration_change}
    return render_page(request, "pumps/refill_form.html", context, status=400 if form.errors or conflict else 200,
                       now=now)


@login_required
@require_POST
def refill_preview(request, pk: int):
    now = timezone.now()
    pump = selectors.pump_for(request.user, pk)
    form = forms.RefillForm(request.POST, pump=pump)
    preview = _refill_preview(form, pump, now)
    return render(request, "partials/refill_preview.html", {
        "preview": preview, "problems": preview_problems(form, preview),
        "pump": pump, "clinic": pump.clinic, "now": now,
    })


# ------------------------------------------------------------------------- programs


def _program_preview(form: forms.ProgramForm, pump, now: datetime) -> services.ProgramPreview:
    form.is_valid()
    data = getattr(form, "cleaned_data", {})
    unparsed = _unparsed(form, PROGRAM_PREVIEWED)
    if unparsed:
        return services.ProgramPreview(problems=unparsed)
    return services.program_preview(pump, form.program_input(), data.get("effective_at"), now)


@login_required
@require_http_methods(["GET", "POST"])
def program_create(request, pk: int):
    now = timezone.now()
    pump = selectors.pump_for(request.user, pk)
    require(selectors.permissions_for(request.user, pump.clinic_id).can_program, MSG_PRESCRIBER)
    history = services.load_history(pump)
    in_force = [p for p in history.programs if p.effective_at <= now]
    if request.method == "POST":
        form = forms.ProgramForm(request.POST, pump=pump)
        if form.is_valid():
            try:
                services.record_program(
                    pump=pump, effective_at=form.cleaned_data["effective_at"], data=form.program_input(),
                    actor=actor_of(request),
                )
            except Forbidden as exc:
                raise PermissionDenied(exc.message) from exc
            except services.ServiceValidationError as exc:
                forms.apply_service_errors(form, exc)
            else:
                messages.success(request, "Program saved. A second clinician must verify it.")
                return redirect(pump_url(pump, SUMMARY))
    else:
        initial = {"effective_at": forms.now_local_input(pump.clinic.tz, now)}
        current = in_force[-1] if in_force else None
        if history.refills:
            initial["concentration_mcg_per_ml"] = plain(history.refills[-1].concentration_mcg_per_ml)
        if current is not None:
            initial.update(
                mode=current.mode,
                daily_dose_mcg=plain(current.daily_dose_mcg) if current.mode == "continuous" else None,
                steps=forms.steps_text(current.steps), ptm_bolus_mcg=plain(current.ptm_bolus_mcg),
                ptm_max_per_day=current.ptm_max_per_day,
            )
        form = forms.ProgramForm(initial=initial, pump=pump)
    preview_form = forms.ProgramForm(request.POST if request.method == "POST" else _initial_as_data(form), pump=pump)
    preview = _program_preview(preview_form, pump, now)
    context = {"form": form, "pump": pump, "patient": pump.patient, "clinic": pump.clinic, "preview": preview,
               "problems": preview_problems(preview_form, preview),
               "current": in_force[-1] if in_force else None,
               **views_dose_context(pump, preview_form, preview, history, now)}
    return render_page(request, "pumps/program_form.html", context, status=400 if form.errors else 200, now=now)


def views_dose_context(pump, form, preview: selectors.ProgramPreview, history, now: datetime) -> dict:
    """The program form's dose-and-response parts (docs/clinical-rules.md §15): the CNS
    depressants active today and, for the dose typed, the interaction the prescriber must
    confirm (``services.check_interaction``, as the save applies it); whether the dose
    stops delivery (the withdrawal plan is asked for)."""
    data = getattr(form, "cleaned_data", {})
    at = data.get("effective_at") or now
    interaction = None
    if preview.daily_dose_mcg is not None and not preview.problems:
        interaction = services.check_interaction(pump, history.programs, at, preview.daily_dose_mcg)
    return {
        "comedications": services.active_comedications(pump.patient_id, pj.local_date(at, pump.clinic.tz)),
        "interaction": interaction,
        "stops_delivery": preview.daily_dose_mcg == 0 or data.get("daily_dose_mcg") == 0,
    }


def _initial_as_data(form) -> dict:
    return {name: ("" if value is None else value) for name, value in form.initial.items()}


@login_required
@require_POST
def program_preview(request, pk: int):
    now = timezone.now()
    pump = selectors.pump_for(request.user, pk)
    form = forms.ProgramForm(request.POST, pump=pump)
    preview = _program_preview(form, pump, now)
    return render(request, "partials/program_preview.html", {
        "preview": preview, "problems": preview_problems(form, preview),
        "pump": pump, "clinic": pump.clinic, "now": now,
        **views_dose_context(pump, form, preview, services.load_history(pump), now),
    })


@login_required
@require_POST
def program_verify(request, pk: int):
    program = selectors.record_for(request.user, Program, pk)
    require(selectors.permissions_for(request.user, program.pump.clinic_id).can_program, MSG_PRESCRIBER)
    try:
        services.verify_program(program=program, actor=actor_of(request))
    except services.ServiceValidationError as exc:
        for problems in exc.message_dict.values():
            for problem in problems:
                messages.error(request, f"Not verified: {problem}")
    else:
        messages.success(request, "Program verified.")
    return redirect(pump_url(program.pump, SUMMARY))


# ----------------------------------------------------------- readings, events, ...


def _record_form(request, pk: int, form_class, *, title: str, intro: str, done: str, initial=None):
    """A page with one form whose ``save`` calls a service: readings, events, explant,
    replacement."""
    now = timezone.now()
    pump = selectors.pump_for(request.user, pk)
    require(selectors.permissions_for(request.user, pump.clinic_id).can_write, MSG_VIEWER)
    if request.method == "POST":
        form = form_class(request.POST, pump=pump)
        if form.is_valid():
            try:
                result = form.save(actor=actor_of(request))
            except Forbidden as exc:
                raise PermissionDenied(exc.message) from exc
            except services.ServiceValidationError as exc:
                forms.apply_service_errors(form, exc)
            else:
                messages.success(request, done)
                target = result if isinstance(result, type(pump)) and result.pk != pump.pk else pump
                return redirect(pump_url(target, SUMMARY))
    else:
        form = form_class(initial=initial(pump, now) if initial else None, pump=pump)
    context = {"form": form, "pump": pump, "patient": pump.patient, "clinic": pump.clinic, "title": title,
               "intro": intro}
    return render_page(request, "pumps/record_form.html", context, status=400 if form.errors else 200, now=now)


@login_required
@require_http_methods(["GET", "POST"])
def reading_create(request, pk: int):
    return _record_form(
        request, pk, forms.ReadingForm, title="Record a pump reading",
        intro="An interrogation of the pump re-anchors the projection on the volume the pump reports.",
        done="Reading recorded.",
        initial=lambda pump, now: {"read_at": forms.now_local_input(pump.clinic.tz, now)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def event_create(request, pk: int):
    return _record_form(
        request, pk, forms.EventForm, title="Record an event",
        intro="MRI scans, emptying for MRI, alarms reported by the patient and withdrawal episodes.",
        done="Event recorded.",
        initial=lambda pump, now: {"occurred_at": forms.now_local_input(pump.clinic.tz, now)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def explant(request, pk: int):
    return _record_form(
        request, pk, forms.ExplantForm, title="Record the explant",
        intro="The pump leaves the worklist; its history is kept. An explant stops intrathecal baclofen: say what "
              "is done against withdrawal.", done="Explant recorded.",
        initial=lambda pump, now: {"explanted_on": pj.local_date(now, pump.clinic.tz).isoformat()},
    )


@login_required
@require_http_methods(["GET", "POST"])
def replace(request, pk: int):
    return _record_form(
        request, pk, forms.ReplaceForm, title="Replace the pump",
        intro="Explants this pump and implants the new one in one step. Record the first fill of the new pump next.",
        done="Pump replaced: record the first fill of the new pump.",
        initial=lambda pump, now: {"replaced_on": pj.local_date(now, pump.clinic.tz).isoformat(),
                                   "model": pump.model.code, "reason": "replacement"},
    )


# --------------------------------------------------------------------- appointments


@login_required
@require_http_methods(["GET", "POST"])
def appointments(request, pk: int):
    now = timezone.now()
    pump = selectors.pump_for(request.user, pk)
    perms = selectors.permissions_for(request.user, pump.clinic_id)
    if request.method == "POST":
        require(perms.can_write, MSG_VIEWER)
        form = forms.AppointmentForm(request.POST, pump=pump)
        if form.is_valid():
            try:
                form.save(actor=actor_of(request))
            except services.ServiceValidationError as exc:
                forms.apply_service_errors(form, exc)
            else:
                messages.success(request, "Appointment booked.")
                return redirect("appointments", pk=pump.pk)
    else:
        visit = forms.default_visit_time(now, pump.clinic.tz)
        initial = {"scheduled_for": visit.strftime("%Y-%m-%dT%H:%M"),
                   "assigned_to": request.user.pk if perms.can_write else None}
        form = forms.AppointmentForm(initial=initial, pump=pump)
    booked = list(Appointment.objects.filter(pump=pump).select_related("assigned_to").order_by("-scheduled_for", "-id"))
    context = {"form": form, "pump": pump, "patient": pump.patient, "clinic": pump.clinic, "can": perms,
               "appointments": booked, "statuses": Appointment.Status.choices}
    return render_page(request, "pumps/appointments.html", context, status=400 if form.errors else 200, now=now)


@login_required
@require_POST
def appointment_update(request, pk: int):
    appointment = selectors.record_for(request.user, Appointment, pk)
    require(selectors.permissions_for(request.user, appointment.pump.clinic_id).can_write, MSG_VIEWER)
    form = forms.AppointmentStatusForm(request.POST)
    if form.is_valid():
        services.update_appointment(
            appointment=appointment, status=form.cleaned_data["status"], actor=actor_of(request),
        )
        messages.success(request, f"Appointment marked {form.cleaned_data['status']}.")
    else:
        messages.error(request, "Choose a status.")
    return redirect("appointments", pk=appointment.pump_id)


@login_required
@require_GET
def appointment_calendar(request, pk: int):
    appointment = selectors.record_for(request.user, Appointment, pk)
    response = HttpResponse(appointment_ics(appointment), content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="appointment-{appointment.pk}.ics"'
    return response


# ---------------------------------------------------------------------------- voids

VOIDABLE = {"refill": Refill, "reading": Reading, "program": Program, "event": Event, "appointment": Appointment,
            "assessment": Assessment}


@login_required
@require_http_methods(["GET", "POST"])
def void(request, kind: str, pk: int):
    model = VOIDABLE.get(kind)
    if model is None:
        raise Http404("Nothing to void here.")
    record = selectors.record_for(request.user, model, pk)
    perms = selectors.permissions_for(request.user, record.pump.clinic_id)
    if model is Program:
        require(perms.can_program, MSG_PRESCRIBER)
    else:
        require(perms.can_write, MSG_VIEWER)
    form = forms.VoidForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.void_record(record=record, reason=form.cleaned_data["reason"], actor=actor_of(request))
        except services.ServiceValidationError as exc:
            forms.apply_service_errors(form, exc)
        else:
            messages.success(request, f"The {kind} was voided: it stays in the history and no longer counts.")
            return redirect(pump_url(record.pump, SUMMARY))
    context = {"form": form, "record": record, "kind": kind, "pump": record.pump, "patient": record.pump.patient,
               "clinic": record.pump.clinic}
    return render_page(request, "pumps/void_form.html", context, status=400 if form.errors else 200)


# --------------------------------------------------------------------------- alerts


@login_required
@require_GET
def alert_inbox(request):
    filters = selectors.AlertFilters(
        show="all" if request.GET.get("show") == "all" else "open",
        severity=request.GET.get("severity", "") if request.GET.get("severity") in Severity.values else "",
        kind=request.GET.get("kind", "") if request.GET.get("kind") in AlertKind.values else "",
    )
    rows, more = selectors.alerts_for(request.user, filters)
    context = {"alerts": rows, "more": more, "filters": filters,
               "writable": selectors.acknowledging_clinic_ids(request.user),
               "kinds": AlertKind.choices, "severities": Severity.choices, "advice": ADVICE}
    return render_page(request, "pumps/alerts.html", context)


def _safe_next(request, target: str) -> str:
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure(),
    )
    return target if target and safe else reverse("alerts")


@login_required
@require_POST
def alert_acknowledge(request, pk: int):
    """Acknowledge an alert: its reminders stop. A critical alert needs a reason, which the
    service requires; without one the form comes back with the service's message on the
    reason field (in place with htmx, else on a page of its own, 400)."""
    alerts_in_scope = selectors.scope(
        Alert.objects.select_related("clinic", "pump__patient", "pump__model"), request.user,
    )
    alert = alerts_in_scope.filter(pk=pk).first()
    if alert is None:
        raise Http404("No such alert.")
    require(user_may(request.user, alert.clinic_id, Action.ACKNOWLEDGE), MESSAGES[Action.ACKNOWLEDGE])
    form = forms.AcknowledgeForm(request.POST)
    form.is_valid()
    target = _safe_next(request, request.POST.get("next", ""))
    layout = request.POST.get("layout", "")
    context = {"alert": alert, "writable": None, "advice": ADVICE, "next": target}
    try:
        alert = acknowledge(alert, user=request.user, reason=form.cleaned_data.get("reason", ""))
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc
    except services.ServiceValidationError as exc:
        forms.apply_service_errors(form, exc)
        context["ack_form"] = form
        if request.htmx and layout in ("item", "row"):
            # 200: htmx swaps only successful answers; the fragment carries the field's message
            return render(request, f"partials/alert_{layout}.html", context)
        return render_page(request, "pumps/alert_acknowledge.html", context, status=400)
    if request.htmx and layout in ("item", "row"):
        context.update(alert=alert, just_acknowledged=True)
        return render(request, f"partials/alert_{layout}.html", context)
    messages.success(request, "Alert acknowledged: its reminders stop.")
    return redirect(target)


# ------------------------------------------------------------------------ worksheet


@login_required
@require_GET
def worksheet(request, pk: int):
    now = timezone.now()
    sheet = selectors.worksheet(request.user, pk, now, _int_or_none(request.GET.get("appointment")))
    page = sheet.page
    record_patient_access(request, page.pump.patient, "page")
    context = {"sheet": sheet, "data": page, "pump": page.pump, "patient": page.pump.patient,
               "clinic": page.pump.clinic, "p": sheet.at_visit, "current": page.program_in_force,
               "dose": selectors.dose_response(page.pump, now, page.alerts),
               "last_refill": page.live_refills[-1] if page.live_refills else None}
    return render_page(request, "pumps/worksheet.html", context, now=now)


# ------------------------------------------------------------------ clinic settings


@login_required
@require_http_methods(["GET", "POST"])
def clinic_settings(request, code: str):
    now = timezone.now()
    clinic = selectors.scope(Clinic.objects.all(), request.user, clinic_field="id").filter(code=code).first() \
        if not request.user.is_superuser else Clinic.objects.filter(code=code).first()
    if clinic is None:
        raise Http404("No such clinic.")
    require(selectors.permissions_for(request.user, clinic).can_admin, MSG_ADMIN)
    action = request.POST.get("action", "")
    policy = forms.ClinicPolicyForm(request.POST if action == "policy" else None, instance=clinic)
    recipient = forms.RecipientForm(request.POST if action == "add_recipient" else None, clinic=clinic)
    closure = forms.ClosureForm(request.POST if action == "add_closure" else None, clinic=clinic)
    if request.method == "GET" and request.htmx:  # the progress of the re-projection, polled
        return render(request, "partials/reprojection.html", {"reprojection": reprojection_progress(clinic, now)})
    actor = actor_of(request)
    if request.method == "POST":
        if action == "policy" and policy.is_valid():
            policy.save_with(actor=actor, now=now)
            messages.success(request, f"Policy saved; {REPROJECTING}")
            return redirect("clinic_settings", code=clinic.code)
        if action == "add_recipient" and recipient.is_valid():
            services.add_alert_recipient(recipient=recipient.save(commit=False), actor=actor)
            messages.success(request, f"{recipient.instance.email} added to the alert addresses.")
            return redirect("clinic_settings", code=clinic.code)
        if action == "remove_recipient":
            target = AlertRecipient.objects.filter(clinic=clinic, pk=_int_or_none(request.POST.get("id"))).first()
            if target is not None:
                services.remove_alert_recipient(recipient=target, actor=actor)
                messages.success(request, f"{target.email} removed from the alert addresses.")
            return redirect("clinic_settings", code=clinic.code)
        if action == "add_closure" and closure.is_valid():
            closure.save_with(actor=actor, now=now)
            messages.success(request, f"Closure added; {REPROJECTING}")
            return redirect("clinic_settings", code=clinic.code)
        if action == "remove_closure":
            target = ClinicClosure.objects.filter(clinic=clinic, pk=_int_or_none(request.POST.get("id"))).first()
            if target is not None:
                services.remove_closure(closure=target, actor=actor, now=now)
                messages.success(request, f"Closure on {target.date.isoformat()} removed; {REPROJECTING}")
            return redirect("clinic_settings", code=clinic.code)
    invalid = any(f.errors for f in (policy, recipient, closure))
    context = {
        "clinic": clinic, "policy": policy, "recipient": recipient, "closure": closure,
        "recipients": list(clinic.alert_recipients.all()),
        "closures": list(clinic.closures.filter(date__gte=pj.local_date(now, clinic.tz)).order_by("date")),
        "reprojection": reprojection_progress(clinic, now),
    }
    return render_page(request, "pumps/clinic_settings.html", context, status=400 if invalid else 200, now=now)


REPROJECTING = "due dates and statuses are being re-projected in the background (progress below)."


@dataclass(frozen=True)
class ReprojectionProgress:
    running: bool
    done: int
    total: int
    words: str
    problem: str


def reprojection_progress(clinic: Clinic, now: datetime) -> ReprojectionProgress | None:
    """The clinic's newest re-projection in words (None: there never was one)."""
    job = reprojection.latest(clinic)
    if job is None:
        return None

    def clock(moment: datetime) -> str:
        local = moment.astimezone(clinic.tz)
        day = "" if local.date() == pj.local_date(now, clinic.tz) else f"{local:%Y-%m-%d} "
        return f"{day}{local:%H:%M} {local.tzname()}"

    if job.finished_at is None:
        words = (f"Re-projecting due dates and statuses after the change saved at {clock(job.requested_at)}: "
                 f"{job.done} of {job.total} pumps done.")
    else:
        words = f"Re-projected {job.done} pump{'' if job.done == 1 else 's'} at {clock(job.finished_at)}."
    return ReprojectionProgress(running=job.finished_at is None, done=job.done, total=max(job.total, job.done),
                                words=words, problem=job.error)
