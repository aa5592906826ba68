from django.contrib import admin
from django.urls import include, path

from clinic.health import health
from clinic.password_reset import ThrottledPasswordResetView

urlpatterns = [
    path("health/", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("pumps.api.urls")),
    path("fhir/r4/", include("pumps.fhir.urls")),
    # Before the app's accounts/ URLs (same path and name): the reset form, throttled.
    path("accounts/password_reset/", ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("", include("pumps.urls")),
]
