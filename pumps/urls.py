"""Staff web pages. Alert e-mails link to ``SITE_URL/pumps/<id>/``: keep that path."""

from django.urls import include, path

from . import calendar_feeds, views, views_dose, views_planning

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("patients/<int:pk>/", views.patient_detail, name="patient"),
    path("patients/<int:pk>/edit/", views.patient_edit, name="patient_edit"),
    path("pumps/<int:pk>/", views.pump_detail, name="pump"),
    path("pumps/<int:pk>/refill/", views.refill_create, name="refill"),
    path("pumps/<int:pk>/refill/preview/", views.refill_preview, name="refill_preview"),
    path("pumps/<int:pk>/program/", views.program_create, name="program"),
    path("pumps/<int:pk>/program/preview/", views.program_preview, name="program_preview"),
    path("programs/<int:pk>/verify/", views.program_verify, name="program_verify"),
    path("pumps/<int:pk>/reading/", views.reading_create, name="reading"),
    path("pumps/<int:pk>/event/", views.event_create, name="event"),
    path("pumps/<int:pk>/explant/", views.explant, name="explant"),
    path("pumps/<int:pk>/replace/", views.replace, name="replace"),
    path("pumps/<int:pk>/appointments/", views.appointments, name="appointments"),
    path("pumps/<int:pk>/worksheet/", views.worksheet, name="worksheet"),
    path("pumps/<int:pk>/assessment/", views_dose.assessment_create, name="assessment"),
    path("pumps/<int:pk>/comedications/", views_dose.comedication_add, name="comedication_add"),
    path("pumps/<int:pk>/comedications/<int:comedication>/stop/", views_dose.comedication_stop,
         name="comedication_stop"),
    path("pumps/<int:pk>/comedications/<int:comedication>/void/", views_dose.comedication_void,
         name="comedication_void"),
    path("appointments/<int:pk>/", views.appointment_update, name="appointment_update"),
    path("appointments/<int:pk>.ics", views.appointment_calendar, name="appointment_ics"),
    path("void/<str:kind>/<int:pk>/", views.void, name="void"),
    path("alerts/", views.alert_inbox, name="alerts"),
    path("alerts/<int:pk>/acknowledge/", views.alert_acknowledge, name="alert_acknowledge"),
    path("clinics/<slug:code>/settings/", views.clinic_settings, name="clinic_settings"),
    path("planning/", views_planning.planning_index, name="planning_index"),
    path("clinics/<slug:code>/planning/", views_planning.planning_page, name="planning"),
    path("clinics/<slug:code>/planning/book/", views_planning.planning_book, name="planning_book"),
    path("clinics/<slug:code>/planning/capacity/", views_planning.planning_capacity, name="planning_capacity"),
    path("clinics/<slug:code>/planning/feeds/", views_planning.planning_feeds, name="planning_feeds"),
    path("clinics/<slug:code>/planning/my-feed/", views_planning.planning_my_feed, name="planning_my_feed"),
    path("calendar/me/<str:secret>.ics", calendar_feeds.user_feed, name="user_calendar_feed"),
    path("calendar/<slug:code>/<str:secret>.ics", calendar_feeds.clinic_feed, name="calendar_feed"),
]
