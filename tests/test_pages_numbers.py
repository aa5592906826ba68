"""Numbers mean what they show: volume, dose and concentration fields are text boxes
(``inputmode="decimal"``, never ``type="number"``, whose parsing follows the browser's
locale) parsed on the server: "1.5" and "1,5" are 1.5, "1,500" is refused as ambiguous,
anything else is refused with the field's own example, keeping what was typed. The live
previews show a value's problem instead of computing on it."""

from datetime import datetime
from decimal import Decimal as D

import pytest
from django import forms as django_forms

from pumps import forms
from pumps import services as s
from pumps.models import Reading, Refill
from tests.pages_support import CHICAGO, signed_in, text_of, travel, worked_example

NOW = datetime(2026, 3, 4, 9, 30, tzinfo=CHICAGO)  # 30 days after the first fill: 22.5 mL expected at 09:00


@pytest.mark.parametrize(("typed", "value"), [
    ("1.5", D("1.5")), ("1,5", D("1.5")), (" 36 ", D("36")), ("0,125", D("0.125")), (".5", D("0.5")),
    ("19.", D("19")), ("-1", D("-1")), ("1000", D("1000")), ("0,5", D("0.5")), ("12,25", D("12.25")),
])
def test_numbers_that_parse(typed, value):
    assert forms.parse_decimal(typed, forms.MSG_VOLUME) == value


@pytest.mark.parametrize("typed", ["abc", "1.5 mL", "1e3", "1,5,5", "1.5,5", "1 5", "1,", ",5", "NaN", "Infinity",
                                   "١٫٥", "--1", "0x10"])
def test_anything_else_is_refused_with_the_fields_example(typed):
    with pytest.raises(django_forms.ValidationError) as refused:
        forms.parse_decimal(typed, forms.MSG_VOLUME)
    assert refused.value.messages == ["Enter a volume in mL, e.g. 1.5"]


@pytest.mark.parametrize(("typed", "message"), [
    ("1,500", "1,500 is ambiguous (decimal comma or thousands separator): type 1.500 or 1500."),
    ("12,000", "12,000 is ambiguous (decimal comma or thousands separator): type 12.000 or 12000."),
])
def test_a_comma_before_three_digits_is_ambiguous(typed, message):
    with pytest.raises(django_forms.ValidationError) as refused:
        forms.parse_decimal(typed, forms.MSG_DAILY_DOSE)
    assert refused.value.messages == [message]


@pytest.fixture
def filled(patient, prescriber):
    return worked_example(patient, s.Actor(prescriber))


def refill_data(**overrides):
    data = {"performed_at": "2026-03-04T09:00", "extracted_volume_ml": "19", "residual_left_ml": "0",
            "added_volume_ml": "38", "concentration_mcg_per_ml": "1000", "program_mode": "continuous"}
    data.update(overrides)
    return data


def test_fields_are_text_boxes_with_a_decimal_keyboard(filled, prescriber):
    with travel(NOW):  # a prescriber: the new-program section is theirs
        html = signed_in(prescriber).get(f"/pumps/{filled.pk}/refill/").content.decode()
    for name in ("extracted_volume_ml", "residual_left_ml", "added_volume_ml", "bridge_bolus_ml",
                 "concentration_mcg_per_ml", "program_daily_dose_mcg", "program_ptm_bolus_mcg"):
        tag = html[html.rindex("<input", 0, html.index(f'name="{name}"')):]
        tag = tag[:tag.index(">") + 1]
        assert 'type="text"' in tag and 'inputmode="decimal"' in tag, tag


def test_a_decimal_comma_is_saved_as_a_decimal_point(filled, nurse):
    with travel(NOW):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_data(
            extracted_volume_ml="22,5", residual_left_ml="1,5", added_volume_ml="36,5"))
    assert response.status_code == 302
    refill = Refill.objects.latest("performed_at")
    assert (refill.extracted_volume_ml, refill.residual_left_ml, refill.added_volume_ml) == (
        D("22.5"), D("1.5"), D("36.5"))


def test_not_a_number_is_refused_on_its_field_keeping_what_was_typed(filled, nurse):
    with travel(NOW):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_data(
            extracted_volume_ml="abc", concentration_mcg_per_ml="1000 mcg", added_volume_ml="1,500"))
    html = response.content.decode()
    assert response.status_code == 400
    assert ('<ul class="errorlist" id="id_extracted_volume_ml_error"><li>Enter a volume in mL, e.g. 1.5</li></ul>'
            in html)
    assert ('<ul class="errorlist" id="id_concentration_mcg_per_ml_error"><li>Enter a concentration in mcg/mL, '
            "e.g. 500</li></ul>") in html
    assert ("<li>1,500 is ambiguous (decimal comma or thousands separator): type 1.500 or 1500.</li>") in html
    assert 'name="extracted_volume_ml" value="abc"' in html
    assert 'name="concentration_mcg_per_ml" value="1000 mcg"' in html
    assert Refill.objects.count() == 1


def test_reading_and_program_fields_parse_the_same_way(filled, nurse, prescriber):
    with travel(NOW):
        saved = signed_in(nurse).post(f"/pumps/{filled.pk}/reading/", {"read_at": "2026-03-04T09:00",
                                                                        "reservoir_volume_ml": "22,25"})
        refused = signed_in(prescriber).post(f"/pumps/{filled.pk}/program/", {
            "effective_at": "2026-03-04T09:00", "concentration_mcg_per_ml": "1000", "mode": "continuous",
            "daily_dose_mcg": "four hundred"})
    assert saved.status_code == 302
    assert Reading.objects.get().reservoir_volume_ml == D("22.25")
    assert refused.status_code == 400
    assert "<li>Enter a dose in mcg/day, e.g. 250</li>" in refused.content.decode()
    assert 'name="daily_dose_mcg" value="four hundred"' in refused.content.decode()


def preview(client, pump, **overrides):
    return text_of(client.post(f"/pumps/{pump.pk}/refill/preview/", refill_data(**overrides),
                               headers={"HX-Request": "true"}).content.decode())


def test_refill_preview_shows_problems_instead_of_computing(filled, nurse):
    with travel(NOW):
        client = signed_in(nurse)
        negative = preview(client, filled, extracted_volume_ml="-19")
        future = preview(client, filled, performed_at="2026-05-01T09:00")
        typed = preview(client, filled, added_volume_ml="3 8")
        comma = preview(client, filled, extracted_volume_ml="19,5")
    # (the label is a link to its field: text_of puts a space after it)
    assert negative.startswith(
        "Nothing computed: correct this value first. Extracted residual volume (mL) : Must be zero or more.")
    assert "Flagged" not in negative and "Expected residual" not in negative
    assert future.startswith("Nothing computed: correct this value first. Performed at (local time, America/Chicago) : "
                             "This time is in the future; record what has happened (at most 5 minutes ahead).")
    assert "assess for withdrawal" not in future
    assert typed.startswith("Nothing computed: correct this value first. Volume added (mL) : Enter a volume in mL, "
                            "e.g. 1.5")
    assert "Discrepancy -3 mL (threshold ±2 mL): Flagged" in comma  # 19.5 + 0 - 22.5


def test_program_preview_shows_problems_instead_of_computing(filled, prescriber):
    with travel(NOW):
        client = signed_in(prescriber)
        text = text_of(client.post(f"/pumps/{filled.pk}/program/preview/", {
            "effective_at": "2026-03-04T09:00", "concentration_mcg_per_ml": "1000", "mode": "continuous",
            "daily_dose_mcg": "-450", "ptm_bolus_mcg": "x"}).content.decode())
        comma = text_of(client.post(f"/pumps/{filled.pk}/program/preview/", {
            "effective_at": "2026-03-04T09:00", "concentration_mcg_per_ml": "1000", "mode": "continuous",
            "daily_dose_mcg": "472,5"}).content.decode())
    assert text.startswith("Nothing computed: correct this value first. On-demand bolus (mcg) : Enter a dose in mcg, "
                           "e.g. 50")
    assert "Titration" not in text
    assert comma.startswith("Daily dose 472.5 mcg/day Volume rate 0.473 mL/day")
