"""Request middleware of the project.

``DatabaseUnavailableMiddleware``: when the database is unreachable (restarted, failed
over), a request fails cleanly with 503 and a short message instead of a stack trace; the
next request reconnects (Django drops a connection that saw an error at the end of the
request). ``SessionIdleTimeoutMiddleware``: the idle sign-out. ``NoStoreMiddleware``:
nothing with patient data is cached."""

from __future__ import annotations

import logging
import time

from django.contrib import messages
from django.contrib.auth import logout
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

log = logging.getLogger("clinic.database")

MESSAGE = "The database is unavailable for a moment. Nothing was saved; try again shortly."


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        log.error("database unavailable during %s %s: %s", request.method, request.path, exception.__class__.__name__)
        if request.path.startswith(("/api/", "/fhir/")) or "json" in request.headers.get("Accept", ""):
            response = JsonResponse({"detail": MESSAGE, "code": "database_unavailable"}, status=503)
        else:
            response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "5"
        return response


# ------------------------------------------------------------------ sessions, caching

SESSION_ACTIVITY_KEY = "last_activity"


class SessionIdleTimeoutMiddleware:
    """A signed-in session ends after ``SESSION_IDLE_MINUTES`` without a request.

    The time of the last request is kept in the session (rewritten at most every
    ``SESSION_ACTIVITY_RESOLUTION`` seconds, not on every request); a request that comes
    later than the idle limit after it signs the user out before the view runs, so the
    view sees an anonymous user (a page redirects to the sign-in, the API answers 403).
    ``request.session_idle`` tells the page how long is left, for the warning shown by
    ``static/js/session-timeout.js`` (``templates/base.html``).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.conf import settings

        user = getattr(request, "user", None)
        if user is not None and hasattr(request, "session") and user.is_authenticated:
            idle = settings.SESSION_IDLE_SECONDS
            now = int(time.time())
            last = request.session.get(SESSION_ACTIVITY_KEY)
            if isinstance(last, int) and now - last > idle:
                logout(request)
                messages.info(
                    request, f"You were signed out after {idle // 60} minutes without activity. Sign in again."
                )
                if request.headers.get("HX-Request"):
                    return HttpResponse(status=204, headers={"HX-Redirect": settings.LOGIN_URL})
            else:
                if last is None or now - last >= settings.SESSION_ACTIVITY_RESOLUTION:
                    request.session[SESSION_ACTIVITY_KEY] = last = now
                left = idle - (now - last)
                warn = min(settings.SESSION_IDLE_WARNING_SECONDS, idle // 2)
                request.session_idle = {
                    "idle": idle, "left": left, "warn": warn, "slack": settings.SESSION_ACTIVITY_RESOLUTION,
                }
        return self.get_response(request)


class NoStoreMiddleware:
    """``Cache-Control: no-store`` (with ``private``, ``no-cache``, ``max-age=0``) on every
    answer that may carry patient data: everything under /api/ and /fhir/, and every
    answer to a signed-in user (staff pages, exports, the admin). Nothing of a patient
    stays in a browser's or a proxy's cache, nor in the back-button history."""

    PREFIXES = ("/api/", "/fhir/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if request.path.startswith(self.PREFIXES) or (user is not None and user.is_authenticated):
            add_never_cache_headers(response)
        return response
