"""The admin never crosses clinics for someone who is not a superuser.

The attack reproduced here: a staff user of clinic North, given the model permissions to
manage memberships, posts /admin/clinic/membership/add/ naming clinic South (and himself)
to read South's patients. Lists, foreign-key choices, list filters and the audit history
of clinical records must not show South's objects either; a superuser sees all.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from clinic.models import ApiClient, Membership
from pumps.models import Patient, PatientAccess
from tests.factories import make_clinic, make_patient, make_user

pytestmark = pytest.mark.django_db

ALL_CODENAMES = [
    f"{action}_{model}"
    for model in ("membership", "apiclient", "clinic", "patient", "pump", "user", "pumpmodel", "patientaccess")
    for action in ("add", "change", "view", "delete")
]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def world(db):
    north = make_clinic(code="north", name="North Spasticity Clinic", timezone="America/Chicago")
    south = make_clinic(code="south", name="Southern Cross Clinic", timezone="Australia/Sydney")
    north_patient = make_patient(north, mrn="NORTH1", family_name="Garcia")
    south_patient = make_patient(south, mrn="SOUTH1", family_name="Nguyen")
    ApiClient.create_with_token(clinic=north, name="North EHR", can_write=False)
    ApiClient.create_with_token(clinic=south, name="South EHR", can_write=True)
    make_user("south_nurse", south, "nurse")
    return {"north": north, "south": south, "north_patient": north_patient, "south_patient": south_patient}


def staff(username: str, clinic, role: str):
    user = make_user(username, clinic, role, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=ALL_CODENAMES))
    return get_user_model().objects.get(pk=user.pk)  # fresh permission cache


@pytest.mark.parametrize("role", ["admin", "nurse"])
def test_a_staff_user_cannot_give_himself_a_membership_in_another_clinic(client, world, role):
    mallory = staff("mallory", world["north"], role)
    client.force_login(mallory)
    response = client.post(
        url(Membership, "add"),
        {"user": mallory.pk, "clinic": world["south"].pk, "role": "admin", "receives_alerts": ""},
    )
    assert response.status_code in (200, 403)  # the form refuses the clinic, or no add at all
    if response.status_code == 200:
        assert "Select a valid choice" in response.content.decode()
    assert not Membership.objects.filter(user=mallory, clinic=world["south"]).exists()
    page = client.get(url(Patient, "changelist")).content.decode()
    assert "NORTH1" in page and "SOUTH1" not in page


def test_nor_move_his_membership_to_another_clinic_nor_grant_through_the_clinic_page(client, world):
    mallory = staff("mallory", world["north"], "admin")
    membership = Membership.objects.get(user=mallory)
    client.force_login(mallory)
    client.post(url(Membership, "change", membership.pk),
                {"user": mallory.pk, "clinic": world["south"].pk, "role": "admin"})
    membership.refresh_from_db()
    assert membership.clinic == world["north"]
    # South's clinic page (with its membership inline) does not exist for him.
    assert client.get(url(type(world["south"]), "change", world["south"].pk)).status_code == 302
    assert client.post(url(type(world["south"]), "change", world["south"].pk), {}).status_code in (302, 403, 404)
    assert not Membership.objects.filter(user=mallory, clinic=world["south"]).exists()


def test_a_clinic_admin_grants_memberships_and_api_clients_in_his_clinic_only(client, world):
    mallory = staff("mallory", world["north"], "admin")
    newcomer = get_user_model().objects.create_user("newcomer", password="correct horse battery")
    client.force_login(mallory)
    response = client.post(url(Membership, "add"), {"user": newcomer.pk, "clinic": world["north"].pk, "role": "nurse"})
    assert response.status_code == 302
    assert Membership.objects.filter(user=newcomer, clinic=world["north"], role="nurse").exists()

    response = client.post(url(ApiClient, "add"), {"clinic": world["south"].pk, "name": "Backdoor", "can_write": "on"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not ApiClient.objects.filter(name="Backdoor").exists()
    response = client.post(url(ApiClient, "add"), {"clinic": world["north"].pk, "name": "Pharmacy"})
    assert response.status_code == 302
    assert ApiClient.objects.get(name="Pharmacy").clinic == world["north"]


def test_a_nurse_with_model_permissions_grants_nothing(client, world):
    nina = staff("nina", world["north"], "nurse")
    client.force_login(nina)
    assert client.get(url(Membership, "add")).status_code == 403
    assert client.get(url(ApiClient, "add")).status_code == 403
    own = Membership.objects.get(user=nina)
    client.post(url(Membership, "change", own.pk), {"user": nina.pk, "clinic": world["north"].pk, "role": "admin"})
    own.refresh_from_db()
    assert own.role == "nurse"  # no promotion of oneself
    north_client = ApiClient.objects.get(name="North EHR")
    client.post(url(ApiClient, "changelist"), {"action": "revoke_tokens", "_selected_action": [north_client.pk]})
    north_client.refresh_from_db()
    assert north_client.revoked_at is None


def test_lists_show_only_the_users_clinics(client, world):
    mallory = staff("mallory", world["north"], "admin")
    client.force_login(mallory)
    memberships = client.get(url(Membership, "changelist")).content.decode()
    assert "mallory" in memberships and "south_nurse" not in memberships
    clients = client.get(url(ApiClient, "changelist")).content.decode()
    assert "North EHR" in clients and "South EHR" not in clients
    clinics = client.get(url(type(world["north"]), "changelist")).content.decode()
    assert "North Spasticity Clinic" in clinics and "Southern Cross Clinic" not in clinics
    # The sidebar filter by clinic does not name the other clinic either.
    patients = client.get(url(Patient, "changelist")).content.decode()
    assert "Southern Cross Clinic" not in patients
    users = client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert "south_nurse" not in users
    # Choices on the add forms.
    form = client.get(url(Membership, "add")).content.decode()
    assert "Southern Cross Clinic" not in form


def test_the_audit_history_of_another_clinics_record_is_not_found(client, world):
    mallory = staff("mallory", world["north"], "admin")
    client.force_login(mallory)
    south_patient = world["south_patient"]
    version = south_patient.history.first()
    assert version is not None
    assert client.get(url(Patient, "history", south_patient.pk)).status_code == 404
    history_form = reverse("admin:pumps_patient_simple_history", args=[south_patient.pk, version.history_id])
    response = client.get(history_form)
    assert response.status_code == 404
    assert "Nguyen" not in response.content.decode()
    south_membership = Membership.objects.get(user__username="south_nurse")
    assert client.get(url(Membership, "history", south_membership.pk)).status_code == 404
    # Their own clinic's history opens.
    assert client.get(url(Patient, "history", world["north_patient"].pk)).status_code == 200


def test_no_one_but_a_superuser_grants_privileges_or_edits_catalogs(client, world):
    from pumps.models import PumpModel

    mallory = staff("mallory", world["north"], "admin")
    client.force_login(mallory)
    change = reverse("admin:auth_user_change", args=[mallory.pk])
    page = client.get(change)
    assert page.status_code == 200
    client.post(change, {"username": "mallory", "is_superuser": "on", "is_staff": "on", "is_active": "on",
                         "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    mallory.refresh_from_db()
    assert not mallory.is_superuser
    # Another clinic's member cannot be edited (password, e-mail: an account takeover).
    south_nurse = get_user_model().objects.get(username="south_nurse")
    assert client.get(reverse("admin:auth_user_password_change", args=[south_nurse.pk])).status_code in (302, 403, 404)
    model = PumpModel.objects.first()
    assert client.get(url(PumpModel, "add")).status_code == 403
    client.post(url(PumpModel, "change", model.pk), {"default_alarm_ml": "9"})
    assert PumpModel.objects.get(pk=model.pk).default_alarm_ml == model.default_alarm_ml


def test_the_access_log_is_scoped(client, world):
    root = get_user_model().objects.create_superuser("root", "root@example.org", "admin-pass-2026")
    for patient in (world["north_patient"], world["south_patient"]):
        PatientAccess.objects.create(patient=patient, clinic=patient.clinic, user=root, channel="page", path="/x/")
    mallory = staff("mallory", world["north"], "admin")
    client.force_login(mallory)
    page = client.get(url(PatientAccess, "changelist")).content.decode()
    assert "1 patient record access" in page


def test_a_superuser_sees_every_clinic(client, world):
    root = get_user_model().objects.create_superuser("root", "root@example.org", "admin-pass-2026")
    client.force_login(root)
    page = client.get(url(Patient, "changelist")).content.decode()
    assert "NORTH1" in page and "SOUTH1" in page
    clients = client.get(url(ApiClient, "changelist")).content.decode()
    assert "North EHR" in clients and "South EHR" in clients
    assert client.get(url(Patient, "history", world["south_patient"].pk)).status_code == 200
    response = client.post(url(Membership, "add"), {"user": root.pk, "clinic": world["south"].pk, "role": "admin"})
    assert response.status_code == 302
