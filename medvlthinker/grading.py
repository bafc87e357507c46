"""Answer extraction and grading (docs/protocol.md section 3), standard library only.

The original has two graders that disagree; both live here, selected by ``mode``:

- ``"strict"``: used while generating and for pass-rate counting. The FIRST ``<answer>...</answer>`` body
  (dot matches newline), stripped; without a tag, the whole output unchanged.
- ``"regrade"``: what the published table uses. The LAST answer body, stripped, cut to its first non-empty line;
  without a tag, a chain of "answer:"-style fallbacks; finally the literal tags are removed.

>>> extract_answer("<think>hm</think><answer> B </answer>", mode="strict")
'B'
>>> extract_answer("<answer>A</answer> wait <answer>C. Lung\\nbecause</answer>", mode="regrade")
'C. Lung'
>>> extract_answer("So the answer is: D", mode="regrade")
'D'
>>> grade_answer("c. lung", "Lung", "C")
True
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from medvlthinker.schema import parse_options

MODES = ("strict", "regrade")

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FIRST_LINE = re.compile(r"\s*([^\n\r]+)")
# Order matters: the first pattern with any match wins, and within it the LAST match. "." does not match a
# newline, so the capture is the rest of that line; "\s*" may run over line breaks before it.
_FALLBACKS = tuple(
    re.compile(prefix + r"(.*)", re.IGNORECASE)
    for prefix in (r"answer:\s*", r"answer is:\s*", r"answer is\s*", r"is:\s*")
)
_LITERAL_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def extract_answer(text: str | None, mode: str = "regrade") -> str:
    """The prediction inside a model output, as the original's ``mode`` grader sees it.

    ``None`` (a missing generation) is read as the empty string.

    >>> extract_answer("no tags here ", mode="strict")
    'no tags here '
    >>> extract_answer("<answer>\\n A \\n</answer>", mode="strict")
    'A'
    >>> extract_answer("Answer: B\\nAnswer: C", mode="regrade")
    'C'
    >>> extract_answer("<think>only thinking</think>", mode="regrade")
    'only thinking'
    """
    if text is None:
        text = ""
    if mode == "strict":
        match = _ANSWER_TAG.search(text)
        return match.group(1).strip() if match else text
    if mode != "regrade":
        raise ValueError(f"unknown extraction mode {mode!r}; use one of {MODES}")

    bodies = _ANSWER_TAG.findall(text)
    if bodies:
        body = bodies[-1].strip()
        line = _FIRST_LINE.match(body)
        prediction = line.group(1).strip() if line else body
    else:
        for pattern in _FALLBACKS:
            found = pattern.findall(text)
            if found:
                prediction = found[-1]
                break
        else:
            prediction = text.strip()
    for tag in _LITERAL_TAGS:
        prediction = prediction.replace(tag, "")
    return prediction.strip()


def grade_answer(
    prediction: str | None,
    answer: str,
    answer_label: str | None = None,
    llava_med_rule: bool = False,
) -> bool:
    """Whether ``prediction`` names the option (``answer_label``, ``answer``).

    After stripping and lower-casing, the prediction must equal ``"{label}. {answer}"``, the label, or the
    answer text. With ``llava_med_rule`` (checked first) it is also enough that the answer text is a
    substring of the prediction.

    >>> grade_answer(" B ", "No", "B"), grade_answer("b. no", "No", "B"), grade_answer("NO", "No", "B")
    (True, True, True)
    >>> grade_answer("B. No.", "No", "B")
    False
    >>> grade_answer("I think it is no", "No", "B", llava_med_rule=True)
    True
    """
    if prediction is None:
        return False
    pred = prediction.strip().lower()
    if llava_med_rule and answer.lower() in prediction.lower():
        return True
    candidates = [answer.strip().lower()]
    if answer_label is not None:
        candidates += [f"{answer_label}. {answer}".strip().lower(), answer_label.strip().lower()]
    return pred in candidates


def to_letter(
    prediction: str | None,
    options: str | Mapping[str, Any],
    llava_med_rule: bool = False,
) -> str | None:
    """The first option letter, in option order, whose (letter, text) grades ``prediction`` correct; else None.

    Option order decides collisions, as in the original: with options {"A": "B", "B": "A"} the prediction "B"
    maps to A (it equals A's text) before B's letter is tried.

    >>> to_letter("B", {"A": "B", "B": "A"})
    'A'
    >>> to_letter("maybe", {"A": "Yes", "B": "No"}) is None
    True
    """
    for letter, text in parse_options(options, strict=False).items():
        if grade_answer(prediction, text, letter, llava_med_rule):
            return letter
    return None


def is_conversion_failure(pred_letter: str | None, options: str | Mapping[str, Any]) -> bool:
    """Whether a rollout's pred_letter is not an option letter (the prediction could not be mapped to one)."""
    return pred_letter is None or pred_letter not in parse_options(options, strict=False)


def _field(source: Mapping[str, Any], name: str) -> Any:
    try:
        return source[name]
    except KeyError:
        raise KeyError(
            f"{name!r} missing for row dataset_name={source.get('dataset_name')!r}, "
            f"dataset_index={source.get('dataset_index')!r}; join the record with its eval row by dataset_index "
            f"(or pass options=...) to grade it"
        ) from None


def grade_rollout(
    output_text: str | None,
    row_or_fields: Mapping[str, Any],
    mode: str = "strict",
    llava_med_rule: bool = False,
) -> dict[str, Any]:
    """Grade one model output against a row (or any mapping with options, answer, answer_label).

    Returns ``{"output_text", "pred_letter", "is_correct"}``. ``pred_letter`` is the option letter the
    prediction maps to (:func:`to_letter`) or, when none does, the extracted prediction kept as is (a
    conversion failure, see :func:`is_conversion_failure`). ``is_correct`` is ``grade_answer`` of the extracted
    prediction against the row's (answer_label, answer); the two agree except when option texts collide with
    letters or with each other.

    >>> row = {"options": '{"A": "Yes", "B": "No"}', "answer_label": "B", "answer": "No"}
    >>> grade_rollout("<think>...</think><answer>B. No</answer>", row)["pred_letter"]
    'B'
    >>> grade_rollout("<think>...</think><answer>Perhaps</answer>", row)
    {'output_text': '<think>...</think><answer>Perhaps</answer>', 'pred_letter': 'Perhaps', 'is_correct': False}
    """
    options = _field(row_or_fields, "options")
    answer = _field(row_or_fields, "answer")
    answer_label = _field(row_or_fields, "answer_label")
    prediction = extract_answer(output_text, mode)
    letter = to_letter(prediction, options, llava_med_rule)
    return {
        "output_text": output_text,
        "pred_letter": prediction if letter is None else letter,
        "is_correct": grade_answer(prediction, answer, answer_label, llava_med_rule),
    }


def grade_record(
    record: Mapping[str, Any],
    mode: str = "regrade",
    llava_med_rule: bool = False,
    *,
    options: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of an eval record with every rollout re-graded from its output_text, and num_rollouts/num_correct
    recomputed. Other fields of the record and of each rollout are kept. ``options`` overrides the record's own
    (records written without options are joined with the eval set by dataset_index)."""
    fields = dict(record)
    if options is not None:
        fields["options"] = options
    rollouts = []
    for rollout in _field(record, "rollouts"):
        graded = dict(rollout)
        graded.update(grade_rollout(rollout.get("output_text"), fields, mode, llava_med_rule))
        rollouts.append(graded)
    fields["rollouts"] = rollouts
    fields["num_rollouts"] = len(rollouts)
    fields["num_correct"] = sum(1 for r in rollouts if r["is_correct"])
    return fields


def majority_vote(letters: Iterable[str | None]) -> str | None:
    """The most frequent non-None entry; a tie goes to the tied entry that occurs first. None when empty.

    >>> majority_vote(["B", "A", "A", "B", None, None, None])
    'B'
    """
    votes = [letter for letter in letters if letter is not None]
    if not votes:
        return None
    counts = Counter(votes)
    top = max(counts.values())
    return next(letter for letter in votes if counts[letter] == top)


def row_accuracy(record: Mapping[str, Any]) -> float:
    """Fraction of a record's rollouts that are correct: num_correct / num_rollouts."""
    n = record["num_rollouts"]
    if not n:
        raise ValueError(
            f"record dataset_name={record.get('dataset_name')!r}, dataset_index={record.get('dataset_index')!r} "
            f"has no rollouts; regenerate it before scoring"
        )
    return record["num_correct"] / n
