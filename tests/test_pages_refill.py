"""Refill entry: the live preview (expected residual, discrepancy and its meaning, volume
after, new alarm, empty and due dates), service messages on the fields, a concentration
change with its program and bridge bolus, the probable-duplicate confirmation, roles."""

from datetime import datetime
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps.models import Program, Refill
from tests.factories import make_user
from tests.pages_support import (
    CHICAGO,
    assert_no_inline_script,
    signed_in,
    text_of,
    travel,
    worked_example,
)

VISIT = datetime(2026, 3, 4, 9, 0, tzinfo=CHICAGO)  # 30 days after the worked example's fill: 22.5 mL expected
NOW = datetime(2026, 3, 4, 9, 30, tzinfo=CHICAGO)


@pytest.fixture
def filled(patient, nurse):
    return worked_example(patient, s.Actor(nurse))


def refill_form(**overrides):
    data = {
        "performed_at": "2026-03-04T09:00",
        "extracted_volume_ml": "19",
        "residual_left_ml": "0",
        "added_volume_ml": "38",
        "drug_product": "gablofen-1000",
        "concentration_mcg_per_ml": "1000",
        "lot_number": "L77",
        "lot_expiry": "2027-01-31",
        "notes": "",
        "program_mode": "continuous",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_form_prefills_the_time_and_the_concentration_in_force(filled, nurse):
    with travel(NOW):
        response = signed_in(nurse).get(f"/pumps/{filled.pk}/refill/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'value="2026-03-04T09:30"' in html
    assert 'name="concentration_mcg_per_ml" value="1000"' in html
    assert '<option value="gablofen-1000" selected>' not in html  # the first fill named no product
    text = text_of(html)
    assert "Expected residual 22.49 mL" in text  # 22.5 - 0.45 / 48 at 09:30 = 22.491
    assert_no_inline_script(html)
    for name in ("performed_at", "extracted_volume_ml", "added_volume_ml", "concentration_mcg_per_ml"):
        assert f'<label for="id_{name}">' in html
    # a nurse records the refill; a new program (and its bridge bolus) is a prescriber's
    assert 'id="program-section"' not in html and 'name="program_daily_dose_mcg"' not in html
    assert "is entered by a prescriber (physician): ask one to record this refill with its program." in text


def test_a_prescriber_sees_the_program_section_with_labels(filled, prescriber):
    with travel(NOW):
        html = signed_in(prescriber).get(f"/pumps/{filled.pk}/refill/").content.decode()
    for name in ("bridge_bolus_ml", "program_daily_dose_mcg", "program_override_reason"):
        assert f'<label for="id_{name}">' in html


def test_preview_shows_a_flagged_discrepancy_and_the_new_dates_before_saving(filled, nurse):
    with travel(NOW):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/preview/", refill_form(),
                                         headers={"HX-Request": "true"})
    assert response.status_code == 200
    text = text_of(response.content.decode())
    assert "Expected residual 22.5 mL" in text
    assert ("Discrepancy -3.5 mL (threshold ±2 mL): Flagged — less drug than expected remained: suggests "
            "over-infusion, a leak or an earlier pocket fill") in text
    assert "Volume after refill 38 mL of 40 mL" in text
    # 36 mL above the 2 mL alarm at 0.45 mL/day: 80 days of real time, across the DST change
    assert "New low-reservoir alarm 2026-05-23 10:00 CDT" in text
    assert "New empty date 2026-05-27 20:40 CDT" in text
    # 2026-05-23 (Saturday) - 7 days = Saturday 05-16 -> Friday 05-15, 72 days after 03-04
    assert "Next refill due 2026-05-15 (Fri), in 72 days" in text
    assert Refill.objects.count() == 1  # nothing saved


def test_preview_of_more_than_expected_warns_of_under_delivery(filled, nurse):
    with travel(NOW):
        text = text_of(signed_in(nurse).post(f"/pumps/{filled.pk}/refill/preview/",
                                             refill_form(extracted_volume_ml="25")).content.decode())
    assert ("Discrepancy +2.5 mL (threshold ±2 mL): Flagged — more drug than expected remained: suggests "
            "under-delivery (catheter occlusion or motor stall): withdrawal risk") in text


def test_preview_within_threshold(filled, nurse):
    with travel(NOW):
        text = text_of(signed_in(nurse).post(f"/pumps/{filled.pk}/refill/preview/",
                                             refill_form(extracted_volume_ml="21.5")).content.decode())
    assert "Discrepancy -1 mL (threshold ±2 mL): within the threshold" in text


def test_saving_a_flagged_refill(filled, nurse):
    with travel(NOW):
        client = signed_in(nurse)
        response = client.post(f"/pumps/{filled.pk}/refill/", refill_form())
        assert response.status_code == 302
        assert response["Location"] == f"/pumps/{filled.pk}/#summary"
        page = text_of(client.get(response["Location"]).content.decode())
    refill = Refill.objects.latest("performed_at")
    assert (refill.expected_residual_ml, refill.discrepancy_ml, refill.discrepancy_flagged) == (D("22.5"), D("-3.5"), True)
    assert refill.performed_by == nurse
    assert refill.lot_number == "L77"
    assert ("Refill recorded. Flagged: less drug than expected remained: suggests over-infusion, a leak or an "
            "earlier pocket fill.") in page
    assert "-3.5 mL Flagged: less drug than expected remained" in page
    filled.refresh_from_db()
    assert filled.refill_due_on.isoformat() == "2026-05-15"


def test_service_messages_land_on_their_fields(filled, nurse):
    with travel(NOW):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_form(added_volume_ml="45"))
    assert response.status_code == 400
    html = response.content.decode()
    assert ('<ul class="errorlist" id="id_added_volume_ml_error"><li>The volume after the refill (45 mL) exceeds '
            "the reservoir capacity of 40 mL.</li></ul>") in html
    assert 'aria-invalid="true"' in html
    assert Refill.objects.count() == 1


def test_refill_after_first_fill_needs_the_extracted_volume(filled, nurse):
    with travel(NOW):
        html = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_form(extracted_volume_ml="")).content.decode()
    assert "A refill after the first fill needs the extracted volume (0 if nothing could be drawn)." in html


def test_time_in_the_future_and_a_skipped_local_time(filled, nurse):
    with travel(NOW):
        future = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_form(performed_at="2026-03-04T10:00"))
    assert "This time is in the future; record what has happened (at most 5 minutes ahead)." in future.content.decode()
    with travel(datetime(2026, 3, 9, 12, tzinfo=CHICAGO)):
        skipped = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_form(performed_at="2026-03-08T02:30"))
    assert ("2026-03-08 02:30 does not exist in America/Chicago: the clocks skipped that hour."
            in text_of(skipped.content.decode()))


def test_concentration_change_asks_for_a_program_and_a_bridge_bolus(filled, nurse, prescriber):
    change = refill_form(concentration_mcg_per_ml="2000", drug_product="gablofen-2000", extracted_volume_ml="22.5")
    with travel(NOW):
        preview = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/preview/", change).content.decode()
        refused = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", change)
    assert 'data-concentration-change="true"' in preview
    assert ("Concentration change from 1000 mcg/mL: a concentration change needs a new program and a bridge bolus."
            in text_of(preview))
    assert refused.status_code == 400
    assert ("The program in force is at 1000 mcg/mL: a concentration change needs a new program and a bridge "
            "bolus.") in refused.content.decode()
    assert "ask one to record this refill with its program" in refused.content.decode()

    with_program = {**change, "changes_program": "on", "bridge_bolus_ml": "0.5", "program_mode": "continuous",
                    "program_daily_dose_mcg": "450"}
    with travel(NOW):
        preview = text_of(signed_in(prescriber).post(f"/pumps/{filled.pk}/refill/preview/", with_program).content.decode())
        saved = signed_in(prescriber).post(f"/pumps/{filled.pk}/refill/", with_program)
    # 37.5 mL after the bridge bolus at 0.225 mL/day: the drug's 180-day stability binds first
    assert "Volume after refill 37.5 mL of 40 mL" in preview
    assert "Delivery 0.225 mL/day expected" in preview
    assert saved.status_code == 302
    program = Program.objects.filter(refill__isnull=False).latest("effective_at")
    assert (program.concentration_mcg_per_ml, program.daily_dose_mcg) == (D("2000"), D("450"))
    assert program.effective_at == VISIT


def test_embedded_program_errors_land_on_the_program_fields(filled, prescriber):
    data = refill_form(concentration_mcg_per_ml="2000", drug_product="gablofen-2000", changes_program="on",
                       bridge_bolus_ml="0.5", program_daily_dose_mcg="")
    with travel(NOW):
        html = signed_in(prescriber).post(f"/pumps/{filled.pk}/refill/", data).content.decode()
    assert ('<ul class="errorlist" id="id_program_daily_dose_mcg_error"><li>This field is required for a continuous '
            "program.</li></ul>") in html


def test_probable_duplicate_asks_to_confirm_a_second_refill(filled, nurse):
    client = signed_in(nurse)
    with travel(NOW):
        assert client.post(f"/pumps/{filled.pk}/refill/", refill_form()).status_code == 302
        again = client.post(f"/pumps/{filled.pk}/refill/", refill_form(performed_at="2026-03-04T09:20",
                                                                        extracted_volume_ml="37.9", added_volume_ml="1"))
        assert again.status_code == 400
        text = text_of(again.content.decode())
        assert ("Probable duplicate. Another refill of this pump was recorded at 2026-03-04 09:00 (within 60 "
                "minutes): probably a duplicate.") in text
        assert "Yes: this is a second refill of this pump, not a duplicate entry" in text
        confirmed = client.post(f"/pumps/{filled.pk}/refill/", refill_form(
            performed_at="2026-03-04T09:20", extracted_volume_ml="37.9", added_volume_ml="1", confirm_duplicate="on"))
    assert confirmed.status_code == 302
    assert Refill.objects.count() == 3


def test_viewer_cannot_record_a_refill(filled, clinic):
    viewer = make_user("vera", clinic, "viewer")
    with travel(NOW):
        assert signed_in(viewer).get(f"/pumps/{filled.pk}/refill/").status_code == 403
        denied = signed_in(viewer).post(f"/pumps/{filled.pk}/refill/", refill_form())
    assert denied.status_code == 403
    assert "Your role in this clinic does not allow changes." in denied.content.decode()
    assert Refill.objects.count() == 1


def test_another_clinics_user_gets_404(filled, other_clinic):
    outsider = make_user("otto", other_clinic, "nurse")
    with travel(NOW):
        client = signed_in(outsider)
        assert client.get(f"/pumps/{filled.pk}/refill/").status_code == 404
        assert client.post(f"/pumps/{filled.pk}/refill/preview/", refill_form()).status_code == 404
        assert client.post(f"/pumps/{filled.pk}/refill/", refill_form()).status_code == 404
    assert Refill.objects.count() == 1


def test_first_fill_preview_has_no_discrepancy(pump, nurse):
    data = refill_form(extracted_volume_ml="", added_volume_ml="20", performed_at="2026-01-16T10:00",
                       changes_program="on", program_daily_dose_mcg="200")
    with travel(datetime(2026, 1, 16, 11, tzinfo=CHICAGO)):
        text = text_of(signed_in(nurse).post(f"/pumps/{pump.pk}/refill/preview/", data).content.decode())
    assert "Expected residual First fill after implant: nothing to compare" in text
    assert "Discrepancy none (first fill)" in text
    # 18 mL above the alarm at 0.2 mL/day: 90 days -> 2026-04-16 11:00 CDT
    assert "New low-reservoir alarm 2026-04-16 11:00 CDT" in text
