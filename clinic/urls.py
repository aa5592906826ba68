from django.contrib import admin
from django.urls import include, path, re_path

from clinic.health import health
from clinic.password_reset import ThrottledPasswordResetView
from pumps.api.errors import NotRouted

urlpatterns = [
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
