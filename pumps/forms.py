"""Forms of the staff pages. They parse and convert input (local wall-clock times in the
clinic's zone to aware instants, decimals, flex steps); the services validate and write,
and their field-level messages are put back on the form (``apply_service_errors``)."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.safestring import mark_safe

from clinic import permissions
from clinic.models import WEEKDAY_NAMES, AlertRecipient, Clinic, ClinicClosure

from . import projection as pj
from . import services, symptoms
from .models import Appointment, CoMedication, DrugProduct, Event, Patient, Program, Pump, PumpModel, WithdrawalPlan

ML_FIELD = {"max_digits": 9, "decimal_places": 3}
DOSE_FIELD = {"max_digits": 12, "decimal_places": 3}


# ----------------------------------------------------------------- typed numbers

MSG_VOLUME = "Enter a volume in mL, e.g. 1.5"
MSG_DAILY_DOSE = "Enter a dose in mcg/day, e.g. 250"
MSG_BOLUS = "Enter a dose in mcg, e.g. 50"
MSG_CONCENTRATION = "Enter a concentration in mcg/mL, e.g. 500"

_DECIMAL_POINT = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_THOUSANDS_LIKE = re.compile(r"^[+-]?[1-9]\d{0,2},\d{3}$")


def parse_decimal(text: str, message: str) -> Decimal:
    """A number as staff type it, with one rule for every clinic whatever its locale:

    - digits with an optional decimal point: ``1.5``, ``36``, ``.5``;
    - a single comma as the decimal separator when there is no point: ``1,5`` is 1.5
      (clinics whose staff write a decimal comma need nothing configured);
    - a comma followed by exactly three digits after a non-zero integer part (``1,500``)
      is refused: it may be 1.5 or a thousands separator for 1500, and a dose a thousand
      times off must never be guessed;
    - anything else (letters, units, spaces inside, exponents, two separators) is refused
      with ``message``, e.g. "Enter a volume in mL, e.g. 1.5".

    Signs are parsed: whether a value may be negative or zero is the services' rule."""
    value = str(text).strip()
    if _DECIMAL_COMMA.match(value):
        if _THOUSANDS_LIKE.match(value):
            whole, part = value.split(",")
            raise forms.ValidationError(
                f"{value} is ambiguous (decimal comma or thousands separator): type {whole}.{part} or {whole}{part}.",
                code="ambiguous",
            )
        value = value.replace(",", ".")
    if not _DECIMAL_POINT.match(value):
        raise forms.ValidationError(message, code="invalid")
    return Decimal(value)


class TypedDecimalField(forms.DecimalField):
    """A decimal typed into a text box (``inputmode="decimal"`` brings up the numeric
    keyboard on a tablet). Not ``<input type="number">``: its parsing follows the
    browser's locale, and Chromium read "1,5" typed in a number box as 15. What was
    typed stays in the box when it is refused."""

    def __init__(self, *, message: str, **kwargs):
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off",
                                                            "spellcheck": "false"}))
        super().__init__(**kwargs)
        self.message = message
        self.error_messages["invalid"] = message

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, Decimal):
            return value
        return parse_decimal(value, self.message)


def volume_field(label: str, **kwargs) -> TypedDecimalField:
    return TypedDecimalField(label=label, message=MSG_VOLUME, **ML_FIELD, **kwargs)


def dose_field(label: str, message: str, **kwargs) -> TypedDecimalField:
    return TypedDecimalField(label=label, message=message, **DOSE_FIELD, **kwargs)


# ------------------------------------------------------------------ local instants


class LocalDateTimeField(forms.DateTimeField):
    """A ``datetime-local`` input read as a wall-clock time in the clinic's zone.

    A time that does not exist there (skipped by a spring-forward change) is refused; a
    time that occurs twice (the repeated hour in autumn) is refused too unless the user
    picks which, because an hour's error moves a projection by an hour."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

    def __init__(self, *args, tz: tzinfo | None = None, **kwargs):
        self.tz = tz
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, datetime):
            naive = value.replace(tzinfo=None) if timezone.is_naive(value) else None
            if naive is None:
                return value
        else:
            naive = None
            for fmt in self.input_formats:
                try:
                    naive = datetime.strptime(str(value).strip(), fmt)  # noqa: DTZ007 - local wall clock, localized below
                    break
                except ValueError:
                    continue
            if naive is None:
                raise forms.ValidationError("Enter a date and time (YYYY-MM-DD HH:MM).", code="invalid")
        if not 1900 <= naive.year <= 2999:
            raise forms.ValidationError("Enter a date between the years 1900 and 2999.", code="invalid")
        return localize(naive, self.tz)

    def prepare_value(self, value):
        if isinstance(value, datetime) and timezone.is_aware(value) and self.tz is not None:
            return value.astimezone(self.tz).strftime("%Y-%m-%dT%H:%M")
        return value


def localize(naive: datetime, tz: tzinfo) -> datetime:
    """A naive local wall-clock time in ``tz`` as an aware instant, refusing times that do
    not exist or exist twice there."""
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        # Round-trip tells a skipped time (it comes back different) from a repeated one.
        if first.astimezone(pj.UTC).astimezone(tz).replace(tzinfo=None) != naive:
            raise forms.ValidationError(
                f"{naive:%Y-%m-%d %H:%M} does not exist in {tz}: the clocks skipped that hour.", code="nonexistent"
            )
        raise forms.ValidationError(
            f"{naive:%Y-%m-%d %H:%M} happened twice in {tz} (the clocks went back): enter a time outside "
            "the repeated hour, or record it a few minutes later.",
            code="ambiguous",
        )
    return first


def now_local_input(tz: tzinfo, now: datetime | None = None) -> str:
    return (now or timezone.now()).astimezone(tz).strftime("%Y-%m-%dT%H:%M")


# ----------------------------------------------------------------- service errors


def apply_service_errors(form: forms.Form, exc: services.ServiceValidationError, *, prefix_map=None) -> None:
    """Put a ``ServiceValidationError``'s messages on the form's fields: keys such as
    ``added_volume_ml`` or ``program.daily_dose_mcg`` (``prefix_map`` maps ``program.``
    to the form's ``program_``); anything else becomes a non-field error."""
    prefix_map = prefix_map or {}
    for key, messages in exc.message_dict.items():
        if isinstance(messages, dict):  # a nested object: program: {field: [...]}
            for sub, sub_messages in messages.items():
                _add(form, f"{key}.{sub}", sub_messages, prefix_map)
            continue
        _add(form, key, messages, prefix_map)


def _add(form, key: str, messages, prefix_map) -> None:
    name = key
    for source, target in prefix_map.items():
        if key.startswith(source):
            name = target + key[len(source):]
    messages = [messages] if isinstance(messages, str) else list(messages)
    if name in form.fields:
        for message in messages:
            form.add_error(name, _sentence(message))
    else:
        label = "" if key in ("non_field_errors", "pump", "__all__") else f"{key.replace('_', ' ')}: "
        for message in messages:
            form.add_error(None, label + _sentence(message))


def _sentence(message: str) -> str:
    message = str(message)
    return message[:1].upper() + message[1:] if message else message


# ---------------------------------------------------------------------- programs


STEP_LINE = re.compile(r"^\s*(\d{1,2}:\d{2})\s+([0-9]+(?:[.,][0-9]+)?)\s*(?:mcg/h(?:our)?)?\s*$")


def parse_steps(text: str) -> list[dict] | str:
    """Flex steps typed one per line as ``HH:MM dose`` (mcg/hour); returns the list the
    services take, or an error message."""
    steps = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        match = STEP_LINE.match(line)
        if not match:
            return f"Line {number}: write a start time and a dose, for example 07:00 20.5"
        start, dose = match.groups()
        if len(start) == 4:
            start = "0" + start
        steps.append({"start": start, "dose_mcg_per_hour": dose.replace(",", ".")})
    return steps


def steps_text(steps: list[dict]) -> str:
    return "\n".join(f"{s['start']} {Decimal(str(s['dose_mcg_per_hour'])).normalize():f}" for s in steps or [])


class WithdrawalPlanFieldsMixin:
    """What is done against withdrawal when intrathecal delivery stops (an explant, a
    program of 0 mcg/day and no bolus): docs/clinical-rules.md §15. The fields may always
    be posted (blank is not given); the service says when a plan is missing or not wanted,
    under the same names (``program_`` inside a refill)."""

    def add_withdrawal_plan_fields(self, prefix: str = "") -> None:
        self.fields[f"{prefix}withdrawal_plan"] = forms.ChoiceField(
            label="Plan against withdrawal", choices=WithdrawalPlan.Plan.choices, widget=forms.RadioSelect,
            required=False,
            help_text="Stopping intrathecal baclofen abruptly can cause life-threatening withdrawal.",
        )
        self.fields[f"{prefix}oral_bridge_dose"] = forms.CharField(
            label="Oral baclofen bridge: dose", max_length=200, required=False,
            help_text="With an oral baclofen bridge, e.g. 10 mg four times a day.",
        )
        self.fields[f"{prefix}withdrawal_plan_reason"] = forms.CharField(
            label="No plan: why", max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}),
            help_text="With none, a critical withdrawal-risk alert stays open for the withdrawal window, until "
                      "acknowledged with a reason.",
        )

    def withdrawal_plan_values(self, prefix: str = "") -> dict:
        data = self.cleaned_data
        return {
            "withdrawal_plan": data.get(f"{prefix}withdrawal_plan") or None,
            "oral_bridge_dose": data.get(f"{prefix}oral_bridge_dose") or "",
            "withdrawal_plan_reason": data.get(f"{prefix}withdrawal_plan_reason") or "",
        }


class ProgramFieldsMixin(WithdrawalPlanFieldsMixin):
    """The fields of a program (docs/clinical-rules.md §4): concentration, continuous or flex, on-demand bolus,
    override reason. ``program_prefix`` is "" for the program page, "program_" when the
    program rides on a refill."""

    program_prefix = ""

    def add_program_fields(self, *, with_concentration: bool) -> None:
        p = self.program_prefix
        if with_concentration:
            self.fields[f"{p}concentration_mcg_per_ml"] = dose_field(
                "Concentration (mcg/mL)", MSG_CONCENTRATION, required=False,
                help_text="The drug in the reservoir.",
            )
        self.fields[f"{p}mode"] = forms.ChoiceField(
            label="Mode", choices=Program.Mode.choices, initial=Program.Mode.CONTINUOUS, widget=forms.RadioSelect,
            required=False,
        )
        self.fields[f"{p}daily_dose_mcg"] = dose_field(
            "Daily dose (mcg/day)", MSG_DAILY_DOSE, required=False,
            help_text="Continuous mode: the basal dose over 24 hours.",
        )
        self.fields[f"{p}steps"] = forms.CharField(
            label="Flex steps: local start time and dose in mcg/hour, one per line", required=False,
            widget=forms.Textarea(attrs={"rows": 4, "placeholder": "07:00 18 mcg/hour\n22:00 25 mcg/hour"}),
            help_text="Flex mode: each step runs at its rate in mcg/hour from its start time until the next, "
                      "cyclic over 24 hours (\"07:00 18\" is 18 mcg/hour from 07:00).",
        )
        self.fields[f"{p}ptm_bolus_mcg"] = dose_field("On-demand bolus (mcg)", MSG_BOLUS, required=False)
        self.fields[f"{p}ptm_max_per_day"] = forms.IntegerField(
            label="On-demand boluses, maximum per day", required=False,
        )
        self.fields[f"{p}override_reason"] = forms.CharField(
            label="Titration override reason", max_length=500, required=False,
            widget=forms.Textarea(attrs={"rows": 2}),
            help_text="Needed only when the daily dose rises above the titration limit in 24 hours.",
        )
        self.fields[f"{p}comedication_confirmed"] = forms.BooleanField(
            label="I have weighed the CNS depressant(s) above and confirm this dose increase", required=False,
        )
        self.add_withdrawal_plan_fields(p)

    def clean_steps_field(self, name: str):
        raw = self.cleaned_data.get(name, "")
        parsed = parse_steps(raw)
        if isinstance(parsed, str):
            raise forms.ValidationError(parsed)
        return parsed

    def program_input(self, concentration: Decimal | None = None) -> services.ProgramInput:
        p = self.program_prefix
        data = self.cleaned_data
        mode = data.get(f"{p}mode") or Program.Mode.CONTINUOUS
        flex = mode == Program.Mode.FLEX
        return services.ProgramInput(
            concentration_mcg_per_ml=(
                concentration if concentration is not None else data.get(f"{p}concentration_mcg_per_ml")
            ),
            mode=mode,
            daily_dose_mcg=None if flex else data.get(f"{p}daily_dose_mcg"),
            steps=(data.get(f"{p}steps") or []) if flex else None,
            ptm_bolus_mcg=data.get(f"{p}ptm_bolus_mcg"),
            ptm_max_per_day=data.get(f"{p}ptm_max_per_day"),
            override_reason=data.get(f"{p}override_reason") or "",
            comedication_confirmed=bool(data.get(f"{p}comedication_confirmed")),
            **self.withdrawal_plan_values(p),
        )


class ProgramForm(ProgramFieldsMixin, forms.Form):
    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.fields["effective_at"] = LocalDateTimeField(
            label=f"Takes effect at (local time, {pump.clinic.timezone})", tz=pump.clinic.tz
        )
        self.add_program_fields(with_concentration=True)
        self.order_fields(["effective_at"])

    def clean_steps(self):
        return self.clean_steps_field("steps")


# ---------------------------------------------------------- visit assessments

NOT_ASSESSED = ("", "not assessed")
SIGN_NAMES = [*symptoms.withdrawal_fields(), *symptoms.overdose_fields()]
YES_NO = (("no", "no"), ("yes", "yes"))
MSG_PAIN = "Enter a whole number from 0 to 10, e.g. 3"


def _yes(value) -> bool:
    return value == "yes" or value is True


class AssessmentFieldsMixin:
    """The fields of a visit assessment (docs/clinical-rules.md §15): the Modified Ashworth
    grade of each limb (blank: not assessed), the Penn spasm frequency, pain 0-10, a goal
    note and the symptom screen, yes or no for each withdrawal and each overdose sign, in
    the words of ``pumps.symptoms``. ``assessment_prefix`` is "" on the assessment page,
    "assessment_" when the assessment rides on a refill."""

    assessment_prefix = ""

    def add_assessment_fields(self) -> None:
        p = self.assessment_prefix
        for suffix, limb in symptoms.LIMBS:
            self.fields[f"{p}ashworth_{suffix}"] = forms.ChoiceField(
                label=f"Modified Ashworth, {limb}", choices=[NOT_ASSESSED, *symptoms.ASHWORTH_GRADES], required=False,
            )
        self.fields[f"{p}penn_spasm_frequency"] = forms.TypedChoiceField(
            label="Penn spasm frequency", choices=[NOT_ASSESSED, *symptoms.PENN_GRADES], coerce=int,
            empty_value=None, required=False,
        )
        self.fields[f"{p}pain_score"] = forms.IntegerField(
            label="Pain (0-10)", required=False, error_messages={"invalid": MSG_PAIN},
            widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off", "class": "short"}),
            help_text="0: no pain, 10: the worst imaginable. Empty: not asked.",
        )
        self.fields[f"{p}goal_note"] = forms.CharField(
            label="Goal of treatment (in the patient's words)", required=False,
            widget=forms.Textarea(attrs={"rows": 2}),
        )
        for prefix, signs in ((symptoms.WITHDRAWAL_FIELD_PREFIX, symptoms.WITHDRAWAL_SIGNS),
                              (symptoms.OVERDOSE_FIELD_PREFIX, symptoms.OVERDOSE_SIGNS)):
            for code, words in signs:
                self.fields[f"{p}{prefix}{code}"] = forms.TypedChoiceField(
                    label=words[:1].upper() + words[1:], choices=YES_NO, coerce=_yes, empty_value=False,
                    required=False, initial="no", widget=forms.RadioSelect(attrs={"class": "yes-no"}),
                )

    def assessment_fields(self) -> dict[str, list]:
        """The bound fields by group, for the template: limbs and scores, withdrawal signs,
        overdose signs."""
        p = self.assessment_prefix
        return {
            "scores": [self[f"{p}{name}"] for name in
                       [*symptoms.ashworth_fields(), "penn_spasm_frequency", "pain_score", "goal_note"]],
            "withdrawal": [self[f"{p}{name}"] for name in symptoms.withdrawal_fields()],
            "overdose": [self[f"{p}{name}"] for name in symptoms.overdose_fields()],
        }

    def assessment_input(self, notes: str = "") -> services.AssessmentInput:
        p = self.assessment_prefix
        data = self.cleaned_data
        return services.AssessmentInput(
            **{name: data.get(f"{p}{name}") or "" for name in symptoms.ashworth_fields()},
            penn_spasm_frequency=data.get(f"{p}penn_spasm_frequency"),
            pain_score=data.get(f"{p}pain_score"),
            goal_note=data.get(f"{p}goal_note") or "",
            notes=notes,
            signs={name: bool(data.get(f"{p}{name}")) for name in SIGN_NAMES},
        )

    def assessment_given(self) -> bool:
        """Anything entered in the assessment's fields (a score, pain, a goal, a sign
        answered yes)."""
        p = self.assessment_prefix
        data = self.cleaned_data
        names = [*symptoms.ashworth_fields(), "penn_spasm_frequency", "pain_score", "goal_note", *SIGN_NAMES]
        return any(data.get(f"{p}{name}") not in (None, "", False) for name in names)


# ----------------------------------------------------------------------- refills


class RefillForm(ProgramFieldsMixin, AssessmentFieldsMixin, forms.Form):
    program_prefix = "program_"
    assessment_prefix = "assessment_"

    performed_at = LocalDateTimeField(label="Performed at (local time)")
    extracted_volume_ml = volume_field(
        "Extracted residual volume (mL)", required=False,
        help_text=(
            "What you drew out of the reservoir (0 if nothing could be drawn). "
            "Empty for the first fill after implant."
        ),
    )
    residual_left_ml = volume_field(
        "Residual deliberately left in (mL)", required=False,
        help_text="Usually 0.",
    )
    added_volume_ml = volume_field("Volume added (mL)")
    drug_product = forms.ModelChoiceField(
        label="Drug product", queryset=DrugProduct.objects.select_related("drug").order_by("code"), required=False,
        to_field_name="code", empty_label="(not named: the drug's default stability applies)",
    )
    drug_product.label_from_instance = lambda product: product.name  # staff know products by name
    concentration_mcg_per_ml = dose_field("Concentration (mcg/mL)", MSG_CONCENTRATION)
    lot_number = forms.CharField(label="Lot number", max_length=64, required=False)
    lot_expiry = forms.DateField(label="Lot expiry", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    changes_program = forms.BooleanField(
        label="This refill changes the program (new concentration or dose)", required=False,
    )
    bridge_bolus_ml = volume_field(
        "Bridge bolus (mL)", required=False,
        help_text=(
            "On a concentration change: the volume given as a bridge bolus "
            "to clear the catheter of the old drug."
        ),
    )
    notes = forms.CharField(label="Notes", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    confirm_duplicate = forms.BooleanField(
        label="Yes: this is a second refill of this pump, not a duplicate entry", required=False,
    )

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.fields["performed_at"].tz = pump.clinic.tz
        self.fields["performed_at"].label = f"Performed at (local time, {pump.clinic.timezone})"
        self.add_program_fields(with_concentration=False)
        self.fields["assessment_recorded"] = forms.BooleanField(
            label="Record a visit assessment with this refill", required=False,
            help_text="Also saved when any score, pain, goal or sign below is filled in.",
        )
        self.add_assessment_fields()

    def clean_program_steps(self):
        return self.clean_steps_field("program_steps")

    def program_or_none(self) -> services.ProgramInput | None:
        if not self.cleaned_data.get("changes_program"):
            return None
        return self.program_input(concentration=self.cleaned_data.get("concentration_mcg_per_ml"))

    def save(self, *, actor: services.Actor):
        data = self.cleaned_data
        return services.record_refill(
            pump=self.pump,
            performed_at=data["performed_at"],
            extracted_volume_ml=data.get("extracted_volume_ml"),
            added_volume_ml=data.get("added_volume_ml"),
            residual_left_ml=data.get("residual_left_ml"),
            bridge_bolus_ml=data.get("bridge_bolus_ml"),
            concentration_mcg_per_ml=data.get("concentration_mcg_per_ml"),
            drug_product=data.get("drug_product"),
            lot_number=data.get("lot_number") or "",
            lot_expiry=data.get("lot_expiry"),
            notes=data.get("notes") or "",
            program=self.program_or_none(),
            assessment=self.assessment_or_none(),
            confirm_duplicate=bool(data.get("confirm_duplicate")),
            actor=actor,
        )

    def assessment_or_none(self) -> services.AssessmentInput | None:
        """The visit assessment of the refill: when asked for, or when anything of it was
        filled in (nothing typed is lost for a box left unticked)."""
        if not (self.cleaned_data.get("assessment_recorded") or self.assessment_given()):
            return None
        return self.assessment_input()


# --------------------------------------------------------------- other records


class ReadingForm(forms.Form):
    read_at = LocalDateTimeField(label="Read at (local time)")
    reservoir_volume_ml = volume_field("Reservoir volume reported by the pump (mL)")
    eri = forms.BooleanField(label="Elective replacement indicator (ERI) shown", required=False)
    notes = forms.CharField(label="Notes", required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.fields["read_at"].tz = pump.clinic.tz
        self.fields["read_at"].label = f"Read at (local time, {pump.clinic.timezone})"

    def save(self, *, actor):
        data = self.cleaned_data
        return services.record_reading(
            pump=self.pump, read_at=data["read_at"], reservoir_volume_ml=data["reservoir_volume_ml"],
            eri=bool(data.get("eri")), notes=data.get("notes") or "", actor=actor,
        )


class EventForm(forms.Form):
    kind = forms.ChoiceField(label="Event", choices=Event.Kind.choices)
    occurred_at = LocalDateTimeField(label="Occurred at (local time)")
    notes = forms.CharField(label="Notes", required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.fields["occurred_at"].tz = pump.clinic.tz
        self.fields["occurred_at"].label = f"Occurred at (local time, {pump.clinic.timezone})"

    def save(self, *, actor):
        data = self.cleaned_data
        return services.record_event(
            pump=self.pump, kind=data["kind"], occurred_at=data["occurred_at"], notes=data.get("notes") or "",
            actor=actor,
        )


class ExplantForm(WithdrawalPlanFieldsMixin, forms.Form):
    explanted_on = forms.DateField(label="Explanted on", widget=forms.DateInput(attrs={"type": "date"}))
    reason = forms.CharField(label="Reason", max_length=300, required=False)

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.add_withdrawal_plan_fields()

    def save(self, *, actor):
        return services.explant_pump(
            pump=self.pump, explanted_on=self.cleaned_data["explanted_on"],
            reason=self.cleaned_data.get("reason") or "", actor=actor, **self.withdrawal_plan_values(),
        )


# ------------------------------------------------------------ dose and response


class AssessmentForm(AssessmentFieldsMixin, forms.Form):
    assessed_at = LocalDateTimeField(label="Assessed at (local time)")
    notes = forms.CharField(label="Notes", required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.fields["assessed_at"].tz = pump.clinic.tz
        self.fields["assessed_at"].label = f"Assessed at (local time, {pump.clinic.timezone})"
        self.add_assessment_fields()

    def save(self, *, actor):
        data = self.cleaned_data
        return services.record_assessment(
            pump=self.pump, assessed_at=data["assessed_at"], data=self.assessment_input(data.get("notes") or ""),
            actor=actor,
        )


class CoMedicationForm(forms.Form):
    name = forms.CharField(label="Drug and dose", max_length=200,
                           help_text="As prescribed, e.g. oxycodone 10 mg twice a day.")
    category = forms.ChoiceField(label="Category", choices=[("", "choose"), *CoMedication.Category.choices])
    started_on = forms.DateField(label="Started on", widget=forms.DateInput(attrs={"type": "date"}))
    notes = forms.CharField(label="Notes", required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def save(self, *, patient: Patient, actor):
        data = self.cleaned_data
        return services.record_comedication(
            patient=patient, name=data["name"], category=data["category"], started_on=data["started_on"],
            notes=data.get("notes") or "", actor=actor,
        )


@functools.lru_cache(maxsize=16)
def comedication_fields_html(started_on: str) -> str:
    """The fields of an empty ``CoMedicationForm`` starting on ``started_on`` (ISO date),
    as the pump page shows them under "Add a co-medication": the same for every pump on
    a given day, so rendered once per day and process (Django's field templates took
    about a tenth of the page's time). A form with errors is rendered by its own page."""
    form = CoMedicationForm(initial={"started_on": started_on})
    return mark_safe("".join(f'<div class="field">{field.as_field_group()}</div>' for field in form))  # noqa: S308 - Django's rendering


class CoMedicationStopForm(forms.Form):
    stopped_on = forms.DateField(label="Stopped on", widget=forms.DateInput(attrs={"type": "date"}))

    def save(self, *, comedication: CoMedication, actor):
        return services.stop_comedication(comedication=comedication, stopped_on=self.cleaned_data["stopped_on"],
                                          actor=actor)


class ReplaceForm(forms.Form):
    replaced_on = forms.DateField(label="Replaced on", widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.ModelChoiceField(label="New pump model", queryset=PumpModel.objects.order_by("code"),
                                   to_field_name="code")
    serial_number = forms.CharField(label="New pump serial number", max_length=64)
    udi = forms.CharField(label="UDI (optional)", max_length=200, required=False)
    low_reservoir_alarm_ml = volume_field(
        "Low-reservoir alarm volume (mL)", required=False,
        help_text="Empty: the model's default.",
    )
    reason = forms.CharField(label="Reason for replacement", max_length=300, required=False,
                             initial="replacement")

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump

    def save(self, *, actor):
        data = self.cleaned_data
        return services.replace_pump(
            old=self.pump, model=data["model"], serial_number=data["serial_number"], replaced_on=data["replaced_on"],
            low_reservoir_alarm_ml=data.get("low_reservoir_alarm_ml"), udi=data.get("udi") or "",
            reason=data.get("reason") or "replacement", actor=actor,
        )


class AppointmentForm(forms.Form):
    scheduled_for = LocalDateTimeField(label="Date and time (local time)")
    kind = forms.ChoiceField(label="Kind", choices=Appointment.Kind.choices, initial=Appointment.Kind.REFILL)
    assigned_to = forms.ModelChoiceField(label="Assigned to", required=False,
                                         queryset=get_user_model().objects.none(), empty_label="Nobody")
    notes = forms.CharField(label="Notes", required=False, max_length=500)

    def __init__(self, *args, pump: Pump, **kwargs):
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.fields["scheduled_for"].tz = pump.clinic.tz
        self.fields["scheduled_for"].label = f"Date and time (local time, {pump.clinic.timezone})"
        # who may be assigned: the clinic's staff who record (the service checks it again)
        self.fields["assigned_to"].queryset = get_user_model().objects.filter(
            is_active=True, memberships__clinic=pump.clinic,
            memberships__role__in=list(permissions.ROLES[permissions.Action.RECORD]),
        ).order_by("username")

    def save(self, *, actor):
        data = self.cleaned_data
        return services.schedule_appointment(
            pump=self.pump, scheduled_for=data["scheduled_for"], kind=data["kind"], notes=data.get("notes") or "",
            assigned_to=data.get("assigned_to"), actor=actor,
        )


class AppointmentStatusForm(forms.Form):
    status = forms.ChoiceField(label="Status", choices=Appointment.Status.choices)


class VoidForm(forms.Form):
    reason = forms.CharField(label="Reason for voiding", max_length=500,
                             widget=forms.Textarea(attrs={"rows": 2}))


class PatientForm(forms.ModelForm):
    class Meta:
        model = Patient
        fields = [
            "mrn", "family_name", "given_name", "birth_date", "spasticity_origin", "withdrawal_high_risk",
            "high_risk_reason", "phone", "caregiver_phone", "status",
        ]
        widgets = {"birth_date": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")}
        labels = {"withdrawal_high_risk": "High risk of withdrawal", "high_risk_reason": "Reason (high risk)"}

    def validate_unique(self):
        """The service says whether the MRN is taken, in its own words."""

    def save_with(self, *, actor):
        data = {k: self.cleaned_data[k] for k in self.Meta.fields}
        return services.update_patient(patient=self.instance, actor=actor, **data)


# ------------------------------------------------------------------ clinic settings


class ClinicPolicyForm(forms.ModelForm):
    open_weekdays = forms.TypedMultipleChoiceField(
        label="Open weekdays", choices=list(enumerate(WEEKDAY_NAMES)), coerce=int,
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = Clinic
        fields = [
            "name", "lead_days", "high_risk_extra_days", "due_soon_days", "open_weekdays",
            "discrepancy_threshold_small_ml", "discrepancy_threshold_large_ml", "titration_limit_spinal_pct",
            "titration_limit_other_pct", "withdrawal_window_hours", "digest_hour",
        ]
        labels = {
            "lead_days": "Lead days before the alarm date",
            "high_risk_extra_days": "Extra lead days for high-risk patients",
            "due_soon_days": "Due soon within (days)",
            "withdrawal_window_hours": "Withdrawal window (hours before empty)",
            "digest_hour": "Daily digest hour (local time, 0–23)",
        }

    def save_with(self, *, actor, now: datetime) -> Clinic:
        """One transaction (the service's): the clinic (its audit row names the user) and
        the stored projections that its policy moves."""
        return services.save_clinic_policy(clinic=self.save(commit=False), actor=actor, now=now)


class RecipientForm(forms.ModelForm):
    class Meta:
        model = AlertRecipient
        fields = ["email", "escalation"]
        labels = {"email": "Alert address", "escalation": "Escalations only"}

    def __init__(self, *args, clinic: Clinic, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.clinic = clinic

    def clean(self):
        data = super().clean()
        email = (data.get("email") or "").lower()
        if email and AlertRecipient.objects.filter(
            clinic=self.instance.clinic, email__iexact=email, escalation=bool(data.get("escalation"))
        ).exists():
            self.add_error("email", "This address is already on the list.")
        data["email"] = email
        return data

    def validate_unique(self):
        """``clean`` checks the (clinic, email, escalation) pair with a clear message."""


class ClosureForm(forms.ModelForm):
    class Meta:
        model = ClinicClosure
        fields = ["date", "reason"]
        widgets = {"date": forms.DateInput(attrs={"type": "date"})}
        labels = {"date": "Closed on", "reason": "Reason (e.g. public holiday)"}

    def __init__(self, *args, clinic: Clinic, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.clinic = clinic

    def clean_date(self):
        day = self.cleaned_data["date"]
        if ClinicClosure.objects.filter(clinic=self.instance.clinic, date=day).exists():
            raise forms.ValidationError("This day is already marked closed.")
        return day

    def validate_unique(self):
        """``clean_date`` says so in words."""

    def save_with(self, *, actor, now: datetime) -> ClinicClosure:
        return services.add_closure(closure=self.save(commit=False), actor=actor, now=now)


def default_visit_time(now: datetime, tz: tzinfo) -> datetime:
    """Tomorrow 09:00 local, for a new appointment."""
    day = pj.local_date(now, tz) + timedelta(days=1)
    return datetime.combine(day, datetime.min.time()).replace(hour=9, tzinfo=tz)


class AcknowledgeForm(forms.Form):
    """Acknowledging an alert; the reason is required for a critical alert, and the
    service (``pumps.alerting.acknowledge``) says so on the field."""

    reason = forms.CharField(label="Reason for acknowledging", max_length=500, required=False,
                             widget=forms.Textarea(attrs={"rows": 2}))
