"""The worklist (home page): every implanted pump of the user's clinics, most urgent first,
with status text, days to due, alarm and empty instants, next appointment, filters,
search and the alerting-stalled banner; a fixed number of queries."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps import services as s
from tests.factories import make_patient, make_pump, make_user, query_plan
from tests.pages_support import (
    CHICAGO,
    DUE_SOON_AT,
    T0,
    assert_no_inline_script,
    heartbeat,
    new_patient,
    signed_in,
    text_of,
    travel,
    worked_example,
)


@pytest.fixture
def board(clinic, nurse, prescriber, other_clinic):
    """Six pumps whose status as of 2026-03-28 12:00 Chicago is, in turn, each status."""
    by_nurse, by_doctor = s.Actor(nurse), s.Actor(prescriber)
    pumps = {
        "due_soon": worked_example(new_patient(clinic, "MRN-A", "Garcia", "Ana"), by_doctor, serial="A1"),
        "ok": worked_example(new_patient(clinic, "MRN-B", "Baker", "Ben"), by_nurse, serial="B1",
                             at=datetime(2026, 3, 20, 9, 0, tzinfo=CHICAGO)),
        "alarm": worked_example(new_patient(clinic, "MRN-C", "Chen", "Cora"), by_nurse, serial="C1", added="26"),
        "empty": worked_example(new_patient(clinic, "MRN-D", "Dubois", "Dan"), by_nurse, serial="D1", added="20"),
        "incomplete": make_pump(new_patient(clinic, "MRN-E", "Evans", "Eve"), serial="E1"),
        "overdue": worked_example(new_patient(clinic, "MRN-F", "Fischer", "Fay"), by_nurse, serial="F1", added="30"),
    }
    s.schedule_appointment(pump=pumps["due_soon"], scheduled_for=datetime(2026, 4, 7, 9, 30, tzinfo=CHICAGO),
                           actor=by_nurse, now=T0)
    # another clinic's pump never shows
    worked_example(make_patient(other_clinic, mrn="MRN-Z", family_name="Zed", given_name="Zoe"), s.Actor(None, "t"),
                   serial="Z1", at=datetime(2026, 2, 3, 9, 0, tzinfo=CHICAGO))
    return pumps


def rows(html: str) -> list[str]:
    import re

    return re.findall(r'<tr class="row-[a-z_]+(?: needs-action)?" data-status="([a-z_]+)"', html)


def test_sign_in_required(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_pumps_sorted_by_urgency_with_status_text_dates_and_appointment(board, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert rows(html) == ["empty", "alarm", "overdue", "due_soon", "ok", "incomplete"]
    text = text_of(html)
    # status is written out, never colour alone
    for label in ("Empty", "Low-reservoir alarm", "Refill overdue", "Refill due soon", "OK", "Incomplete data"):
        assert f"{label} 1" in text  # the status summary chips
    # the band: empty, then at the alarm, each saying why in words
    assert ("Needs action now (2) Empty Empty since 2026-03-18 20:40 CDT (9 days ago) (worst case) Dubois, Dan "
            "MRN MRN-D ≈0") in text
    assert ("Low-reservoir alarm At the low-reservoir alarm since 2026-03-27 18:00 CDT (18 hours ago) (worst case); "
            "empty 2026-04-01 04:40 CDT (in 3 days) Chen, Cora MRN MRN-C ≈1.66") in text
    # the worked example as of 2026-03-28 12:00 local: 36 - 0.45 x 54.08 days = 11.66 mL now
    assert ("Then, most urgent first Refill overdue Overdue: refill was due on 2026-03-27 (yesterday); low-reservoir "
            "alarm 2026-04-05 15:20 CDT (in 8 days) Fischer, Fay MRN MRN-F ≈5.66 14 % in 8 days "
            "1 day overdue 2026-03-27 (Fri) none booked") in text
    assert ("Refill due soon Due soon: refill due on 2026-04-10 (in 13 days); low-reservoir alarm 2026-04-18 23:20 CDT "
            "(in 21 days) Garcia, Ana MRN MRN-A ≈11.66 29 % in 21 days in 13 days 2026-04-10 (Fri) "
            "Refill in 9 days 2026-04-07 09:30 CDT dr_pat") in text
    assert "MRN-Z" not in text
    assert "6 pumps shown of 6." in text
    assert_no_inline_script(html)


def test_status_comes_from_the_clock_not_the_last_sweep(board, nurse):
    # stored status was computed at the first fill (ok); the page reads the instants as of now
    board["due_soon"].refresh_from_db()
    assert board["due_soon"].status == "ok"
    with travel(datetime(2026, 4, 19, 9, 0, tzinfo=CHICAGO)):
        html = signed_in(nurse).get("/?q=MRN-A").content.decode()
    assert rows(html) == ["alarm"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=overdue", ["overdue"]),
        ("status=due_soon", ["due_soon"]),
        ("q=MRN-C", ["alarm"]),
        ("q=mrn-d", ["empty"]),
        ("q=fisch", ["overdue"]),
        ("q=Ana+Garcia", ["due_soon"]),
        ("q=E1", ["incomplete"]),
        ("q=nobody", []),
        ("clinic=south", []),
    ],
)
def test_filters_and_search(board, nurse, query, expected):
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/?{query}").content.decode()
    assert rows(html) == expected


@pytest.mark.parametrize("query", ["q=MRN-C", "q=mrn", "q=fisch", "q=Ana+Garcia", "q=E1", "q=z1", "q=MRN-Z",
                                   "q=mrn&status=inactive", "q=mrn&page=2", "q=nobody"])
def test_a_search_lists_the_same_pumps_by_ids_and_by_subquery(board, nurse, query, monkeypatch):
    """A search reads the ids of the pumps it finds once (one query with a UNION) and
    hands them to the worklist's queries; a search finding more than ``SEARCH_IDS_LIMIT`` pumps hands them the query
    instead. Both list the same rows, counts and band (another clinic's pump never)."""
    from pumps import selectors

    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        client.get("/")  # the session's activity stamp, not counted below
        with CaptureQueriesContext(connection) as captured:
            by_ids = client.get(f"/?{query}").content.decode()
        assert [q["sql"].count(" UNION ") for q in captured.captured_queries if "UNION" in q["sql"]] == [1]
        monkeypatch.setattr(selectors, "SEARCH_IDS_LIMIT", 0)
        by_query = signed_in(nurse).get(f"/?{query}").content.decode()
    assert rows(by_ids) == rows(by_query)
    assert text_of(by_ids).split("Last sweep")[0] == text_of(by_query).split("Last sweep")[0]
    assert "Zed, Zoe" not in by_ids


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the search indexes are PostgreSQL's (pumps/0021)")
@pytest.mark.parametrize(("lookup", "index"), [
    ({"patient__mrn__iexact": "MRN-A"}, "patient_mrn_upper_idx"),
    ({"patient__mrn__istartswith": "MRN"}, "patient_mrn_upper_idx"),
    ({"patient__family_name__icontains": "arc"}, "patient_family_trgm_idx"),
    ({"patient__given_name__icontains": "ana"}, "patient_given_trgm_idx"),
    ({"serial_number__iexact": "a1"}, "pump_serial_upper_idx"),
])
def test_the_search_lookups_can_use_their_indexes(db, lookup, index):
    """Each lookup of the search, as Django writes it, matches an index of migration
    pumps/0021 (an expression index serves only the very expression): with sequential
    scans priced out, the plan of the lookup reads that index."""
    from pumps.models import Patient, Pump

    field, value = next(iter(lookup.items()))
    if field.startswith("patient__"):
        queryset = Patient.objects.filter(**{field.removeprefix("patient__"): value})
    else:
        queryset = Pump.objects.filter(**{field: value})
    plan = query_plan(*queryset.order_by().values("id").query.sql_with_params())
    assert index in plan, plan


def page_query(captured) -> str:
    """The worklist's page query among ``captured``: the one ordered like the worklist with a limit."""
    [sql] = [q["sql"] for q in captured.captured_queries
             if 'ORDER BY "pumps_pump"."urgency" ASC' in q["sql"] and " LIMIT " in q["sql"]
             and "ANY(ARRAY(" not in q["sql"]]
    return sql


@pytest.mark.skipif(connection.vendor != "postgresql", reason="plans are PostgreSQL's")
@pytest.mark.parametrize("query", ["", "?status=ok", "?clinic=north", "?clinic=north&status=empty"])
def test_one_clinics_page_is_a_range_of_its_worklist_index(board, nurse, query):
    """A nurse of one clinic, or the clinic filter: the page query names the clinic by its
    id (no join on the clinic's code, no membership subquery) and the status by its rank,
    so that the page is read from ``pump_clinic_urgency_idx`` in the worklist's order, not
    sorted from every pump of the clinic (at 100k pumps, 160 ms against 50 for the page)."""
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        client.get("/")
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"/{query}").status_code == 200
    sql = page_query(captured)
    assert '"clinic_clinic"' not in sql and '"clinic_membership"' not in sql
    assert f'"pumps_pump"."clinic_id" IN ({board["ok"].clinic_id})' in sql
    plan = query_plan(sql)
    assert "pump_clinic_urgency_idx" in plan and "Sort Key" not in plan.split("SubPlan")[0], plan


def test_a_stored_status_without_its_rank_is_refused(board):
    """``urgency`` orders the worklist and stands for the status in its filters: the
    database refuses a status stored without its rank, whoever writes it."""
    from django.db import IntegrityError, transaction

    from pumps.models import Pump

    with pytest.raises(IntegrityError, match="pump_urgency_is_status_rank"), transaction.atomic():
        Pump.objects.filter(pk=board["ok"].pk).update(status="empty")
    Pump.objects.filter(pk=board["ok"].pk).update(status="empty", urgency=0)
    assert Pump.objects.get(pk=board["ok"].pk).urgency == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the array form is PostgreSQL's")
def test_the_band_reads_the_pumps_of_open_critical_alerts_by_key(board, nurse, settings):
    """The band's query reads the pumps with an open critical alert first, as one array,
    then those pumps by primary key: written ``IN (subquery)`` with the worklist's order
    and a limit, the planner walked every pump of a status probing each for an alert."""
    settings.WORKLIST_PAGE_SIZE = 1
    from pumps.alerting.sweep import sweep

    sweep(DUE_SOON_AT)
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        client.get("/")
        with CaptureQueriesContext(connection) as captured:
            html = client.get("/?status=empty").content.decode()
    [band] = [q["sql"] for q in captured.captured_queries if "ANY(ARRAY(" in q["sql"]]
    assert '"pumps_pump"."id" = ANY(ARRAY(SELECT' in band
    assert rows(html) == ["empty"]


def test_prescriber_filter_is_the_prescriber_of_the_program_in_force(board, nurse, prescriber):
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/?prescriber={prescriber.pk}").content.decode()
    assert rows(html) == ["due_soon"]
    assert f'<option value="{prescriber.pk}" selected>dr_pat</option>' in html


def test_clinic_filter_for_a_member_of_two_clinics(board, other_clinic, nurse):
    from clinic.models import Membership

    Membership.objects.create(user=nurse, clinic=other_clinic, role="nurse")
    with travel(DUE_SOON_AT):
        both = signed_in(nurse).get("/").content.decode()
        south = signed_in(nurse).get("/?clinic=south").content.decode()
    assert len(rows(both)) == 7
    assert rows(south) == ["ok"]
    assert "Zed, Zoe" in south


def test_the_clinic_filter_never_reaches_beyond_the_users_clinics(board, nurse):
    """The worklist's queries take the ids of the user's clinics, the clinic filter one of
    them: another clinic's code, or no clinic's, lists nothing and counts nothing."""
    with travel(DUE_SOON_AT):
        for code in ("south", "nowhere"):
            response = signed_in(nurse).get("/", {"clinic": code})
            html = response.content.decode()
            assert response.status_code == 200 and rows(html) == [], code
            assert "Zed, Zoe" not in html and "Z1" not in html
            assert "0 pumps shown of 0." in text_of(html), text_of(html)


def test_htmx_search_returns_only_the_results_fragment(board, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).get("/?q=MRN-F", headers={"HX-Request": "true", "HX-Target": "worklist-results"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="worklist-results"')
    assert "<html" not in html
    assert rows(html) == ["overdue"]


def test_banner_when_alerting_is_stalled(board, nurse):
    with travel(DUE_SOON_AT):
        stalled = text_of(signed_in(nurse).get("/").content.decode())
        heartbeat(DUE_SOON_AT - timedelta(minutes=16))  # 3 intervals of 5 minutes: stale
        late = text_of(signed_in(nurse).get("/").content.decode())
        heartbeat(DUE_SOON_AT - timedelta(minutes=4))
        fresh = text_of(signed_in(nurse).get("/").content.decode())
    assert "Alerting is stalled. The alert sweep has never completed" in stalled
    assert "Alerting is stalled. The alert sweep last completed 16 minutes ago" in late
    assert "Alerting is stalled" not in fresh
    # in the clinic's time with its zone, and how long ago
    assert "Alert sweep last completed 2026-03-28 11:56 CDT (4 minutes ago); it runs every 5 min." in fresh


def test_worklist_queries_do_not_grow_with_the_number_of_pumps(clinic, nurse):
    actor = s.Actor(nurse)

    def add(n):
        for _ in range(n):
            pump = worked_example(new_patient(clinic, f"Q-{add.count}", "Query", f"P{add.count}"), actor,
                                  serial=f"Q{add.count}")
            s.schedule_appointment(pump=pump, scheduled_for=datetime(2026, 4, 1, 9, tzinfo=CHICAGO), actor=actor, now=T0)
            add.count += 1

    add.count = 0
    client = signed_in(nurse)

    def count():
        with travel(DUE_SOON_AT), CaptureQueriesContext(connection) as queries:
            assert client.get("/").status_code == 200
        return len(queries)

    add(2)
    count()  # the session's first request stores its start: not a read of the page
    small = count()
    add(10)
    # 10 reads, the explanted pumps' count, the page's open alerts (one query) and, on the first
    # page, the pumps with an open critical alert on later pages (one query)
    assert count() == small == 13


def test_viewer_sees_the_worklist(board, clinic):
    viewer = make_user("vera", clinic, "viewer")
    with travel(DUE_SOON_AT):
        html = signed_in(viewer).get("/").content.decode()
    assert len(rows(html)) == 6


def test_inactive_patient_is_listed_last_as_inactive(board, clinic, nurse):
    s.update_patient(patient=board["ok"].patient, status="deceased", actor=s.Actor(nurse), now=DUE_SOON_AT)
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get("/").content.decode()
    assert rows(html) == ["empty", "alarm", "overdue", "due_soon", "incomplete", "inactive"]


@pytest.mark.parametrize("swept_days_before", [None, 3, 0])
@pytest.mark.parametrize("page_size", [1, 2, 4])
def test_pages_merge_pumps_the_sweep_has_not_reached_at_their_place(board, nurse, settings, page_size,
                                                                      swept_days_before):
    """The index gives the pumps whose stored status is current; those whose status
    changed since the last sweep are merged in by their live status: page after page, the
    order is the worklist's whichever pumps the sweep has reached."""
    from pumps.alerting.sweep import sweep

    if swept_days_before is not None:
        sweep(DUE_SOON_AT - timedelta(days=swept_days_before))
    settings.WORKLIST_PAGE_SIZE = page_size
    client = signed_in(nurse)
    seen = []
    with travel(DUE_SOON_AT):
        for number in range(1, -(-6 // page_size) + 1):
            # the first page's band also lists the pumps with an open critical alert of later
            # pages (shown again on their own page): each pump counted once, where first seen
            seen += [r for r in rows(client.get("/", {"page": number}).content.decode()) if r not in seen]
    assert seen == ["empty", "alarm", "overdue", "due_soon", "ok", "incomplete"]


def test_status_filter_counts_and_pages_include_pumps_the_sweep_has_not_reached(board, nurse, settings):
    settings.WORKLIST_PAGE_SIZE = 1
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).get("/", {"status": "alarm"})
    assert rows(response.content.decode()) == ["alarm"]
    assert "1 pump shown of 6." in text_of(response.content.decode())


def test_stored_urgency_is_the_rank_of_the_stored_status(board):
    from pumps import projection as pj
    from pumps.alerting.sweep import sweep
    from pumps.models import Pump

    sweep(DUE_SOON_AT)
    pairs = set(Pump.objects.values_list("status", "urgency"))
    assert len(pairs) == 6
    assert all(urgency == pj.STATUSES.index(status) for status, urgency in pairs)


def test_every_chip_counts_what_its_filter_shows_explanted_pumps_under_inactive(board, nurse):
    s.explant_pump(withdrawal_plan="taper_completed", pump=board["ok"], explanted_on=DUE_SOON_AT.date(), reason="infection", actor=s.Actor(nurse),
                   now=DUE_SOON_AT)
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        html = client.get("/").content.decode()
        import re

        chips = dict(re.findall(r'data-status-chip="([a-z_]+)">.*?<span class="chip-count">(\d+)</span>', html, re.S))
        for status, count in chips.items():
            shown = rows(client.get("/", {"status": status}).content.decode())
            assert len(shown) == int(count), status
    assert chips["inactive"] == "1"
    assert "ok" not in rows(html)


def test_a_poll_answers_204_until_a_pump_changes(board, nurse):
    from django.utils import timezone

    from pumps.models import Pump
    from pumps.views import poll_since

    client = signed_in(nurse)
    poll = {"HX-Request": "true", "HX-Target": "worklist-results"}
    later = timezone.now() + timedelta(minutes=1)  # the board's writes happened before
    since = poll_since(later)
    quiet = client.get("/", {"status": "alarm", "since": since}, headers=poll)
    # another user's write bumps the pump's updated_at
    Pump.objects.filter(pk=board["alarm"].pk).update(updated_at=later + timedelta(minutes=1))
    changed = client.get("/", {"status": "alarm", "since": since}, headers=poll)
    assert quiet.status_code == 204 and quiet.content == b""
    assert changed.status_code == 200
    html = changed.content.decode()
    assert html.lstrip().startswith("<div id=\"worklist-results\"")
    assert "status=alarm" in html  # the next poll keeps the filter


def test_band_names_the_open_critical_alert(board, nurse):
    from pumps.alerting.sweep import sweep

    sweep(DUE_SOON_AT)
    with travel(DUE_SOON_AT):
        text = text_of(signed_in(nurse).get("/").content.decode())
    band = text[text.index("Needs action now"):text.index("Then, most urgent first")]
    assert "Critical: low reservoir not acknowledged" in band
    assert band.index("Dubois, Dan") < band.index("Chen, Cora")


def test_worklist_rows_escape_what_staff_typed(clinic, nurse, prescriber):
    """The rows are written by a template tag (``pumps_ui.worklist_rows``), not the
    template engine: a name or MRN holding markup is shown as text, never run."""
    worked_example(new_patient(clinic, "MRN-<i>1</i>", '<script>alert("x")</script>', "O'Brien & <b>Co</b>"),
                   s.Actor(prescriber), serial="X1")
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get("/").content.decode()
    assert ("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;, O&#x27;Brien &amp; &lt;b&gt;Co&lt;/b&gt;</a> "
            '<span class="mrn">MRN MRN-&lt;i&gt;1&lt;/i&gt;</span>') in html
    assert "<script>alert" not in html and "<b>Co</b>" not in html
    assert_no_inline_script(html)
