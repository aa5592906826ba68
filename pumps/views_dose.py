"""Staff pages of dose and response (docs/clinical-rules.md §15): a visit assessment on
its own page, and the patient's CNS depressants (add, stop, void) from the pump page.
Thin like ``pumps.views``: forms parse, services write (one transaction per action) and
their field-level messages go back on the form."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from . import forms, selectors, services
from .errors import Forbidden
from .models import CoMedication
from .views import MSG_VIEWER, SUMMARY, actor_of, assessment_done, pump_url, redirect, render_page, require

DOSE_SECTION = "dose-response"


def _writable_pump(request, pk: int):
    pump = selectors.pump_for(request.user, pk)
    require(selectors.permissions_for(request.user, pump.clinic_id).can_write, MSG_VIEWER)
    return pump


@login_required
@require_http_methods(["GET", "POST"])
def assessment_create(request, pk: int):
    now = timezone.now()
    pump = _writable_pump(request, pk)
    if request.method == "POST":
        form = forms.AssessmentForm(request.POST, pump=pump)
        if form.is_valid():
            try:
                assessment = form.save(actor=actor_of(request))
            except Forbidden as exc:
                raise PermissionDenied(exc.message) from exc
            except services.ServiceValidationError as exc:
                forms.apply_service_errors(form, exc)
            else:
                text, warn = assessment_done(assessment)
                (messages.warning if warn else messages.success)(request, text)
                return redirect(pump_url(pump, SUMMARY))
    else:
        form = forms.AssessmentForm(initial={"assessed_at": forms.now_local_input(pump.clinic.tz, now)}, pump=pump)
    context = {"form": form, "pump": pump, "patient": pump.patient, "clinic": pump.clinic,
               "dose": selectors.dose_response(pump, now)}
    return render_page(request, "pumps/assessment_form.html", context, status=400 if form.errors else 200, now=now)


# ------------------------------------------------------------------ co-medication


def _comedication(pump, pk: int) -> CoMedication:
    """A co-medication of the pump's patient (another patient's answers 404)."""
    found = CoMedication.objects.filter(pk=pk, patient_id=pump.patient_id).first()
    if found is None:
        raise Http404("No such co-medication.")
    return found


def _comedication_page(request, pump, form, *, title: str, intro: str, button: str, comedication=None):
    context = {"form": form, "pump": pump, "patient": pump.patient, "clinic": pump.clinic, "title": title,
               "intro": intro, "button": button, "comedication": comedication}
    return render_page(request, "pumps/comedication_form.html", context, status=400 if form.errors else 200)


def _save(form, call):
    """Run a service call; its field-level messages go on ``form``. True when saved."""
    try:
        call()
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc
    except services.ServiceValidationError as exc:
        forms.apply_service_errors(form, exc)
        return False
    return True


ADD_INTRO = ("Opioids, benzodiazepines, oral baclofen and other sedatives add to the sedation and respiratory "
             "depression of intrathecal baclofen: a dose increase while one is active needs the prescriber's "
             "confirmation.")


@login_required
@require_http_methods(["GET", "POST"])
def comedication_add(request, pk: int):
    pump = _writable_pump(request, pk)
    form = forms.CoMedicationForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _save(form, lambda: form.save(
            patient=pump.patient, actor=actor_of(request))):
        messages.success(request, f"Co-medication added: {form.cleaned_data['name']}.")
        return redirect(pump_url(pump, DOSE_SECTION))
    return _comedication_page(request, pump, form, title="Add a co-medication", intro=ADD_INTRO,
                              button="Add co-medication")


@login_required
@require_POST
def comedication_stop(request, pk: int, comedication: int):
    pump = _writable_pump(request, pk)
    record = _comedication(pump, comedication)
    form = forms.CoMedicationStopForm(request.POST)
    if form.is_valid() and _save(form, lambda: form.save(comedication=record, actor=actor_of(request))):
        messages.success(request, f"Co-medication stopped: {record.name}.")
        return redirect(pump_url(pump, DOSE_SECTION))
    return _comedication_page(request, pump, form, title="Stop a co-medication", comedication=record,
                              intro="The last day the patient takes it.", button="Stop")


@login_required
@require_http_methods(["GET", "POST"])
def comedication_void(request, pk: int, comedication: int):
    pump = _writable_pump(request, pk)
    record = _comedication(pump, comedication)
    form = forms.VoidForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _save(form, lambda: services.void_comedication(
            comedication=record, reason=form.cleaned_data["reason"], actor=actor_of(request))):
        messages.success(request, "The co-medication was voided: it stays in the history and no longer counts.")
        return redirect(pump_url(pump, DOSE_SECTION))
    context = {"form": form, "record": record, "kind": "co-medication", "pump": pump, "patient": pump.patient,
               "clinic": pump.clinic}
    return render_page(request, "pumps/void_form.html", context, status=400 if form.errors else 200)
