"""The admin: every page loads; clinical writes go through the services (validation,
audit, stored projection); nothing clinical is deleted; API tokens are shown once and
revoked; staff see only their clinics."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from clinic.models import AlertRecipient, ApiClient, Clinic, ClinicClosure, Membership, hash_token
from pumps import services
from pumps.models import (
    Alert,
    Appointment,
    ClinicReprojection,
    DrugProduct,
    Event,
    Notification,
    Patient,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
)
from pumps.services import Actor, ProgramInput
from tests.factories import make_clinic, make_patient, make_user

pytestmark = pytest.mark.django_db

CHICAGO = ZoneInfo("America/Chicago")
SYSTEM = Actor.system("test")


def local_days_ago(days: int, hour: int = 10) -> datetime:
    day = timezone.now().astimezone(CHICAGO).date() - timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=CHICAGO)


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.org", "admin-pass-2026")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def records(db):
    """One of each clinical record, written through the services."""
    clinic = make_clinic(code="north", name="North", timezone="America/Chicago")
    AlertRecipient.objects.create(clinic=clinic, email="pumps@north.example.org")
    ClinicClosure.objects.create(clinic=clinic, date=timezone.now().date() + timedelta(days=30), reason="Holiday")
    patient = make_patient(clinic)
    implanted = local_days_ago(60)
    pump = services.implant_pump(
        patient=patient, model=PumpModel.objects.get(code="8637-40"), serial_number="NGP1",
        implanted_on=implanted.date(), actor=SYSTEM, now=implanted,
    )
    first = services.record_refill(
        pump=pump, performed_at=implanted, added_volume_ml=Decimal("40"), concentration_mcg_per_ml=Decimal("1000"),
        drug_product=DrugProduct.objects.get(code="gablofen-1000"), actor=SYSTEM, now=implanted,
        program=ProgramInput(concentration_mcg_per_ml=Decimal("1000"), daily_dose_mcg=Decimal("400")),
    )
    # 0.4 mL/day for 30 days: 28 mL expected; 24 mL drawn is a flagged discrepancy (> 2 mL).
    second_at = local_days_ago(30)
    services.record_refill(
        pump=pump, performed_at=second_at, extracted_volume_ml=Decimal("24"), added_volume_ml=Decimal("36"),
        concentration_mcg_per_ml=Decimal("1000"), actor=SYSTEM, now=second_at,
    )
    reading = services.record_reading(
        pump=pump, read_at=local_days_ago(10), reservoir_volume_ml=Decimal("30"), actor=SYSTEM, now=local_days_ago(10),
    )
    event = services.record_event(pump=pump, kind="mri", occurred_at=local_days_ago(9), actor=SYSTEM)
    appointment = services.schedule_appointment(pump=pump, scheduled_for=local_days_ago(-20), actor=SYSTEM)
    client, token = ApiClient.create_with_token(clinic=clinic, name="EHR", can_write=False)
    services.record_assessment(pump=pump, assessed_at=local_days_ago(8), actor=SYSTEM, now=local_days_ago(8),
                               data=services.AssessmentInput(ashworth_lower_left="2", penn_spasm_frequency=1))
    services.record_comedication(patient=patient, name="oxycodone 5 mg", category="opioid",
                                 started_on=local_days_ago(40).date(), actor=SYSTEM, now=local_days_ago(8))
    old_patient = make_patient(clinic, mrn="MRN-OLD")
    old = services.implant_pump(
        patient=old_patient, model=PumpModel.objects.get(code="8637-40"), serial_number="NGP0",
        implanted_on=local_days_ago(90).date(), actor=SYSTEM, now=local_days_ago(90),
    )
    services.explant_pump(pump=old, explanted_on=local_days_ago(80).date(), withdrawal_plan="taper_completed",
                          actor=SYSTEM, now=local_days_ago(80))
    return {
        "clinic": clinic, "patient": patient, "pump": pump, "program": Program.objects.get(refill=first),
        "refill": first, "reading": reading, "event": event, "appointment": appointment, "api_client": client,
        "token": token,
    }


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


# ------------------------------------------------------------------ every page


READ_ONLY_MODELS = {"Alert", "Notification", "SweepRun", "PatientAccess", "Assessment", "CoMedication",
                    "WithdrawalPlan"}


@pytest.mark.parametrize(
    "model", [m for m in admin.site._registry if m._meta.app_label in ("clinic", "pumps")], ids=lambda m: m.__name__
)
def test_admin_pages_load_for_a_superuser(admin_client, records, superuser, model):
    Membership.objects.get_or_create(user=superuser, clinic=records["clinic"], defaults={"role": "admin"})
    assert admin_client.get(url(model, "changelist")).status_code == 200
    expected_add = 403 if model.__name__ in READ_ONLY_MODELS else 200
    assert admin_client.get(url(model, "add")).status_code == expected_add
    if model.__name__ == "PatientAccess":  # the access log fills as patient records are viewed
        assert admin_client.get(reverse("patient", args=[records["patient"].pk])).status_code == 200
    obj = model.objects.order_by("pk").first()
    if model.__name__ != "SweepRun":  # no sweep has run in this test
        assert obj is not None, f"no {model.__name__} to open"
    if obj is not None:
        response = admin_client.get(url(model, "change", obj.pk))
        assert response.status_code == 200
        if hasattr(admin.site._registry[model], "history_view"):
            assert admin_client.get(url(model, "history", obj.pk)).status_code == 200


def test_changelists_show_the_records(admin_client, records):
    page = admin_client.get(url(Pump, "changelist")).content.decode()
    assert "NGP1" in page
    page = admin_client.get(url(Alert, "changelist")).content.decode()
    assert "residual discrepancy" in page  # the flagged refill raised an alert through the services


# ------------------------------------------------------------- nothing is deleted


@pytest.mark.parametrize("key,model", [
    ("patient", Patient), ("pump", Pump), ("program", Program), ("refill", Refill), ("reading", Reading),
    ("event", Event), ("appointment", Appointment),
])
def test_clinical_records_cannot_be_deleted(admin_client, records, key, model):
    obj = records[key]
    assert admin_client.get(url(model, "delete", obj.pk)).status_code == 403
    response = admin_client.post(url(model, "changelist"), {"action": "delete_selected", "_selected_action": [obj.pk]})
    assert model.objects.filter(pk=obj.pk).exists()
    assert response.status_code in (200, 302)
    changelist = admin_client.get(url(model, "changelist")).content.decode()
    assert 'value="delete_selected"' not in changelist


def test_recorded_refills_are_view_only(admin_client, records):
    refill = records["refill"]
    response = admin_client.post(url(Refill, "change", refill.pk), {"added_volume_ml": "1"})
    assert response.status_code == 403
    refill.refresh_from_db()
    assert refill.added_volume_ml == Decimal("40.000")


# ------------------------------------------------------------------ api clients


def test_revoke_action_revokes_selected_tokens(admin_client, records):
    other, _ = ApiClient.create_with_token(clinic=records["clinic"], name="Scheduling", can_write=True)
    client = records["api_client"]
    response = admin_client.post(
        url(ApiClient, "changelist"), {"action": "revoke_tokens", "_selected_action": [client.pk]}, follow=True
    )
    assert response.status_code == 200
    client.refresh_from_db()
    other.refresh_from_db()
    assert client.revoked_at is not None
    assert other.revoked_at is None
    assert "Revoked 1 token." in response.content.decode()


def test_adding_an_api_client_shows_its_token_once(admin_client, records):
    response = admin_client.post(
        url(ApiClient, "add"), {"clinic": records["clinic"].pk, "name": "Pharmacy", "can_write": "on"}, follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    token = re.search(r"Token: (pc_[A-Za-z0-9_\-]+)", page).group(1)
    client = ApiClient.objects.get(name="Pharmacy")
    assert client.can_write
    assert client.token_hash == hash_token(token)
    # Shown once: the change page shows the hint and hash, never the token.
    page = admin_client.get(url(ApiClient, "change", client.pk)).content.decode()
    assert token not in page
    assert client.token_hint in page


def test_api_clients_cannot_be_deleted(admin_client, records):
    assert admin_client.get(url(ApiClient, "delete", records["api_client"].pk)).status_code == 403


# --------------------------------------------------------- writes via the services


def patient_form(clinic, **changes):
    data = {
        "clinic": clinic.pk, "mrn": "MRN777", "family_name": "Okafor", "given_name": "Chidi", "birth_date": "1975-04-02",
        "spasticity_origin": "cerebral", "high_risk_reason": "", "phone": "", "caregiver_phone": "", "status": "active",
    }
    data.update(changes)
    return data


def test_adding_a_patient_goes_through_the_service_and_is_audited(admin_client, records, superuser):
    response = admin_client.post(url(Patient, "add"), patient_form(records["clinic"]))
    assert response.status_code == 302
    patient = Patient.objects.get(mrn="MRN777")
    created = patient.history.get(history_type="+")
    assert created.history_user == superuser
    assert patient.clinic == records["clinic"]


def test_a_service_error_is_shown_on_the_form_and_nothing_is_saved(admin_client, records):
    tomorrow = (timezone.now() + timedelta(days=2)).date().isoformat()
    response = admin_client.post(url(Patient, "add"), patient_form(records["clinic"], birth_date=tomorrow))
    assert response.status_code == 200
    assert "The birth date is in the future." in response.content.decode()
    assert not Patient.objects.filter(mrn="MRN777").exists()

    # A duplicate MRN is refused by the service with the same wording as the API.
    response = admin_client.post(url(Patient, "add"), patient_form(records["clinic"], mrn="MRN001"))
    assert response.status_code == 200
    assert "A patient with this MRN already exists in this clinic." in response.content.decode()
    assert Patient.objects.filter(mrn="MRN001").count() == 1


def refill_form(pump, performed_at: datetime, **changes):
    local = performed_at.astimezone(CHICAGO)
    data = {
        "pump": pump.pk, "performed_at_0": local.date().isoformat(), "performed_at_1": local.strftime("%H:%M:%S"),
        "extracted_volume_ml": "19.5", "added_volume_ml": "38", "residual_left_ml": "0", "bridge_bolus_ml": "",
        "drug_product": "", "concentration_mcg_per_ml": "1000", "lot_number": "LOT9", "lot_expiry": "", "notes": "",
    }
    data.update(changes)
    return data


def test_adding_a_refill_computes_its_checks_and_the_pump_projection(admin_client, records):
    pump = Pump.objects.get(pk=records["pump"].pk)
    version = pump.version
    at = local_days_ago(2, hour=9)
    response = admin_client.post(url(Refill, "add"), refill_form(pump, at))
    assert response.status_code == 302, response.content.decode()[:2000]
    refill = Refill.objects.get(pump=pump, lot_number="LOT9")
    # Entered in the clinic's zone (Chicago), stored in UTC.
    assert refill.performed_at == at
    expected = services.project_pump(pump, at - timedelta(seconds=1)).reservoir_volume_ml
    assert refill.expected_residual_ml == expected
    assert refill.discrepancy_ml == Decimal("19.500") - expected
    pump.refresh_from_db()
    assert pump.anchor_at == at
    assert pump.version == version + 1


def test_a_refill_above_capacity_is_refused_on_its_field(admin_client, records):
    pump = records["pump"]
    response = admin_client.post(url(Refill, "add"), refill_form(pump, local_days_ago(2), added_volume_ml="45"))
    assert response.status_code == 200
    assert "exceeds the reservoir capacity of 40 mL" in response.content.decode()
    assert not Refill.objects.filter(lot_number="LOT9").exists()


def test_raising_the_alarm_volume_recomputes_the_due_date(admin_client, records):
    pump = Pump.objects.get(pk=records["pump"].pk)
    before = pump.refill_due_on
    page = admin_client.get(url(Pump, "change", pump.pk))
    assert page.status_code == 200
    data = {
        "serial_number": pump.serial_number, "udi": "", "low_reservoir_alarm_ml": "6",
        "expected_end_of_service": pump.expected_end_of_service.isoformat(), "explanted_on": "", "explant_reason": "",
    }
    response = admin_client.post(url(Pump, "change", pump.pk), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    pump.refresh_from_db()
    assert pump.low_reservoir_alarm_ml == Decimal("6.000")
    assert pump.refill_due_on < before  # 4 mL more warning at 0.4 mL/day: 10 days earlier
    assert pump.history.filter(history_user__username="root").exists()


def test_verify_action_records_the_second_clinician(admin_client, records, superuser):
    program = records["program"]
    admin_client.post(url(Program, "changelist"), {"action": "verify_programs", "_selected_action": [program.pk]})
    program.refresh_from_db()
    assert program.verified_by == superuser
    assert program.verified_at is not None


def test_changing_the_clinic_policy_recomputes_its_pumps(admin_client, records, superuser,
                                                         django_capture_on_commit_callbacks):
    """The admin saves the clinic and queues its re-projection (pumps.reprojection), which
    runs once the save commits (here in-process, the task eager)."""
    clinic, pump = records["clinic"], Pump.objects.get(pk=records["pump"].pk)
    before = pump.refill_due_on
    closures = list(clinic.closures.all())
    recipients = list(clinic.alert_recipients.all())
    data = {
        "name": clinic.name, "timezone": clinic.timezone, "lead_days": "14", "high_risk_extra_days": "7",
        "due_soon_days": "14", "open_weekdays": ["0", "1", "2", "3", "4"], "discrepancy_threshold_small_ml": "1",
        "discrepancy_threshold_large_ml": "2", "titration_limit_spinal_pct": "30", "titration_limit_other_pct": "15",
        "withdrawal_window_hours": "72", "digest_hour": "7",
        "refill_slots_per_day": "8", "refill_slots_by_weekday": "[null, null, null, null, null, null, null]", "refill_earliest_days": "14",
        "refill_first_visit": "09:00",
        "closures-TOTAL_FORMS": str(len(closures)), "closures-INITIAL_FORMS": str(len(closures)),
        "alert_recipients-TOTAL_FORMS": str(len(recipients)), "alert_recipients-INITIAL_FORMS": str(len(recipients)),
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    }
    for i, closure in enumerate(closures):
        data.update({f"closures-{i}-id": closure.pk, f"closures-{i}-clinic": clinic.pk,
                     f"closures-{i}-date": closure.date.isoformat(), f"closures-{i}-reason": closure.reason})
    for i, recipient in enumerate(recipients):
        data.update({f"alert_recipients-{i}-id": recipient.pk, f"alert_recipients-{i}-clinic": clinic.pk,
                     f"alert_recipients-{i}-email": recipient.email})
    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = admin_client.post(url(Clinic, "change", clinic.pk), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert len(queued) == 1
    clinic.refresh_from_db()
    assert clinic.lead_days == 14
    pump.refresh_from_db()
    assert pump.refill_due_on < before
    assert clinic.code == "north"
    implanted = clinic.pumps.filter(explanted_on__isnull=True).count()
    job = ClinicReprojection.objects.get(clinic=clinic)
    assert (job.requested_by, job.total, job.done, job.failed, job.superseded) == (superuser, implanted, implanted, 0,
                                                                                  False)
    assert job.finished_at is not None
    page = admin_client.get(url(Clinic, "changelist")).content.decode()
    assert (f"Re-projecting {implanted} pump{'' if implanted == 1 else 's'} in the background: "
            "the clinic&#x27;s settings page shows the progress.") in page


# -------------------------------------------------------------------- scoping


def test_staff_see_only_their_clinics_records(client, records):
    other = make_clinic(code="south", name="South", timezone="Australia/Sydney")
    make_patient(other, mrn="SOUTH1", family_name="Nguyen")
    user = make_user("south_admin", other, "admin", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_patient", "view_pump"]))
    client.force_login(user)
    page = client.get(url(Patient, "changelist")).content.decode()
    assert "SOUTH1" in page
    assert "MRN001" not in page
    assert client.get(url(Patient, "change", records["patient"].pk)).status_code == 302  # not found: redirected


def test_outbox_lists_queued_notifications(admin_client, records):
    assert Notification.objects.exists()
    note = Notification.objects.first()
    page = admin_client.get(url(Notification, "change", note.pk)).content.decode()
    assert note.recipient in page


def test_acknowledge_action_stops_an_alerts_repeats(admin_client, records, superuser):
    from pumps.models import Alert

    alert = Alert.objects.get(kind="residual_discrepancy")
    critical = Alert.objects.create(
        clinic=records["clinic"], pump=records["pump"], kind="low_reservoir", episode="fill:x", severity="critical",
        created_at=timezone.now(), next_repeat_at=timezone.now() + timedelta(hours=4),
    )
    other = Alert.objects.create(
        clinic=records["clinic"], pump=records["pump"], kind="refill_overdue", episode="due:x", severity="warning",
        created_at=timezone.now(), next_repeat_at=timezone.now() + timedelta(hours=4),
    )
    response = admin_client.post(
        url(Alert, "changelist"), {"action": "acknowledge_alerts", "_selected_action": [other.pk, critical.pk]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Acknowledged 1 alert." in page
    assert "1 critical alert needs a reason" in page  # silencing a critical alert takes a reason
    critical.refresh_from_db()
    assert critical.acknowledged_at is None
    other.refresh_from_db()
    alert.refresh_from_db()
    assert other.acknowledged_by == superuser and other.next_repeat_at is None
    assert alert.acknowledged_at is None
