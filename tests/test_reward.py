"""The verl custom reward (docs/protocol.md section 4)."""

from __future__ import annotations

import doctest
import importlib.util
import inspect
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import medvlthinker.reward as reward
from medvlthinker.reward import compute_score, compute_score_multiline_fix, format_ok

INFO = {"answer": "No", "answer_label": "B", "index": 7}


def score(text, **kw):
    return compute_score("pmc_vqa", text, "No", INFO, **kw)


def test_doctests():
    assert doctest.testmod(reward).failed == 0


@pytest.mark.parametrize(
    "text",
    [
        "<think>x</think><answer>B</answer>",
        "<think>x</think>\n<answer>B</answer>",
        "<think>x</think> \n\t <answer>B</answer>",
        "<think>\nmulti\nline\nthought\n</think>\n<answer>B</answer>",
        "<think></think><answer>B</answer>",
        "<think>x</think><answer> b </answer>",
        "<think>x</think><answer>B. No</answer>",
        "<think>x</think><answer>no</answer>",
        "<think><think>nested</think></think><answer>B</answer>",  # the lazy .*? backtracks over </think>
        "<think>I considered <answer>B</answer> here</think><answer>B</answer>",
    ],
)
def test_full_credit(text):
    assert format_ok(text)
    assert score(text) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "Sure. <think>x</think><answer>B</answer>",  # text before <think>
        " <think>x</think><answer>B</answer>",  # even a space
        "<think>x</think><answer>B</answer>.",  # text after </answer>
        "<think>x</think><answer>B</answer>\n",  # even a newline
        "<answer>B</answer>",  # missing think
        "<think>x</think>",  # missing answer
        "<think>x</think> so <answer>B</answer>",  # words between the blocks
        "<answer>B</answer><think>x</think>",  # wrong order
        "<think>x<answer>B</answer>",  # unclosed think
        "<THINK>x</THINK><ANSWER>B</ANSWER>",  # tags are case-sensitive
        "B",
        "",
    ],
)
def test_format_gate_fails(text):
    assert not format_ok(text)
    assert score(text) == 0.0


def test_wrong_answer_scores_zero():
    assert score("<think>x</think><answer>A</answer>") == 0.0
    assert score("<think>x</think><answer>Yes</answer>") == 0.0
    assert score("<think>x</think><answer>B) No</answer>") == 0.0
    assert score("<think>x</think><answer></answer>") == 0.0
    # no llava substring rule in the reward
    assert score("<think>x</think><answer>The answer is No</answer>") == 0.0


def test_multiline_answer_quirk_and_fix():
    text = "<think>x</think>\n<answer>\nB\n</answer>"
    assert format_ok(text)
    assert score(text) == 0.0  # the original's regex has no DOTALL: no match, whole response graded
    assert score(text, multiline_fix=True) == 1.0
    assert compute_score_multiline_fix("pmc_vqa", text, "No", INFO) == 1.0
    # the fix grades the whole multi-line body, it does not cut to the first line
    assert compute_score_multiline_fix("pmc_vqa", "<think>x</think><answer>B\nbecause</answer>", "No", INFO) == 0.0
    # an answer on one line scores the same with and without the fix
    assert compute_score_multiline_fix("pmc_vqa", "<think>x</think><answer> B </answer>", "No", INFO) == 1.0


def test_first_answer_tag_is_graded():
    # the format gate lets a second answer block through (.*? spans it); the first one is graded
    assert score("<think>x</think><answer>B</answer><answer>A</answer>") == 1.0
    assert score("<think>x</think><answer>A</answer><answer>B</answer>") == 0.0
    # an answer inside the think block comes first
    assert score("<think>maybe <answer>A</answer></think><answer>B</answer>") == 0.0
    # quirk: a multi-line first body is skipped and a later one-line body is graded instead
    assert score("<think>x</think><answer>\nA\n</answer><answer>B</answer>") == 1.0


def test_ground_truth_must_equal_extra_info_answer():
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("pmc_vqa", "<think>x</think><answer>B</answer>", "Yes", INFO)
    # checked before the format gate, so a broken parquet fails on the first sample
    with pytest.raises(ValueError):
        compute_score("pmc_vqa", "garbage", "Yes", INFO)


@pytest.mark.parametrize("extra_info", [None, {}, {"answer": "No"}, {"answer_label": "B"}])
def test_extra_info_must_carry_answer_and_label(extra_info):
    with pytest.raises(ValueError, match="answer_label"):
        compute_score("pmc_vqa", "<think>x</think><answer>B</answer>", "No", extra_info)


def test_verl_call_conventions():
    # verl calls with keywords and may add reward_kwargs; the signature must accept both
    params = list(inspect.signature(compute_score).parameters)
    assert params[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    value = compute_score(
        data_source="slake_closed",
        solution_str="<think>x</think><answer>B</answer>",
        ground_truth="No",
        extra_info=INFO,
        some_future_kwarg=1,
    )
    assert value == 1.0 and isinstance(value, float)
    assert isinstance(score("nope"), float)
    # the variant always applies the fix, whatever reward_kwargs say
    fixed = compute_score_multiline_fix("d", "<think>x</think><answer>\nB</answer>", "No", INFO, multiline_fix=False)
    assert fixed == 1.0


def test_loads_standalone_by_path_like_verl():
    # verl 0.9 loads reward.custom_reward_function.path with spec_from_file_location under its own module name
    path = Path(reward.__file__)
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = module.compute_score
    assert fn("pmc_vqa", "<think>x</think><answer>B</answer>", "No", INFO) == 1.0
    assert fn("pmc_vqa", "<think>x</think><answer>\nB\n</answer>", "No", INFO) == 0.0
    fix = module.compute_score_multiline_fix
    assert fix("pmc_vqa", "<think>x</think><answer>\nB\n</answer>", "No", INFO) == 1.0


def test_reward_uses_the_shared_grader():
    from medvlthinker import grading

    assert reward.grade_answer is grading.grade_answer


letters = st.sampled_from("ABCDE")
no_angle = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=40)


@given(letter=letters, thought=no_angle, gap=st.sampled_from(["", "\n", " ", "\n\n", "\t\n "]))
def test_correct_label_in_the_format_always_scores_one(letter, thought, gap):
    info = {"answer": "some text", "answer_label": letter}
    text = f"<think>{thought}</think>{gap}<answer>{letter}</answer>"
    assert compute_score("x", text, "some text", info) == 1.0
    assert compute_score("x", text + " ", "some text", info) == 0.0
    assert compute_score("x", "x" + text, "some text", info) == 0.0


@given(text=st.text(max_size=60))
def test_score_is_binary_and_never_above_format(text):
    value = compute_score("x", text, "No", INFO)
    assert value in (0.0, 1.0)
    if value == 1.0:
        assert format_ok(text)
