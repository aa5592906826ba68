"""When the database is unreachable (restarted, failed over), a request fails cleanly with
503 and a short message instead of a stack trace; the next request reconnects (Django
drops a connection that saw an error at the end of the request)."""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

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
