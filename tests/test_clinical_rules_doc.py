"""docs/clinical-rules.md: numbered sections that code can cite, its sources, and a
worked example that agrees with pumps/projection.py. No database."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pumps import projection as pj

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "clinical-rules.md"
HAZARD_LOG = ROOT / "docs" / "safety" / "hazard-log.md"
CHICAGO = ZoneInfo("America/Chicago")

SECTION = re.compile(r"^## (\d+)\. (\S.*)$", re.M)
CONTENTS_ITEM = re.compile(r"^(\d+)\. (\S.*)$", re.M)
SUB_POINT = re.compile(r"^(\d+)\.(\d+) ", re.M)


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _sections(text: str) -> dict[int, str]:
    return {int(n): title.strip() for n, title in SECTION.findall(text)}


def test_sections_are_numbered_from_one_without_gaps_and_listed_at_the_top():
    text = _text()
    sections = SECTION.findall(text)
    numbers = [int(n) for n, _ in sections]
    assert numbers == list(range(1, len(numbers) + 1)), f"sections are numbered {numbers}"
    top = text[: text.index("\n## ")]
    listed = [(int(n), title.strip()) for n, title in CONTENTS_ITEM.findall(top)]
    assert listed == [(int(n), title.strip()) for n, title in sections], (
        "the list of sections at the top must match the '## N. Title' headings"
    )


def test_the_rules_the_code_relies_on_have_their_sections():
    titles = " | ".join(_sections(_text()).values()).lower()
    for words in ("units and time", "catalogs", "anchor", "consumption", "instants", "due date",
                  "status", "refill checks", "validation", "policy defaults", "alerts", "worked example",
                  "sources"):
        assert words in titles, f"no section about {words!r}"


def test_every_section_reference_points_to_a_section_that_exists():
    """"docs/clinical-rules.md §N" in code, templates and docs, and "§N" / "§N.M" inside
    this document and the hazard log, name sections and sub-points that exist."""
    text = _text()
    sections = set(_sections(text))
    sub_points = {(int(a), int(b)) for a, b in SUB_POINT.findall(text)}
    refs: list[tuple[str, str, str | None]] = []
    for path in (DOC, HAZARD_LOG):
        if path.is_file():
            for major, minor in re.findall(r"§(\d+)(?:\.(\d+))?", path.read_text(encoding="utf-8")):
                refs.append((str(path.relative_to(ROOT)), major, minor or None))
    for folder in ("clinic", "pumps", "templates", "tests", "docs", "bench"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".html", ".txt", ".md"} or not path.is_file():
                continue
            source = path.read_text(encoding="utf-8", errors="replace")
            for major, minor in re.findall(r"clinical-rules\.md,? §(\d+)(?:\.(\d+))?", source):
                refs.append((str(path.relative_to(ROOT)), major, minor or None))
    bad = []
    for where, major, minor in refs:
        if int(major) not in sections or (minor is not None and (int(major), int(minor)) not in sub_points):
            bad.append(f"{where}: §{major}{'.' + minor if minor else ''}")
    assert not bad, "references to sections of docs/clinical-rules.md that do not exist: " + ", ".join(bad)


def test_it_states_its_own_rules_and_names_its_sources():
    text = _text()
    assert not re.search(r"\bSPEC\b", text), "the rules are stated here, not cited from SPEC"
    for source in ("PMID 38043050", "PMID 27433993", "PMID 15271246", "Maino 2017", "ASRA 2017",
                   "Coffey", "FDA boxed warning", "Medtronic", "Flowonix", "Codman"):
        assert source in text, f"the source {source!r} is not named"
    for number in ("180 days", "730 days", "60 minutes", "+30 %", "+15 %", "1.0 mL", "2.0 mL", "72 hours"):
        assert number in text, f"{number!r} is not stated"


def test_it_lists_every_status_and_alert_kind_the_code_has():
    from pumps.models import AlertKind

    text = _text()
    for status in pj.STATUSES:
        assert f"`{status}`" in text, f"status {status} is not described"
    for kind in AlertKind.values:
        assert f"`{kind}`" in text, f"alert kind {kind} is not described"


# ------------------------------------------------------------------ worked example

WORKED = {
    "lra": "2026-04-18 23:20 CDT",
    "empty": "2026-04-23 10:00 CDT",
    "expiry": "2026-08-01 10:00 CDT",
    "due": "Friday 2026-04-10",
}


def _worked_example(at: datetime) -> pj.Projection:
    pump = pj.PumpState(tz=CHICAGO, alarm_volume_ml=Decimal("2.0"))
    refill = pj.RefillData(performed_at=datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO), added_volume_ml=Decimal("36"))
    program = pj.ProgramData(effective_at=refill.performed_at, concentration_mcg_per_ml=Decimal("1000"),
                         daily_dose_mcg=Decimal("450"))
    return pj.project(at=at, pump=pump, refills=[refill], readings=[], programs=[program])


def test_worked_example_matches_the_projection():
    text = _text()
    example = text[text.index("## 12. Worked example"):text.index("## 13.")]
    for value in WORKED.values():
        assert value in example, f"the worked example does not state {value!r}"

    march_28 = _worked_example(datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO))
    assert pj.local_instant(march_28.low_reservoir_alarm_at, CHICAGO) == WORKED["lra"]
    assert pj.local_instant(march_28.empty_at, CHICAGO) == WORKED["empty"]
    assert pj.local_instant(march_28.drug_expires_at, CHICAGO) == WORKED["expiry"]
    assert f"{march_28.refill_due_on:%A %Y-%m-%d}" == WORKED["due"]
    assert march_28.status == pj.STATUS_DUE_SOON and "**`due_soon`**" in example
    binding = pj.due_date_binding(
        worst_lra_at=march_28.low_reservoir_alarm_at, drug_expires_at=march_28.drug_expires_at, tz=CHICAGO,
        lead_days=7, high_risk_extra_days=7, high_risk=False,
    )
    assert binding == pj.DUE_BY_ALARM and "The alarm binds" in example
    reason = pj.status_reason(
        march_28.status, march_28.at, tz=CHICAGO, empty_at=march_28.empty_at,
        lra_at=march_28.low_reservoir_alarm_at, due_on=march_28.refill_due_on,
        drug_expires_at=march_28.drug_expires_at, binding=binding,
    )
    assert f'("{reason}")' in " ".join(example.split()), f"the example should quote the status reason {reason!r}"

    march_20 = _worked_example(datetime(2026, 3, 20, 12, 0, tzinfo=CHICAGO))
    assert march_20.status == pj.STATUS_OK and "**`ok`**" in example

    # the later statuses the example names
    assert _worked_example(datetime(2026, 4, 11, 0, 0, tzinfo=CHICAGO)).status == pj.STATUS_OVERDUE
    assert _worked_example(datetime(2026, 4, 18, 23, 20, tzinfo=CHICAGO)).status == pj.STATUS_ALARM
    assert _worked_example(datetime(2026, 4, 18, 23, 19, tzinfo=CHICAGO)).status == pj.STATUS_OVERDUE
    assert _worked_example(datetime(2026, 4, 23, 10, 0, tzinfo=CHICAGO)).status == pj.STATUS_EMPTY
    withdrawal_from = march_28.empty_at - timedelta(hours=pj.Policy().withdrawal_window_hours)
    assert pj.local_instant(withdrawal_from, CHICAGO) == "2026-04-20 10:00 CDT"
    assert "2026-04-20 10:00 CDT" in example
