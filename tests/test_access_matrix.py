"""Access matrix (README, Security): every URL pattern x every role x own / other clinic.

``MATRIX`` below is the single declaration of who gets what. Each key is a URL pattern
exactly as ``django.urls.get_resolver()`` spells it (admin excluded, except its login
page); each value is a list of requests to make for that pattern:

    (method, path, expected for a record of clinic A ("own"), expected for clinic B ("other"))

``path`` placeholders are filled with the ids of clinic A's records for "own" and of
clinic B's for "other". An expected row is one status code per role, in ``ROLES`` order;
``None`` for "other" means the URL names no clinic record (lists, login, ...).

Every user below is a member of clinic A only (the superuser of none); every API token
belongs to clinic A. Writes are sent with an empty body: the test asserts the *auth*
outcome (302 to the login page / 401 / 403 / 404); for a permitted role a 400 (the empty
body is invalid) or a 200 form re-display is the expected "allowed" answer.

A URL pattern that is not declared here fails ``test_every_url_pattern_is_declared``:
add new URLs to the matrix.

Besides the status code, every 200 answer to a role that is not a superuser must not
contain clinic B's identifying strings (a list leaking another clinic's records).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from clinic.models import ApiClient, Clinic, Membership
from pumps import services as s
from pumps.alerting.evaluate import evaluate_pump
from pumps.models import Alert, AlertKind, Appointment, Event, Program, Severity, SweepRun

#             anon viewer nurse presc pharm admin super tokRO tokRW revoked
ROLES = ("anon", "viewer", "nurse", "prescriber", "pharmacist", "admin", "superuser",
         "token_ro", "token_rw", "token_revoked")

# A Bearer header means nothing to a staff page: a token caller is anonymous there (302
# to the login page). The superuser sees clinic B's records like clinic A's.

MATRIX: dict[str, list[tuple[str, str, str, str | None]]] = {
    # ---------------------------------------------------------------- public
    #                                                              anon vie nur pre pha adm sup tRO tRW rev
    "health/": [
        ("GET", "/health/",                                        "200 200 200 200 200 200 200 200 200 200", None)],
    "favicon.ico": [
        ("GET", "/favicon.ico",                                    "200 200 200 200 200 200 200 200 200 200", None)],
    "admin/login/": [
        ("GET", "/admin/login/",                                   "200 200 200 200 200 200 302 200 200 200", None)],
    "accounts/login/": [
        ("GET", "/accounts/login/",                                "200 200 200 200 200 200 200 200 200 200", None)],
    "accounts/logout/": [
        ("GET", "/accounts/logout/",                               "405 405 405 405 405 405 405 405 405 405", None),
        ("POST", "/accounts/logout/",                              "302 302 302 302 302 302 302 302 302 302", None)],
    "accounts/password_change/": [
        ("GET", "/accounts/password_change/",                      "302 200 200 200 200 200 200 302 302 302", None)],
    "accounts/password_change/done/": [
        ("GET", "/accounts/password_change/done/",                 "302 200 200 200 200 200 200 302 302 302", None)],
    "accounts/password_reset/": [
        ("GET", "/accounts/password_reset/",                       "200 200 200 200 200 200 200 200 200 200", None)],
    "accounts/password_reset/done/": [
        ("GET", "/accounts/password_reset/done/",                  "200 200 200 200 200 200 200 200 200 200", None)],
    "accounts/reset/<uidb64>/<token>/": [
        ("GET", "/accounts/reset/MQ/bad-token/",                   "200 200 200 200 200 200 200 200 200 200", None)],
    "accounts/reset/done/": [
        ("GET", "/accounts/reset/done/",                           "200 200 200 200 200 200 200 200 200 200", None)],
    # ---------------------------------------------------------------- staff pages
    #                                                              anon vie nur pre pha adm sup tRO tRW rev
    "": [
        ("GET", "/",                                               "302 200 200 200 200 200 200 302 302 302", None)],
    "alerts/": [
        ("GET", "/alerts/",                                        "302 200 200 200 200 200 200 302 302 302", None)],
    "patients/<int:pk>/": [
        ("GET", "/patients/{patient}/",                            "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "patients/<int:pk>/edit/": [
        ("GET", "/patients/{patient}/edit/",                       "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/patients/{patient}/edit/",                      "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "pumps/<int:pk>/": [
        ("GET", "/pumps/{pump}/",                                  "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "pumps/<int:pk>/refill/": [
        ("GET", "/pumps/{pump}/refill/",                           "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/refill/",                          "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/refill/preview/": [  # a preview computes, saves nothing: every reader
        ("POST", "/pumps/{pump}/refill/preview/",                  "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "pumps/<int:pk>/program/": [  # only a prescriber enters a program
        ("GET", "/pumps/{pump}/program/",                          "302 403 403 200 403 403 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/program/",                         "302 403 403 400 403 403 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/program/preview/": [
        ("POST", "/pumps/{pump}/program/preview/",                 "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "programs/<int:pk>/verify/": [  # only a prescriber verifies a program
        ("POST", "/programs/{program}/verify/",                    "302 403 403 302 403 403 302 302 302 302",
                                                                   "302 404 404 404 404 404 302 302 302 302")],
    "pumps/<int:pk>/reading/": [
        ("GET", "/pumps/{pump}/reading/",                          "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/reading/",                         "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/event/": [
        ("GET", "/pumps/{pump}/event/",                            "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/event/",                           "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/explant/": [
        ("GET", "/pumps/{pump}/explant/",                          "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/explant/",                         "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/replace/": [
        ("GET", "/pumps/{pump}/replace/",                          "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/replace/",                         "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/appointments/": [  # reading the list: everyone; scheduling: writers
        ("GET", "/pumps/{pump}/appointments/",                     "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/pumps/{pump}/appointments/",                    "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "pumps/<int:pk>/worksheet/": [
        ("GET", "/pumps/{pump}/worksheet/",                        "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "appointments/<int:pk>/": [
        ("POST", "/appointments/{appointment}/",                   "302 403 302 302 302 302 302 302 302 302",
                                                                   "302 404 404 404 404 404 302 302 302 302")],
    "appointments/<int:pk>.ics": [
        ("GET", "/appointments/{appointment}.ics",                 "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "void/<str:kind>/<int:pk>/": [
        ("GET", "/void/refill/{refill}/",                          "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/void/refill/{refill}/",                         "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        # with a reason: the refill carried the program, so only a prescriber voids it
        ("POST", "/void/refill/{refill}/ +VOID_BODY",              "302 403 403 302 403 403 302 302 302 302",
                                                                   "302 404 404 404 404 404 302 302 302 302"),
        ("POST", "/void/reading/{reading}/",                       "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/void/event/{event}/",                           "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/void/appointment/{appointment}/",               "302 403 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/void/program/{program}/",                       "302 403 403 200 403 403 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    "alerts/<int:pk>/acknowledge/": [
        ("POST", "/alerts/{alert}/acknowledge/",                   "302 403 302 302 302 302 302 302 302 302",
                                                                   "302 404 404 404 404 404 302 302 302 302"),
        # a critical alert needs a reason: without one the form comes back (400)
        ("POST", "/alerts/{flag}/acknowledge/",                    "302 403 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "clinics/<slug:code>/settings/": [  # clinic administrators only
        ("GET", "/clinics/{clinic}/settings/",                     "302 403 403 403 403 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/clinics/{clinic}/settings/",                    "302 403 403 403 403 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302")],
    # Refill planning: every member reads the plan of their clinic (another clinic's: 404);
    # those who record book (an empty post books nothing: back to the page); only a
    # clinic administrator changes the capacity and the calendar feeds (an empty post: 400).
    "planning/": [  # to the planning page of the user's (first) clinic
        ("GET", "/planning/",                                      "302 302 302 302 302 302 302 302 302 302", None)],
    "clinics/<slug:code>/planning/": [
        ("GET", "/clinics/{clinic}/planning/",                     "302 200 200 200 200 200 200 302 302 302",
                                                                   "302 404 404 404 404 404 200 302 302 302"),
        ("POST", "/clinics/{clinic}/planning/",                    "302 405 405 405 405 405 405 302 302 302",
                                                                   "302 405 405 405 405 405 405 302 302 302")],
    "clinics/<slug:code>/planning/book/": [
        ("GET", "/clinics/{clinic}/planning/book/",                "302 405 405 405 405 405 405 302 302 302",
                                                                   "302 405 405 405 405 405 405 302 302 302"),
        ("POST", "/clinics/{clinic}/planning/book/",               "302 403 302 302 302 302 302 302 302 302",
                                                                   "302 404 404 404 404 404 302 302 302 302")],
    "clinics/<slug:code>/planning/capacity/": [
        ("POST", "/clinics/{clinic}/planning/capacity/",           "302 403 403 403 403 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    "clinics/<slug:code>/planning/feeds/": [
        ("POST", "/clinics/{clinic}/planning/feeds/",              "302 403 403 403 403 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    # Every member creates or revokes their own calendar feed (an empty post names no
    # action: 400); another clinic's planning page is 404 to them.
    "clinics/<slug:code>/planning/my-feed/": [
        ("POST", "/clinics/{clinic}/planning/my-feed/",            "302 400 400 400 400 400 400 302 302 302",
                                                                   "302 404 404 404 404 404 400 302 302 302")],
    # The secret in the URL is the only credential (a calendar application cannot sign
    # in): whoever asks, an active secret of the clinic named answers 200; a wrong or
    # revoked secret, or a secret of another clinic (clinic B's under clinic A's code),
    # answers 404.
    "calendar/<slug:code>/<str:secret>.ics": [
        ("GET", "/calendar/north/{feed}.ics",                      "200 200 200 200 200 200 200 200 200 200",
                                                                   "404 404 404 404 404 404 404 404 404 404"),
        ("GET", "/calendar/{clinic}/not-the-secret.ics",           "404 404 404 404 404 404 404 404 404 404",
                                                                   "404 404 404 404 404 404 404 404 404 404"),
        ("GET", "/calendar/{clinic}/{revoked_feed}.ics",           "404 404 404 404 404 404 404 404 404 404",
                                                                   "404 404 404 404 404 404 404 404 404 404")],
    # A personal feed: its secret is the only credential, whoever asks (the refills
    # assigned to clinic A's nurse); a wrong or revoked secret answers 404.
    "calendar/me/<str:secret>.ics": [
        ("GET", "/calendar/me/{my_feed}.ics",                      "200 200 200 200 200 200 200 200 200 200", None),
        ("GET", "/calendar/me/not-the-secret.ics",                 "404 404 404 404 404 404 404 404 404 404", None),
        ("GET", "/calendar/me/{revoked_my_feed}.ics",              "404 404 404 404 404 404 404 404 404 404", None)],
    # ---------------------------------------------------------------- REST API
    # Staff call it with their session; a read-only token or a viewer gets 403 on any
    # write (checked before the record is looked up, so it is 403 for clinic B too).
    #                                                              anon vie nur pre pha adm sup tRO tRW rev
    "api/v1/worklist/": [
        ("GET", "/api/v1/worklist/",                               "401 200 200 200 200 200 200 200 200 401", None)],
    # The refill plan: a token plans for its own clinic; staff name the clinic with
    # ?clinic=<code> (needed by a superuser, who sees every clinic: 400 without it). A
    # clinic the caller cannot see answers 404, for a token too. Booking needs a role that
    # records or a read-write token (403 before the body is read); an empty body is 400.
    "api/v1/refill-plan/": [
        ("GET", "/api/v1/refill-plan/",                            "401 200 200 200 200 200 400 200 200 401", None),
        ("GET", "/api/v1/refill-plan/?clinic={clinic}",            "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/refill-plan/book/": [
        ("POST", "/api/v1/refill-plan/book/",                      "401 403 400 400 400 400 400 403 400 401", None),
        ("POST", "/api/v1/refill-plan/book/?clinic={clinic}",      "401 403 400 400 400 400 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/webhook/": [  # webhooks belong to API clients
        ("GET", "/api/v1/webhook/",                                "401 403 403 403 403 403 403 200 200 401", None),
        ("PUT", "/api/v1/webhook/",                                "401 403 403 403 403 403 403 403 400 401", None)],
    "api/v1/^pumps/(?P<pk>[^/.]+)/history/$": [
        ("GET", "/api/v1/pumps/{pump}/history/",                   "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/schema/": [
        ("GET", "/api/v1/schema/",                                 "401 200 200 200 200 200 200 200 200 401", None)],
    "api/v1/docs/": [  # HTML docs: a staff session
        ("GET", "/api/v1/docs/",                                   "302 200 200 200 200 200 200 302 302 302", None)],
    "api/v1/redoc/": [
        ("GET", "/api/v1/redoc/",                                  "302 200 200 200 200 200 200 302 302 302", None)],
    "api/v1/^patients/$": [
        ("GET", "/api/v1/patients/",                               "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/patients/",                              "401 403 400 400 400 400 400 403 400 401", None)],
    "api/v1/^patients/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/patients/{patient}/",                     "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("PATCH", "/api/v1/patients/{patient}/",                   "401 403 200 200 200 200 200 403 200 401",
                                                                   "401 403 404 404 404 404 200 403 404 401")],
    "api/v1/^pumps/$": [
        ("GET", "/api/v1/pumps/",                                  "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/pumps/",                                 "401 403 400 400 400 400 400 403 400 401", None)],
    "api/v1/^pumps/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/pumps/{pump}/",                           "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("PATCH", "/api/v1/pumps/{pump}/",                         "401 403 200 200 200 200 200 403 200 401",
                                                                   "401 403 404 404 404 404 200 403 404 401")],
    "api/v1/^pumps/(?P<pk>[^/.]+)/explant/$": [
        ("POST", "/api/v1/pumps/{pump}/explant/",                  "401 403 400 400 400 400 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/^pumps/(?P<pk>[^/.]+)/projection/$": [
        ("GET", "/api/v1/pumps/{pump}/projection/",                "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^programs/$": [
        ("GET", "/api/v1/programs/",                               "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/programs/",                              "401 403 400 400 400 400 400 403 400 401", None),
        # a complete program: only a prescriber (or a read-write client naming one) enters it;
        # clinic B's pump is not a pump the caller can name (400, nothing saved); a signed-in
        # user is the one who entered it: the superuser naming matrix_prescriber is 400
        ("POST", "/api/v1/programs/ +PROGRAM_BODY",                "401 403 403 201 403 403 400 403 201 401",
                                                                   "401 403 400 400 400 400 400 403 400 401")],
    "api/v1/^programs/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/programs/{program}/",                     "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^programs/(?P<pk>[^/.]+)/verify/$": [  # only a prescriber (or a read-write client naming one)
        ("POST", "/api/v1/programs/{program}/verify/",             "401 403 403 200 403 403 200 403 400 401",
                                                                   "401 403 404 404 404 404 200 403 404 401")],
    "api/v1/^programs/(?P<pk>[^/.]+)/void/$": [
        ("POST", "/api/v1/programs/{program}/void/",               "401 403 403 400 403 403 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/^refills/$": [
        ("GET", "/api/v1/refills/",                                "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/refills/",                               "401 403 400 400 400 400 400 403 400 401", None)],
    "api/v1/^refills/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/refills/{refill}/",                       "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^refills/(?P<pk>[^/.]+)/void/$": [  # {refill} carried the program: a prescriber's void
        ("POST", "/api/v1/refills/{refill}/void/",                 "401 403 403 400 403 403 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/^readings/$": [
        ("GET", "/api/v1/readings/",                               "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/readings/",                              "401 403 400 400 400 400 400 403 400 401", None)],
    "api/v1/^readings/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/readings/{reading}/",                     "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^readings/(?P<pk>[^/.]+)/void/$": [
        ("POST", "/api/v1/readings/{reading}/void/",               "401 403 400 400 400 400 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/^alerts/$": [
        ("GET", "/api/v1/alerts/",                                 "401 200 200 200 200 200 200 200 200 401", None)],
    "api/v1/^alerts/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/alerts/{alert}/",                         "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^alerts/(?P<pk>[^/.]+)/acknowledge/$": [
        ("POST", "/api/v1/alerts/{alert}/acknowledge/",            "401 403 200 200 200 200 200 403 200 401",
                                                                   "401 403 404 404 404 404 200 403 404 401"),
        ("POST", "/api/v1/alerts/{flag}/acknowledge/",             "401 403 400 400 400 400 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/^events/$": [
        ("GET", "/api/v1/events/",                                 "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/events/",                                "401 403 400 400 400 400 400 403 400 401", None)],
    "api/v1/^events/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/events/{event}/",                         "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^events/(?P<pk>[^/.]+)/void/$": [
        ("POST", "/api/v1/events/{event}/void/",                   "401 403 400 400 400 400 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    "api/v1/^appointments/$": [
        ("GET", "/api/v1/appointments/",                           "401 200 200 200 200 200 200 200 200 401", None),
        ("POST", "/api/v1/appointments/",                          "401 403 400 400 400 400 400 403 400 401", None)],
    "api/v1/^appointments/(?P<pk>[^/.]+)/$": [
        ("GET", "/api/v1/appointments/{appointment}/",             "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("PATCH", "/api/v1/appointments/{appointment}/",           "401 403 200 200 200 200 200 403 200 401",
                                                                   "401 403 404 404 404 404 200 403 404 401")],
    "api/v1/^appointments/(?P<pk>[^/.]+)/ics/$": [
        ("GET", "/api/v1/appointments/{appointment}/ics/",         "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401")],
    "api/v1/^appointments/(?P<pk>[^/.]+)/void/$": [
        ("POST", "/api/v1/appointments/{appointment}/void/",       "401 403 400 400 400 400 400 403 400 401",
                                                                   "401 403 404 404 404 404 400 403 404 401")],
    # No endpoint: a JSON 404 after authentication (401 first: an anonymous caller learns
    # nothing of which paths exist); a write by a caller who may write nothing is 403.
    "api/v1/^.*$": [
        ("GET", "/api/v1/no-such-endpoint/",                       "401 404 404 404 404 404 404 404 404 401", None),
        ("GET", "/api/v1/worklist",                                "401 404 404 404 404 404 404 404 404 401", None),
        ("POST", "/api/v1/no-such-endpoint/",                      "401 403 404 404 404 404 404 403 404 401", None)],
    "^api/": [  # /api/ itself and other versions
        ("GET", "/api/",                                           "401 404 404 404 404 404 404 404 404 401", None),
        ("GET", "/api/v2/pumps/",                                  "401 404 404 404 404 404 404 404 404 401", None),
        ("POST", "/api/v2/pumps/",                                 "401 403 404 404 404 404 404 403 404 401", None)],
    # ---------------------------------------------------------------- FHIR R4 (read only)
    # A write is refused: 403 for a caller who may write nothing (the role check comes
    # first), 405 for the others. A Flag is a critical alert of a pump.
    #                                                              anon vie nur pre pha adm sup tRO tRW rev
    "fhir/r4/metadata": [
        ("GET", "/fhir/r4/metadata",                               "401 200 200 200 200 200 200 200 200 401", None)],
    "fhir/r4/^(?P<resource_type>[A-Za-z]+)/(?P<pk>[A-Za-z0-9\\-.]{1,64})/?$": [
        ("GET", "/fhir/r4/Patient/{patient}",                      "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("GET", "/fhir/r4/Device/{pump}",                          "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("GET", "/fhir/r4/MedicationRequest/{program}",            "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("GET", "/fhir/r4/MedicationAdministration/{refill}",      "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("GET", "/fhir/r4/Appointment/{appointment}",              "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("GET", "/fhir/r4/Flag/{flag}",                            "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 404 404 404 404 404 200 404 404 401"),
        ("POST", "/fhir/r4/Patient/{patient}",                     "401 403 405 405 405 405 405 403 405 401",
                                                                   "401 403 405 405 405 405 405 403 405 401")],
    "fhir/r4/^(?P<resource_type>[A-Za-z]+)/?$": [
        ("GET", "/fhir/r4/Patient",                                "401 200 200 200 200 200 200 200 200 401", None),
        ("GET", "/fhir/r4/Device",                                 "401 200 200 200 200 200 200 200 200 401", None),
        ("GET", "/fhir/r4/MedicationRequest",                      "401 200 200 200 200 200 200 200 200 401", None),
        ("GET", "/fhir/r4/MedicationAdministration",               "401 200 200 200 200 200 200 200 200 401", None),
        ("GET", "/fhir/r4/Appointment",                            "401 200 200 200 200 200 200 200 200 401", None),
        ("GET", "/fhir/r4/Flag",                                   "401 200 200 200 200 200 200 200 200 401", None),
        ("GET", "/fhir/r4/Patient?_id={patient}",                  "401 200 200 200 200 200 200 200 200 401",
                                                                   "401 200 200 200 200 200 200 200 200 401"),
        ("POST", "/fhir/r4/Patient",                               "401 403 405 405 405 405 405 403 405 401", None)],
}

#: Bodies named in a path with `` +NAME`` (placeholders filled like the path's).
BODIES = {
    "PROGRAM_BODY": {"pump": "{pump}", "effective_at": "2026-03-01T12:00:00-06:00", "mode": "continuous",
                     "concentration_mcg_per_ml": "1000", "daily_dose_mcg": "450", "entered_by": "matrix_prescriber"},
    "VOID_BODY": {"reason": "Entered on the wrong pump"},
}

#: Cases whose expectation above is the one we want but not yet what the code answers:
#: (method, path as declared, role, "own"/"other") -> why. Each runs as a strict xfail, so
#: it fails the day the code is fixed (then delete its entry here).
KNOWN_DISCREPANCIES: dict[tuple[str, str, str, str], str] = {}

#: Admin URLs are the Django admin's own (staff only); its login page is in the matrix.
ADMIN_PREFIX = "admin/"
ADMIN_DECLARED = {"admin/login/"}

CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=CHICAGO)

#: Strings that identify clinic B's records: no non-superuser answer may contain them.
OTHER_MARKERS = ("Zyxwother", "MRN-OTHER-4242", "SN-OTHER-4242")


# ---------------------------------------------------------------------- the pattern walk


def all_patterns(resolver=None, prefix: str = "") -> list[str]:
    resolver = resolver or get_resolver()
    found = []
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found.extend(all_patterns(entry, route))
        elif isinstance(entry, URLPattern):
            found.append(route)
    return found


def declared_patterns() -> set[str]:
    return {route for route in all_patterns() if not route.startswith(ADMIN_PREFIX) or route in ADMIN_DECLARED}


def test_every_url_pattern_is_declared():
    routes = declared_patterns()
    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, f"URL patterns missing from MATRIX (add them): {missing}"
    assert not stale, f"MATRIX declares URL patterns that no longer exist: {stale}"


def test_known_discrepancies_name_declared_cases():
    declared = {(method, path, role, clinic) for cases in MATRIX.values() for method, path, own, other in cases
                for clinic, row in (("own", own), ("other", other)) if row is not None for role in ROLES}
    assert set(KNOWN_DISCREPANCIES) <= declared, sorted(set(KNOWN_DISCREPANCIES) - declared)


def test_matrix_rows_are_well_formed():
    for route, cases in MATRIX.items():
        assert cases, route
        for method, _path, own, other in cases:
            assert method in {"GET", "POST", "PUT", "PATCH"}, (route, method)
            for row in (own, other):
                if row is not None:
                    codes = row.split()
                    assert len(codes) == len(ROLES), (route, row)
                    assert set(codes) <= {"200", "201", "302", "400", "401", "403", "404", "405"}, (route, row)


def _cases():
    for cases in MATRIX.values():
        for method, path, own, other in cases:
            for clinic, row in (("own", own), ("other", other)):
                if row is None:
                    if clinic == "other":
                        continue
                    clinic = "-"
                    row = own
                for role, code in zip(ROLES, row.split(), strict=True):
                    reason = KNOWN_DISCREPANCIES.get((method, path, role, clinic))
                    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                    yield pytest.param(method, path, role, clinic, int(code), marks=marks,
                                       id=f"{method} {path} | {role} | {clinic}")


# ---------------------------------------------------------------------- the data (built once)


@dataclass
class ClinicRecords:
    clinic: Clinic
    patient: object
    pump: object
    program: object
    refill: object
    reading: object
    event: object
    appointment: object
    alert: object
    flag: object
    feed: str  # the secret of an active calendar feed of the clinic
    revoked_feed: str  # the secret of a revoked one
    my_feed: str  # the secret of the nurse's own calendar feed (the appointment is assigned to them)
    revoked_my_feed: str  # the secret of a revoked one

    def fill(self, path: str) -> str:
        return path.format(
            clinic=self.clinic.code, patient=self.patient.pk, pump=self.pump.pk, program=self.program.pk,
            refill=self.refill.pk, reading=self.reading.pk, event=self.event.pk,
            appointment=self.appointment.pk, alert=self.alert.pk, flag=self.flag.pk,
            feed=self.feed, revoked_feed=self.revoked_feed, my_feed=self.my_feed,
            revoked_my_feed=self.revoked_my_feed,
        )


def _records(clinic: Clinic, *, family: str, mrn: str, serial: str, actor: s.Actor,
             prescriber: s.Actor) -> ClinicRecords:
    """``prescriber`` records the first fill with its program (only a prescriber enters a
    program); the program stays unverified (the verify URL, the unverified_program alert).
    ``actor`` (a nurse) records the rest."""
    from clinic.models import CalendarFeed
    from tests.factories import make_patient, make_pump

    patient = make_patient(clinic, mrn=mrn, family_name=family, given_name="Ana")
    pump = make_pump(patient, model_code="8637-40", implanted_on=date(2026, 1, 15), serial=serial)
    refill = s.record_refill(
        pump=pump, performed_at=T0, added_volume_ml=D("36"), concentration_mcg_per_ml=D("1000"), actor=prescriber,
        program=s.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("450")), now=T0,
    )
    program = Program.objects.filter(pump=pump).latest("pk")
    assert program.verified_at is None
    reading = s.record_reading(pump=pump, read_at=T0 + timedelta(days=7), reservoir_volume_ml=D("33"), actor=actor,
                               now=T0 + timedelta(days=7))
    event = s.record_event(pump=pump, kind=Event.Kind.ALARM_REPORTED, occurred_at=T0 + timedelta(days=8),
                           actor=actor, now=T0 + timedelta(days=8))
    appointment = s.schedule_appointment(pump=pump, scheduled_for=NOW + timedelta(days=14), actor=actor, now=NOW,
                                         kind=Appointment.Kind.REFILL, assigned_to=actor.user)
    pump.refresh_from_db()
    evaluate_pump(pump, NOW)
    alert = Alert.objects.filter(pump=pump).order_by("pk").first()
    assert alert is None or alert.kind == AlertKind.UNVERIFIED_PROGRAM, alert.kind
    if alert is None:  # the program is unverified, so there should be one; make sure anyway
        alert = Alert.objects.create(clinic=clinic, pump=pump, kind=AlertKind.UNVERIFIED_PROGRAM, episode="test",
                                     severity=Severity.WARNING, created_at=NOW, message="test alert")
    flag = Alert.objects.create(clinic=clinic, pump=pump, kind=AlertKind.REFILL_OVERDUE, episode="matrix",
                                severity=Severity.CRITICAL, created_at=NOW, message="critical test alert")
    _, feed = CalendarFeed.create_with_secret(clinic=clinic, name="Front desk")
    revoked, revoked_feed = CalendarFeed.create_with_secret(clinic=clinic, name="Old front desk")
    revoked.revoke()
    _, my_feed = CalendarFeed.create_with_secret(user=actor.user, name="Phone")
    revoked, revoked_my_feed = CalendarFeed.create_with_secret(user=actor.user, name="Old phone")
    revoked.revoke()
    return ClinicRecords(clinic, patient, pump, program, refill, reading, event, appointment, alert, flag,
                         feed, revoked_feed, my_feed, revoked_my_feed)


@dataclass
class World:
    own: ClinicRecords
    other: ClinicRecords
    users: dict
    tokens: dict


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Two clinics with one of every record, users of every role in clinic A, tokens of
    clinic A. Built once in an outer transaction rolled back at the end of the module;
    each test runs in its own savepoint (``db``), so a write made by a test is undone."""
    from tests.factories import make_clinic

    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            clinic_a = make_clinic(code="north", name="North Clinic", timezone="America/Chicago")
            clinic_b = make_clinic(code="south", name="South Clinic", timezone="Australia/Sydney")
            User = get_user_model()
            users = {}
            for role, membership in (("viewer", "viewer"), ("nurse", "nurse"), ("prescriber", "prescriber"),
                                     ("pharmacist", "pharmacist"), ("admin", "admin")):
                user = User.objects.create_user(username=f"matrix_{role}", password=None)
                Membership.objects.create(user=user, clinic=clinic_a, role=membership)
                users[role] = user
            users["superuser"] = User.objects.create_superuser(username="matrix_super", password=None,
                                                                 email="su@example.org")
            # The programs are entered by a prescriber who is not users["prescriber"], so that
            # users["prescriber"] is a second clinician who may verify clinic A's program.
            prescriber_a = User.objects.create_user(username="matrix_prescriber_entry", password=None)
            Membership.objects.create(user=prescriber_a, clinic=clinic_a, role="prescriber")
            nurse_b = User.objects.create_user(username="matrix_nurse_b", password=None)
            Membership.objects.create(user=nurse_b, clinic=clinic_b, role="nurse")
            prescriber_b = User.objects.create_user(username="matrix_prescriber_b", password=None)
            Membership.objects.create(user=prescriber_b, clinic=clinic_b, role="prescriber")
            own = _records(clinic_a, family="Garcia", mrn="MRN-OWN-1", serial="SN-OWN-1",
                           actor=s.Actor(users["nurse"]), prescriber=s.Actor(prescriber_a))
            other = _records(clinic_b, family=OTHER_MARKERS[0], mrn=OTHER_MARKERS[1], serial=OTHER_MARKERS[2],
                             actor=s.Actor(nurse_b), prescriber=s.Actor(prescriber_b))
            # /health/ answers 503 until the alert sweep has run
            from django.utils import timezone

            SweepRun.objects.create(started_at=timezone.now(), finished_at=timezone.now())
            tokens = {}
            _, tokens["token_ro"] = ApiClient.create_with_token(clinic=clinic_a, name="EHR read", can_write=False)
            _, tokens["token_rw"] = ApiClient.create_with_token(clinic=clinic_a, name="EHR write", can_write=True)
            revoked, tokens["token_revoked"] = ApiClient.create_with_token(clinic=clinic_a, name="EHR old",
                                                                           can_write=True)
            revoke = getattr(revoked, "revoke", None)
            if revoke is not None:
                revoke()
            else:
                ApiClient.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
            assert ApiClient.objects.get(pk=revoked.pk).is_revoked
            yield World(own=own, other=other, users=users, tokens=tokens)
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


def client_for(world: World, role: str, *, api: bool):
    client = APIClient() if api else Client()
    if role in world.users:
        client.force_login(world.users[role])
    elif role in world.tokens:
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {world.tokens[role]}"}
        if api:
            client.credentials(**kwargs)
        else:
            client.defaults.update(kwargs)
    return client


# ---------------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("method", "path", "role", "clinic", "expected"), list(_cases()))
def test_access(world, db, method, path, role, clinic, expected):
    records = world.other if clinic == "other" else world.own
    path, _, body_name = path.partition(" +")
    url = records.fill(path)
    data = {k: records.fill(v) for k, v in BODIES[body_name].items()} if body_name else {}
    if "pump" in data:
        data["pump"] = int(data["pump"])
    api = url.startswith(("/api/", "/fhir/"))
    client = client_for(world, role, api=api)
    if method == "GET":
        response = client.get(url)
    elif api:
        response = getattr(client, method.lower())(url, data, format="json")
    else:
        response = getattr(client, method.lower())(url, data)

    body = response.content.decode(errors="replace") if not getattr(response, "streaming", False) else ""
    assert response.status_code == expected, (
        f"{method} {url} as {role} ({clinic} clinic): expected {expected}, got {response.status_code}: {body[:300]}"
    )
    if expected == 302 and role in ("anon", "token_ro", "token_rw", "token_revoked") and not api:
        location = response["Location"]
        if method == "GET" or "logout" not in url:
            assert "/login/" in location, f"{method} {url} as {role}: redirected to {location}, not the login page"
    if response.status_code == 200 and role != "superuser":
        for marker in OTHER_MARKERS:
            assert marker not in body, f"{method} {url} as {role}: clinic B's {marker!r} is visible"
