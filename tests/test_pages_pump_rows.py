"""The pump page's tables of refills, programs, readings and audit entries, written in
Python (``pumps_ui.refill_rows`` and the others): the same HTML as the template loops they
replace (kept here as the reference), escaped, for varied records and each role."""

from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.template import Context, Template

from clinic.models import Clinic
from pumps.models import DrugProduct, Program, Reading, Refill
from pumps.selectors import AuditEntry, Permissions

CHICAGO = ZoneInfo("America/Chicago")
AT = datetime(2026, 3, 7, 15, 30, tzinfo=CHICAGO)  # the day before the clocks spring forward
NASTY = """<b>"Tom" & 'Jerry'</b>"""

# The template loops as they were (templates/pumps/pump.html).
PROGRAMS_LOOP = """\
    {% for prog in data.programs reversed %}
      <tr class="{% if prog.is_voided %}voided{% endif %}">
        <td>{{ prog.effective_at|local:clinic }}{% if prog.refill_id %}<br><span class="small muted">with a refill</span>{% endif %}</td>
        <td>{{ prog.get_mode_display }}{% if prog.mode == "flex" %}<br><span class="small">{% for s in prog.steps %}{{ s.start }} {{ s.dose_mcg_per_hour|ml }} mcg/h{% if not forloop.last %}; {% endif %}{% endfor %}</span>{% endif %}</td>
        <td class="num">{{ prog.daily_dose_mcg|ml }}</td>
        <td class="num">{{ prog.concentration_mcg_per_ml|ml }}</td>
        <td class="num">{{ prog.daily_volume_ml|rate }}</td>
        <td>{% if prog.ptm_bolus_mcg %}{{ prog.ptm_bolus_mcg|ml }} mcg × {{ prog.ptm_max_per_day }}/day{% else %}—{% endif %}</td>
        <td>{{ prog.entered_by|person }}{{ prog.entered_by_external }}</td>
        <td>{% if prog.verified_at %}{{ prog.verified_by|person }}{{ prog.verified_by_external }}{% else %}<strong>not verified</strong>{% endif %}</td>
        <td>{{ prog.override_reason|default:"—" }}</td>
        <td class="void-reason">{% if prog.is_voided %}voided: {{ prog.void_reason }}{% elif can.can_program and not prog.refill_id %}<a href="{% url 'void' 'program' prog.pk %}">Void</a>{% endif %}</td>
      </tr>
    {% empty %}<tr><td colspan="10">No program recorded.</td></tr>{% endfor %}
"""
PROGRAMS_TAG = """\
    {% program_rows data.programs %}{% if not data.programs %}<tr><td colspan="10">No program recorded.</td></tr>{% endif %}
"""
REFILLS_LOOP = """\
    {% for r in data.refills reversed %}
      <tr class="{% if r.is_voided %}voided{% endif %}">
        <td>{{ r.performed_at|local:clinic }}{% if r.is_first_fill %}<br><span class="small muted">first fill</span>{% endif %}</td>
        <td class="num">{{ r.extracted_volume_ml|ml }}</td>
        <td class="num">{{ r.expected_residual_ml|ml }}</td>
        <td>{% if r.discrepancy_ml is not None %}{{ r.discrepancy_ml|signed }} mL{% else %}—{% endif %}
          {% for f in r.flags %}<br><span class="flag">Flagged: {{ f }}</span>{% endfor %}</td>
        <td class="num">{{ r.added_volume_ml|ml }}</td>
        <td class="num">{{ r.volume_after_ml|ml }}</td>
        <td>{{ r.concentration_mcg_per_ml|ml }} mcg/mL{% if r.drug_product %}<br><span class="small">{{ r|product }}</span>{% endif %}{% if r.lot_number %}<br><span class="small">lot {{ r.lot_number }}</span>{% endif %}{% if r.bridge_bolus_ml %}<br><span class="small">bridge bolus {{ r.bridge_bolus_ml|ml }} mL</span>{% endif %}</td>
        <td>{{ r.performed_by|person }}{{ r.performed_by_external }}</td>
        <td class="void-reason">{% if r.is_voided %}voided: {{ r.void_reason }}{% elif can.can_write %}<a href="{% url 'void' 'refill' r.pk %}">Void</a>{% endif %}</td>
      </tr>
    {% empty %}<tr><td colspan="9">No refill recorded.</td></tr>{% endfor %}
"""
REFILLS_TAG = """\
    {% refill_rows data.refills %}{% if not data.refills %}<tr><td colspan="9">No refill recorded.</td></tr>{% endif %}
"""
READINGS_LOOP = """\
<tbody>{% for r in data.readings reversed %}<tr class="{% if r.is_voided %}voided{% endif %}"><td>{{ r.read_at|local:clinic }}</td><td class="num">{{ r.reservoir_volume_ml|ml }}</td><td>{{ r.eri|yesno:"yes,no" }}</td>
      <td class="void-reason">{% if r.is_voided %}voided: {{ r.void_reason }}{% elif can.can_write %}<a href="{% url 'void' 'reading' r.pk %}">Void</a>{% endif %}</td></tr>
    {% empty %}<tr><td colspan="4">No readings.</td></tr>{% endfor %}</tbody>"""
READINGS_TAG = """\
<tbody>{% reading_rows data.readings %}{% if not data.readings %}<tr><td colspan="4">No readings.</td></tr>{% endif %}</tbody>"""
AUDIT_LOOP = """\
<tbody>{% for e in data.audit %}<tr><td>{{ e.at|local:clinic }}</td><td>{{ e.who|default:"—" }}</td><td>{{ e.what }} {{ e.action }}{% if e.reason %}<br><span class="small muted">{{ e.reason }}</span>{% endif %}</td>
      <td>{% for field, old, new in e.changes %}{{ field }}: {{ old }} → {{ new }}{% if not forloop.last %}<br>{% endif %}{% empty %}—{% endfor %}</td></tr>
    {% endfor %}</tbody>"""
AUDIT_TAG = "<tbody>{% audit_rows data.audit %}</tbody>"

ROLES = {
    "nurse": Permissions(role="nurse"), "prescriber": Permissions(role="prescriber"),
    "viewer": Permissions(role="viewer"), "superuser": Permissions(role=None, superuser=True),
}
User = get_user_model()
ANN = User(pk=1, username="ann", first_name="Ann", last_name=NASTY)
BOB = User(pk=2, username="bob<&>")  # no name: the username
PRODUCT = DrugProduct(pk=3, code="lioresal-2000", name=f"Lioresal {NASTY}", concentration_mcg_per_ml=D("2000"))


def refills() -> list[Refill]:
    return [
        Refill(pk=10, performed_at=AT - timedelta(days=60), added_volume_ml=D("20.000"), residual_left_ml=D("0"),
               concentration_mcg_per_ml=D("2000.000"), stability_days=180, performed_by=ANN, flags=[]),
        Refill(pk=11, performed_at=AT - timedelta(days=30), extracted_volume_ml=D("4.250"),
               expected_residual_ml=D("6.100"), discrepancy_ml=D("-1.850"), flags=["less drug than expected", NASTY],
               added_volume_ml=D("18.5"), residual_left_ml=D("0"), bridge_bolus_ml=D("0.125"),
               concentration_mcg_per_ml=D("2000"), stability_days=180, drug_product=PRODUCT, lot_number=NASTY,
               performed_by=BOB, performed_by_external=""),
        Refill(pk=12, performed_at=AT, extracted_volume_ml=D("0"), expected_residual_ml=D("0.004"),
               discrepancy_ml=D("0.000"), added_volume_ml=D("40"), residual_left_ml=D("1.5"), bridge_bolus_ml=D("0"),
               concentration_mcg_per_ml=D("500"), stability_days=90, performed_by_external=NASTY,
               voided_at=AT, void_reason=NASTY, flags=[]),
        Refill(pk=13, performed_at=AT + timedelta(days=1), extracted_volume_ml=D("2"), expected_residual_ml=D("1"),
               discrepancy_ml=D("1.005"), added_volume_ml=D("40"), residual_left_ml=D("0"),
               concentration_mcg_per_ml=D("500"), stability_days=90, flags=None),
    ]


def programs() -> list[Program]:
    return [
        Program(pk=20, effective_at=AT - timedelta(days=60), concentration_mcg_per_ml=D("2000"), mode="continuous",
                daily_dose_mcg=D("450.000"), refill_id=10, entered_by=ANN, verified_by=BOB, verified_at=AT,
                ptm_bolus_mcg=D("0")),
        Program(pk=21, effective_at=AT - timedelta(days=3), concentration_mcg_per_ml=D("2000"), mode="flex",
                daily_dose_mcg=D("480"), steps=[{"start": "00:00", "dose_mcg_per_hour": "15.5"},
                                                {"start": "08:00", "dose_mcg_per_hour": 25}],
                entered_by=None, entered_by_external=NASTY, ptm_bolus_mcg=D("50.000"), ptm_max_per_day=4,
                override_reason=NASTY),
        Program(pk=22, effective_at=AT, concentration_mcg_per_ml=D("500"), mode="continuous",
                daily_dose_mcg=D("100.5"), entered_by=BOB, verified_at=AT, verified_by=None,
                verified_by_external="Dr Who", voided_at=AT, void_reason="entered twice"),
        Program(pk=23, effective_at=AT + timedelta(days=1), concentration_mcg_per_ml=D("500"), mode="continuous",
                daily_dose_mcg=D("0"), entered_by=ANN),
    ]


def readings() -> list[Reading]:
    return [
        Reading(pk=30, read_at=AT - timedelta(days=2), reservoir_volume_ml=D("12.345"), eri=False),
        Reading(pk=31, read_at=AT, reservoir_volume_ml=D("0"), eri=True, voided_at=AT, void_reason=NASTY),
        Reading(pk=32, read_at=AT + timedelta(hours=30), reservoir_volume_ml=D("40.000"), eri=False),
    ]


def audit() -> list[AuditEntry]:
    return [
        AuditEntry(AT + timedelta(days=1), "Ann Smith", "Refill #13", "changed",
                   [("added volume ml", "38", "40"), ("lot number", "—", NASTY)], NASTY),
        AuditEntry(AT, "", "Alert #4", "created", [], ""),
        AuditEntry(AT - timedelta(days=1), NASTY, "Program #21", "deleted", [("notes", NASTY, "—")], ""),
    ]


def render(source: str, data: dict, can: Permissions) -> str:
    clinic = Clinic(code="north", name="North", timezone="America/Chicago")
    return Template("{% load pumps_ui %}" + source).render(Context({"data": data, "clinic": clinic, "can": can}))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("loop", "tag", "key", "records"), [
    (PROGRAMS_LOOP, PROGRAMS_TAG, "programs", programs), (REFILLS_LOOP, REFILLS_TAG, "refills", refills),
    (READINGS_LOOP, READINGS_TAG, "readings", readings), (AUDIT_LOOP, AUDIT_TAG, "audit", audit),
], ids=["programs", "refills", "readings", "audit"])
def test_the_rows_are_the_template_loops(loop, tag, key, records, role):
    for data in ({key: records()}, {key: records()[:1]}, {key: []}):
        expected = render(loop, data, ROLES[role])
        assert render(tag, data, ROLES[role]) == expected
        assert "<b>" not in expected  # every value escaped


def test_a_refill_row_exactly():
    html = render(REFILLS_TAG, {"refills": refills()[1:2]}, ROLES["nurse"])
    escaped = "&lt;b&gt;&quot;Tom&quot; &amp; &#x27;Jerry&#x27;&lt;/b&gt;"
    assert html == (
        '    \n      <tr class="">\n'
        '        <td>2026-02-05 15:30 CST</td>\n'
        '        <td class="num">4.25</td>\n'
        '        <td class="num">6.1</td>\n'
        '        <td>-1.85 mL\n'
        f'          <br><span class="flag">Flagged: less drug than expected</span><br><span class="flag">Flagged: {escaped}</span></td>\n'
        '        <td class="num">18.5</td>\n'
        '        <td class="num">18.38</td>\n'
        f'        <td>2000 mcg/mL<br><span class="small">Lioresal {escaped}</span><br><span class="small">lot {escaped}</span>'
        '<br><span class="small">bridge bolus 0.13 mL</span></td>\n'
        '        <td>bob&lt;&amp;&gt;</td>\n'
        '        <td class="void-reason"><a href="/void/refill/11/">Void</a></td>\n'
        '      </tr>\n    \n'
    )
