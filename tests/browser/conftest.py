"""Browser tests in real headless Chromium (pytest-playwright, the system ``/usr/bin/chromium``).

Playwright's synchronous API runs an asyncio event loop in the test thread while it is
started, and Django refuses ORM calls from a thread with a running loop. The browser is
therefore started per module (not per session, as pytest-playwright does by default), and
``DJANGO_ALLOW_ASYNC_UNSAFE`` is set only while it runs, so that the rest of the suite
keeps Django's guard. There is no async code in this project for the guard to protect.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from django.utils import timezone

from pumps import services as s
from tests.conftest import require_service
from tests.factories import make_clinic, make_patient, make_pump, make_user

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        require_service("Chromium", "install it with 'apt-get install -y chromium' (the tests use /usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as pw:
            yield pw


@pytest.fixture(scope="module")
def browser_type(playwright):
    return playwright.chromium


@pytest.fixture(scope="module")
def launch_browser(browser_type):
    def launch(**kwargs):
        return browser_type.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True, **kwargs)

    return launch


@pytest.fixture(scope="module")
def browser(launch_browser):
    instance = launch_browser()
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def browser_context_args():
    # A tablet in landscape: the clinic's nurses carry one.
    return {"viewport": {"width": 1180, "height": 820}, "locale": "en-US", "device_scale_factor": 1}


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def accessible(page):
    """Run axe-core (shipped inside axe-playwright-python) on the current page: no serious
    or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()

    def check(label: str) -> None:
        results = axe.run(page)
        bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        details = "\n".join(
            f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(n["target"][0] if isinstance(n["target"][0], str) else str(n["target"]) for n in v["nodes"][:5])
            for v in bad
        )
        assert not bad, f"axe found serious violations on {label}:\n{details}"

    return check


@pytest.fixture
def clinic_data(live_server):
    """A clinic with a pump filled 31 days ago (the worked example's numbers), one in alarm, one
    incomplete, and a pump of another clinic."""
    now = timezone.now().replace(second=0, microsecond=0)
    clinic = make_clinic(code="north", name="North Spasticity Clinic", timezone="America/Chicago")
    other = make_clinic(code="south", name="South Clinic", timezone="Australia/Sydney")
    make_user("nina", clinic, "nurse", first_name="Nina", last_name="Novak")
    make_user("otto", other, "nurse")
    prescriber = make_user("dr_pat", clinic, "prescriber", first_name="Pat", last_name="Reyes")
    actor = s.Actor(prescriber)  # only a prescriber enters the program that rides on a fill
    implanted = (now - timedelta(days=60)).astimezone(clinic.tz).date()

    def filled(mrn, family, given, serial, added, days_ago):
        pump = make_pump(make_patient(clinic, mrn=mrn, family_name=family, given_name=given, origin="spinal"),
                         serial=serial, implanted_on=implanted)
        fill_at = now - timedelta(days=days_ago)
        s.record_refill(pump=pump, performed_at=fill_at, added_volume_ml=D(added), concentration_mcg_per_ml=D("1000"),
                        actor=actor, program=s.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("450")),
                        now=now)
        return pump, fill_at

    main, fill_at = filled("MRN001", "Garcia", "Ana", "SN-0001", "36", 31)
    alarm, _ = filled("MRN002", "Baker", "Ben", "SN-0002", "20", 41)  # alarm after 40 days
    make_pump(make_patient(clinic, mrn="MRN003", family_name="Chen", given_name="Cora"), serial="SN-0003",
              implanted_on=implanted)
    make_pump(make_patient(other, mrn="MRN900", family_name="Zed", given_name="Zoe"), serial="SN-0900",
              implanted_on=implanted)
    return {"clinic": clinic, "main": main, "fill_at": fill_at, "alarm": alarm, "url": live_server.url}
