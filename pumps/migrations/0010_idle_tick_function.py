"""The sweep's quiet tick as a function in PostgreSQL: ``pumps_idle_tick``.

Most sweeps find nothing due. Sent as SQL text, the check (four index probes and the
heartbeat insert) spent two thirds of its time being planned; a PL/pgSQL function keeps
its plans for the session, so a quiet tick costs about one indexed SELECT. The probes
have no parameter in their scans (``min(next_change_at)``, not ``next_change_at <= $1``):
the cached generic plan is the indexed one.

Returns the heartbeat's id when nothing was due (the heartbeat is recorded), NULL when
the sweep has work: a pump whose state changed, an alert to repeat, an open
alerting-stalled alert, a clinic whose digests are not settled, or at least
``p_fold_after`` status-tally rows to fold. A change to these rules is a new migration
that replaces the function (``pumps.alerting.sweep.idle_tick`` calls it).
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION pumps_idle_tick(
    p_now timestamptz, p_started timestamptz, p_finished timestamptz, p_fold_after integer
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    heartbeat bigint;
BEGIN
    IF coalesce((SELECT min(next_change_at) FROM pumps_pump) <= p_now, false)
        OR coalesce((SELECT min(next_repeat_at) FROM pumps_alert
                     WHERE resolved_at IS NULL AND acknowledged_at IS NULL) <= p_now, false)
        OR EXISTS (SELECT 1 FROM pumps_alert WHERE kind = 'alerting_stalled' AND resolved_at IS NULL)
        OR EXISTS (SELECT 1 FROM clinic_clinic
                   WHERE digest_settled_until IS NULL OR digest_settled_until <= p_now)
        OR EXISTS (SELECT 1 FROM pumps_statustally OFFSET p_fold_after)
    THEN
        RETURN NULL;
    END IF;
    INSERT INTO pumps_sweeprun (started_at, finished_at, pumps_checked, alerts_created, notifications_created)
    VALUES (p_started, p_finished, 0, 0, 0)
    RETURNING id INTO heartbeat;
    RETURN heartbeat;
END
$$;
"""

DROP = "DROP FUNCTION IF EXISTS pumps_idle_tick(timestamptz, timestamptz, timestamptz, integer)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("pumps", "0009_status_tally")]

    operations = [migrations.RunPython(create, drop)]
