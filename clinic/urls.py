from pathlib import Path

from django.contrib import admin
from django.http import FileResponse
from django.urls import include, path, re_path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from clinic.password_reset import ThrottledPasswordResetView
from pumps.api.errors import NotRouted
from pumps.health import health

FAVICON = Path(__file__).resolve().parent.parent / "static" / "favicon.ico"


@require_GET
@cache_control(public=True, max_age=86400)
def favicon(request):
    """/favicon.ico, which browsers ask for whatever the page links: the app's own icon."""
    return FileResponse(FAVICON.open("rb"), content_type="image/x-icon")


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("health/", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("pumps.api.urls")),
    re_path(r"^api/", NotRouted.as_view()),  # /api/ and other versions: a JSON 404 too
    path("fhir/r4/", include("pumps.fhir.urls")),
    # Before the app's accounts/ URLs (same path and name): the reset form, throttled.
    path("accounts/password_reset/", ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("", include("pumps.urls")),
]

# Unexpected errors: JSON under /api/, a FHIR OperationOutcome under /fhir/, the page elsewhere.
handler500 = "pumps.api.errors.server_error"
