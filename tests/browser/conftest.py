"""Browser tests in real headless Chromium (pytest-playwright, the system ``/usr/bin/chromium``).

Playwright's synchronous API runs an asyncio event loop in the test thread while it is
started, and Django refuses ORM calls from a thread with a running loop. The browser is
therefore started per module (not per session, as pytest-playwright does by default), and
``DJANGO_ALLOW_ASYNC_UNSAFE`` is set only while it runs, so that the rest of the suite
keeps Django's guard. There is no async code in this project for the guard to protect.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require_service

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


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
