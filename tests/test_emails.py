# ruff: noqa: F811 - the fixtures of tests/test_alerts.py are imported and used by name
"""Alert e-mails (docs/clinical-rules.md, section 11.5): no stored value can stop a
notification, one recipient's failure never holds up another's, kinds are spelled
properly, and every time carries its zone."""

import smtplib
from datetime import date, datetime, timedelta

import pytest
from django.core import mail

from pumps import outbox
from pumps import services as s
from pumps.alerting.rules import ADVICE, RULES, TITLES
from pumps.alerting.sweep import sweep
from pumps.emails import header_safe
from pumps.models import Alert, Notification, Patient, Pump
from tests.conftest import CHICAGO
from tests.test_alerts import LRA, filled, recipients, sent, sweep_and_send  # noqa: F401

EMPTY = datetime(2026, 4, 23, 10, 0, tzinfo=CHICAGO)


@pytest.mark.parametrize(("stored", "safe"), [
    ("AB\r\nBcc: x@evil", "AB Bcc: x@evil"),
    ("MRN\n001", "MRN 001"),
    ("A\tB", "A B"),
    ("A\x00B\x7fC\x85D", "A B C D"),  # NUL, DEL, NEL
    ("A\u2028B\u2029C", "A B C"),  # the Unicode line and paragraph separators
    ("  padded\r\n", "padded"),
    ("José Ñ-12", "José Ñ-12"),  # letters of any script stay
])
def test_header_safe_replaces_every_control_character(stored, safe):
    assert header_safe(stored) == safe


def test_a_line_break_in_a_stored_mrn_neither_blocks_the_alert_nor_injects_a_header(filled):
    Patient.objects.filter(pk=filled.patient_id).update(mrn="AB\r\nBcc: x@evil")  # legacy data, as stored
    now = LRA + timedelta(minutes=40)
    sweep(now)
    outbox.deliver_due(now)
    notes = Notification.objects.filter(kind="low_reservoir")
    assert sorted(notes.values_list("recipient", "status", "attempts")) == [
        ("nina@clinic.example", "sent", 1), ("ward@clinic.example", "sent", 1)]
    messages = sent("low_reservoir")
    assert len(messages) == 2
    for message in messages:
        assert message.subject == "[CRITICAL] Low reservoir: MRN AB Bcc: x@evil (AG)"
        assert message.bcc == [] and message.cc == []
        assert message.recipients() == message.to
        parsed = message.message()
        assert parsed["Bcc"] is None and parsed["Cc"] is None
        assert parsed["Subject"] == "[CRITICAL] Low reservoir: MRN AB Bcc: x@evil (AG)"
        raw = parsed.as_bytes()
        assert b"\nBcc:" not in raw and b"\r\nBcc:" not in raw
        assert "Patient: MRN AB Bcc: x@evil (AG)" in message.body.splitlines()


def test_one_failing_address_does_not_hold_up_the_next(filled, monkeypatch):
    real_send = mail.EmailMultiAlternatives.send

    def send(self, fail_silently=False):
        if self.to == ["nina@clinic.example"]:
            raise smtplib.SMTPRecipientsRefused({"nina@clinic.example": (550, b"mailbox unavailable")})
        return real_send(self, fail_silently)

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", send)
    now = LRA + timedelta(minutes=40)
    sweep(now)
    outbox.deliver_due(now)
    assert [m.to for m in sent("low_reservoir")] == [["ward@clinic.example"]]
    failing = Notification.objects.get(kind="low_reservoir", recipient="nina@clinic.example")
    assert (failing.status, failing.attempts) == ("pending", 1)
    assert failing.last_error.startswith("SMTPRecipientsRefused")


def test_kinds_are_spelled_properly_in_subjects(filled, nurse):
    mri_at = datetime(2026, 3, 2, 8, tzinfo=CHICAGO)
    s.record_event(pump=filled, kind="mri", occurred_at=mri_at, actor=s.Actor(nurse), now=mri_at + timedelta(hours=2))
    outbox.deliver_due(mri_at + timedelta(hours=2))
    message = sent("post_mri_check")[0]
    assert message.subject == "[CRITICAL] Post-MRI check: MRN MRN001 (AG)"
    lines = message.body.splitlines()
    assert lines[0] == "CRITICAL: Post-MRI check"
    assert "Detail: An MRI was recorded at 2026-03-02 08:00 CST (2 hours ago) and no reading since." in lines
    assert Alert.objects.get(kind="post_mri_check").message == "MRI recorded at 2026-03-02 08:00 CST and no reading since"
    assert TITLES == {
        "refill_due_soon": "Refill due soon", "refill_overdue": "Refill overdue", "low_reservoir": "Low reservoir",
        "withdrawal_risk": "Withdrawal risk", "residual_discrepancy": "Residual discrepancy",
        "battery_replacement": "Battery replacement", "post_mri_check": "Post-MRI check",
        "unverified_program": "Unverified program", "alerting_stalled": "Alerting stalled",
        "drug_expired": "Drug expired", "refill_unbooked": "Refill not booked",
    }
    assert set(ADVICE) == set(TITLES) == set(RULES)


def test_a_reminder_says_how_long_ago_as_of_its_sending(filled):
    start = LRA + timedelta(minutes=40)
    sweep_and_send(start)
    sweep_and_send(start + timedelta(hours=4))
    reminder = [m for m in sent("low_reservoir") if m.subject.endswith("(reminder 1)")][0]
    lines = reminder.body.splitlines()
    assert ("Detail: The reservoir has been at or below the alarm volume (worst case) since 2026-04-18 23:20 CDT"
            " (4 hours ago).") in lines
    alert = Alert.objects.get(kind="low_reservoir")
    assert (f"Alert #{alert.pk}, raised 2026-04-19 00:00 CDT (4 hours ago); this e-mail sent 2026-04-19 04:00 CDT. "
            "Times in America/Chicago.") in lines
    assert "When: 2026-04-18 23:20 CDT (4 hours ago)" in lines


def test_the_digest_gives_times_with_their_zone_and_names_the_expired_drug(filled):
    expires = datetime(2026, 8, 1, 10, 0, tzinfo=CHICAGO)
    sweep_and_send(EMPTY + timedelta(hours=1))  # empty, withdrawal risk and low reservoir open
    Pump.objects.filter(pk=filled.pk).update(next_change_at=expires)
    digest_day = datetime(2026, 8, 2, 7, 0, tzinfo=CHICAGO)
    mail.outbox.clear()
    sweep_and_send(digest_day)
    digest = [m for m in sent("digest") if m.to == ["ward@clinic.example"]][0]
    assert digest.subject == "[north] Daily pump digest 2026-08-02"
    lines = digest.body.splitlines()
    url = f"https://pumps.example.org/pumps/{filled.pk}/#summary"
    low = Alert.objects.get(kind="low_reservoir")
    empty = Alert.objects.get(kind="withdrawal_risk", resolved_at__isnull=True)
    drug = Alert.objects.get(kind="drug_expired")
    assert lines[:5] == [
        "Daily pump digest — North Spasticity Clinic — 2026-08-02 (Sun)",
        "Times in America/Chicago; as of 2026-08-02 07:00 CDT.",
        "",
        "Empty (worst case) (1)",
        f"- MRN MRN001 (AG), 8637-40 #SN-0001: empty since 2026-04-23 10:00 CDT (100 days ago) (worst case) — {url}",
    ]
    start = lines.index("Drug past its stability date (1)")
    assert lines[start + 1] == (f"- MRN MRN001 (AG): The drug in the reservoir passed its stability date on "
                                f"2026-08-01 (yesterday): refill with fresh drug. — {url}")
    start = lines.index("Unacknowledged critical alerts (3)")
    assert sorted(lines[start + 1:start + 4]) == sorted([
        f"- #{drug.pk} Drug expired: MRN MRN001 (AG): The drug in the reservoir passed its stability date on "
        "2026-08-01 (yesterday): refill with fresh drug.",
        f"- #{empty.pk} Withdrawal risk (reservoir empty): MRN MRN001 (AG): The reservoir has been empty (worst "
        "case) since 2026-04-23 10:00 CDT (100 days ago).",
        f"- #{low.pk} Low reservoir: MRN MRN001 (AG): The reservoir has been at or below the alarm volume (worst "
        "case) since 2026-04-18 23:20 CDT (105 days ago).",
    ])
    html = digest.alternatives[0][0]
    assert "Daily pump digest — North Spasticity Clinic — 2026-08-02 (Sun)</h1>" in html
    assert "Times in America/Chicago; as of 2026-08-02 07:00 CDT." in html
    assert "Garcia" not in digest.body and "Garcia" not in html


def test_a_refill_overdue_email_says_since_when(filled):
    sweep_and_send(datetime(2026, 4, 12, 9, 0, tzinfo=CHICAGO))
    message = sent("refill_overdue")[0]
    assert message.subject == "[WARNING] Refill overdue: MRN MRN001 (AG)"
    assert "Detail: The refill was due on 2026-04-10 (2 days ago)." in message.body.splitlines()


def test_an_explanted_pump_is_not_in_the_digest(filled, nurse):
    sweep_and_send(LRA + timedelta(minutes=40))
    s.explant_pump(pump=filled, explanted_on=date(2026, 4, 19), actor=s.Actor(nurse),
                   now=LRA + timedelta(hours=1))
    mail.outbox.clear()
    sweep_and_send(datetime(2026, 4, 20, 7, 0, tzinfo=CHICAGO))
    body = sent("digest")[0].body
    assert "MRN001" not in body
    assert "Unacknowledged critical alerts (0)" in body.splitlines()
