"""The access audit: one PatientAccess row per read of a patient's record through a staff
page, the REST API's patient detail or the FHIR Patient read, and one row per patient
returned by a list or search read (marked ``list_read``, one INSERT per request, the path
without its query string); the admin lists the log read-only, and shows who changed a
clinical record (docs/safety/hazard-log.md, H-27)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal as D

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from pumps import services as s
from pumps.access import record_patient_access
from pumps.models import PatientAccess, Refill
from tests.api_support import API, CHICAGO, session_client, token_client, travel
from tests.factories import make_patient, make_pump, make_user
from tests.pages_support import signed_in

VIEWED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=CHICAGO)
FIELDS = ("patient_id", "clinic_id", "user_id", "api_client_id", "channel", "path", "at")


def log() -> list[tuple]:
    return list(PatientAccess.objects.order_by("id").values_list(*FIELDS))


@pytest.fixture
def other_patient(other_clinic):
    return make_patient(other_clinic, mrn="S-77", family_name="Nguyen", given_name="Bao")


# ------------------------------------------------------------------ staff pages


def test_patient_page_logs_the_user_the_patient_and_the_time(nurse, patient, pump):
    with travel(VIEWED_AT):
        response = signed_in(nurse).get(f"/patients/{patient.pk}/")
    assert response.status_code == 200
    assert log() == [
        (patient.pk, patient.clinic_id, nurse.pk, None, "page", f"/patients/{patient.pk}/", VIEWED_AT),
    ]


def test_pump_page_logs_its_patient(nurse, patient, pump):
    with travel(VIEWED_AT):
        response = signed_in(nurse).get(f"/pumps/{pump.pk}/")
    assert response.status_code == 200
    assert log() == [(patient.pk, patient.clinic_id, nurse.pk, None, "page", f"/pumps/{pump.pk}/", VIEWED_AT)]


def test_each_view_is_one_row(nurse, prescriber, patient, pump):
    with travel(VIEWED_AT):
        signed_in(nurse).get(f"/patients/{patient.pk}/")
        signed_in(prescriber).get(f"/patients/{patient.pk}/")
        signed_in(nurse).get(f"/pumps/{pump.pk}/")
    assert [(row[2], row[5]) for row in log()] == [
        (nurse.pk, f"/patients/{patient.pk}/"), (prescriber.pk, f"/patients/{patient.pk}/"),
        (nurse.pk, f"/pumps/{pump.pk}/"),
    ]


def test_another_clinics_record_is_not_an_access(nurse, other_patient):
    other_pump = make_pump(other_patient, serial="SN-S1")
    client = signed_in(nurse)
    assert client.get(f"/patients/{other_patient.pk}/").status_code == 404
    assert client.get(f"/pumps/{other_pump.pk}/").status_code == 404
    assert client.get("/patients/999999/").status_code == 404
    assert log() == []


def test_lists_and_other_pages_do_not_log(nurse, patient, pump):
    client = signed_in(nurse)
    assert client.get("/").status_code == 200
    assert client.get("/alerts/").status_code == 200
    assert client.get(f"/pumps/{pump.pk}/refill/").status_code == 200
    assert log() == []


# -------------------------------------------------------------------------- API


def test_api_client_reading_a_patient_is_logged_as_the_client(clinic, patient):
    api, api_client = token_client(clinic, write=False, name="Hospital EHR")
    with travel(VIEWED_AT):
        response = api.get(f"{API}/patients/{patient.pk}/")
    assert response.status_code == 200
    assert response.json()["mrn"] == "MRN001"
    assert log() == [
        (patient.pk, clinic.pk, None, api_client.pk, "api", f"/api/v1/patients/{patient.pk}/", VIEWED_AT),
    ]


def test_staff_session_on_the_api_is_logged_as_the_user(nurse, patient):
    with travel(VIEWED_AT):
        response = session_client(nurse).get(f"{API}/patients/{patient.pk}/")
    assert response.status_code == 200
    assert log() == [
        (patient.pk, patient.clinic_id, nurse.pk, None, "api", f"/api/v1/patients/{patient.pk}/", VIEWED_AT),
    ]


def test_api_lists_log_one_row_per_patient_returned_without_the_query(clinic, patient, pump):
    api, api_client = token_client(clinic)
    assert api.get(f"{API}/patients/").json()["count"] == 1
    assert api.get(f"{API}/patients/", {"mrn": "MRN001"}).status_code == 200
    assert api.get(f"{API}/pumps/").status_code == 200
    assert api.get(f"{API}/worklist/").status_code == 200
    rows = list(PatientAccess.objects.order_by("id").values_list("patient_id", "api_client_id", "channel", "path",
                                                                 "list_read"))
    assert rows == [
        (patient.pk, api_client.pk, "api", f"{API}/patients/", True),
        (patient.pk, api_client.pk, "api", f"{API}/patients/", True),
        (patient.pk, api_client.pk, "api", f"{API}/pumps/", True),
        (patient.pk, api_client.pk, "api", f"{API}/worklist/", True),
    ]


def test_an_empty_list_logs_nothing(clinic):
    api, _ = token_client(clinic)
    assert api.get(f"{API}/patients/").json()["count"] == 0
    assert log() == []


def test_api_another_clinics_patient_is_404_and_not_logged(clinic, other_patient):
    api, _ = token_client(clinic)
    assert api.get(f"{API}/patients/{other_patient.pk}/").status_code == 404
    assert log() == []


def test_unauthenticated_api_read_is_not_logged(patient):
    from rest_framework.test import APIClient

    assert APIClient().get(f"{API}/patients/{patient.pk}/").status_code == 401
    assert log() == []


# ------------------------------------------------------------------------- FHIR


def test_fhir_patient_read_is_logged(clinic, patient, pump):
    api, api_client = token_client(clinic, write=False)
    with travel(VIEWED_AT):
        response = api.get(f"/fhir/r4/Patient/{patient.pk}")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "Patient"
    assert log() == [(patient.pk, clinic.pk, None, api_client.pk, "fhir", f"/fhir/r4/Patient/{patient.pk}", VIEWED_AT)]


def test_fhir_searches_log_each_patient_returned_reads_of_other_resources_do_not(clinic, patient, pump,
                                                                                   other_patient):
    api, api_client = token_client(clinic, write=False)
    assert api.get(f"/fhir/r4/Device/{pump.pk}").status_code == 200
    assert api.get(f"/fhir/r4/Patient/{other_patient.pk}").status_code == 404
    assert log() == []
    assert api.get("/fhir/r4/Device", {"patient": patient.pk}).status_code == 200
    assert api.get("/fhir/r4/Patient", {"identifier": "MRN001"}).json()["total"] == 1
    assert [(row[0], row[3], row[4], row[5]) for row in log()] == [
        (patient.pk, api_client.pk, "fhir", "/fhir/r4/Device"),
        (patient.pk, api_client.pk, "fhir", "/fhir/r4/Patient"),
    ]


# ----------------------------------------------------------------------- helper


def test_helper_refuses_an_unknown_channel(nurse, patient):
    request = RequestFactory().get("/x/")
    request.user = nurse
    with pytest.raises(ValueError, match="unknown access channel 'email'"):
        record_patient_access(request, patient, "email")
    assert log() == []


def test_helper_truncates_a_long_path(nurse, patient):
    request = RequestFactory().get("/" + "p" * 400)
    request.user = nurse
    row = record_patient_access(request, patient, "page")
    assert row.path == "/" + "p" * 299
    assert len(row.path) == 300


def test_a_list_read_writes_one_row_per_patient_in_inserts_of_bounded_size(nurse, clinic, monkeypatch):
    """A read of many patients is written as plain rows, a statement per
    ``_ROWS_PER_INSERT`` (two here): every patient once, with the user, the clinic, the
    channel, the path without its query, the instant of the read and the list flag."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pumps import access

    patients = [make_patient(clinic, mrn=f"MRN-L{n}") for n in range(5)]
    request = RequestFactory().get("/api/v1/patients/", {"mrn": "MRN-L"})
    request.user = nurse
    monkeypatch.setattr(access, "_ROWS_PER_INSERT", 2)
    at = datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO)
    with travel(at), CaptureQueriesContext(connection) as captured:
        written = access.record_patients_access(request, [p.pk for p in patients] + [patients[0].pk], None, "api")
    assert written == 5
    assert [q["sql"].split(" (")[0] for q in captured.captured_queries].count(
        'INSERT INTO "pumps_patientaccess"') == 3
    rows = list(PatientAccess.objects.order_by("id").values_list(
        "patient_id", "clinic_id", "user_id", "api_client_id", "channel", "path", "at", "list_read"))
    assert rows == [(p.pk, clinic.pk, nurse.pk, None, "api", "/api/v1/patients/", at, True) for p in patients]


# ------------------------------------------------------------------------ admin


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.org", "admin-pass-2026")


def admin_url(view: str, *args) -> str:
    return reverse(f"admin:pumps_patientaccess_{view}", args=args)


@pytest.fixture
def accesses(clinic, nurse, patient, pump, other_patient):
    api, api_client = token_client(clinic, name="Hospital EHR")
    with travel(VIEWED_AT):
        signed_in(nurse).get(f"/patients/{patient.pk}/")
        api.get(f"/fhir/r4/Patient/{patient.pk}")
    ops = make_user("sam", other_patient.clinic, "nurse")
    with travel(datetime(2026, 3, 2, 9, 0, tzinfo=CHICAGO)):
        signed_in(ops).get(f"/patients/{other_patient.pk}/")
    assert PatientAccess.objects.count() == 3
    return api_client


def changelist_rows(client, **params) -> int:
    response = client.get(admin_url("changelist"), params)
    assert response.status_code == 200
    return response.context["cl"].result_count


def test_admin_lists_filters_and_searches_the_log(superuser, accesses, patient, clinic, other_clinic):
    client = signed_in(superuser)
    page = client.get(admin_url("changelist")).content.decode()
    assert "nina" in page and "API client Hospital EHR" in page and "sam" in page
    assert changelist_rows(client) == 3
    assert changelist_rows(client, channel__exact="fhir") == 1
    assert changelist_rows(client, channel__exact="page") == 2
    assert changelist_rows(client, clinic__id__exact=clinic.pk) == 2
    assert changelist_rows(client, clinic__id__exact=other_clinic.pk) == 1
    assert changelist_rows(client, q="MRN001") == 2
    assert changelist_rows(client, q="S-77") == 1
    assert changelist_rows(client, q="nina") == 1
    # the date filter (and the date hierarchy): the page is in UTC, the clinics' zones differ
    assert changelist_rows(client, **{"at__gte": "2026-03-02 00:00:00+00:00", "at__lt": "2026-03-03 00:00:00+00:00"}) == 1
    assert changelist_rows(client, at__year="2026", at__month="3", at__day="1") == 2


def test_admin_log_is_read_only_and_not_deletable(superuser, accesses):
    client = signed_in(superuser)
    row = PatientAccess.objects.order_by("id").first()
    before = log()
    assert client.get(admin_url("add")).status_code == 403
    change = client.get(admin_url("change", row.pk))
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()  # a view page, no form to save
    assert client.post(admin_url("change", row.pk), {"channel": "api", "path": "/x/"}).status_code == 403
    assert client.get(admin_url("delete", row.pk)).status_code == 403
    assert client.post(admin_url("delete", row.pk), {"post": "yes"}).status_code == 403
    bulk = client.post(admin_url("changelist"), {"action": "delete_selected", "_selected_action": [row.pk]})
    assert bulk.status_code == 200  # no such action: the list is shown again
    assert log() == before


def test_admin_log_is_scoped_to_the_staff_users_clinics(accesses, clinic):
    from django.contrib.auth.models import Permission

    staff = make_user("clinic_admin", clinic, "admin", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_patientaccess"))
    client = signed_in(staff)
    assert changelist_rows(client) == 2
    assert changelist_rows(client, q="S-77") == 0


def test_admin_history_of_a_refill_shows_who_recorded_and_voided_it(superuser, nurse, prescriber, pump):
    at = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
    refill = s.record_refill(
        pump=pump, performed_at=at, added_volume_ml=D("36"), concentration_mcg_per_ml=D("1000"), actor=s.Actor(nurse),
        now=at,
    )
    s.void_record(record=refill, actor=s.Actor(prescriber), reason="entered on the wrong pump", now=at)
    history = list(Refill.history.filter(id=refill.pk).order_by("history_id").values_list("history_type", "history_user"))
    assert history[0] == ("+", nurse.pk)
    assert history[-1] == ("~", prescriber.pk)
    response = signed_in(superuser).get(reverse("admin:pumps_refill_history", args=[refill.pk]))
    assert response.status_code == 200
    # (action, "Changed by" link, "Changed by" name), newest first
    rows = re.findall(r'<td>(Created|Changed)</td>\s*<td>\s*<a href="([^"]+)">([^<]+)</a>', response.content.decode())
    assert rows[0] == ("Changed", reverse("admin:auth_user_change", args=[prescriber.pk]), "dr_pat")
    assert rows[-1] == ("Created", reverse("admin:auth_user_change", args=[nurse.pk]), "nina")
    assert len(rows) == len(history)
