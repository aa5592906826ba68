"""The vocabulary of a visit assessment (docs/clinical-rules.md §15): the Modified Ashworth
Scale, the Penn Spasm Frequency Scale, and the withdrawal and overdose signs of intrathecal
baclofen that the symptom screen asks about one by one.

Pure: no Django, no project imports. The model fields, the forms, the API, FHIR and the
alert rules all take their codes and words from here, so a sign is named once.
"""

from __future__ import annotations

#: Modified Ashworth Scale grades, in order (Bohannon and Smith, 1987).
ASHWORTH_GRADES: tuple[tuple[str, str], ...] = (
    ("0", "0: no increase in muscle tone"),
    ("1", "1: slight increase, a catch and release at the end of the range"),
    ("1+", "1+: slight increase, a catch then minimal resistance through less than half the range"),
    ("2", "2: more marked increase through most of the range, the part still easily moved"),
    ("3", "3: considerable increase, passive movement difficult"),
    ("4", "4: the part rigid in flexion or extension"),
)

#: The numeric value of each grade for charts and FHIR (1+ sits between 1 and 2).
ASHWORTH_VALUE: dict[str, float] = {"0": 0.0, "1": 1.0, "1+": 1.5, "2": 2.0, "3": 3.0, "4": 4.0}

#: Penn Spasm Frequency Scale (Penn et al., 1989).
PENN_GRADES: tuple[tuple[int, str], ...] = (
    (0, "0: no spasms"),
    (1, "1: mild spasms induced by stimulation"),
    (2, "2: infrequent full spasms, less than once an hour"),
    (3, "3: spasms more often than once an hour"),
    (4, "4: spasms more often than ten times an hour"),
)

#: The four limbs an Ashworth grade is recorded for: (field suffix, words).
LIMBS: tuple[tuple[str, str], ...] = (
    ("upper_left", "left arm"),
    ("upper_right", "right arm"),
    ("lower_left", "left leg"),
    ("lower_right", "right leg"),
)

#: Signs of intrathecal baclofen withdrawal (product label, boxed warning): (code, words).
WITHDRAWAL_SIGNS: tuple[tuple[str, str], ...] = (
    ("baseline_spasticity", "return of baseline spasticity"),
    ("pruritus", "pruritus (itching)"),
    ("hypotension", "hypotension"),
    ("paresthesias", "paresthesias"),
    ("high_fever", "high fever"),
    ("altered_mental_status", "altered mental status"),
    ("rebound_spasticity", "exaggerated rebound spasticity"),
    ("muscle_rigidity", "muscle rigidity"),
)

#: Signs of intrathecal baclofen overdose (product label): (code, words).
OVERDOSE_SIGNS: tuple[tuple[str, str], ...] = (
    ("drowsiness", "drowsiness"),
    ("lightheadedness", "lightheadedness"),
    ("dizziness", "dizziness"),
    ("somnolence", "somnolence"),
    ("respiratory_depression", "respiratory depression"),
    ("seizures", "seizures"),
    ("rostral_hypotonia", "rostral progression of hypotonia"),
    ("loss_of_consciousness", "loss of consciousness"),
)

WITHDRAWAL_FIELD_PREFIX = "withdrawal_"
OVERDOSE_FIELD_PREFIX = "overdose_"


def withdrawal_fields() -> list[str]:
    """The model field names of the withdrawal signs, in the label's order."""
    return [WITHDRAWAL_FIELD_PREFIX + code for code, _ in WITHDRAWAL_SIGNS]


def overdose_fields() -> list[str]:
    """The model field names of the overdose signs, in the label's order."""
    return [OVERDOSE_FIELD_PREFIX + code for code, _ in OVERDOSE_SIGNS]


def ashworth_fields() -> list[str]:
    return ["ashworth_" + suffix for suffix, _ in LIMBS]
