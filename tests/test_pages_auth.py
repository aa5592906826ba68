"""Sign-in everywhere, sign-out, password change and reset by e-mail, login throttling,
and security headers (a Content-Security-Policy without inline scripts)."""

import re

import pytest
from django.core import mail
from django.test import Client

from tests.factories import make_user
from tests.pages_support import assert_no_inline_script

PAGES = [
    "/", "/alerts/", "/patients/1/", "/patients/1/edit/", "/pumps/1/", "/pumps/1/refill/", "/pumps/1/program/",
    "/pumps/1/reading/", "/pumps/1/event/", "/pumps/1/explant/", "/pumps/1/replace/", "/pumps/1/appointments/",
    "/pumps/1/worksheet/", "/appointments/1.ics", "/void/refill/1/", "/clinics/north/settings/",
    "/accounts/password_change/",
]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_needs_sign_in(db, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("url", ["/pumps/1/refill/preview/", "/programs/1/verify/", "/alerts/1/acknowledge/"])
def test_every_action_needs_sign_in(db, url):
    response = Client().post(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_sign_in_and_out(nurse):
    client = Client()
    page = client.get("/accounts/login/")
    html = page.content.decode()
    assert '<label for="id_username">Username:</label>' in html
    assert_no_inline_script(html)
    response = client.post("/accounts/login/?next=/alerts/",
                           {"username": "nina", "password": "correct horse battery", "next": "/alerts/"})
    assert response.status_code == 302
    assert response["Location"] == "/alerts/"
    assert client.get("/").status_code == 200
    out = client.post("/accounts/logout/")
    assert out["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused(nurse):
    response = Client().post("/accounts/login/", {"username": "nina", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password." in response.content.decode()


def test_login_is_throttled_after_five_failures(nurse, settings):
    settings.AXES_ENABLED = True
    client = Client()
    for _ in range(4):
        assert client.post("/accounts/login/", {"username": "nina", "password": "nope"}).status_code == 200
    assert client.post("/accounts/login/", {"username": "nina", "password": "nope"}).status_code == 429
    locked = client.post("/accounts/login/", {"username": "nina", "password": "correct horse battery"})
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts for this account from this address." in locked.content.decode()
    assert client.get("/").status_code == 302  # still not signed in
    # another account from the same address is not locked
    make_user("other", None)
    assert Client().post("/accounts/login/", {"username": "other", "password": "correct horse battery"}).status_code == 302


def test_password_change(nurse):
    client = Client()
    client.force_login(nurse)
    response = client.post("/accounts/password_change/", {
        "old_password": "correct horse battery", "new_password1": "a different long phrase 42",
        "new_password2": "a different long phrase 42",
    })
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password_change/done/"
    nurse.refresh_from_db()
    assert nurse.check_password("a different long phrase 42")
    assert nurse.password.startswith("argon2$")


def test_password_reset_by_email(nurse):
    nurse.email = "nina@north.example.org"
    nurse.save()
    client = Client()
    sent = client.post("/accounts/password_reset/", {"email": "nina@north.example.org"})
    assert sent["Location"] == "/accounts/password_reset/done/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "Pump clinic: reset your password"
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", message.body).group(1)
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "brand new phrase 2026",
                                                    "new_password2": "brand new phrase 2026"})
    assert done["Location"] == "/accounts/reset/done/"
    nurse.refresh_from_db()
    assert nurse.check_password("brand new phrase 2026")


def test_security_headers(nurse):
    client = Client()
    client.force_login(nurse)
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    html = response.content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js" defer></script>' in html
    assert '<script src="/static/js/app.js" defer></script>' in html
    assert not re.search(r"https?://(?!testserver)", re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", html))


def test_static_assets_are_served_locally(nurse):
    from django.contrib.staticfiles import finders

    for path in ("django_htmx/htmx-2.min.js", "css/app.css", "css/print.css", "js/app.js", "favicon.svg"):
        assert finders.find(path), path
