#!/usr/bin/env bash
# The load test, headless and bounded, everything on loopback:
#   PostgreSQL (a fresh database), Redis, gunicorn with 4 workers, a Celery worker and
#   beat (sweeping every --sweep-interval seconds), an aiosmtpd sink for the e-mails,
#   seeded pumps; then Locust with 50 staff users and 10 API clients for a fixed time,
#   and loadtest/check.py: the table (requests/s, p50/p95/p99 per endpoint, errors), the
#   targets, and the database's check of every write. Users start 2 a second (their
#   sign-ins, each an Argon2 hash, spread out); the statistics restart once all are running.
#
#   loadtest/run.sh                      # the real run: 100,000 pumps, 5 minutes
#   loadtest/run.sh --pumps 2000 --duration 60    # a quick run
#
# The seed's copies raise their alerts in the first sweep (the catch-up), and their e-mails
# (tens of thousands at 100k pumps) are delivered by the worker to the sink before Locust
# starts: the measured minutes are a network at rest plus the load, not a backlog.
#
# Options: --pumps N (100000) --duration S (300) --staff N (50) --api-clients N (10)
#          --port P (8100) --sweep-interval S (60) --keep (leave the database)
#          --staff-wait "MIN,MAX" (5,15) --api-wait "MIN,MAX" (1,3): seconds between a
#          user's actions (a nurse reads the page she opened; an interface polls)
# Environment: LOADTEST_DATABASE_URL (a server URL; default postgres://postgres@127.0.0.1:5432/postgres),
#              LOADTEST_REDIS_URL (default redis://127.0.0.1:6379/13)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
PUMPS=100000 DURATION=300 STAFF=50 API=10 PORT=8100 SWEEP=60 KEEP=0 STAFF_WAIT="5,15" API_WAIT="1,3"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pumps) PUMPS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --staff) STAFF="$2"; shift 2 ;;
    --api-clients) API="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --sweep-interval) SWEEP="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --staff-wait) STAFF_WAIT="$2"; shift 2 ;;
    --api-wait) API_WAIT="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for wait in "$STAFF_WAIT" "$API_WAIT"; do
  if ! [[ "$wait" =~ ^[0-9]+(\.[0-9]+)?,[0-9]+(\.[0-9]+)?$ ]]; then
    echo "--staff-wait and --api-wait take \"MIN,MAX\" in seconds (e.g. 5,15), not \"$wait\"" >&2; exit 2
  fi
done

SERVER="${LOADTEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DB="pumpclinic_loadtest_${PUMPS}"
OUT="$ROOT/var/loadtest/$(date -u +%Y%m%dT%H%M%SZ)"
SMTP_PORT=$((PORT + 1))
mkdir -p "$OUT"

export DATABASE_URL="${SERVER%/*}/$DB"
export CELERY_BROKER_URL="${LOADTEST_REDIS_URL:-redis://127.0.0.1:6379/13}"
export CACHE_URL="$CELERY_BROKER_URL"
export EMAIL_URL="smtp://127.0.0.1:$SMTP_PORT"
export DJANGO_DEBUG=false
export DJANGO_SECRET_KEY="load-test-only-secret-key-not-for-production-0123456789"
export DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost"
export DJANGO_SECURE_SSL_REDIRECT=false
export SITE_URL="http://127.0.0.1:$PORT"
export API_THROTTLE_RATE="100000/min"
export DATABASE_CONN_MAX_AGE=300
export ALERT_SWEEP_INTERVAL_SECONDS="$SWEEP"
export LOG_LEVEL=WARNING
export PUMPCLINIC_VAR_DIR="$ROOT/var/loadtest/var"
export LOADTEST_FIXTURES="$OUT/fixtures.json"
export LOADTEST_WRITES="$OUT/writes.jsonl"
export LOADTEST_STAFF_WAIT="$STAFF_WAIT" LOADTEST_API_WAIT="$API_WAIT"
export CELERY_TASK_DEFAULT_QUEUE="loadtest" CELERY_EMAIL_QUEUE="loadtest-email" CELERY_WEBHOOK_QUEUE="loadtest-webhooks"

PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "$KEEP" == 0 ]]; then
    "$PY" - "$SERVER" "$DB" <<'PYEOF' || true
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute(f"DROP DATABASE IF EXISTS {sys.argv[2]} WITH (FORCE)")
PYEOF
  fi
}
trap stop_all EXIT

echo "-- $(date -u +%FT%TZ): fresh database $DB, $PUMPS pumps" >&2
"$PY" - "$SERVER" "$DB" <<'PYEOF'
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute(f"DROP DATABASE IF EXISTS {sys.argv[2]} WITH (FORCE)")
    c.execute(f"CREATE DATABASE {sys.argv[2]}")
PYEOF
"$PY" - "$CELERY_BROKER_URL" <<'PYEOF'
import sys, redis
redis.Redis.from_url(sys.argv[1]).flushdb()
PYEOF
cd "$ROOT"
"$PY" manage.py collectstatic --no-input -v 0
"$PY" manage.py migrate --no-input -v 0
"$PY" manage.py seed_demo --pumps "$PUMPS" --seed 1 --bulk | tail -n 4 >&2
"$PY" loadtest/prepare.py "$LOADTEST_FIXTURES" --staff "$STAFF" --api-clients "$API" >&2
echo "-- first sweep (the seed's catch-up), then the services" >&2
"$PY" manage.py run_alert_sweep --no-deliver >/dev/null

"$PY" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Sink >"$OUT/smtp.log" 2>&1 &
PIDS+=($!)
"$ROOT/.venv/bin/gunicorn" clinic.wsgi -c "$ROOT/gunicorn.conf.py" --workers 4 --bind "127.0.0.1:$PORT" \
  --log-level warning >"$OUT/gunicorn.log" 2>&1 &
PIDS+=($!)
"$PY" -m celery -A clinic worker -Q "loadtest,loadtest-email,loadtest-webhooks" --concurrency 2 -l warning \
  -n "loadtest@%h" --without-gossip --without-mingle >"$OUT/worker.log" 2>&1 &
PIDS+=($!)
"$PY" -m celery -A clinic beat -l warning --schedule "$OUT/beat-schedule" >"$OUT/beat.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/accounts/login/" && break
  sleep 1
done

echo "-- $(date -u +%FT%TZ): the worker delivers the catch-up's e-mails to the sink" >&2
"$PY" - <<'PYEOF' >&2
import os, sys, time
import psycopg
DUE = ("SELECT count(*) FROM pumps_notification WHERE status IN ('pending', 'sending') "
       "AND next_attempt_at <= now()")
started = time.monotonic()
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as c:
    first = c.execute(DUE).fetchone()[0]
    while (left := c.execute(DUE).fetchone()[0]) and time.monotonic() - started < 1200:
        time.sleep(5)
print(f"   {first - left} of {first} due notifications delivered in {time.monotonic() - started:.0f} s"
      + (f"; {left} still due" if left else ""))
PYEOF

USERS=$((STAFF + API))
echo "-- $(date -u +%FT%TZ): Locust, $STAFF staff users (a click every ${STAFF_WAIT/,/-} s) and $API API clients (every ${API_WAIT/,/-} s) for ${DURATION}s" >&2
"$ROOT/.venv/bin/locust" -f "$ROOT/loadtest/locustfile.py" --headless --host "http://127.0.0.1:$PORT" \
  --users "$USERS" --spawn-rate 2 --reset-stats --run-time "${DURATION}s" --stop-timeout 10 \
  --csv "$OUT/stats" --only-summary --exit-code-on-error 0 >"$OUT/locust.log" 2>&1 || true

MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB"
{
  echo "Load test of $(date -u +%F) on $MACHINE: $PUMPS pumps, $STAFF staff users (${STAFF_WAIT/,/-} s between actions), $API API clients (${API_WAIT/,/-} s), ${DURATION}s"
  echo
  "$PY" loadtest/check.py "$OUT/stats" "$LOADTEST_WRITES"
} | tee "$OUT/report.txt"
status=${PIPESTATUS[0]}
echo "(files: $OUT)" >&2
exit "$status"
