"""Settings from the environment (12-factor).

With no environment variables set the app runs in development mode with embedded
defaults: SQLite under ``var/``, a file-system Celery broker that needs no server, e-mail
written to files under ``var/mail``, and a secret key generated once into ``var/``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PUMPCLINIC_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()


def _secret_key() -> str:
    key = env.str("DJANGO_SECRET_KEY", default="")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "clinic",
    "pumps",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "clinic.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "clinic.urls"
WSGI_APPLICATION = "clinic.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend with psycopg's C reader of timestamps (clinic/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "clinic.postgresql"
# Seconds a process keeps its database connection (0: one per request or task). In
# production a few minutes saves a connect per request and per sweep, and keeps the
# plans PostgreSQL cached for the quiet sweep (pumps_idle_tick) from one tick to the next.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = DATABASES["default"]["CONN_MAX_AGE"] != 0
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Wait for a concurrent writer instead of failing at once with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- E-mail --------------------------------------------------------------------------
_email_url = env.str("EMAIL_URL", default="")
if _email_url:
    _email_config = env.email_url_config(_email_url)
    _email_timeout = _email_config.pop("OPTIONS", {}).get("TIMEOUT")  # smtp://host:25?timeout=10
    vars().update(_email_config)
else:
    _email_timeout = None
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_TIMEOUT = int(_email_timeout or env.int("EMAIL_TIMEOUT", default=10))  # seconds per SMTP socket operation
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="pump-clinic@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Celery --------------------------------------------------------------------------
# The embedded default broker keeps messages in files under var/ so that `make run`
# needs no server; production uses a redis:// URL.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
if CELERY_BROKER_URL in ("filesystem://", "filesystem:///"):
    # kombu warns "No hostname was supplied. Reverting to default 'localhost'" for a URL
    # without a host; the file-system transport ignores the host, so name it.
    CELERY_BROKER_URL = "filesystem://localhost/"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
ALERT_SWEEP_INTERVAL_SECONDS = env.int("ALERT_SWEEP_INTERVAL_SECONDS", default=300)
ALERT_SWEEP_CHUNK = env.int("ALERT_SWEEP_CHUNK", default=500)
CELERY_BEAT_SCHEDULE = {
    "alert-sweep": {"task": "pumps.sweep", "schedule": float(ALERT_SWEEP_INTERVAL_SECONDS)},
    "alerting-watchdog": {"task": "pumps.watchdog", "schedule": float(ALERT_SWEEP_INTERVAL_SECONDS)},
    # a clinic's re-projection whose task was lost (pumps.reprojection) is queued again
    "reprojection-resume": {"task": "pumps.resume_reprojections", "schedule": float(ALERT_SWEEP_INTERVAL_SECONDS)},
}

# --- Alert delivery ------------------------------------------------------------------
# One overall deadline per attempt (resolve, connect, TLS, send, answer); e-mail and
# webhooks on their own queues, so that one slow endpoint never holds up an e-mail.
DELIVERY_DEADLINE_SECONDS = env.float("DELIVERY_DEADLINE_SECONDS", default=10.0)
DELIVERY_TICK_SECONDS = env.float("DELIVERY_TICK_SECONDS", default=15.0)
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
CELERY_EMAIL_QUEUE = env.str("CELERY_EMAIL_QUEUE", default="email")
CELERY_WEBHOOK_QUEUE = env.str("CELERY_WEBHOOK_QUEUE", default="webhooks")
CELERY_TASK_ROUTES = {
    "pumps.deliver_email": {"queue": CELERY_EMAIL_QUEUE},
    "pumps.deliver_webhooks": {"queue": CELERY_WEBHOOK_QUEUE},
}
CELERY_BEAT_SCHEDULE["outbox-delivery"] = {"task": "pumps.deliver_outbox", "schedule": DELIVERY_TICK_SECONDS}

# --- REST API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clinic.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["clinic.auth.IsClinicMember"],
    "DEFAULT_PAGINATION_CLASS": "pumps.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "pumps.api.schema.ClinicAutoSchema",
    "EXCEPTION_HANDLER": "pumps.api.errors.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": ["clinic.auth.ApiClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_client": env.str("API_THROTTLE_RATE", default="600/min")},
}

# The throttle counts live in the cache: per process by default, shared through Redis
# when CACHE_URL is a redis:// URL (several web processes then share one budget).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
SPECTACULAR_SETTINGS = {
    "TITLE": "Intrathecal pump clinic API",
    "DESCRIPTION": (
        "Patients, implanted pumps, reservoir refills, infusion programs and readings, with "
        "the reservoir projection of each pump. Authenticate with `Authorization: Bearer "
        "<token>`; a token belongs to one clinic."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "EventKindEnum": "pumps.models.Event.Kind",
        "AppointmentKindEnum": "pumps.models.Appointment.Kind",
        "AlertKindEnum": "pumps.models.AlertKind",
        "AppointmentStatusEnum": "pumps.models.Appointment.Status",
        "PatientStatusEnum": "pumps.models.Patient.Status",
    },
}

# --- Security ------------------------------------------------------------------------
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = 0 if DEBUG else env.int("DJANGO_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Staff web app -------------------------------------------------------------------
# htmx (django-htmx ships the script), a Content-Security-Policy without inline scripts
# (django-csp), and login throttling (django-axes: its backend refuses a locked-out
# sign-in, its middleware answers with the lock-out page; it is the last middleware).
INSTALLED_APPS += ["django_htmx", "axes"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "csp.middleware.CSPMiddleware")
MIDDLEWARE += ["django_htmx.middleware.HtmxMiddleware", "axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = ["pumps.auth_backends.LoginThrottleBackend", "django.contrib.auth.backends.ModelBackend"]
CONTENT_SECURITY_POLICY = {
    # The API reference pages (Redoc, Swagger UI) inject their own <style> elements.
    "EXCLUDE_URL_PREFIXES": ["/api/v1/redoc/", "/api/v1/docs/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
STATICFILES_DIRS = [BASE_DIR / "static"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
PASSWORD_RESET_TIMEOUT = 60 * 60 * 24  # a reset link works for one day
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)  # hours
# A lock-out holds for one username *from one client address*: a stranger elsewhere who
# types a nurse's username five times locks out only himself, never the nurse at her
# desk. (Locking the username alone would let anybody lock anybody out; locking the
# address alone would lock a whole ward behind one hospital NAT.) The address is the real
# client's behind TRUSTED_PROXY_COUNT proxies (clinic/throttling.py), never a spoofable
# X-Forwarded-For. Unlock: python manage.py axes_reset_username <username>.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "clinic.throttling.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
WORKLIST_PAGE_SIZE = env.int("WORKLIST_PAGE_SIZE", default=100)

# Reverse proxies in front of the app that append to X-Forwarded-For (0: the connection's
# address is the client's, and X-Forwarded-For is ignored).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Failed bearer-token authentications per client address and minute, then 429.
API_AUTH_FAILURE_LIMIT = env.int("API_AUTH_FAILURE_LIMIT", default=20)
# Password-reset requests per hour: per e-mail address, per client address. Over either
# the page answers as usual and no e-mail is sent.
PASSWORD_RESET_LIMIT_PER_EMAIL = env.int("PASSWORD_RESET_LIMIT_PER_EMAIL", default=3)
PASSWORD_RESET_LIMIT_PER_IP = env.int("PASSWORD_RESET_LIMIT_PER_IP", default=10)
# A signed-in session ends after this long without a request (a warning shows 5 minutes
# before). Activity is written to the session at most every SESSION_ACTIVITY_RESOLUTION s.
SESSION_IDLE_MINUTES = env.int("SESSION_IDLE_MINUTES", default=30)
SESSION_IDLE_SECONDS = SESSION_IDLE_MINUTES * 60
SESSION_IDLE_WARNING_SECONDS = 5 * 60
SESSION_ACTIVITY_RESOLUTION = 10
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.messages.middleware.MessageMiddleware") + 1,
    "clinic.middleware.SessionIdleTimeoutMiddleware",
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
    "clinic.middleware.NoStoreMiddleware",
)

# --- Clinical defaults ---------------------------------------------------------------
# How far ahead of the server clock a clinical timestamp may be (clock skew of devices).
PUMPS_FUTURE_TOLERANCE_SECONDS = 300
# A second refill of one pump within this many minutes is refused as a probable duplicate.
PUMPS_DUPLICATE_REFILL_MINUTES = 60
IDEMPOTENCY_KEY_TTL_HOURS = 24

def _expected_refusal(record) -> bool:
    """A 403 or 404 is the app answering as designed (another clinic's record, a role that
    may not): one line, without the traceback Django attaches to a PermissionDenied."""
    if getattr(record, "status_code", None) in (403, 404):
        record.exc_info = None
        record.exc_text = None
    return True


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "django.server": {
            "()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}", "style": "{",
        },
    },
    # No query string (search terms, names) in any log line: clinic/logfilters.py.
    "filters": {
        "redact_query_strings": {"()": "clinic.logfilters.RedactQueryStrings"},
        "expected_refusals": {"()": "django.utils.log.CallbackFilter", "callback": _expected_refusal},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_query_strings"]},
        # The development server's request lines (Django's own handler, with the filter).
        "django.server": {
            "class": "logging.StreamHandler", "formatter": "django.server", "filters": ["redact_query_strings"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own handlers are replaced: its records go to the filtered console.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
        # 403 and 404: one line each ("Forbidden (Permission denied): /pumps/7/"), no traceback
        "django.request": {"level": "INFO", "filters": ["expected_refusals"], "propagate": True},
    },
}
