"""Validation (docs/clinical-rules.md §9) and the API's errors: bad input gets a clear, field-level error and nothing is saved.

One table (``CASES``) holds every validation rule (docs/clinical-rules.md §9). Each case is posted to the REST API
(400 with exactly ``{field: [message]}``, or 409 for a probable duplicate) and, where a
staff page has a form for it (refill, program, reading, explant, replacement), to that
page too: the page re-renders the form (status 400, the project's convention for a form
with errors, see tests/test_pages_*.py) with the message in the error list of its field.
Either way no row is written and no pump's version moves.

The messages are the services' own (pumps/services.py, pumps/checks.py) and the API's
serializers' (pumps/api/serializers.py); pages capitalise the first letter
(``forms._sentence``).

Then the transport: malformed JSON, wrong content type, a huge body, a JSON array and
deeply nested JSON: never a 500.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytest

from pumps import services as s
from pumps.models import Alert, Appointment, Event, Patient, Program, Pump, Reading, Refill
from tests.api_support import API, CHICAGO, token_client, travel
from tests.factories import make_patient, make_pump, make_user
from tests.pages_support import signed_in, text_of, worked_example

# The clock: 30 days after the worked example's first fill (2026-02-02 09:00 CST, 36 mL of
# 1000 mcg/mL at 450 mcg/day into an 8637-40 of 40 mL implanted 2026-01-15).
NOW = datetime(2026, 3, 4, 9, 30, tzinfo=CHICAGO)

NO_OFFSET = "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."
BAD_DATETIME = (
    "Datetime has wrong format: use ISO 8601 with an offset, for example 2026-02-02T09:00:00-06:00 "
    "or 2026-02-02T15:00:00Z."
)
FUTURE = "This time is in the future; record what has happened (at most 5 minutes ahead)."
BEFORE_IMPLANT = "This time is before the pump's implant date (2026-01-15)."
POSITIVE = "Must be greater than zero."
NOT_NEGATIVE = "Must be zero or more."
STOP_WITHOUT_PLAN = (
    "This program stops delivery (0 mcg/day and no on-demand bolus): give the withdrawal plan (taper_completed, "
    "oral_bridge with its dose, or none with a reason)."
)
TAPERED = {"plan": "taper_completed"}
TITRATION = (
    "the basal daily dose rises from 450 to 600 mcg/day, above the titration limit of +30 % in 24 h "
    "(at most 585 mcg/day); give an override reason to proceed"
)
CONC_CHANGE = "The program in force is at 1000 mcg/mL: a concentration change needs a new program and a bridge bolus."
RESERVOIR_CONC = (
    "The reservoir holds 1000 mcg/mL: a program must use the concentration of the drug in the pump "
    "(a concentration change needs a refill with a new program)."
)
UNSORTED = "steps must be sorted by start time"
DUPLICATED = "steps have duplicate start times"
NOT_HHMM = "step 1: start must be a time as HH:MM (00:00 to 23:59)"
SECOND_PUMP = "This patient already has an implanted pump: record its explant (or a replacement) first."
DUPLICATE = (
    "Another refill of this pump was recorded at 2026-02-02 09:00 (within 60 minutes): probably a duplicate. "
    "Send confirm_duplicate: true if this is really a second refill."
)
NO_SUCH_PK = 'Invalid pk "{id}" - object does not exist.'


def cap(message: str) -> str:
    """Pages show a service message as a sentence (``pumps.forms._sentence``)."""
    return message[:1].upper() + message[1:]


# ------------------------------------------------------------------ request bodies

PUMP = "<pump id>"  # replaced by the id of the case's pump
PATIENT = "<patient id>"

SECOND_REFILL = {  # a valid refill of the filled pump, 30 days after its first fill
    "pump": PUMP, "performed_at": "2026-03-04T09:00:00-06:00", "extracted_volume_ml": "19",
    "added_volume_ml": "38", "concentration_mcg_per_ml": "1000", "drug_product": "gablofen-1000",
}
FIRST_FILL = {  # a valid first fill of the pump that has no record yet
    "pump": PUMP, "performed_at": "2026-03-04T09:00:00-06:00", "added_volume_ml": "36",
    "concentration_mcg_per_ml": "1000",
}
CONTINUOUS = {"concentration_mcg_per_ml": "1000", "mode": "continuous", "daily_dose_mcg": "450"}
PROGRAM = {"pump": PUMP, "effective_at": "2026-03-04T09:00:00-06:00", **CONTINUOUS}
FLEX = {"pump": PUMP, "effective_at": "2026-03-04T09:00:00-06:00", "concentration_mcg_per_ml": "1000",
        "mode": "flex", "steps": [{"start": "00:00", "dose_mcg_per_hour": "18.75"}]}  # 450 mcg/day
READING = {"pump": PUMP, "read_at": "2026-03-04T09:00:00-06:00", "reservoir_volume_ml": "22"}
NEW_PUMP = {"patient": PATIENT, "model": "8637-20", "serial_number": "SN-0002", "implanted_on": "2026-03-01"}

# the page forms, with values that would save
REFILL_FORM = {
    "performed_at": "2026-03-04T09:00", "extracted_volume_ml": "19", "residual_left_ml": "0",
    "added_volume_ml": "38", "drug_product": "gablofen-1000", "concentration_mcg_per_ml": "1000",
    "lot_number": "L77", "lot_expiry": "2027-01-31", "notes": "", "program_mode": "continuous",
}
FIRST_FILL_FORM = {**REFILL_FORM, "extracted_volume_ml": "", "added_volume_ml": "36"}
PROGRAM_FORM = {"effective_at": "2026-03-04T09:00", "concentration_mcg_per_ml": "1000", "mode": "continuous",
                "daily_dose_mcg": "450", "steps": "", "override_reason": ""}
READING_FORM = {"read_at": "2026-03-04T09:00", "reservoir_volume_ml": "22", "notes": ""}
EXPLANT_FORM = {"explanted_on": "2026-03-04", "reason": "infection"}
REPLACE_FORM = {"replaced_on": "2026-03-04", "model": "8637-40", "serial_number": "SN-0009", "reason": "replacement"}
FORMS = {"refill": REFILL_FORM, "first_fill": FIRST_FILL_FORM, "program": PROGRAM_FORM, "reading": READING_FORM,
         "explant": EXPLANT_FORM, "replace": REPLACE_FORM}
PAGE_URL = {"refill": "refill", "first_fill": "refill", "program": "program", "reading": "reading",
            "explant": "explant", "replace": "replace"}


def with_(base: dict, **changes) -> dict:
    """``base`` with ``changes``; a value of ``DROP`` removes the key."""
    body = {**base, **changes}
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()


@dataclass(frozen=True)
class Page:
    form: str  # a key of FORMS
    changes: dict
    field: str | None  # the form field the message sits on; None: the duplicate warning
    message: str
    user: str = "nurse"


@dataclass(frozen=True)
class Case:
    id: str
    rule: str  # the rule in words
    target: str  # "filled", "empty" (no record yet) or "other" (another clinic's pump)
    path: str  # under /api/v1; "{pump}" is the case's pump id
    body: dict
    key: str  # the exact field key of the 400 (the 409 has detail and code)
    message: str  # "{id}" is the case's pump id
    status: int = 400
    page: Page | None = None
    by_prescriber: bool = field(default=False)


CASES: list[Case] = [
    # ---- negative or zero volumes where a positive one is needed
    Case("refill_added_zero", "zero volume added", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml=0), "added_volume_ml", POSITIVE,
         page=Page("refill", {"added_volume_ml": "0"}, "added_volume_ml", POSITIVE)),
    Case("refill_added_negative", "negative volume added", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml="-5"), "added_volume_ml", POSITIVE,
         page=Page("refill", {"added_volume_ml": "-5"}, "added_volume_ml", POSITIVE)),
    Case("refill_extracted_negative", "negative extracted volume", "filled", "/refills/",
         with_(SECOND_REFILL, extracted_volume_ml="-1"), "extracted_volume_ml", NOT_NEGATIVE,
         page=Page("refill", {"extracted_volume_ml": "-1"}, "extracted_volume_ml", NOT_NEGATIVE)),
    Case("refill_residual_left_negative", "negative residual left", "filled", "/refills/",
         with_(SECOND_REFILL, residual_left_ml="-0.5"), "residual_left_ml", NOT_NEGATIVE,
         page=Page("refill", {"residual_left_ml": "-0.5"}, "residual_left_ml", NOT_NEGATIVE)),
    Case("refill_bridge_bolus_negative", "negative bridge bolus", "filled", "/refills/",
         with_(SECOND_REFILL, bridge_bolus_ml="-1"), "bridge_bolus_ml", NOT_NEGATIVE,
         page=Page("refill", {"bridge_bolus_ml": "-1"}, "bridge_bolus_ml", NOT_NEGATIVE, user="prescriber")),
    Case("reading_volume_negative", "negative reservoir volume", "filled", "/readings/",
         with_(READING, reservoir_volume_ml="-1"), "reservoir_volume_ml", NOT_NEGATIVE,
         page=Page("reading", {"reservoir_volume_ml": "-1"}, "reservoir_volume_ml", NOT_NEGATIVE)),
    Case("program_daily_dose_zero", "zero daily dose (delivery stops) without a withdrawal plan", "filled",
         "/programs/", with_(PROGRAM, daily_dose_mcg=0), "withdrawal_plan", STOP_WITHOUT_PLAN,
         page=Page("program", {"daily_dose_mcg": "0"}, "withdrawal_plan", STOP_WITHOUT_PLAN, user="prescriber")),
    Case("program_daily_dose_negative", "negative daily dose", "filled", "/programs/",
         with_(PROGRAM, daily_dose_mcg="-450"), "daily_dose_mcg", NOT_NEGATIVE,
         page=Page("program", {"daily_dose_mcg": "-450"}, "daily_dose_mcg", NOT_NEGATIVE, user="prescriber")),
    Case("program_bolus_negative", "negative on-demand bolus", "filled", "/programs/",
         with_(PROGRAM, ptm_bolus_mcg="-10", ptm_max_per_day=2), "ptm_bolus_mcg", NOT_NEGATIVE,
         page=Page("program", {"ptm_bolus_mcg": "-10", "ptm_max_per_day": "2"}, "ptm_bolus_mcg", NOT_NEGATIVE,
                   user="prescriber")),
    # ---- first fill with extracted volume or residual left; later refill without extracted
    Case("first_fill_with_extracted", "a first fill with an extracted volume", "empty", "/refills/",
         with_(FIRST_FILL, extracted_volume_ml="2"), "extracted_volume_ml",
         "A first fill after implant has no extracted volume: leave it empty.",
         page=Page("first_fill", {"extracted_volume_ml": "2"}, "extracted_volume_ml",
                   "A first fill after implant has no extracted volume: leave it empty.")),
    Case("first_fill_with_zero_extracted", "a first fill with an extracted volume (0)", "empty", "/refills/",
         with_(FIRST_FILL, extracted_volume_ml="0"), "extracted_volume_ml",
         "A first fill after implant has no extracted volume: leave it empty.",
         page=Page("first_fill", {"extracted_volume_ml": "0"}, "extracted_volume_ml",
                   "A first fill after implant has no extracted volume: leave it empty.")),
    Case("first_fill_with_residual_left", "a first fill with a residual left", "empty", "/refills/",
         with_(FIRST_FILL, residual_left_ml="2"), "residual_left_ml",
         "A first fill after implant has no residual left in the pump.",
         page=Page("first_fill", {"residual_left_ml": "2"}, "residual_left_ml",
                   "A first fill after implant has no residual left in the pump.")),
    Case("later_refill_without_extracted", "a later refill without an extracted volume", "filled", "/refills/",
         with_(SECOND_REFILL, extracted_volume_ml=None), "extracted_volume_ml",
         "A refill after the first fill needs the extracted volume (0 if nothing could be drawn).",
         page=Page("refill", {"extracted_volume_ml": ""}, "extracted_volume_ml",
                   "A refill after the first fill needs the extracted volume (0 if nothing could be drawn).")),
    Case("later_refill_extracted_absent", "a later refill without an extracted volume (key absent)", "filled",
         "/refills/", with_(SECOND_REFILL, extracted_volume_ml=DROP), "extracted_volume_ml",
         "A refill after the first fill needs the extracted volume (0 if nothing could be drawn)."),
    # ---- capacity
    Case("volume_after_above_capacity", "volume after refill above the reservoir capacity", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml="41"), "added_volume_ml",
         "The volume after the refill (41 mL) exceeds the reservoir capacity of 40 mL.",
         page=Page("refill", {"added_volume_ml": "41"}, "added_volume_ml",
                   "The volume after the refill (41 mL) exceeds the reservoir capacity of 40 mL.")),
    Case("residual_plus_added_above_capacity", "residual left + added above the capacity", "filled", "/refills/",
         with_(SECOND_REFILL, residual_left_ml="3", added_volume_ml="38"), "added_volume_ml",
         "The volume after the refill (41 mL) exceeds the reservoir capacity of 40 mL.",
         page=Page("refill", {"residual_left_ml": "3", "added_volume_ml": "38"}, "added_volume_ml",
                   "The volume after the refill (41 mL) exceeds the reservoir capacity of 40 mL.")),
    Case("extracted_above_capacity", "extracted volume above capacity", "filled", "/refills/",
         with_(SECOND_REFILL, extracted_volume_ml="40.5"), "extracted_volume_ml",
         "The extracted volume (40.5 mL) exceeds the reservoir capacity of 40 mL.",
         page=Page("refill", {"extracted_volume_ml": "40.5"}, "extracted_volume_ml",
                   "The extracted volume (40.5 mL) exceeds the reservoir capacity of 40 mL.")),
    Case("reading_above_capacity", "reported volume above capacity", "filled", "/readings/",
         with_(READING, reservoir_volume_ml="40.001"), "reservoir_volume_ml",
         "Exceeds the reservoir capacity of 40 mL.",
         page=Page("reading", {"reservoir_volume_ml": "40.001"}, "reservoir_volume_ml",
                   "Exceeds the reservoir capacity of 40 mL.")),
    # ---- concentration
    Case("refill_concentration_zero", "concentration not positive (0)", "filled", "/refills/",
         with_(SECOND_REFILL, concentration_mcg_per_ml=0, drug_product=None), "concentration_mcg_per_ml", POSITIVE,
         page=Page("refill", {"concentration_mcg_per_ml": "0", "drug_product": ""}, "concentration_mcg_per_ml",
                   POSITIVE)),
    Case("refill_concentration_negative", "concentration not positive (-1000)", "filled", "/refills/",
         with_(SECOND_REFILL, concentration_mcg_per_ml="-1000", drug_product=None), "concentration_mcg_per_ml",
         POSITIVE,
         page=Page("refill", {"concentration_mcg_per_ml": "-1000", "drug_product": ""},
                   "concentration_mcg_per_ml", POSITIVE)),
    Case("program_concentration_zero", "program concentration not positive", "filled", "/programs/",
         with_(PROGRAM, concentration_mcg_per_ml="0"), "concentration_mcg_per_ml", POSITIVE,
         page=Page("program", {"concentration_mcg_per_ml": "0"}, "concentration_mcg_per_ml", POSITIVE,
                   user="prescriber")),
    Case("concentration_not_matching_product", "concentration that does not match the product", "filled",
         "/refills/", with_(SECOND_REFILL, concentration_mcg_per_ml="500"), "concentration_mcg_per_ml",
         "Gablofen 1000 mcg/mL is 1000 mcg/mL, not 500.",
         page=Page("refill", {"concentration_mcg_per_ml": "500"}, "concentration_mcg_per_ml",
                   "Gablofen 1000 mcg/mL is 1000 mcg/mL, not 500.")),
    Case("concentration_change_without_program", "a concentration change that carries no new program", "filled",
         "/refills/", with_(SECOND_REFILL, concentration_mcg_per_ml="2000", drug_product="gablofen-2000"),
         "concentration_mcg_per_ml", CONC_CHANGE,
         page=Page("refill", {"concentration_mcg_per_ml": "2000", "drug_product": "gablofen-2000"},
                   "concentration_mcg_per_ml", CONC_CHANGE)),
    Case("embedded_program_other_concentration", "embedded program at another concentration than the refill",
         "filled", "/refills/",
         with_(SECOND_REFILL, concentration_mcg_per_ml="2000", drug_product="gablofen-2000", bridge_bolus_ml="0.2",
               program={**CONTINUOUS, "concentration_mcg_per_ml": "1000"}),
         "program.concentration_mcg_per_ml",
         "The new program's concentration differs from the refill's: they must be the same drug."),
    # (the refill page takes the program's concentration from the refill's: no page case)
    Case("standalone_program_other_concentration", "stand-alone program at another concentration than the reservoir",
         "filled", "/programs/", with_(PROGRAM, concentration_mcg_per_ml="2000"), "concentration_mcg_per_ml",
         RESERVOIR_CONC,
         page=Page("program", {"concentration_mcg_per_ml": "2000"}, "concentration_mcg_per_ml", RESERVOIR_CONC,
                   user="prescriber")),
    # ---- times: future, before implant, no offset
    Case("refill_in_the_future", "a time more than 5 minutes ahead", "filled", "/refills/",
         with_(SECOND_REFILL, performed_at="2026-03-04T09:35:01-06:00"), "performed_at", FUTURE,
         page=Page("refill", {"performed_at": "2026-03-04T09:36"}, "performed_at", FUTURE)),
    Case("reading_in_the_future", "a time more than 5 minutes ahead", "filled", "/readings/",
         with_(READING, read_at="2026-03-04T16:00:00Z"), "read_at", FUTURE,
         page=Page("reading", {"read_at": "2026-03-04T10:00"}, "read_at", FUTURE)),
    Case("program_in_the_future", "a time more than 5 minutes ahead", "filled", "/programs/",
         with_(PROGRAM, effective_at="2026-03-05T09:00:00-06:00"), "effective_at", FUTURE,
         page=Page("program", {"effective_at": "2026-03-05T09:00"}, "effective_at", FUTURE, user="prescriber")),
    Case("explant_in_the_future", "an explant date in the future", "filled", "/pumps/{pump}/explant/",
         {"explanted_on": "2026-03-05", "withdrawal_plan": TAPERED}, "explanted_on", "The explant date is in the future.",
         page=Page("explant", {"explanted_on": "2026-03-05"}, "explanted_on", "The explant date is in the future.")),
    Case("implant_in_the_future", "an implant date in the future", "empty", "/pumps/",
         with_(NEW_PUMP, patient="<other patient id>", implanted_on="2026-03-05"), "implanted_on",
         "The implant date is in the future."),
    # 05:30 UTC on the implant date is still 2026-01-14 in Chicago
    Case("refill_local_date_before_implant", "local date before the implant date", "empty", "/refills/",
         with_(FIRST_FILL, performed_at="2026-01-15T05:30:00Z"), "performed_at", BEFORE_IMPLANT,
         page=Page("first_fill", {"performed_at": "2026-01-14T23:30"}, "performed_at", BEFORE_IMPLANT)),
    Case("reading_local_date_before_implant", "local date before the implant date", "filled", "/readings/",
         with_(READING, read_at="2026-01-14T23:59:00-06:00"), "read_at", BEFORE_IMPLANT,
         page=Page("reading", {"read_at": "2026-01-14T23:59"}, "read_at", BEFORE_IMPLANT)),
    Case("program_local_date_before_implant", "local date before the implant date", "filled", "/programs/",
         with_(PROGRAM, effective_at="2026-01-15T05:59:59Z"), "effective_at", BEFORE_IMPLANT,
         page=Page("program", {"effective_at": "2026-01-10T09:00"}, "effective_at", BEFORE_IMPLANT,
                   user="prescriber")),
    Case("explant_before_implant", "explant date before the implant date", "filled", "/pumps/{pump}/explant/",
         {"explanted_on": "2026-01-14", "withdrawal_plan": TAPERED}, "explanted_on",
         "The explant date is before the implant date (2026-01-15).",
         page=Page("explant", {"explanted_on": "2026-01-14"}, "explanted_on",
                   "The explant date is before the implant date (2026-01-15).")),
    Case("refill_without_offset", "a datetime without an offset", "filled", "/refills/",
         with_(SECOND_REFILL, performed_at="2026-03-04T09:00:00"), "performed_at", NO_OFFSET),
    Case("reading_without_offset", "a datetime without an offset", "filled", "/readings/",
         with_(READING, read_at="2026-03-04 09:00"), "read_at", NO_OFFSET),
    Case("program_without_offset", "a datetime without an offset", "filled", "/programs/",
         with_(PROGRAM, effective_at="2026-03-04T09:00"), "effective_at", NO_OFFSET),
    # ---- a second implanted pump
    Case("second_implanted_pump", "a second implanted pump for a patient", "filled", "/pumps/",
         NEW_PUMP, "patient", SECOND_PUMP),
    # ---- titration
    Case("titration_above_limit", "basal daily dose above the titration limit without an override reason",
         "filled", "/programs/", with_(PROGRAM, daily_dose_mcg="600"), "override_reason", TITRATION,
         page=Page("program", {"daily_dose_mcg": "600"}, "override_reason", cap(TITRATION), user="prescriber")),
    Case("titration_blank_override", "an override reason of blanks is no reason", "filled", "/programs/",
         with_(PROGRAM, daily_dose_mcg="600", override_reason="   "), "override_reason", TITRATION,
         page=Page("program", {"daily_dose_mcg": "600", "override_reason": "   "}, "override_reason",
                   cap(TITRATION), user="prescriber")),
    Case("titration_bolus_excluded", "on-demand boluses do not count but do not hide a basal rise", "filled",
         "/programs/", with_(PROGRAM, daily_dose_mcg="600", ptm_bolus_mcg="0", ptm_max_per_day=0),
         "override_reason", TITRATION),
    Case("titration_above_limit_in_refill", "titration limit on a program carried by a refill", "filled",
         "/refills/", with_(SECOND_REFILL, program={**CONTINUOUS, "daily_dose_mcg": "600"}),
         "program.override_reason", TITRATION,
         page=Page("refill", {"changes_program": "on", "program_daily_dose_mcg": "600"}, "program_override_reason",
                   cap(TITRATION), user="prescriber")),
    # ---- flex programs
    Case("flex_daily_dose_disagrees", "flex daily_dose_mcg disagreeing with its steps", "filled", "/programs/",
         with_(FLEX, daily_dose_mcg="500"), "daily_dose_mcg",
         "daily_dose_mcg 500 disagrees with the steps, which deliver 450 mcg/day"),
    # (the program page computes a flex program's daily dose from its steps: no page case)
    Case("flex_steps_unsorted", "flex steps unsorted", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "12:00", "dose_mcg_per_hour": "20"}, {"start": "06:00", "dose_mcg_per_hour": "17.5"}]),
         "steps", UNSORTED,
         page=Page("program", {"mode": "flex", "daily_dose_mcg": "", "steps": "12:00 20\n06:00 17.5"}, "steps",
                   cap(UNSORTED), user="prescriber")),
    Case("flex_steps_duplicated", "flex steps duplicated", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "06:00", "dose_mcg_per_hour": "20"}, {"start": "06:00", "dose_mcg_per_hour": "17.5"}]),
         "steps", DUPLICATED,
         page=Page("program", {"mode": "flex", "daily_dose_mcg": "", "steps": "06:00 20\n06:00 17.5"}, "steps",
                   cap(DUPLICATED), user="prescriber")),
    Case("flex_steps_not_hhmm", "flex step start not HH:MM (7:00)", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "7:00", "dose_mcg_per_hour": "18.75"}]), "steps", NOT_HHMM),
    Case("flex_steps_hour_24", "flex step start not HH:MM (24:00)", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "24:00", "dose_mcg_per_hour": "18.75"}]), "steps", NOT_HHMM,
         page=Page("program", {"mode": "flex", "daily_dose_mcg": "", "steps": "24:00 18.75"}, "steps",
                   cap(NOT_HHMM), user="prescriber")),
    Case("flex_steps_minute_60", "flex step start not HH:MM (07:60)", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "07:60", "dose_mcg_per_hour": "18.75"}]), "steps", NOT_HHMM,
         page=Page("program", {"mode": "flex", "daily_dose_mcg": "", "steps": "07:60 18.75"}, "steps",
                   cap(NOT_HHMM), user="prescriber")),
    Case("flex_steps_with_seconds", "flex step start not HH:MM (07:00:00)", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "07:00:00", "dose_mcg_per_hour": "18.75"}]), "steps", NOT_HHMM,
         page=Page("program", {"mode": "flex", "daily_dose_mcg": "", "steps": "7h00 18.75"}, "steps",
                   "Line 1: write a start time and a dose, for example 07:00 20.5", user="prescriber")),
    Case("flex_steps_unsorted_in_refill", "flex steps unsorted on a program carried by a refill", "filled",
         "/refills/",
         with_(SECOND_REFILL, program={"concentration_mcg_per_ml": "1000", "mode": "flex", "steps": [
             {"start": "12:00", "dose_mcg_per_hour": "20"}, {"start": "06:00", "dose_mcg_per_hour": "17.5"}]}),
         "program.steps", UNSORTED,
         page=Page("refill", {"changes_program": "on", "program_mode": "flex",
                              "program_steps": "12:00 20\n06:00 17.5"}, "program_steps", cap(UNSORTED),
                   user="prescriber")),
    # ---- another clinic's pump: the same 400 as a pump that does not exist
    Case("refill_other_clinic_pump", "a record for a pump of another clinic", "other", "/refills/",
         with_(FIRST_FILL), "pump", NO_SUCH_PK),
    Case("reading_other_clinic_pump", "a record for a pump of another clinic", "other", "/readings/",
         READING, "pump", NO_SUCH_PK),
    Case("program_other_clinic_pump", "a record for a pump of another clinic", "other", "/programs/",
         PROGRAM, "pump", NO_SUCH_PK),
    Case("refill_missing_pump", "a pump that does not exist", "missing", "/refills/",
         with_(FIRST_FILL), "pump", NO_SUCH_PK),
    # ---- wrong types
    Case("added_volume_not_a_number", "wrong type: volume as text", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml="thirty-eight"), "added_volume_ml", "A valid number is required.",
         page=Page("refill", {"added_volume_ml": "thirty-eight"}, "added_volume_ml", "Enter a volume in mL, e.g. 1.5")),
    Case("added_volume_boolean", "wrong type: volume as a boolean", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml=True), "added_volume_ml", "A valid number is required."),
    Case("added_volume_object", "wrong type: volume as an object", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml={"value": 38}), "added_volume_ml", "A valid number is required."),
    Case("added_volume_nan", "wrong type: NaN", "filled", "/refills/",
         with_(SECOND_REFILL, added_volume_ml="NaN"), "added_volume_ml", "A valid number is required."),
    Case("performed_at_a_number", "wrong type: datetime as a number", "filled", "/refills/",
         with_(SECOND_REFILL, performed_at=1772636400), "performed_at", BAD_DATETIME,
         page=Page("refill", {"performed_at": "yesterday morning"}, "performed_at",
                   "Enter a date and time (YYYY-MM-DD HH:MM).")),
    Case("pump_as_text", "wrong type: pump id as text", "filled", "/refills/",
         with_(SECOND_REFILL, pump="the left one"), "pump", "Incorrect type. Expected pk value, received str."),
    Case("mode_unknown", "wrong value: unknown program mode", "filled", "/programs/",
         with_(PROGRAM, mode="bolus"), "mode", '"bolus" is not a valid choice.'),
    Case("ptm_max_not_integer", "wrong type: maximum boluses per day as text", "filled", "/programs/",
         with_(PROGRAM, ptm_bolus_mcg="50", ptm_max_per_day="four"), "ptm_max_per_day",
         "A valid integer is required."),
    Case("confirm_duplicate_not_boolean", "wrong type: confirm_duplicate", "filled", "/refills/",
         with_(SECOND_REFILL, confirm_duplicate="perhaps"), "confirm_duplicate", "Must be a valid boolean."),
    Case("reading_volume_as_list", "wrong type: volume as a list", "filled", "/readings/",
         with_(READING, reservoir_volume_ml=[22]), "reservoir_volume_ml", "A valid number is required.",
         page=Page("reading", {"reservoir_volume_ml": "22 mL"}, "reservoir_volume_ml", "Enter a volume in mL, e.g. 1.5")),
    Case("explant_date_wrong", "wrong type: explant date", "filled", "/pumps/{pump}/explant/",
         {"explanted_on": "04/03/2026"}, "explanted_on",
         "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
         page=Page("explant", {"explanted_on": "the fourth"}, "explanted_on", "Enter a valid date.")),
    Case("steps_dose_not_a_number", "wrong type: flex step dose", "filled", "/programs/",
         with_(FLEX, steps=[{"start": "00:00", "dose_mcg_per_hour": "lots"}]), "steps[0].dose_mcg_per_hour",
         "A valid number is required."),
    # ---- unknown pump model code
    Case("unknown_pump_model", "an unknown pump model code", "empty", "/pumps/",
         with_(NEW_PUMP, patient="<other patient id>", model="8637-99"), "model",
         'Unknown pump model code "8637-99".',
         page=Page("replace", {"model": "8637-99"}, "model",
                   "Select a valid choice. That choice is not one of the available choices.")),
    # ---- a probable duplicate: 409 on the API, a warning asking to confirm on the page
    Case("probable_duplicate_refill", "a refill within 60 minutes of another", "filled", "/refills/",
         with_(SECOND_REFILL, performed_at="2026-02-02T09:45:00-06:00", extracted_volume_ml="35.9",
               added_volume_ml="1"),
         "detail", DUPLICATE, status=409,
         page=Page("refill", {"performed_at": "2026-02-02T09:45", "extracted_volume_ml": "35.9",
                              "added_volume_ml": "1"}, None, DUPLICATE.split(" Send confirm_duplicate")[0])),
]


# ----------------------------------------------------------------------- fixtures


@pytest.fixture
def world(clinic, other_clinic, patient, nurse, prescriber):
    """The filled pump (the worked example's first fill and program), a pump with no record of another
    patient, and a pump of another clinic."""
    filled = worked_example(patient, s.Actor(nurse))
    second = make_patient(clinic, mrn="MRN002", family_name="Lee", given_name="Bo", origin="cerebral")
    empty = make_pump(second, model_code="8637-40", implanted_on=date(2026, 1, 15), serial="SN-0100")
    third = make_patient(clinic, mrn="MRN003", family_name="Ito", given_name="Mei")  # no pump yet
    foreign = make_patient(other_clinic, mrn="S-1", family_name="Smith", given_name="Jo")
    other = make_pump(foreign, model_code="8637-20", implanted_on=date(2026, 1, 15), serial="SN-0200")
    make_user("stranger", other_clinic, "prescriber")
    return {"filled": filled, "empty": empty, "other": other, "patient": patient, "other_patient": third,
            "nurse": nurse, "prescriber": prescriber}


def target_id(world, case: Case) -> int:
    if case.target == "missing":
        return Pump.objects.order_by("-pk").values_list("pk", flat=True).first() + 1000
    return world[case.target].pk


def fill_in(value: Any, world, pump_id: int) -> Any:
    if value == PUMP:
        return pump_id
    if value == PATIENT:
        return world["patient"].pk
    if value == "<other patient id>":
        return world["other_patient"].pk
    if isinstance(value, dict):
        return {k: fill_in(v, world, pump_id) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_in(v, world, pump_id) for v in value]
    return value


def snapshot() -> dict:
    """Everything a write could leave behind: rows, audit rows, and each pump's version."""
    counts = {
        model.__name__: (model.objects.count(), model.history.count() if hasattr(model, "history") else None)
        for model in (Patient, Pump, Refill, Program, Reading, Event, Appointment)
    }
    counts["Alert"] = Alert.objects.count()
    counts["pumps"] = list(
        Pump.objects.order_by("pk").values_list("pk", "version", "explanted_on", "updated_at", "status")
    )
    return counts


def errorlist(html: str, name: str) -> str:
    """The text of the error list Django renders next to the field ``name``."""
    match = re.search(rf'<ul class="errorlist" id="id_{name}_error">(.*?)</ul>', html, re.S)
    assert match, f"no error list next to {name}"
    return text_of(match.group(1))


# -------------------------------------------------------------------- the API path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api_refuses_bad_input_with_the_field_and_message_and_saves_nothing(world, clinic, case):
    api, _ = token_client(clinic)
    pump_id = target_id(world, case)
    body = fill_in(case.body, world, pump_id)
    before = snapshot()
    with travel(NOW):
        response = api.post(API + case.path.format(pump=pump_id), body, format="json")
    assert response.status_code == case.status, response.content
    message = case.message.replace("{id}", str(pump_id))
    if case.status == 409:
        assert response.json() == {"detail": message, "code": "probable_duplicate"}
    else:
        assert response.json() == {case.key: [message]}
    assert snapshot() == before


def test_another_clinics_pump_gets_the_same_400_as_a_missing_one(world, clinic):
    api, _ = token_client(clinic)
    missing = Pump.objects.order_by("-pk").first().pk + 1000
    with travel(NOW):
        foreign = api.post(f"{API}/readings/", fill_in(READING, world, world["other"].pk), format="json")
        absent = api.post(f"{API}/readings/", fill_in(READING, world, missing), format="json")
    assert foreign.status_code == absent.status_code == 400
    assert foreign.json() == {"pump": [NO_SUCH_PK.replace("{id}", str(world["other"].pk))]}
    assert absent.json() == {"pump": [NO_SUCH_PK.replace("{id}", str(missing))]}


# ------------------------------------------------------------------- the page path


PAGE_CASES = [c for c in CASES if c.page is not None]


@pytest.mark.parametrize("case", PAGE_CASES, ids=[c.id for c in PAGE_CASES])
def test_page_shows_the_message_next_to_the_field_and_saves_nothing(world, case):
    page = case.page
    pump = world[case.target]
    data = {**FORMS[page.form], **page.changes}
    before = snapshot()
    with travel(NOW):
        response = signed_in(world[page.user]).post(f"/pumps/{pump.pk}/{PAGE_URL[page.form]}/", data)
    # the form comes back with its errors (not a redirect to the saved record)
    assert response.status_code == 400, response.status_code
    html = response.content.decode()
    if page.field is None:
        warning = re.search(r'<div class="notice-critical" role="alert" id="duplicate-warning">(.*?)</div>',
                            html, re.S)
        assert warning and page.message in text_of(warning.group(1))
    else:
        assert page.message in response.context["form"].errors[page.field]
        assert page.message in errorlist(html, page.field)
    assert page.message in text_of(html)
    assert snapshot() == before


def test_another_clinics_pump_page_answers_404_and_saves_nothing(world):
    before = snapshot()
    with travel(NOW):
        client = signed_in(world["prescriber"])
        for form in ("refill", "program", "reading", "explant", "replace"):
            response = client.post(f"/pumps/{world['other'].pk}/{PAGE_URL[form]}/", FORMS[form])
            assert response.status_code == 404, form
    assert snapshot() == before


def test_the_table_covers_every_spec_5_rule():
    rules = " | ".join(c.rule for c in CASES)
    for words in ("negative", "zero", "first fill with an extracted", "first fill with a residual",
                  "later refill without an extracted", "volume after refill above", "extracted volume above",
                  "concentration not positive", "does not match the product", "carries no new program",
                  "embedded program", "stand-alone program", "more than 5 minutes ahead", "before the implant",
                  "without an offset", "second implanted pump", "titration limit", "disagreeing with its steps",
                  "unsorted", "duplicated", "not HH:MM", "another clinic", "wrong type", "unknown pump model",
                  "within 60 minutes"):
        assert words in rules, words


# ------------------------------------------------------------------------ transport


@pytest.fixture
def api(world, clinic):
    return token_client(clinic)[0]


def post_raw(api, path: str, raw: str | bytes, content_type: str = "application/json", **headers):
    with travel(NOW):
        return api.generic("POST", API + path, raw, content_type=content_type, **headers)


def test_malformed_json_is_a_400_with_non_field_errors(api, world):
    before = snapshot()
    response = post_raw(api, "/refills/", '{"pump": ' + str(world["filled"].pk) + ', "added_volume_ml": 38,')
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["non_field_errors"]
    assert len(body["non_field_errors"]) == 1
    assert body["non_field_errors"][0].startswith("JSON parse error - ")
    assert snapshot() == before


@pytest.mark.parametrize("raw", ["", "{'pump': 1}", "NaN", '{"added_volume_ml": Infinity}', "\x00", "{"])
def test_other_unparseable_bodies_are_400(api, world, raw):
    before = snapshot()
    response = post_raw(api, "/refills/", raw)
    assert response.status_code == 400
    assert set(response.json()) <= {"non_field_errors", "pump", "performed_at", "added_volume_ml",
                                    "concentration_mcg_per_ml"}
    assert snapshot() == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_415(api, world, content_type):
    before = snapshot()
    body = fill_in(SECOND_REFILL, world, world["filled"].pk)
    raw = "&".join(f"{k}={v}" for k, v in body.items())
    response = post_raw(api, "/refills/", raw, content_type=content_type)
    assert response.status_code == 415
    assert response.json() == {"detail": f'Unsupported media type "{content_type}" in request.',
                               "code": "unsupported_media_type"}
    assert snapshot() == before


def test_a_json_array_instead_of_an_object_is_400(api, world):
    before = snapshot()
    response = post_raw(api, "/refills/", '[{"pump": ' + str(world["filled"].pk) + '}]')
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}
    assert snapshot() == before


@pytest.mark.parametrize("raw", ["null", "38", '"refill"', "true"])
def test_a_json_scalar_instead_of_an_object_is_400(api, world, raw):
    before = snapshot()
    response = post_raw(api, "/refills/", raw)
    assert response.status_code == 400
    assert list(response.json()) == ["non_field_errors"]
    assert snapshot() == before


FIVE_MB = 5 * 1024 * 1024


def test_a_huge_body_is_refused_and_nothing_is_saved(api, world, settings):
    """DATA_UPLOAD_MAX_MEMORY_SIZE (Django's default, 2.5 MB) bounds a request body; a
    5 MB note is refused: 400 (Django's answer to RequestDataTooBig), never a 500 nor a save."""
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2621440
    before = snapshot()
    body = fill_in(SECOND_REFILL, world, world["filled"].pk)
    body["notes"] = "x" * FIVE_MB
    response = post_raw(api, "/refills/", json.dumps(body))
    assert response.status_code == 400
    assert snapshot() == before


def test_a_huge_body_with_an_idempotency_key_is_refused(api, world, settings):
    before = snapshot()
    body = fill_in(SECOND_REFILL, world, world["filled"].pk)
    body["notes"] = "x" * FIVE_MB
    response = post_raw(api, "/refills/", json.dumps(body), HTTP_IDEMPOTENCY_KEY="huge-1")
    assert response.status_code == 400
    assert snapshot() == before


def test_a_huge_bad_value_is_400_not_500(api, world):
    before = snapshot()
    body = fill_in(SECOND_REFILL, world, world["filled"].pk)
    body["added_volume_ml"] = "9" * 1_000_000
    response = post_raw(api, "/refills/", json.dumps(body))
    assert response.status_code == 400
    assert response.json() == {"added_volume_ml": ["A valid number is required."]}
    assert snapshot() == before


@pytest.mark.parametrize("depth", [50, 900, 5_000, 100_000])
def test_deeply_nested_json_is_400_not_500(api, world, depth):
    before = snapshot()
    nested = "[" * depth + "]" * depth
    raw = '{"pump": ' + str(world["filled"].pk) + ', "notes": ' + nested + '}'
    response = post_raw(api, "/refills/", raw)
    assert response.status_code == 400
    assert response.json()  # a field-level or non_field_errors body
    assert snapshot() == before


@pytest.mark.parametrize("depth", [900, 100_000])
def test_deeply_nested_program_object_is_400_not_500(api, world, depth):
    before = snapshot()
    nested = '{"program": ' * depth + "{}" + "}" * depth
    response = post_raw(api, "/refills/", nested)
    assert response.status_code == 400
    assert snapshot() == before


def test_a_huge_body_gets_the_api_error_shape(api, world):
    """The API contract (README, REST API): an API 400 is a JSON object of lists (here ``non_field_errors``), not
    Django's HTML "Bad Request (400)" page."""
    body = fill_in(SECOND_REFILL, world, world["filled"].pk)
    body["notes"] = "x" * FIVE_MB
    response = post_raw(api, "/refills/", json.dumps(body))
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    assert list(response.json()) == ["non_field_errors"]
