"""The one permission rule set (clinic/permissions.py), enforced by the services, holds on
every write path: the staff pages, the session API, an API token, the spreadsheet import
(tests/test_import_csv.py) and the admin. Only a prescriber enters, verifies or voids a
program, also inside a refill or by voiding the refill that carried it; who acted comes
from the session; an integration may name a clinician, who must hold the role the action
needs (docs/safety/hazard-log.md, H-08, H-09, H-10)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D

import pytest

from clinic import permissions
from clinic.models import Role
from pumps import services as s
from pumps.models import Program, Refill
from tests.api_support import API, session_client, token_client
from tests.factories import make_user
from tests.pages_support import CHICAGO, signed_in, travel

FILL_AT = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
NOW = datetime(2026, 2, 10, 10, 0, tzinfo=CHICAGO)
NON_PRESCRIBERS = ("viewer", "nurse", "pharmacist", "admin")
ROLES = (*NON_PRESCRIBERS, "prescriber")
MSG_PROGRAM = "Only a prescriber (physician) enters, verifies or voids a program."
MSG_RECORD = "Your role in this clinic does not allow changes."
MSG_CARRIED = "This refill carried a new program: only a prescriber (physician) voids it, and its program with it."


@pytest.fixture
def dr_pat(clinic):
    return make_user("dr_pat", clinic, "prescriber")


@pytest.fixture
def filled(pump, dr_pat):
    """The worked example's first fill, carrying its program, entered by dr_pat."""
    s.record_refill(
        pump=pump, performed_at=FILL_AT, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
        actor=s.Actor(dr_pat), now=FILL_AT,
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
    )
    return pump


@pytest.fixture
def staff(clinic):
    return {role: make_user(f"{role}.one", clinic, role) for role in ROLES}


def refill_page_form(**overrides):
    data = {
        "performed_at": "2026-02-10T09:00", "extracted_volume_ml": "32.4", "residual_left_ml": "0",
        "added_volume_ml": "5", "concentration_mcg_per_ml": "1000", "lot_number": "L1", "notes": "",
        "changes_program": "on", "program_mode": "continuous", "program_daily_dose_mcg": "500",
    }
    data.update(overrides)
    return data


def program_body(pump_id, **overrides):
    body = {"pump": pump_id, "effective_at": "2026-02-10T09:00:00-06:00", "concentration_mcg_per_ml": "1000",
            "mode": "continuous", "daily_dose_mcg": "500"}
    body.update(overrides)
    return body


def refill_body(pump_id, **overrides):
    body = {"pump": pump_id, "performed_at": "2026-02-10T09:00:00-06:00", "extracted_volume_ml": "32.4",
            "added_volume_ml": "5", "concentration_mcg_per_ml": "1000",
            "program": {"concentration_mcg_per_ml": "1000", "mode": "continuous", "daily_dose_mcg": "500"}}
    body.update(overrides)
    return body


# --------------------------------------------------------------------- the rule set


def test_the_rule_table():
    assert {a: sorted(permissions.ROLES[a]) for a in permissions.Action} == {
        permissions.Action.RECORD: ["admin", "nurse", "pharmacist", "prescriber"],
        permissions.Action.PROGRAM: ["prescriber"],
        permissions.Action.ACKNOWLEDGE: ["admin", "nurse", "pharmacist", "prescriber"],
        permissions.Action.ADMINISTER: ["admin"],
    }
    assert not permissions.role_allows(Role.VIEWER, permissions.Action.RECORD)
    assert not permissions.role_allows(None, permissions.Action.RECORD)


# ---------------------------------------------------------------- services directly


@pytest.mark.parametrize("role", NON_PRESCRIBERS)
def test_service_refuses_a_program_inside_a_refill_from_a_non_prescriber(filled, staff, role):
    with pytest.raises(s.Forbidden) as exc:
        s.record_refill(
            pump=filled, performed_at=datetime(2026, 2, 10, 9, tzinfo=CHICAGO), extracted_volume_ml=D("32.4"),
            added_volume_ml=D(5), concentration_mcg_per_ml=D(1000), actor=s.Actor(staff[role]), now=NOW,
            program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(500)),
        )
    assert exc.value.message == (MSG_RECORD if role == "viewer" else MSG_PROGRAM)
    assert Refill.objects.count() == 1 and Program.objects.count() == 1


@pytest.mark.parametrize("role", ROLES)
def test_service_program_entry_verification_and_void_by_role(filled, staff, role, dr_pat):
    actor = s.Actor(staff[role])
    program = Program.objects.get()
    if role != "prescriber":
        with pytest.raises(s.Forbidden, match="Only a prescriber"):
            s.record_program(pump=filled, effective_at=datetime(2026, 2, 10, 9, tzinfo=CHICAGO),
                             data=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(500)),
                             actor=actor, now=NOW)
        with pytest.raises(s.Forbidden, match="Only a prescriber"):
            s.verify_program(program=program, actor=actor, now=NOW)
        with pytest.raises(s.Forbidden, match="does not allow changes" if role == "viewer" else "Only a prescriber"):
            s.void_record(record=program, reason="wrong dose", actor=actor, now=NOW)
        program.refresh_from_db()
        assert program.verified_at is None and program.voided_at is None
        return
    s.verify_program(program=program, actor=actor, now=NOW)
    program.refresh_from_db()
    assert (program.verified_by, program.verified_at) == (staff["prescriber"], NOW)


@pytest.mark.parametrize("role", NON_PRESCRIBERS)
def test_voiding_the_refill_that_carried_a_program_is_a_prescribers_act(filled, staff, role):
    refill = Refill.objects.get()
    with pytest.raises(s.Forbidden) as exc:
        s.void_record(record=refill, reason="wrong pump", actor=s.Actor(staff[role]), now=NOW)
    assert exc.value.message == (MSG_RECORD if role == "viewer" else MSG_CARRIED)
    refill.refresh_from_db()
    assert refill.voided_at is None and Program.objects.get().voided_at is None


def test_a_prescriber_voids_the_refill_and_its_program_with_it(filled, staff):
    s.void_record(record=Refill.objects.get(), reason="wrong pump", actor=s.Actor(staff["prescriber"]), now=NOW)
    program = Program.objects.get()
    assert program.voided_at == NOW and program.void_reason == "refill voided: wrong pump"


def test_a_nurse_still_voids_a_refill_that_carried_no_program(filled, staff):
    refill = s.record_refill(
        pump=filled, performed_at=datetime(2026, 2, 10, 9, tzinfo=CHICAGO), extracted_volume_ml=D("32.4"),
        added_volume_ml=D(5), concentration_mcg_per_ml=D(1000), actor=s.Actor(staff["nurse"]), now=NOW,
    )
    s.void_record(record=refill, reason="entered twice", actor=s.Actor(staff["nurse"]), now=NOW)
    refill.refresh_from_db()
    assert refill.voided_at == NOW


def test_a_member_of_another_clinic_writes_nothing_here(filled, other_clinic):
    outsider = make_user("dr_out", other_clinic, "prescriber")
    with pytest.raises(s.Forbidden, match="Only a prescriber"):
        s.verify_program(program=Program.objects.get(), actor=s.Actor(outsider), now=NOW)


# ----------------------------------------------------------------- who acted (H-10)


def test_a_signed_in_user_cannot_name_someone_else(filled, staff):
    with pytest.raises(s.ServiceValidationError) as exc:
        s.verify_program(program=Program.objects.get(), actor=s.Actor(staff["prescriber"]),
                         verified_by="dr.nobody.external", now=NOW)
    assert exc.value.message_dict == {"verified_by": [
        "You are signed in as prescriber.one: this is recorded as yours. "
        "Leave verified_by empty (only an integration names another clinician)."
    ]}
    with pytest.raises(s.ServiceValidationError) as exc:
        s.record_program(pump=filled, effective_at=datetime(2026, 2, 10, 9, tzinfo=CHICAGO), actor=s.Actor(staff["prescriber"]),
                         data=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(500), entered_by="dr_pat"),
                         now=NOW)
    assert list(exc.value.message_dict) == ["entered_by"]
    assert Program.objects.count() == 1 and Program.objects.get().verified_at is None


def test_the_prescriber_who_entered_a_program_cannot_verify_it(filled, dr_pat):
    with pytest.raises(s.ServiceValidationError) as exc:
        s.verify_program(program=Program.objects.get(), actor=s.Actor(dr_pat), now=NOW)
    assert exc.value.message_dict == {"verified_by": [
        "A second clinician must verify: not the one who entered the program."
    ]}


@pytest.mark.parametrize("role", NON_PRESCRIBERS)
def test_an_integration_cannot_name_a_non_prescriber_as_verifier_or_enterer(filled, staff, role):
    system = s.Actor(None, "api client EHR")
    name = staff[role].username
    label = Role(role).label.lower()
    with pytest.raises(s.ServiceValidationError) as exc:
        s.verify_program(program=Program.objects.get(), actor=system, verified_by=name, now=NOW)
    assert exc.value.message_dict == {
        "verified_by": [f"{name} is a {label} in this clinic: verified_by must be a prescriber (physician)."]
    }
    with pytest.raises(s.ServiceValidationError) as exc:
        s.record_program(pump=filled, effective_at=datetime(2026, 2, 10, 9, tzinfo=CHICAGO), actor=system,
                         data=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(500), entered_by=name),
                         now=NOW)
    assert exc.value.message_dict == {
        "entered_by": [f"{name} is a {label} in this clinic: entered_by must be a prescriber (physician)."]
    }


def test_an_integration_names_a_prescriber_or_an_external_practitioner(filled, staff):
    system = s.Actor(None, "api client EHR")
    program = Program.objects.get()
    s.verify_program(program=program, actor=system, verified_by="NPI:1234567893", now=NOW)
    program.refresh_from_db()
    assert (program.verified_by, program.verified_by_external) == (None, "NPI:1234567893")
    made = s.record_program(
        pump=filled, effective_at=datetime(2026, 2, 10, 9, tzinfo=CHICAGO), actor=system, now=NOW,
        data=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(500), entered_by="prescriber.one"),
    )
    assert (made.entered_by, made.entered_by_external) == (staff["prescriber"], "")
    with pytest.raises(s.ServiceValidationError, match="A second clinician"):
        s.verify_program(program=made, actor=system, verified_by="prescriber.one", now=NOW)
    with pytest.raises(s.ServiceValidationError) as exc:
        s.verify_program(program=made, actor=system, now=NOW)
    assert exc.value.message_dict == {"verified_by": ["Name the clinician who verified the program."]}


def test_a_named_clinician_with_control_characters_is_refused(filled):
    with pytest.raises(s.ServiceValidationError) as exc:
        s.verify_program(program=Program.objects.get(), actor=s.Actor(None, "api"), verified_by="dr\r\nx", now=NOW)
    assert exc.value.message_dict == {"verified_by": [s.MSG_CONTROL_CHARACTERS]}


# ------------------------------------------------------------------------- pages


@pytest.mark.parametrize("role", ROLES)
def test_page_refill_form_carrying_a_program(filled, staff, role):
    with travel(NOW):
        response = signed_in(staff[role]).post(f"/pumps/{filled.pk}/refill/", refill_page_form())
    if role == "prescriber":
        assert response.status_code == 302
        assert Program.objects.count() == 2
        return
    assert response.status_code == 403
    assert (MSG_RECORD if role == "viewer" else MSG_PROGRAM) in response.content.decode()
    assert Refill.objects.count() == 1 and Program.objects.count() == 1


@pytest.mark.parametrize("role", NON_PRESCRIBERS)
def test_page_program_form_verify_and_voids(filled, staff, role):
    client = signed_in(staff[role])
    program = Program.objects.get()
    refill = Refill.objects.get()
    with travel(NOW):
        responses = [
            client.post(f"/pumps/{filled.pk}/program/", {"effective_at": "2026-02-10T09:00",
                                                          "concentration_mcg_per_ml": "1000", "mode": "continuous",
                                                          "daily_dose_mcg": "500"}),
            client.post(f"/programs/{program.pk}/verify/"),
            client.post(f"/void/program/{program.pk}/", {"reason": "wrong"}),
            client.post(f"/void/refill/{refill.pk}/", {"reason": "wrong"}),
        ]
    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    program.refresh_from_db()
    refill.refresh_from_db()
    assert (program.verified_at, program.voided_at, refill.voided_at) == (None, None, None)
    assert Program.objects.count() == 1


# -------------------------------------------------------------------- session API


@pytest.mark.parametrize("role", ROLES)
def test_session_api_refill_with_a_program(filled, staff, role):
    with travel(NOW):
        response = session_client(staff[role]).post(f"{API}/refills/", refill_body(filled.pk), format="json")
    if role == "prescriber":
        assert response.status_code == 201, response.json()
        return
    assert response.status_code == 403
    assert response.json()["detail"] == (MSG_RECORD if role == "viewer" else MSG_PROGRAM)
    assert Refill.objects.count() == 1 and Program.objects.count() == 1


@pytest.mark.parametrize("role", NON_PRESCRIBERS)
def test_session_api_program_verify_and_voids(filled, staff, role):
    api = session_client(staff[role])
    program = Program.objects.get()
    refill = Refill.objects.get()
    with travel(NOW):
        codes = [
            api.post(f"{API}/programs/", program_body(filled.pk), format="json").status_code,
            api.post(f"{API}/programs/{program.pk}/verify/", {}, format="json").status_code,
            api.post(f"{API}/programs/{program.pk}/void/", {"reason": "wrong"}, format="json").status_code,
            api.post(f"{API}/refills/{refill.pk}/void/", {"reason": "wrong"}, format="json").status_code,
        ]
    assert codes == [403, 403, 403, 403]
    assert Program.objects.get().voided_at is None and Refill.objects.get().voided_at is None


def test_session_api_verify_naming_someone_else_is_400(filled, staff):
    with travel(NOW):
        response = session_client(staff["prescriber"]).post(
            f"{API}/programs/{Program.objects.get().pk}/verify/", {"verified_by": "dr.nobody.external"}, format="json"
        )
    assert response.status_code == 400
    assert list(response.json()) == ["verified_by"]
    assert Program.objects.get().verified_at is None


def test_session_api_program_naming_a_colleague_as_enterer_is_400(filled, staff):
    with travel(NOW):
        response = session_client(staff["prescriber"]).post(
            f"{API}/programs/", program_body(filled.pk, entered_by="dr_pat"), format="json"
        )
    assert response.status_code == 400
    assert list(response.json()) == ["entered_by"]


# ---------------------------------------------------------------------- token API


def test_token_naming_a_viewer_as_verifier_is_400(filled, staff, clinic):
    api, _ = token_client(clinic)
    with travel(NOW):
        response = api.post(f"{API}/programs/{Program.objects.get().pk}/verify/",
                            {"verified_by": staff["viewer"].username}, format="json")
    assert response.status_code == 400
    assert response.json() == {"verified_by": [
        "viewer.one is a viewer in this clinic: verified_by must be a prescriber (physician)."
    ]}


def test_token_naming_a_nurse_as_enterer_is_400_and_a_prescriber_201(filled, staff, clinic):
    api, _ = token_client(clinic)
    with travel(NOW):
        refused = api.post(f"{API}/programs/", program_body(filled.pk, entered_by="nurse.one"), format="json")
        accepted = api.post(f"{API}/programs/", program_body(filled.pk, entered_by="prescriber.one"), format="json")
    assert refused.status_code == 400
    assert refused.json() == {"entered_by": [
        "nurse.one is a nurse in this clinic: entered_by must be a prescriber (physician)."
    ]}
    assert accepted.status_code == 201, accepted.json()
    assert Program.objects.get(pk=accepted.json()["id"]).entered_by == staff["prescriber"]


def test_read_only_token_writes_nothing_even_through_the_service(filled, clinic):
    _, client = token_client(clinic, write=False)
    with pytest.raises(s.Forbidden, match="read-only"):
        s.verify_program(program=Program.objects.get(), actor=s.Actor(None, "api", client=client),
                         verified_by="NPI:1", now=NOW)


# -------------------------------------------------------------------------- admin


def _staff(clinic, username, role, *codenames):
    from django.contrib.auth.models import Permission

    user = make_user(username, clinic, role, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def test_admin_program_add_by_a_nurse_is_refused_and_saves_nothing(filled, clinic):
    nurse_staff = _staff(clinic, "nurse.staff", "nurse", "add_program", "view_program", "view_pump")
    local = NOW.astimezone(CHICAGO)
    with travel(NOW):
        response = signed_in(nurse_staff).post("/admin/pumps/program/add/", {
            "pump": filled.pk, "effective_at_0": local.date().isoformat(), "effective_at_1": "09:00:00",
            "concentration_mcg_per_ml": "1000", "mode": "continuous", "daily_dose_mcg": "500", "steps": "",
            "ptm_bolus_mcg": "", "ptm_max_per_day": "", "override_reason": "",
        })
    assert response.status_code == 200  # the form again, with the refusal on it
    assert "Your role in this clinic does not allow this change." in response.content.decode()
    assert Program.objects.count() == 1


def test_admin_verify_action_refuses_self_verification_and_a_nurse(filled, clinic, dr_pat):
    program = Program.objects.get()
    doctor_staff = dr_pat
    doctor_staff.is_staff = True
    doctor_staff.save()
    from django.contrib.auth.models import Permission

    doctor_staff.user_permissions.add(*Permission.objects.filter(codename__in=["change_program", "view_program"]))
    with travel(NOW):
        signed_in(doctor_staff).post("/admin/pumps/program/", {"action": "verify_programs",
                                                               "_selected_action": [program.pk]})
    program.refresh_from_db()
    assert program.verified_at is None  # the prescriber who entered it cannot verify it
    nurse_staff = _staff(clinic, "nurse.staff", "nurse", "change_program", "view_program")
    with travel(NOW):
        signed_in(nurse_staff).post("/admin/pumps/program/", {"action": "verify_programs",
                                                              "_selected_action": [program.pk]})
    program.refresh_from_db()
    assert program.verified_at is None
