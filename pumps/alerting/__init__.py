"""Alerting (docs/clinical-rules.md, section 11; README.md, "Alerting").

The modules, bottom to top: ``rules`` (each kind's severity, repeats, titles and advice,
and which alerts a pump calls for), ``heartbeat`` (is the sweep stale), ``recipients``
(who is told), ``delivery`` (the trigger that asks a worker to deliver the outbox),
``evaluate`` (the one alert plan, for one pump or a chunk of pumps, and the
notifications), ``repeats``, ``digests``, ``stalled`` (``alerting_stalled``), ``sweep``
(its due pumps refreshed set-based by ``pumps.bulk_refresh``) and ``acknowledge``.
Delivery itself is ``pumps.outbox``; the Celery tasks that run all this are
``pumps.tasks``.

Safety rules kept here:
- resolving an alert (explant, patient no longer active, condition cleared, a new refill)
  cancels its pending notifications in the same transaction: a resolved alert is never
  e-mailed;
- acknowledging a critical alert needs a reason (``acknowledge``); acknowledging stops
  repeats, not the alert, and a worsening (a pump past empty) is a new episode that
  alerts again;
- an expired drug is an alert of its own (``drug_expired``), once per fill.

Exactly once, by construction:
- an alert is one row per (pump, kind, episode) under a unique constraint, so two sweeps
  at once (or one run twice) cannot create a second one: the loser's INSERT fails and it
  moves on;
- a notification is one row per (alert, recipient, repeat number), also unique, committed
  in the same transaction as its alert, before anything is sent (the outbox);
- a sender claims a notification with a compare-and-swap ``UPDATE … WHERE status =
  'pending'``; only the one whose UPDATE changed a row sends.

If a worker dies after the SMTP server accepted a message but before the row was marked
sent, the claim goes stale and the message is sent again after ``STALE_CLAIM``: delivery
is at-least-once, which is the right side to err on for a clinical alert.
"""
