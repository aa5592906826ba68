"""Identifiers refuse control characters at every entry (docs/safety/hazard-log.md, H-11):
an MRN, name, serial, UDI or lot number with a line break, a tab, NUL or any other Unicode
control character is refused with a field message through the API, the staff pages and
the admin (the import: tests/test_import_csv.py), and nothing is saved. Free text keeps
its line breaks but has a maximum length."""

from __future__ import annotations

from datetime import datetime

import pytest

from pumps import services as s
from pumps.models import Patient, Pump, Refill
from tests.api_support import (
    AFTER_REFILL,
    API,
    CHICAGO,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_patient, make_user
from tests.pages_support import signed_in

MSG = "Remove line breaks, tabs and other control characters from this field."
NOW = datetime(2026, 2, 2, 10, 0, tzinfo=CHICAGO)
PATIENT = {"mrn": "MRN900", "family_name": "Lopez", "given_name": "Ana", "birth_date": "1980-05-17",
           "spasticity_origin": "cerebral", "withdrawal_high_risk": False}


@pytest.mark.parametrize("field,value", [
    ("mrn", "MRN\r\n900"), ("mrn", "MRN\t900"), ("family_name", "Lo\x85pez"), ("given_name", "A\x1bna"),
])
def test_api_patient_identifier_with_a_control_character_is_400(clinic, field, value):
    api, _ = token_client(clinic)
    with travel(NOW):
        response = api.post(f"{API}/patients/", {**PATIENT, field: value}, format="json")
    assert response.status_code == 400
    assert response.json() == {field: [MSG]}
    assert not Patient.objects.exists()


def test_api_pump_serial_and_refill_lot_with_control_characters_are_400(clinic, patient, pump):
    api, _ = token_client(clinic)
    with travel(NOW):
        other = make_patient(clinic, mrn="MRN002", family_name="Baker", given_name="Ben")
        response = api.post(f"{API}/pumps/", {"patient": other.pk, "model": "8637-20", "serial_number": "SN\n2",
                                              "implanted_on": "2026-01-20"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"serial_number": [MSG]}
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", worked_example_refill(pump.pk, lot_number="L1\r\nBcc: x"),
                            format="json")
    assert response.status_code == 400
    assert response.json() == {"lot_number": [MSG]}
    assert Pump.objects.count() == 1 and not Refill.objects.exists()


def test_page_patient_edit_refuses_a_control_character_next_to_the_field(clinic, patient, nurse):
    with travel(NOW):
        response = signed_in(nurse).post(f"/patients/{patient.pk}/edit/", {
            "mrn": "MRN\r\n001", "family_name": "Garcia", "given_name": "Ana", "birth_date": "1980-05-17",
            "spasticity_origin": "spinal", "phone": "", "caregiver_phone": "", "status": "active",
        })
    assert response.status_code == 200
    html = response.content.decode()
    assert MSG in html
    patient.refresh_from_db()
    assert patient.mrn == "MRN001"


def test_admin_patient_add_refuses_a_control_character(clinic):
    admin = make_user("root", None, is_staff=True, is_superuser=True)
    client = signed_in(admin)
    with travel(NOW):
        response = client.post("/admin/pumps/patient/add/", {
            "clinic": clinic.pk, "mrn": "MRN\n77", "family_name": "Garcia", "given_name": "Ana",
            "birth_date": "1980-05-17", "spasticity_origin": "spinal", "status": "active",
            "high_risk_reason": "", "phone": "", "caregiver_phone": "",
        })
    assert response.status_code == 200
    assert MSG in response.content.decode()
    assert not Patient.objects.exists()


def test_free_text_keeps_line_breaks_within_its_limit(clinic, pump, prescriber):
    refill = s.record_refill(
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=36,
        concentration_mcg_per_ml=1000, actor=s.Actor(prescriber), now=NOW, notes="line one\nline two",
        program=s.ProgramInput(concentration_mcg_per_ml=1000, daily_dose_mcg=450),
    )
    assert refill.notes == "line one\nline two"
    with pytest.raises(s.ServiceValidationError) as exc:
        s.record_reading(pump=pump, read_at=datetime(2026, 2, 2, 9, 30, tzinfo=CHICAGO), reservoir_volume_ml=30,
                         actor=s.Actor(prescriber), now=NOW, notes="x" * 2001)
    assert exc.value.message_dict == {"notes": ["Ensure this field has no more than 2000 characters."]}


def test_service_identifier_check_covers_unicode_control_characters():
    assert s.has_control_characters("a\u0085b")  # NEL
    assert s.has_control_characters("a\x7fb")  # DEL
    assert not s.has_control_characters("Müller-Łukasz O'Brien")
