"""The patient and pump pages: demographics and risk flags, the projection, the charts
(server-rendered SVG with text alternatives), histories, alerts, audit; a fixed number of
queries; another clinic's records answer 404."""

import re
from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps import charts
from pumps import services as s
from pumps.models import Appointment, Assessment, CoMedication, Refill
from tests.factories import make_user
from tests.pages_support import (
    CHICAGO,
    DUE_SOON_AT,
    assert_no_inline_script,
    signed_in,
    text_of,
    travel,
    worked_example,
)


@pytest.fixture
def filled(patient, prescriber):
    patient.withdrawal_high_risk = False
    return worked_example(patient, s.Actor(prescriber))


def test_pump_page_shows_the_projection_of_the_worked_example(filled, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).get(f"/pumps/{filled.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    text = text_of(html)
    assert "Garcia, Ana MRN MRN001" in text
    assert "Born 1980-05-17 · spasticity origin: spinal · patient active" in text
    assert ("Refill due soon Due soon: refill due on 2026-04-10 (in 13 days); low-reservoir alarm 2026-04-18 23:20 CDT "
            "(in 21 days) Withdrawal risk now: none flagged (not empty, no withdrawal-risk alert).") in text
    assert "Reservoir now Refill due 2026-04-10 (Fri), in 13 days." in text
    # 54 days 2 hours of real time (the clocks sprang forward on 03-08): 36 - 0.45 x 54.0833 = 11.6625
    assert "Volume now (expected) 11.66 mL" in text
    assert "Delivery 0.45 mL/day expected, 0.45 mL/day with every bolus" in text
    assert ("Low-reservoir alarm 2026-04-18 23:20 CDT (in 21 days) worst case; 2026-04-18 23:20 CDT (in 21 days) "
            "expected") in text
    assert "Empty 2026-04-23 10:00 CDT (in 25 days) worst case; 2026-04-23 10:00 CDT (in 25 days) expected" in text
    assert "Drug expires 2026-08-01 10:00 CDT (in 125 days)" in text
    assert "Anchored on 36 mL at 2026-02-02 09:00 CST" in text
    assert "stalls during MRI: interrogate afterwards" in text
    assert_no_inline_script(html)


def test_charts_are_svg_with_alarm_line_due_date_and_text(filled, nurse):
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/pumps/{filled.pk}/").content.decode()
    volume = re.search(r'<svg class="chart" id="volume-chart".*?</svg>', html, re.S).group(0)
    assert 'role="img" aria-labelledby="volume-chart-title volume-chart-desc"' in volume
    assert "<title id=\"volume-chart-title\">Projected reservoir volume (mL)</title>" in volume
    assert ("Worst case reaches the 2 mL alarm volume on 2026-04-18 23:20 and is empty on 2026-04-23 10:00. "
            "Expected (no on-demand boluses) empty on 2026-04-23 10:00. Refill due on 2026-04-10.") in volume
    assert "Alarm volume 2 mL" in volume
    assert "Due 2026-04-10" in volume
    assert 'class="series-expected"' in volume and 'class="series-worst"' in volume
    assert '<svg class="chart" id="dose-chart"' in html
    assert "Basal daily dose from 2026-02-02: 450 mcg/day at first, 450 mcg/day now, over 1 program(s)." in html
    # the table alternative starts at the anchor with 36 mL
    assert re.search(r"<td>2026-02-02 09:00 CST</td><td class=\"num\">36</td><td class=\"num\">36</td>", html)


def test_volume_chart_geometry(filled):
    """The alarm line sits at 2 of 40 mL and the series starts at the anchor volume."""
    page_now = DUE_SOON_AT
    history = s.load_history(filled)
    projection = s.project_pump(filled, page_now, history)
    chart = charts.volume_chart(
        pump_state=s.pump_state(filled), history_inputs=history.inputs(), projection=projection,
        capacity_ml=D("40"), program_times=[p.effective_at for p in history.programs], now=page_now, tz=CHICAGO,
    )
    assert chart.start == datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
    # to 3 days after the later of the worst-case empty instant and the due date
    assert chart.end == datetime(2026, 4, 26, 10, 0, tzinfo=CHICAGO)
    assert chart.series[0][1:] == (D("36.000"), D("36.000"))
    # plot height 300 - 20 - 46 = 234 px for 40 mL: 2 mL is 11.7 px above the axis at y = 254
    assert '<line x1="60" y1="242.3" x2="700" y2="242.3" class="chart-alarm"/>' in chart.svg


def test_discrepancy_chart_marks_flagged_refills(filled, nurse):
    s.record_refill(pump=filled, performed_at=datetime(2026, 3, 4, 9, tzinfo=CHICAGO), extracted_volume_ml=D("19"),
                    added_volume_ml=D("38"), concentration_mcg_per_ml=D("1000"), actor=s.Actor(nurse),
                    now=datetime(2026, 3, 4, 10, tzinfo=CHICAGO))
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/pumps/{filled.pk}/").content.decode()
    chart = re.search(r'<svg class="chart" id="discrepancy-chart".*?</svg>', html, re.S).group(0)
    assert "Residual discrepancy of the last 1 refills; threshold ±2 mL; 1 flagged." in chart
    assert 'class="bar-flagged"' in chart
    assert ">-3.5 !</text>" in chart
    assert "Flagged: less drug than expected remained" in text_of(html)


def test_histories_and_audit_name_who_did_what(filled, nurse, prescriber):
    s.schedule_appointment(pump=filled, scheduled_for=datetime(2026, 4, 7, 9, 30, tzinfo=CHICAGO),
                           actor=s.Actor(nurse), now=DUE_SOON_AT - timedelta(days=1))
    with travel(DUE_SOON_AT):
        text = text_of(signed_in(nurse).get(f"/pumps/{filled.pk}/").content.decode())
    refill = Refill.objects.get()
    assert ("2026-02-02 09:00 CST first fill — — — 36 36 1000 mcg/mL dr_pat") in text
    assert "2026-02-02 09:00 CST with a refill continuous 450 1000 0.45 — dr_pat not verified" in text
    assert "Next refill appointment 2026-04-07 09:30 CDT (in 9 days) · add to calendar (.ics)" in text
    assert f"Refill #{refill.pk} created" in text
    assert "Appointment #" in text
    assert "Not yet verified: the program from 2026-02-02 09:00 CST" in text


def test_pump_page_queries_do_not_grow_with_history(filled, nurse):
    client = signed_in(nurse)

    def count():
        with travel(DUE_SOON_AT), CaptureQueriesContext(connection) as queries:
            assert client.get(f"/pumps/{filled.pk}/").status_code == 200
        return len(queries)

    count()  # the session's first request stores its start: not a read of the page
    small = count()
    actor = s.Actor(nurse)
    day = datetime(2026, 2, 10, 9, tzinfo=CHICAGO)
    for i in range(6):
        at = day + timedelta(days=3 * i)
        s.record_reading(pump=filled, read_at=at, reservoir_volume_ml=D("30") - i, actor=actor, now=at)
        s.record_event(pump=filled, kind="alarm_reported", occurred_at=at, actor=actor, now=at)
        s.schedule_appointment(pump=filled, scheduled_for=at + timedelta(days=40), actor=actor, now=at)
    s.record_refill(pump=filled, performed_at=datetime(2026, 3, 4, 9, tzinfo=CHICAGO), extracted_volume_ml=D("19"),
                    added_volume_ml=D("38"), concentration_mcg_per_ml=D("1000"), actor=actor,
                    now=datetime(2026, 3, 4, 10, tzinfo=CHICAGO))
    for i in range(3):  # assessments and co-medication are read in one query each
        Assessment.objects.create(pump=filled, assessed_at=day + timedelta(days=i), ashworth_lower_left="2",
                                  penn_spasm_frequency=2, assessed_by=nurse)
        CoMedication.objects.create(patient=filled.patient, name=f"drug {i}", category="opioid",
                                    started_on=day.date(), recorded_by=nurse)
    assert count() == small == 30  # 29 reads and the access-log row (README, Security)


def test_another_clinics_user_gets_404_everywhere(filled, other_clinic):
    outsider = make_user("otto", other_clinic, "admin")
    appointment = s.schedule_appointment(pump=filled, scheduled_for=datetime(2026, 4, 7, 9, tzinfo=CHICAGO),
                                         actor=s.Actor(None, "t"), now=DUE_SOON_AT)
    client = signed_in(outsider)
    with travel(DUE_SOON_AT):
        for url in (f"/pumps/{filled.pk}/", f"/patients/{filled.patient_id}/", f"/pumps/{filled.pk}/worksheet/",
                    f"/pumps/{filled.pk}/appointments/", f"/appointments/{appointment.pk}.ics",
                    f"/pumps/{filled.pk}/reading/", f"/void/refill/{Refill.objects.get().pk}/",
                    "/clinics/north/settings/"):
            assert client.get(url).status_code == 404, url


def test_patient_page_and_edit(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        page = text_of(client.get(f"/patients/{filled.patient_id}/").content.decode())
        assert "Spasticity origin spinal" in page
        assert "Medtronic SynchroMed II 8637-40 #SN-0001 2026-01-15 — Refill due soon 2026-04-10" in page
        saved = client.post(f"/patients/{filled.patient_id}/edit/", {
            "mrn": "MRN001", "family_name": "Garcia", "given_name": "Ana", "birth_date": "1980-05-17",
            "spasticity_origin": "spinal", "withdrawal_high_risk": "on",
            "high_risk_reason": "injury at T4 (T-6 or above)", "phone": "", "caregiver_phone": "+1 312-555-0100",
            "status": "active",
        })
        assert saved.status_code == 302
        page = text_of(client.get(f"/patients/{filled.patient_id}/").content.decode())
    assert "High risk of withdrawal injury at T4 (T-6 or above)" in page
    assert "Caregiver phone +1 312-555-0100" in page
    filled.refresh_from_db()
    # high risk: 7 more lead days -> 2026-04-18 - 14 = 04-04 (Saturday) -> Friday 04-03
    assert filled.refill_due_on.isoformat() == "2026-04-03"


def test_viewer_sees_the_pump_without_write_buttons(filled, clinic):
    viewer = make_user("vera", clinic, "viewer")
    with travel(DUE_SOON_AT):
        html = signed_in(viewer).get(f"/pumps/{filled.pk}/").content.decode()
    assert "You can view this pump; your role does not allow changes." in html
    assert "Record refill" not in html and ">Void<" not in html
    assert Appointment.objects.count() == 0


def test_summary_band_says_status_volume_countdowns_and_the_next_action(filled, nurse):
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/pumps/{filled.pk}/").content.decode()
    summary = text_of(re.search(r'<section id="summary".*?</section>', html, re.S).group(0))
    assert summary.startswith("Summary Refill due soon Due soon: refill due on 2026-04-10 (in 13 days)")
    assert "Volume now 11.66 mL worst case" in summary and "11.66 mL expected, of 40 mL" in summary
    assert "Worst-case alarm in 21 days 2026-04-18 23:20 CDT (2 mL left)" in summary
    assert "Worst-case empty in 25 days 2026-04-23 10:00 CDT" in summary
    assert "Refill due in 13 days 2026-04-10 (Fri); not booked" in summary
    assert summary.endswith("Record refill Book refill")
    # the summary comes before the charts and histories
    assert html.index('id="summary"') < html.index('id="volume-chart"') < html.index('id="refills"')


def test_a_save_lands_on_the_summary_with_its_confirmation(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        response = client.post(f"/pumps/{filled.pk}/reading/", {"read_at": "2026-03-28T11:00",
                                                                  "reservoir_volume_ml": "11.5"})
        assert response["Location"] == f"/pumps/{filled.pk}/#summary"
        html = client.get(response["Location"]).content.decode()
    summary = re.search(r'<section id="summary".*?</section>', html, re.S).group(0)
    assert "Reading recorded." in text_of(summary)
    assert html.count("Reading recorded.") == 1


def test_the_pump_page_poll_answers_204_until_the_pump_changes(filled, nurse):
    from django.utils import timezone

    from pumps.models import Pump
    from pumps.views import poll_since

    client = signed_in(nurse)
    later = timezone.now() + timedelta(minutes=1)
    poll = {"HX-Request": "true", "HX-Target": "pump-live"}
    quiet = client.get(f"/pumps/{filled.pk}/", {"since": poll_since(later)}, headers=poll)
    Pump.objects.filter(pk=filled.pk).update(updated_at=later + timedelta(minutes=1))
    changed = client.get(f"/pumps/{filled.pk}/", {"since": poll_since(later)}, headers=poll)
    assert quiet.status_code == 204
    assert changed.status_code == 200 and 'id="pump-live"' in changed.content.decode()


def test_the_pages_audit_rows_are_the_orms(filled, nurse, clinic):
    """The pump page reads the audit rows with queries compiled once (``audit_query``):
    the same rows, in the same order, with the same values and types as the ORM's
    ``audit_trail``, for every audited field type (decimals, booleans, instants, dates,
    JSON, user and product ids), changes by staff and by the system, and a deletion."""
    from pumps import selectors
    from pumps.models import Alert, DrugProduct

    actor = s.Actor(nurse)
    at = datetime(2026, 3, 4, 9, tzinfo=CHICAGO)
    product = DrugProduct.objects.filter(concentration_mcg_per_ml=D("1000")).order_by("pk").first()
    s.record_refill(pump=filled, performed_at=at, extracted_volume_ml=D("19"), added_volume_ml=D("38"),
                    concentration_mcg_per_ml=D("1000"), drug_product=product,
                    lot_number='L<1> & "2"', actor=actor, now=at)
    second = make_user("dr_two", clinic, "prescriber", first_name="Ada", last_name="Osei")
    s.verify_program(program=filled.programs.get(), actor=s.Actor(second), now=at)
    reading = s.record_reading(pump=filled, read_at=at, reservoir_volume_ml=D("30.125"), eri=True, actor=actor, now=at)
    s.void_record(record=reading, reason="wrong pump", actor=actor, now=at)
    s.schedule_appointment(pump=filled, scheduled_for=at + timedelta(days=30), actor=actor, now=at).delete()
    patient = filled.patient
    patient.high_risk_reason, patient.withdrawal_high_risk = "injury at T4", True
    patient.save()
    Assessment.objects.create(pump=filled, assessed_at=at, ashworth_lower_left="1+", penn_spasm_frequency=2,
                              assessed_by=nurse)
    CoMedication.objects.create(patient=patient, name="oxycodone 10 mg", category="opioid", started_on=at.date(),
                                recorded_by=nurse)
    alert = Alert.objects.create(clinic=filled.clinic, pump=filled, kind="refill_due_soon", episode="e", created_at=at,
                                 severity="info", message="refill due")
    alert.acknowledged_at, alert.acknowledged_by = at, nurse
    alert.save()

    page = selectors.page_audit_rows(filled)
    orm = selectors.audit_trail(filled)
    assert len(page) == len(orm) > 12
    assert {a.row.history_type for a, _ in page} == {"+", "~", "-"}
    for (a, query), b in zip(page, orm, strict=True):
        assert (a.table, a.row.id, a.row.history_type, a.row.history_date, a.row.history_change_reason) == (
            b.table, b.row.id, b.row.history_type, b.row.history_date, b.row.history_change_reason)
        assert (a.before is None) == (b.before is None)
        assert a.row.history_user__username == (b.row.history_user.username if b.row.history_user else None)
        for f in query.fields:
            value, expected = getattr(a.row, f.attname), getattr(b.row, f.attname)
            assert (value, type(value)) == (expected, type(expected)), (a.table, f.attname)
        assert [f.attname for f in query.fields] == [
            f.attname for f in b.row.instance_type._meta.fields
            if f.attname not in selectors.AUDIT_SKIP and hasattr(b.row, f.attname)]


def test_the_audit_names_the_users_and_products_changed(filled, clinic):
    from pumps import selectors
    from pumps.models import DrugProduct

    at = datetime(2026, 3, 4, 9, tzinfo=CHICAGO)
    refill = Refill.objects.get()
    product = DrugProduct.objects.filter(concentration_mcg_per_ml=D("1000")).order_by("pk").first()
    refill.drug_product = product
    refill.save()
    second = make_user("dr_two", clinic, "prescriber", first_name="Ada", last_name="Osei")
    s.verify_program(program=filled.programs.get(), actor=s.Actor(second), now=at)
    changes = {change for entry in selectors._audit(filled) for change in entry.changes}
    assert ("drug product", "—", product.code) in changes
    assert ("verified by", "—", "Ada Osei") in changes


def test_the_audit_shows_every_staff_column_of_an_audited_record_by_name():
    """Each column of an audited record that names a staff member (who recorded an
    event or an assessment, who performed a refill, ...) is shown by the person's name in
    the audit, not as "user #12": ``AUDIT_USER_FIELDS`` lists them all."""
    from django.contrib.auth import get_user_model

    from pumps import selectors

    user_model = get_user_model()
    columns = {f.attname for model, _column, _by_patient in selectors.AUDITED.values()
               for f in model._meta.concrete_fields if f.is_relation and f.related_model is user_model}
    assert columns == set(selectors.AUDIT_USER_FIELDS)
