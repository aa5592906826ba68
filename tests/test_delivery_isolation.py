"""One clinic's slow webhook endpoint does not hold back another clinic's critical e-mail:
real Celery workers on Redis (one for the default and e-mail queues, one for webhooks),
aiosmtpd and a webhook server on loopback that answers one byte every 5 seconds."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from clinic.models import ApiClient, Clinic
from pumps.alerting import delivery
from pumps.alerting.sweep import sweep
from pumps.models import Alert, DeliveryAttempt, Notification
from tests.test_alerts_smtp import (
    Queues,
    Worker,
    _subprocess_env,
    kinds,
    low_reservoir_pump,
    publishing_to,
    require_redis,
    start_smtp,
    trigger_delivery,
    wait_for,
)
from tests.test_webhook_targets import DripServer


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_dripping_webhook_of_clinic_a_does_not_delay_a_critical_email_of_clinic_b(smtp_port):
    url = require_redis()
    queues = Queues("iso")
    drip = DripServer(every=5)
    west = low_reservoir_pump(code="west", mrn="MRN-W")
    client, _ = ApiClient.create_with_token(clinic=west.clinic, name="EHR", can_write=True)
    client.set_webhook(drip.url)  # registered by the operator's allowed network (below)
    # clinic A's own e-mails are not what this test is about: only its webhook
    west.clinic.alert_recipients.all().delete()
    from clinic.models import Membership

    Membership.objects.filter(clinic=west.clinic).update(receives_alerts=False)
    east = low_reservoir_pump(code="east", mrn="MRN-E")
    controller, inbox = start_smtp(smtp_port)
    env = {**_subprocess_env(smtp_port), "CELERY_BROKER_URL": url, "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
           **queues.env()}
    workers = [Worker.worker(env, [queues.default, queues.email], "mail"),
               Worker.worker(env, [queues.webhooks], "hooks")]
    try:
        # no daily digest in this test, whatever the time of day it runs at
        Clinic.objects.update(digest_settled_until=timezone.now() + timedelta(days=1))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(delivery, "queue_delivery_on_commit", lambda: None)
            sweep(timezone.now())
        hook = Notification.objects.get(channel="webhook", kind="low_reservoir")
        assert not Notification.objects.filter(clinic=west.clinic, channel="email").exists()
        east_alert = Alert.objects.get(pump=east, kind="low_reservoir")
        with publishing_to(url, queues) as app:
            started = time.monotonic()
            trigger_delivery(app, queues)
        # the webhook worker is busy with the dripping endpoint meanwhile
        assert wait_for(lambda: drip.connections >= 1, 15)

        def east_critical_received():
            return len([m for _, m in kinds(inbox, "low_reservoir") if m["X-Clinic-Alert-Id"] == str(east_alert.pk)])

        assert wait_for(lambda: east_critical_received() == 2, 15, every=0.1)
        email_after = time.monotonic() - started
        assert wait_for(lambda: DeliveryAttempt.objects.filter(notification=hook).exists(), 30)
        webhook_after = time.monotonic() - started
        hook.refresh_from_db()
    finally:
        for w in workers:
            w.stop()
        controller.stop()
        drip.close()
    assert email_after <= 15, email_after
    assert email_after < webhook_after  # the e-mail did not wait for the webhook
    # the webhook attempt was cut by its 10-second deadline (not by a read timeout: a byte
    # came every 5 s), recorded, and is retried later (a critical alert: 15 s later)
    assert 10 <= webhook_after <= 25, webhook_after
    assert (hook.status, hook.attempts) == ("pending", 1)
    assert hook.last_error == f"WebhookError: no answer from {drip.url} within the 10-second deadline"
    attempt = DeliveryAttempt.objects.get(notification=hook)
    assert (attempt.ok, attempt.error) == (False, hook.last_error)
    assert (hook.next_attempt_at - attempt.at).total_seconds() == 15


@pytest.fixture
def smtp_port():
    from tests.test_alerts_smtp import free_port

    return free_port()
