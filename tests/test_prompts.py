"""The byte-exact prompt (docs/protocol.md section 2) and the SFT target (section 9)."""

from __future__ import annotations

import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medvlthinker.prompts as prompts
from medvlthinker import grading
from medvlthinker.prompts import (
    INSTRUCTION_PROMPT,
    SFT_TARGET_TEMPLATE,
    build_messages,
    build_messages_with_images,
    build_sft_target,
    build_user_text,
    build_verl_prompt,
    num_images,
)
from medvlthinker.schema import SchemaError

INSTRUCTION_BYTES = (
    b"You will solve a problem/request. You should provide your thoughts within <think> </think> tags before "
    b"providing the answer.\\nWrite your final answer within <answer> </answer> tags."
)

FOUR = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}
FOUR_TEXT = (
    INSTRUCTION_BYTES.decode()
    + "\n\nQuestion: What imaging modality is shown?\n\nOptions:"
    + "\n\nA. CT\n\nB. MRI\n\nC. X-ray\n\nD. Ultrasound"
)


def row(images=None, options=FOUR, question="What imaging modality is shown?"):
    return {
        "images": images,
        "question": question,
        "options": json.dumps(options),
        "answer_label": "A",
        "answer": options["A"],
        "dataset_name": "pmc_vqa",
        "dataset_index": 0,
    }


def test_doctests():
    assert doctest.testmod(prompts).failed == 0


def test_instruction_is_byte_exact_with_the_literal_backslash_n():
    assert INSTRUCTION_PROMPT.encode() == INSTRUCTION_BYTES
    assert "\\n" in INSTRUCTION_PROMPT  # backslash + n, two characters
    assert "\n" not in INSTRUCTION_PROMPT  # no real newline anywhere
    assert INSTRUCTION_PROMPT.count("\\") == 1
    assert len(INSTRUCTION_PROMPT) == 181
    assert len(INSTRUCTION_PROMPT.encode("utf-8")) == 181
    assert INSTRUCTION_PROMPT.index("\\n") == 124
    assert INSTRUCTION_PROMPT.startswith("You will solve a problem/request.")
    assert INSTRUCTION_PROMPT.endswith("<answer> </answer> tags.")


def test_user_text_four_options_byte_exact():
    text = build_user_text("What imaging modality is shown?", FOUR)
    assert text == FOUR_TEXT
    assert len(text) == 181 + len("\n\nQuestion: What imaging modality is shown?\n\nOptions:") + len(
        "\n\nA. CT\n\nB. MRI\n\nC. X-ray\n\nD. Ultrasound"
    )
    # the JSON string stored in the table gives the same bytes
    assert build_user_text("What imaging modality is shown?", json.dumps(FOUR)) == FOUR_TEXT


def test_user_text_two_options_byte_exact():
    text = build_user_text("Is there a fracture?", '{"A": "Yes", "B": "No"}')
    expected = INSTRUCTION_BYTES.decode() + "\n\nQuestion: Is there a fracture?\n\nOptions:\n\nA. Yes\n\nB. No"
    assert text == expected
    assert text.encode().endswith(b"tags.\n\nQuestion: Is there a fracture?\n\nOptions:\n\nA. Yes\n\nB. No")
    assert not text.endswith("\n")


def test_user_text_keeps_the_question_verbatim():
    question = "  Line one\nline two with {braces} and %s  "
    text = build_user_text(question, {"A": "x"})
    assert f"\n\nQuestion: {question}\n\nOptions:\n\nA. x" in text


def test_messages_single_user_turn_images_first_no_system():
    messages = build_messages(row(images=["i0", "i1"]))
    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    assert messages[0]["content"] == [
        {"type": "image"},
        {"type": "image"},
        {"type": "text", "text": FOUR_TEXT},
    ]


def test_messages_text_only_and_ignore_image():
    assert build_messages(row())[0]["content"] == [{"type": "text", "text": FOUR_TEXT}]
    assert build_messages(row(images=[]))[0]["content"] == [{"type": "text", "text": FOUR_TEXT}]
    assert build_messages(row(images=["i0"]), ignore_image=True)[0]["content"] == [
        {"type": "text", "text": FOUR_TEXT}
    ]


def test_messages_with_images_carry_the_image_objects():
    images = [object(), object()]
    content = build_messages_with_images(row(images=images))[0]["content"]
    assert [part["type"] for part in content] == ["image", "image", "text"]
    assert content[0]["image"] is images[0] and content[1]["image"] is images[1]
    assert content[2] == {"type": "text", "text": FOUR_TEXT}
    assert build_messages_with_images(row(images=images), ignore_image=True)[0]["content"] == [
        {"type": "text", "text": FOUR_TEXT}
    ]


def test_verl_prompt_is_image_tags_then_user_text_without_separator():
    assert build_verl_prompt(row(images=["i0"])) == "<image>" + FOUR_TEXT
    assert build_verl_prompt(row(images=["i0", "i1", "i2"])) == "<image><image><image>You will solve" + FOUR_TEXT[
        len("You will solve"):
    ]
    assert build_verl_prompt(row()) == FOUR_TEXT


def test_num_images():
    assert num_images(row()) == 0
    assert num_images({"question": "q"}) == 0
    assert num_images(row(images=[])) == 0
    assert num_images(row(images=["a", "b"])) == 2


def test_sft_target_exact():
    assert SFT_TARGET_TEMPLATE == "<think> {reasoning} </think>\n<answer> {answer_label} </answer>"
    assert build_sft_target("The CT shows it.", "C") == "<think> The CT shows it. </think>\n<answer> C </answer>"
    # braces in the reasoning are not format fields
    assert build_sft_target("set {x} = {}", "A") == "<think> set {x} = {} </think>\n<answer> A </answer>"


def test_sft_target_strips_the_reasoning_and_the_label_as_the_original():
    # the original's convert_trl_format*.py: f"<think> {reasoning.strip()} </think>\n<answer> {answer_label.strip()} </answer>"
    assert build_sft_target("\n  The CT shows it.\n\n", " C\n") == "<think> The CT shows it. </think>\n<answer> C </answer>"


def test_bad_options_name_the_row():
    bad = row()
    bad["options"] = "not json"
    bad["dataset_index"] = 42
    with pytest.raises(SchemaError, match="dataset_index=42"):
        build_messages(bad)
    with pytest.raises(SchemaError, match="dataset_index=42"):
        build_verl_prompt(bad)


@settings(deadline=None)
@given(
    question=st.text(max_size=40),
    texts=st.lists(st.text(max_size=15), min_size=1, max_size=6),
    n=st.integers(min_value=0, max_value=4),
)
def test_prompt_structure_properties(question, texts, n):
    options = {chr(65 + i): t for i, t in enumerate(texts)}
    user_text = build_user_text(question, options)
    assert user_text.startswith(INSTRUCTION_PROMPT + "\n\nQuestion: ")
    assert user_text.endswith(f"\n\n{chr(64 + len(texts))}. {texts[-1]}")
    assert user_text == build_user_text(question, json.dumps(options))
    r = {"question": question, "options": json.dumps(options), "images": ["img"] * n or None}
    assert build_verl_prompt(r) == "<image>" * n + user_text
    content = build_messages(r)[0]["content"]
    assert len(content) == n + 1 and content[-1]["text"] == user_text


STEP_BY_STEP_BYTES = (
    b'You will solve a problem/request. First think step by step, and then answer with the option letter from the '
    b'given choices directly after "Answer: "'
)


def test_step_by_step_instruction_is_byte_exact():
    assert prompts.STEP_BY_STEP_INSTRUCTION_PROMPT.encode() == STEP_BY_STEP_BYTES
    assert prompts.resolve_instruction("step_by_step") == STEP_BY_STEP_BYTES.decode()
    assert prompts.resolve_instruction(None) == prompts.resolve_instruction("medvlthinker") == INSTRUCTION_PROMPT
    assert prompts.resolve_instruction("Answer with a letter.") == "Answer with a letter."
    with pytest.raises(ValueError, match="unknown instruction prompt 'step_by_stpe'.*fix: one of"):
        prompts.resolve_instruction("step_by_stpe")


ANSWER_ONLY_BYTES = (
    b"You will solve a problem/request. Do not explain your reasoning; write only your final answer within "
    b"<answer> </answer> tags."
)


def test_answer_only_instruction_is_byte_exact_and_not_the_default():
    assert prompts.ANSWER_ONLY_INSTRUCTION_PROMPT.encode() == ANSWER_ONLY_BYTES
    assert prompts.resolve_instruction("answer_only").encode() == ANSWER_ONLY_BYTES
    assert prompts.resolve_instruction(None) == INSTRUCTION_PROMPT != prompts.ANSWER_ONLY_INSTRUCTION_PROMPT
    text = build_user_text("What imaging modality is shown?", FOUR, prompts.ANSWER_ONLY_INSTRUCTION_PROMPT)
    assert text.encode() == ANSWER_ONLY_BYTES + FOUR_TEXT[len(INSTRUCTION_PROMPT):].encode()
    # the eval's graders read the answer-only output's tag like the paper's
    assert grading.extract_answer("<answer> B </answer>", mode="regrade") == "B"


def test_raw_image_tokens_prompt_byte_exact():
    # "<image>\n" per image (a real newline), then the user text; no chat template, no system turn
    assert prompts.build_raw_prompt(row(images=["i0", "i1"]), "raw_image_tokens") == (
        "<image>\n<image>\n" + FOUR_TEXT)
    assert prompts.build_raw_prompt(row(), "raw_image_tokens") == FOUR_TEXT
    assert prompts.build_raw_prompt(row(images=["i0"]), "raw_image_tokens", ignore_image=True) == FOUR_TEXT
    step = prompts.build_raw_prompt(row(images=["i0"]), "raw_image_tokens",
                                    instruction=prompts.STEP_BY_STEP_INSTRUCTION_PROMPT)
    assert step.encode() == (b'<image>\nYou will solve a problem/request. First think step by step, and then answer '
                             b'with the option letter from the given choices directly after "Answer: "\n\nQuestion: '
                             b'What imaging modality is shown?\n\nOptions:\n\nA. CT\n\nB. MRI\n\nC. X-ray\n\n'
                             b'D. Ultrasound')


def test_gemma3_prompt_byte_exact():
    expected = (b"<bos><start_of_turn>user\n<start_of_image><start_of_image>" + INSTRUCTION_BYTES
                + b"\n\nQuestion: What imaging modality is shown?\n\nOptions:\n\nA. CT\n\nB. MRI\n\nC. X-ray\n\n"
                b"D. Ultrasound<end_of_turn>\n<start_of_turn>model\n")
    assert prompts.build_raw_prompt(row(images=["i0", "i1"]), "gemma3").encode() == expected
    assert prompts.build_raw_prompt(row(), "gemma3") == (
        "<bos><start_of_turn>user\n" + FOUR_TEXT + "<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(ValueError, match="unknown prompt mode 'llava'.*fix: --prompt_mode one of"):
        prompts.build_raw_prompt(row(), "llava")


def test_instruction_replaces_only_the_instruction():
    step = prompts.STEP_BY_STEP_INSTRUCTION_PROMPT
    assert build_user_text("What imaging modality is shown?", FOUR, step) == step + FOUR_TEXT[len(INSTRUCTION_PROMPT):]
    content = build_messages(row(images=["i0"]), instruction=step)[0]["content"]
    assert content == [{"type": "image"}, {"type": "text", "text": step + FOUR_TEXT[len(INSTRUCTION_PROMPT):]}]
