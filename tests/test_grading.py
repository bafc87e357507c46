"""Answer extraction and grading (docs/protocol.md section 3): the strict and the regrade graders."""

from __future__ import annotations

import copy
import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medvlthinker.grading as grading
from medvlthinker.grading import (
    extract_answer,
    grade_answer,
    grade_record,
    grade_rollout,
    is_conversion_failure,
    majority_vote,
    row_accuracy,
    to_letter,
)

YES_NO = '{"A": "Yes", "B": "No"}'
SWAPPED = {"A": "B", "B": "A"}  # option texts that look like letters


def test_doctests():
    assert doctest.testmod(grading).failed == 0


# ---- strict extraction ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer>B</answer>", "B"),
        ("<think>x</think><answer>  B. No  </answer>", "B. No"),
        ("<answer>A</answer> then <answer>C</answer>", "A"),  # FIRST tag
        ("<answer>\nB. No\nbecause\n</answer>", "B. No\nbecause"),  # dot matches newline, whole body
        ("<answer></answer>", ""),
        ("<answer>a<answer>b</answer>", "a<answer>b"),  # non-greedy from the first opening tag
        ("  no tag at all \n", "  no tag at all \n"),  # unchanged, not even stripped
        ("<answer> B", "<answer> B"),  # unclosed tag: no match
        ("<ANSWER>B</ANSWER>", "<ANSWER>B</ANSWER>"),  # tags are case-sensitive
        ("Answer: B", "Answer: B"),  # no fallback chain in strict mode
        ("", ""),
    ],
)
def test_strict_extraction(text, expected):
    assert extract_answer(text, mode="strict") == expected


# ---- regrade extraction -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer>B</answer>", "B"),
        ("<answer>A</answer> then <answer>C</answer>", "C"),  # LAST tag
        ("<answer>\nB. No\nbecause\n</answer>", "B. No"),  # first non-empty line of the body
        ("<answer>\n\n   C. Lung  \nmore</answer>", "C. Lung"),
        ("<answer>B\r\nC</answer>", "B"),  # \r ends the line too
        ("<answer>  </answer>", ""),  # an empty body is used, the fallbacks are not tried
        ("The answer is B <answer></answer>", ""),
        ("<answer>a<answer>b</answer>", "ab"),  # body 'a<answer>b', then the literal tag is removed
        ("<answer><think>x</think> C</answer>", "x C"),
        ("<answer> B", "B"),  # unclosed tag: no match, no fallback hit, stripped text minus the tag
        ("<think>only thinking</think>", "only thinking"),
        ("<ANSWER>B</ANSWER>", "<ANSWER>B</ANSWER>"),  # only the lower-case tags are tags
        ("", ""),
        ("   \n  ", ""),
        ("  plain text  ", "plain text"),
    ],
)
def test_regrade_extraction_with_tags(text, expected):
    assert extract_answer(text, mode="regrade") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: B", "B"),
        ("answer:B", "B"),
        ("ANSWER:   b. no  ", "b. no"),  # case-insensitive, rest of the line, stripped
        ("Answer:\n\n  B\nsecond line", "B"),  # \s* runs over line breaks
        ("Answer: A\nthinking more\nAnswer: C", "C"),  # LAST match
        ("Answer:", ""),  # a match with an empty rest still wins
        ("The answer is: C", "C"),
        ("the answer is: C\nthe answer is: D", "D"),
        ("the answer is D.", "D."),
        ("THE ANSWER IS\nE", "E"),
        ("The answer isn't clear", "n't clear"),  # quirk: 'answer is' matches inside "isn't"
        ("My choice is: A", "A"),
        ("Diagnosis: pneumonia", "pneumonia"),  # quirk: 'is:' matches inside 'Diagnosis:'
        ("it is B", "it is B"),  # 'is' without a colon is not a fallback
        ("final answer B", "final answer B"),  # 'answer' without ':' or 'is' is not either
    ],
)
def test_regrade_fallback_chain(text, expected):
    assert extract_answer(text, mode="regrade") == expected


def test_regrade_fallback_order_beats_position():
    # "answer:" is tried first, so it wins even though "answer is" occurs later in the text
    assert extract_answer("Final answer: B\nSo the answer is C", mode="regrade") == "B"
    assert extract_answer("So the answer is C\nFinal answer: B", mode="regrade") == "B"
    # "answer is:" before "answer is"
    assert extract_answer("the answer is: A\nthe answer is B", mode="regrade") == "A"
    # "answer is" before "is:"
    assert extract_answer("Diagnosis: x\nthe answer is D", mode="regrade") == "D"
    # an answer tag anywhere beats every fallback
    assert extract_answer("Answer: A\n<answer>C</answer>\nAnswer: B", mode="regrade") == "C"


def test_regrade_removes_literal_tags_from_fallback_results():
    assert extract_answer("Answer: <answer>B</answer", mode="regrade") == "B</answer"
    assert extract_answer("Answer: </think> B", mode="regrade") == "B"


def test_none_output_reads_as_empty():
    assert extract_answer(None, mode="strict") == ""
    assert extract_answer(None, mode="regrade") == ""


def test_default_mode_is_regrade_and_unknown_mode_fails():
    text = "<answer>A</answer><answer>C</answer>"
    assert extract_answer(text) == extract_answer(text, mode="regrade") == "C"
    with pytest.raises(ValueError, match="unknown extraction mode"):
        extract_answer(text, mode="lenient")


# ---- grade_answer -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("B", True),
        ("b", True),
        ("  B \n", True),
        ("No", True),
        ("no", True),
        (" NO ", True),
        ("B. No", True),
        ("b. no", True),
        ("  B. No\t", True),
        ("B.No", False),  # the space after the period is required
        ("B. No.", False),
        ("B) No", False),
        ("(B)", False),
        ("B.", False),
        ("Option B", False),
        ("No, it is not", False),
        ("A", False),
        ("Yes", False),
        ("", False),
        (None, False),
    ],
)
def test_grade_answer_forms(prediction, expected):
    assert grade_answer(prediction, "No", "B") is expected


def test_grade_answer_without_label_only_compares_the_text():
    assert grade_answer("No", "No")
    assert not grade_answer("B", "No")
    assert not grade_answer("B. No", "No")


def test_grade_answer_multiword_answer_case_and_whitespace():
    assert grade_answer("c. t2-weighted mri", "T2-weighted MRI", "C")
    assert grade_answer("T2-WEIGHTED MRI", "T2-weighted MRI", "C")
    assert not grade_answer("T2-weighted  MRI", "T2-weighted MRI", "C")  # inner whitespace counts


def test_llava_med_rule_is_a_substring_test():
    assert not grade_answer("I believe the answer is no", "No", "B")
    assert grade_answer("I believe the answer is no", "No", "B", llava_med_rule=True)
    assert grade_answer("NOT SURE", "No", "B", llava_med_rule=True)  # quirk: 'no' in 'not sure'
    assert grade_answer("B", "No", "B", llava_med_rule=True)  # the exact forms still count
    assert not grade_answer("Yes", "No", "B", llava_med_rule=True)
    assert grade_answer("", "", "B", llava_med_rule=True)  # an empty answer is in every prediction


# ---- to_letter --------------------------------------------------------------------------------------------------


def test_to_letter_basic():
    assert to_letter("B", YES_NO) == "B"
    assert to_letter("yes", YES_NO) == "A"
    assert to_letter("b. no", {"A": "Yes", "B": "No"}) == "B"
    assert to_letter("Maybe", YES_NO) is None
    assert to_letter("", YES_NO) is None
    assert to_letter(None, YES_NO) is None


def test_to_letter_option_texts_that_look_like_letters():
    # option order decides: "B" equals A's text before it equals B's letter
    assert to_letter("B", SWAPPED) == "A"
    assert to_letter("A", SWAPPED) == "A"  # A's letter
    assert to_letter("A. B", SWAPPED) == "A"
    assert to_letter("B. A", SWAPPED) == "B"
    assert to_letter("b. a", json.dumps(SWAPPED)) == "B"


def test_to_letter_llava_rule_takes_the_first_option_contained():
    assert to_letter("Yes, it is", YES_NO, llava_med_rule=True) == "A"
    assert to_letter("No, not yes", YES_NO, llava_med_rule=True) == "A"  # 'yes' (A) is tried first
    assert to_letter("No, not yes", YES_NO) is None


def test_is_conversion_failure():
    assert not is_conversion_failure("A", YES_NO)
    assert is_conversion_failure("Maybe", YES_NO)
    assert is_conversion_failure("C", YES_NO)
    assert is_conversion_failure("a", YES_NO)
    assert is_conversion_failure(None, YES_NO)


# ---- grade_rollout ----------------------------------------------------------------------------------------------

ROW = {
    "dataset_name": "pmc_vqa",
    "dataset_index": 3,
    "options": '{"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}',
    "answer_label": "C",
    "answer": "X-ray",
}


def test_grade_rollout_correct_and_wrong():
    out = "<think>bones are bright</think>\n<answer>C. X-ray</answer>"
    assert grade_rollout(out, ROW) == {"output_text": out, "pred_letter": "C", "is_correct": True}
    out = "<think>hm</think><answer>MRI</answer>"
    assert grade_rollout(out, ROW) == {"output_text": out, "pred_letter": "B", "is_correct": False}


def test_grade_rollout_conversion_failure_keeps_the_prediction():
    out = "<think>hm</think><answer>PET-CT</answer>"
    result = grade_rollout(out, ROW)
    assert result == {"output_text": out, "pred_letter": "PET-CT", "is_correct": False}
    assert is_conversion_failure(result["pred_letter"], ROW["options"])
    # strict keeps a tag-less output whole
    result = grade_rollout("I cannot tell.", ROW, mode="strict")
    assert result["pred_letter"] == "I cannot tell."


def test_grade_rollout_modes_differ_on_first_and_last_tag():
    out = "<answer>A</answer> wait, no. <answer>C</answer>"
    assert grade_rollout(out, ROW, mode="strict")["pred_letter"] == "A"
    assert grade_rollout(out, ROW, mode="strict")["is_correct"] is False
    assert grade_rollout(out, ROW, mode="regrade")["pred_letter"] == "C"
    assert grade_rollout(out, ROW, mode="regrade")["is_correct"] is True


def test_grade_rollout_modes_differ_on_multiline_body():
    out = "<think>t</think><answer>\nC\nbecause bones are bright\n</answer>"
    assert grade_rollout(out, ROW, mode="strict")["is_correct"] is False
    assert grade_rollout(out, ROW, mode="regrade")["is_correct"] is True


def test_grade_rollout_default_mode_is_strict():
    out = "<answer>A</answer><answer>C</answer>"
    assert grade_rollout(out, ROW) == grade_rollout(out, ROW, mode="strict")


def test_grade_rollout_letter_collision_letter_and_correctness_may_disagree():
    row = {"options": json.dumps(SWAPPED), "answer_label": "B", "answer": "A"}
    result = grade_rollout("<answer>B</answer>", row)
    # "B" is the correct letter (is_correct), but maps to option A's text first (pred_letter)
    assert result["pred_letter"] == "A"
    assert result["is_correct"] is True


def test_grade_rollout_llava_rule():
    out = "<answer>It is an X-ray image</answer>"
    assert grade_rollout(out, ROW)["is_correct"] is False
    assert grade_rollout(out, ROW, llava_med_rule=True) == {
        "output_text": out, "pred_letter": "C", "is_correct": True,
    }


def test_grade_rollout_empty_output():
    assert grade_rollout("", ROW) == {"output_text": "", "pred_letter": "", "is_correct": False}
    assert grade_rollout("", ROW, mode="regrade")["is_correct"] is False


def test_grade_rollout_missing_options_says_how_to_join():
    fields = {k: v for k, v in ROW.items() if k != "options"}
    with pytest.raises(KeyError, match="join the record with its eval row by dataset_index"):
        grade_rollout("<answer>C</answer>", fields)


# ---- records ----------------------------------------------------------------------------------------------------


def make_record(outputs, **extra):
    record = {
        "dataset_name": "pmc_vqa",
        "dataset_index": 3,
        "answer_label": "C",
        "answer": "X-ray",
        "options": ROW["options"],
        "prompt": "<|im_start|>user ...",
        "rollouts": [{"output_text": o, "pred_letter": "?", "is_correct": False, "finish_reason": "stop"}
                     for o in outputs],
        "num_rollouts": len(outputs),
        "num_correct": 0,
    }
    record.update(extra)
    return record


def test_grade_record_recomputes_rollouts_and_counts_without_mutating():
    record = make_record([
        "<answer>A</answer><answer>C</answer>",
        "<think>t</think><answer>C. X-ray</answer>",
        "Answer: C",
    ])
    before = copy.deepcopy(record)
    strict = grade_record(record, mode="strict")
    regrade = grade_record(record, mode="regrade")
    assert record == before
    assert [r["pred_letter"] for r in strict["rollouts"]] == ["A", "C", "Answer: C"]
    assert [r["is_correct"] for r in strict["rollouts"]] == [False, True, False]
    assert (strict["num_rollouts"], strict["num_correct"]) == (3, 1)
    assert [r["pred_letter"] for r in regrade["rollouts"]] == ["C", "C", "C"]
    assert (regrade["num_rollouts"], regrade["num_correct"]) == (3, 3)
    assert all(r["finish_reason"] == "stop" for r in regrade["rollouts"])
    assert regrade["prompt"] == record["prompt"]
    assert row_accuracy(strict) == pytest.approx(1 / 3)
    assert row_accuracy(regrade) == 1.0
    assert grade_record(record) == regrade  # default: regrade


def test_grade_record_options_override():
    record = make_record(["<answer>C</answer>"])
    del record["options"]
    with pytest.raises(KeyError):
        grade_record(record)
    graded = grade_record(record, options=ROW["options"])
    assert graded["rollouts"][0]["pred_letter"] == "C" and graded["num_correct"] == 1


def test_majority_vote_ties_go_to_first_occurrence():
    assert majority_vote(["A", "B", "B"]) == "B"
    assert majority_vote(["A", "B", "B", "A"]) == "A"
    assert majority_vote(["B", "A", "A", "B"]) == "B"
    assert majority_vote([None, None, "C", "D"]) == "C"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote(iter(["D"])) == "D"


def test_row_accuracy_needs_rollouts():
    assert row_accuracy({"num_correct": 2, "num_rollouts": 8}) == 0.25
    with pytest.raises(ValueError, match="no rollouts"):
        row_accuracy({"dataset_index": 1, "num_correct": 0, "num_rollouts": 0})


# ---- properties -------------------------------------------------------------------------------------------------

letters = st.sampled_from("ABCDE")
no_tags = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=30)
one_line = st.text(alphabet=st.characters(blacklist_characters="<\n\r"), max_size=30)


@given(letter=letters, answer=st.text(max_size=30), pad=st.sampled_from(["", " ", "\n", " \t "]))
def test_label_dot_answer_always_grades_correct(letter, answer, pad):
    assert grade_answer(f"{pad}{letter}. {answer}{pad}", answer, letter)
    assert grade_answer(f"{pad}{letter.lower()}{pad}", answer, letter)
    if answer.upper().lower() == answer.lower():  # case changes that round-trip (not e.g. German sharp s)
        assert grade_answer(answer.upper(), answer, letter)


@given(thought=no_tags, body=no_tags)
def test_strict_extraction_returns_the_stripped_body(thought, body):
    assert extract_answer(f"<think>{thought}</think><answer>{body}</answer>", mode="strict") == body.strip()


@given(thought=no_tags, body=one_line)
def test_regrade_extraction_of_a_one_line_body(thought, body):
    assert extract_answer(f"<think>{thought}</think>\n<answer>{body}</answer>", mode="regrade") == body.strip()


@given(first=no_tags, last=one_line)
def test_strict_takes_first_regrade_takes_last(first, last):
    text = f"<answer>{first}</answer> ... <answer>{last}</answer>"
    assert extract_answer(text, mode="strict") == first.strip()
    assert extract_answer(text, mode="regrade") == last.strip()


word_texts = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz -", min_size=2, max_size=12).map(str.strip).filter(
        lambda t: len(t) >= 2
    ),
    min_size=2,
    max_size=5,
    unique=True,
)


@settings(deadline=None)
@given(texts=word_texts, data=st.data())
def test_to_letter_of_the_correct_label(texts, data):
    # distinct multi-character texts without '.', so no text collides with a letter or a "L. text" form
    options = {chr(65 + i): t for i, t in enumerate(texts)}
    label = data.draw(st.sampled_from(sorted(options)))
    assert to_letter(label, options) == label
    assert to_letter(label.lower(), options) == label
    assert to_letter(options[label], options) == label
    assert to_letter(f"{label}. {options[label]}", options) == label
    row = {"options": json.dumps(options), "answer_label": label, "answer": options[label]}
    for mode in ("strict", "regrade"):
        result = grade_rollout(f"<think>x</think>\n<answer>{label}</answer>", row, mode=mode)
        assert result["pred_letter"] == label and result["is_correct"] is True


@given(letters_=st.lists(st.sampled_from(["A", "B", "C", None]), max_size=12))
def test_majority_vote_returns_a_most_frequent_letter(letters_):
    winner = majority_vote(letters_)
    votes = [x for x in letters_ if x is not None]
    if not votes:
        assert winner is None
        return
    counts = {x: votes.count(x) for x in votes}
    assert counts[winner] == max(counts.values())
    assert votes.index(winner) == min(votes.index(x) for x in counts if counts[x] == counts[winner])
