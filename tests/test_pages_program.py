"""Program change: mL/day computed live, the titration check (refused, then accepted with
an override reason), flex steps, the reservoir's concentration, second-clinician
verification, and prescribers only."""

from datetime import datetime
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps.models import Program
from tests.factories import make_user
from tests.pages_support import (
    CHICAGO,
    assert_no_inline_script,
    signed_in,
    text_of,
    travel,
    worked_example,
)

NOW = datetime(2026, 3, 4, 9, 0, tzinfo=CHICAGO)
MSG_TITRATION = ("The basal daily dose rises from 450 to 600 mcg/day, above the titration limit of +30 % in 24 h "
                 "(at most 585 mcg/day); give an override reason to proceed")


@pytest.fixture
def filled(patient, nurse):
    return worked_example(patient, s.Actor(nurse))


def program_form(**overrides):
    data = {"effective_at": "2026-03-04T09:00", "concentration_mcg_per_ml": "1000", "mode": "continuous",
            "daily_dose_mcg": "600", "steps": "", "override_reason": ""}
    data.update(overrides)
    return data


def test_form_starts_from_the_program_in_force(filled, prescriber):
    with travel(NOW):
        response = signed_in(prescriber).get(f"/pumps/{filled.pk}/program/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="daily_dose_mcg" value="450"' in html
    assert 'name="concentration_mcg_per_ml" value="1000"' in html
    text = text_of(html)
    assert "In force: continuous 450 mcg/day at 1000 mcg/mL (0.45 mL/day)" in text
    assert "Volume rate 0.45 mL/day" in text
    assert_no_inline_script(html)


def test_preview_computes_ml_per_day_and_the_titration_check(filled, prescriber):
    with travel(NOW):
        client = signed_in(prescriber)
        above = text_of(client.post(f"/pumps/{filled.pk}/program/preview/", program_form()).content.decode())
        within = text_of(client.post(f"/pumps/{filled.pk}/program/preview/",
                                     program_form(daily_dose_mcg="540", ptm_bolus_mcg="50",
                                                  ptm_max_per_day="4")).content.decode())
    assert "Daily dose 600 mcg/day" in above
    assert "Volume rate 0.6 mL/day" in above
    assert f"Titration check Above the limit. {MSG_TITRATION}." in above
    assert "Volume rate 0.54 mL/day; 0.74 mL/day with every on-demand bolus" in within
    assert ("Within the limit: 20.0 % against 450 mcg/day in force 24 hours before (limit +30 %, at most 585 "
            "mcg/day).") in within


def test_program_refused_above_the_titration_limit_then_accepted_with_an_override(filled, prescriber):
    client = signed_in(prescriber)
    with travel(NOW):
        refused = client.post(f"/pumps/{filled.pk}/program/", program_form())
        assert refused.status_code == 400
        assert (f'<ul class="errorlist" id="id_override_reason_error"><li>{MSG_TITRATION}</li></ul>'
                in refused.content.decode())
        assert Program.objects.count() == 1
        accepted = client.post(f"/pumps/{filled.pk}/program/",
                               program_form(override_reason="severe spasms after the last titration"))
    assert accepted.status_code == 302
    assert accepted["Location"] == f"/pumps/{filled.pk}/#summary"
    program = Program.objects.latest("effective_at")
    assert (program.daily_dose_mcg, program.override_reason, program.entered_by) == (
        D("600"), "severe spasms after the last titration", prescriber)
    assert program.verified_at is None


def test_program_must_use_the_reservoirs_concentration(filled, prescriber):
    with travel(NOW):
        html = signed_in(prescriber).post(f"/pumps/{filled.pk}/program/",
                                          program_form(concentration_mcg_per_ml="2000", daily_dose_mcg="450")).content.decode()
    assert ("The reservoir holds 1000 mcg/mL: a program must use the concentration of the drug in the pump (a "
            "concentration change needs a refill with a new program).") in html


def test_flex_program_from_typed_steps(filled, prescriber):
    steps = "07:00 17.5\n22:00 21"
    with travel(NOW):
        preview = text_of(signed_in(prescriber).post(f"/pumps/{filled.pk}/program/preview/",
                                                     program_form(mode="flex", steps=steps)).content.decode())
        saved = signed_in(prescriber).post(f"/pumps/{filled.pk}/program/", program_form(mode="flex", steps=steps))
    # 15 h x 17.5 + 9 h x 21 = 262.5 + 189 = 451.5 mcg/day
    assert "Daily dose 451.5 mcg/day" in preview
    assert "Volume rate 0.452 mL/day" in preview
    assert saved.status_code == 302
    program = Program.objects.latest("effective_at")
    assert program.steps == [{"start": "07:00", "dose_mcg_per_hour": "17.500"}, {"start": "22:00", "dose_mcg_per_hour": "21.000"}]
    assert program.daily_dose_mcg == D("451.5")


def test_unsorted_or_malformed_steps_are_refused_on_the_steps_field(filled, prescriber):
    with travel(NOW):
        client = signed_in(prescriber)
        unsorted = client.post(f"/pumps/{filled.pk}/program/", program_form(mode="flex", steps="22:00 21\n07:00 17"))
        malformed = client.post(f"/pumps/{filled.pk}/program/", program_form(mode="flex", steps="7h 17"))
    assert ('<ul class="errorlist" id="id_steps_error"><li>Steps must be sorted by start time</li></ul>'
            in unsorted.content.decode())
    assert "Line 1: write a start time and a dose, for example 07:00 20.5" in malformed.content.decode()


def test_only_a_prescriber_enters_a_program(filled, nurse):
    with travel(NOW):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/program/", program_form(daily_dose_mcg="500"))
    assert response.status_code == 403
    assert "Only a prescriber (physician) enters, verifies or voids a program." in response.content.decode()
    with travel(NOW):
        page = signed_in(nurse).get(f"/pumps/{filled.pk}/").content.decode()
    assert "Change program" not in page
    assert "Record refill" in page


def test_second_prescriber_verifies_not_the_one_who_entered(filled, prescriber, clinic):
    other = make_user("dr_lee", clinic, "prescriber")
    with travel(NOW):
        signed_in(prescriber).post(f"/pumps/{filled.pk}/program/", program_form(daily_dose_mcg="500"))
    program = Program.objects.latest("effective_at")
    with travel(NOW):
        own = signed_in(prescriber)
        page = own.get(f"/pumps/{filled.pk}/").content.decode()
        assert f'action="/programs/{program.pk}/verify/"' not in page  # no button for the one who entered it
        refused = own.post(f"/programs/{program.pk}/verify/", follow=True)
        assert "Not verified: A second clinician must verify: not the one who entered the program." in text_of(
            refused.content.decode())
        second = signed_in(other)
        assert f'action="/programs/{program.pk}/verify/"' in second.get(f"/pumps/{filled.pk}/").content.decode()
        done = second.post(f"/programs/{program.pk}/verify/", follow=True)
    assert "Program verified." in text_of(done.content.decode())
    program.refresh_from_db()
    assert program.verified_by == other


def test_another_clinics_prescriber_cannot_see_or_verify(filled, other_clinic):
    outsider = make_user("dr_out", other_clinic, "prescriber")
    program = Program.objects.get()
    with travel(NOW):
        client = signed_in(outsider)
        assert client.get(f"/pumps/{filled.pk}/program/").status_code == 404
        assert client.post(f"/programs/{program.pk}/verify/").status_code == 404
    program.refresh_from_db()
    assert program.verified_at is None
