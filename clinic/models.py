"""Clinics and their policy, staff memberships with roles, API clients."""

from __future__ import annotations

import hashlib
import secrets
import zoneinfo
from datetime import date, time
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from simple_history.models import HistoricalRecords

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"'{value}' is not an IANA time zone (for example Europe/Paris)")


def validate_weekdays(value) -> None:
    if (
        not isinstance(value, list)
        or not value
        or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 or d > 6 for d in value)
    ):
        raise ValidationError("open weekdays must be a non-empty list of numbers 0 (Monday) to 6 (Sunday)")


def default_open_weekdays() -> list[int]:
    return [0, 1, 2, 3, 4]


MAX_REFILL_SLOTS = 500


def default_slots_by_weekday() -> list[None]:
    return [None] * 7


def validate_slots_by_weekday(value) -> None:
    if (
        not isinstance(value, list)
        or len(value) != 7
        or any(v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > MAX_REFILL_SLOTS)
               for v in value)
    ):
        raise ValidationError(
            f"refill slots per weekday must be 7 entries, Monday first, each empty (the daily number) or 0 to "
            f"{MAX_REFILL_SLOTS}"
        )


class Clinic(models.Model):
    """A clinic, its time zone and its policy (docs/clinical-rules.md §10 defaults)."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, validators=[validate_timezone])
    # policy
    lead_days = models.PositiveSmallIntegerField(default=7, validators=[MaxValueValidator(90)])
    high_risk_extra_days = models.PositiveSmallIntegerField(default=7, validators=[MaxValueValidator(90)])
    due_soon_days = models.PositiveSmallIntegerField(default=14, validators=[MaxValueValidator(180)])
    open_weekdays = models.JSONField(default=default_open_weekdays, validators=[validate_weekdays])
    discrepancy_threshold_small_ml = models.DecimalField(
        "discrepancy threshold, reservoir <= 20 mL (mL)", max_digits=6, decimal_places=3, default=Decimal("1.000"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    discrepancy_threshold_large_ml = models.DecimalField(
        "discrepancy threshold, reservoir > 20 mL (mL)", max_digits=6, decimal_places=3, default=Decimal("2.000"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    titration_limit_spinal_pct = models.DecimalField(
        "titration limit per 24 h, spinal origin (%)", max_digits=5, decimal_places=1, default=Decimal("30.0"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    titration_limit_other_pct = models.DecimalField(
        "titration limit per 24 h, cerebral / mixed / unknown (%)", max_digits=5, decimal_places=1,
        default=Decimal("15.0"), validators=[MinValueValidator(Decimal("0"))],
    )
    withdrawal_window_hours = models.PositiveSmallIntegerField(default=72)
    # refill planning capacity (pumps/planner.py)
    refill_slots_per_day = models.PositiveSmallIntegerField(
        "refill slots per open day", default=8, validators=[MaxValueValidator(MAX_REFILL_SLOTS)],
    )
    refill_slots_by_weekday = models.JSONField(
        "refill slots per weekday", default=default_slots_by_weekday, blank=True,
        validators=[validate_slots_by_weekday],
        help_text="Seven entries, Monday first: a number of slots for that weekday, or null for the daily number.",
    )
    refill_earliest_days = models.PositiveSmallIntegerField(
        "earliest useful refill (days before the due date)", default=14, validators=[MaxValueValidator(90)],
    )
    refill_first_visit = models.TimeField(
        "first refill visit of the day (local time)", default=time(9, 0),
        help_text="Booked refills are laid out from this time, one every 30 minutes.",
    )
    digest_hour = models.PositiveSmallIntegerField(default=7, validators=[MaxValueValidator(23)])
    #: The sweep's note that no daily digest is owed before this instant: set once every
    #: recipient has the day's digest, cleared when the recipients, the digest hour or the
    #: zone change (so a quiet sweep need not look at recipients and notifications).
    digest_settled_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["digest_settled_until"])

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def save(self, *args, **kwargs):
        fields = kwargs.get("update_fields")
        if fields is None or set(fields) != {"digest_settled_until"}:
            self.digest_settled_until = None  # the digest hour or zone may have changed
            if fields is not None:
                kwargs["update_fields"] = {*fields, "digest_settled_until"}
        super().save(*args, **kwargs)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def closure_dates(self) -> frozenset[date]:
        return frozenset(self.closures.values_list("date", flat=True))

    def slots_on_weekday(self, weekday: int) -> int:
        """Refill slots of an open day of this weekday (0 = Monday)."""
        by_day = self.refill_slots_by_weekday if isinstance(self.refill_slots_by_weekday, list) else []
        value = by_day[weekday] if len(by_day) == 7 else None
        return self.refill_slots_per_day if value is None else value

class ClinicClosure(models.Model):
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="closures")
    date = models.DateField()
    reason = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["date"]
        constraints = [models.UniqueConstraint(fields=["clinic", "date"], name="unique_closure_per_day")]

    def __str__(self) -> str:
        return f"{self.clinic.code} closed {self.date}"


class AlertRecipient(models.Model):
    """A clinic alert address (a shared mailbox); escalation addresses get escalations."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="alert_recipients")
    email = models.EmailField()
    escalation = models.BooleanField(default=False, help_text="Receives escalated alerts only.")
    history = HistoricalRecords()

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "email", "escalation"], name="unique_alert_recipient")
        ]

    def __str__(self) -> str:
        return self.email


class Role(models.TextChoices):
    NURSE = "nurse", "Nurse"
    PRESCRIBER = "prescriber", "Prescriber (physician)"
    PHARMACIST = "pharmacist", "Pharmacist"
    ADMIN = "admin", "Clinic administrator"
    VIEWER = "viewer", "Viewer"


#: Who may record what (README, Security): a viewer writes nothing; only a prescriber enters or
#: verifies a program.
CLINICAL_WRITERS = {Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.ADMIN}
PROGRAM_WRITERS = {Role.PRESCRIBER}


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    receives_alerts = models.BooleanField(default=False, help_text="E-mail this person the clinic's alerts.")
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "clinic"], name="one_membership_per_clinic")]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} at {self.clinic.code}"


def hash_token(token: str) -> str:
    """API tokens are 256-bit random strings, so one SHA-256 is enough: there is nothing
    to brute-force, and a lookup by hash stays a single indexed query."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiClientQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ApiClient(models.Model):
    """A hospital system. Its token is shown once at creation and stored hashed."""

    TOKEN_PREFIX = "pc_"

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="api_clients")
    name = models.CharField(max_length=200)
    can_write = models.BooleanField(default=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(max_length=12, editable=False, help_text="First characters of the token.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    webhook_url = models.URLField(
        max_length=500, blank=True, help_text="Every alert of the clinic is POSTed here as signed JSON."
    )
    webhook_secret = models.CharField(
        max_length=64, blank=True, editable=False, help_text="HMAC-SHA256 key of the webhook signature."
    )

    objects = ApiClientQuerySet.as_manager()

    class Meta:
        ordering = ["clinic", "name"]

    def __str__(self) -> str:
        access = "read-write" if self.can_write else "read-only"
        return f"{self.name} ({self.clinic.code}, {access})"

    @classmethod
    def create_with_token(cls, *, clinic: Clinic, name: str, can_write: bool) -> tuple[ApiClient, str]:
        token = cls.TOKEN_PREFIX + secrets.token_urlsafe(32)
        client = cls.objects.create(
            clinic=clinic, name=name, can_write=can_write, token_hash=hash_token(token), token_hint=token[:10]
        )
        return client, token

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def set_webhook(self, url: str) -> str:
        """Register (or clear, with "") the webhook URL; a new secret each time, shown once."""
        self.webhook_url = url
        self.webhook_secret = secrets.token_hex(32) if url else ""
        self.save(update_fields=["webhook_url", "webhook_secret"])
        return self.webhook_secret

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class CalendarFeedQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class CalendarFeed(models.Model):
    """A subscription URL of booked refill appointments: a clinic's
    (``/calendar/<clinic>/<secret>.ics``, ``clinic`` set) or a staff member's own, the
    appointments assigned to them in the clinics they belong to
    (``/calendar/me/<secret>.ics``, ``user`` set). The secret is shown once at creation
    and stored as its SHA-256 hash, like API tokens; a revoked feed answers 404."""

    clinic = models.ForeignKey(
        Clinic, null=True, blank=True, on_delete=models.CASCADE, related_name="calendar_feeds"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="calendar_feeds",
        help_text="A personal feed: the appointments assigned to this user.",
    )
    name = models.CharField(max_length=200, help_text="Who or what subscribes, e.g. 'Refill nurses' Outlook'.")
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_hint = models.CharField(max_length=12, editable=False, help_text="First characters of the secret.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = CalendarFeedQuerySet.as_manager()

    class Meta:
        ordering = ["clinic", "-created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(clinic__isnull=False, user__isnull=True)
                | models.Q(clinic__isnull=True, user__isnull=False),
                name="calendar_feed_of_a_clinic_or_a_user",
            )
        ]

    def __str__(self) -> str:
        owner = self.clinic.code if self.clinic_id else f"of {self.user}"
        return f"{self.name} ({owner}{', revoked' if self.revoked_at else ''})"

    @classmethod
    def create_with_secret(cls, *, clinic: Clinic | None = None, name: str, created_by=None,
                           user=None) -> tuple[CalendarFeed, str]:
        """A clinic's feed (``clinic``) or a user's own (``user``): exactly one of them."""
        if (clinic is None) == (user is None):
            raise ValueError("A calendar feed belongs to a clinic or to a user.")
        secret = secrets.token_urlsafe(32)
        feed = cls.objects.create(
            clinic=clinic, user=user, name=name, created_by=created_by, secret_hash=hash_token(secret),
            secret_hint=secret[:6],
        )
        return feed, secret

    @classmethod
    def find(cls, clinic_code: str, secret: str) -> CalendarFeed | None:
        """The active feed of this clinic with this secret, or None."""
        return cls.objects.active().select_related("clinic").filter(
            clinic__code=clinic_code, secret_hash=hash_token(secret)
        ).first()

    @classmethod
    def find_personal(cls, secret: str) -> CalendarFeed | None:
        """The active personal feed with this secret of an active user, or None."""
        return cls.objects.active().select_related("user").filter(
            user__isnull=False, user__is_active=True, secret_hash=hash_token(secret)
        ).first()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class IdempotencyRecord(models.Model):
    """The first answer to a write sent with an ``Idempotency-Key``, kept 24 hours."""

    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    body_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "key"], name="unique_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.key})"


# ------------------------------------------------------------- digest recipients


def unsettle_digests(clinic_ids) -> None:
    """Recipients changed: the next sweep checks the clinics' digests again."""
    Clinic.objects.filter(pk__in=clinic_ids).update(digest_settled_until=None)


@receiver([post_save, post_delete], sender=AlertRecipient)
@receiver([post_save, post_delete], sender=Membership)
def _recipients_changed(sender, instance, **kwargs):
    unsettle_digests([instance.clinic_id])


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _user_changed(sender, instance, update_fields=None, **kwargs):
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return
    unsettle_digests(Membership.objects.filter(user=instance, receives_alerts=True).values("clinic_id"))
