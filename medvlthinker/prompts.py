"""The byte-exact prompt (docs/protocol.md section 2) and the SFT target (section 9), standard library only.

Every stage (eval, pass-rate curation, verl RL data, SFT data) builds its user turn here.

>>> print(build_user_text("Is it red?", {"A": "Yes", "B": "No"}).split("\\n\\n", 1)[1])
Question: Is it red?
<BLANKLINE>
Options:
<BLANKLINE>
A. Yes
<BLANKLINE>
B. No
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medvlthinker.schema import SchemaError, parse_options

# The original defines the instruction as a raw string, so "\n" below is a backslash followed by "n" (two
# characters), not a newline. The models were trained and evaluated on exactly these bytes; keep them.
INSTRUCTION_PROMPT = (
    r"You will solve a problem/request. You should provide your thoughts within <think> </think> tags before "
    r"providing the answer.\nWrite your final answer within <answer> </answer> tags."
)

STEP_BY_STEP_INSTRUCTION_PROMPT = (
    'You will solve a problem/request. First think step by step, and then answer with the option letter from the '
    'given choices directly after "Answer: "'
)
"""The instruction the original gives LLaVA-Med and HuatuoGPT-Vision in place of :data:`INSTRUCTION_PROMPT`."""

ANSWER_ONLY_INSTRUCTION_PROMPT = (
    "You will solve a problem/request. Do not explain your reasoning; write only your final answer within "
    "<answer> </answer> tags."
)
"""The answer-only instruction (docs/protocol.md section 2): the paper's answer tags without the think block, for
the think/answer-only comparison (docs/experiments.md). Not the paper's: it is used only when asked for."""

INSTRUCTION_PROMPTS = {"medvlthinker": INSTRUCTION_PROMPT, "step_by_step": STEP_BY_STEP_INSTRUCTION_PROMPT,
                       "answer_only": ANSWER_ONLY_INSTRUCTION_PROMPT}
"""Instructions by name (the runner's ``--instruction_prompt``)."""

PROMPT_MODES = ("qwen_chat", "raw_image_tokens", "gemma3")
"""How the runner renders a row: ``qwen_chat`` the model's chat template over :func:`build_messages` (the paper's
rows); ``raw_image_tokens`` and ``gemma3`` no chat template, the strings of :func:`build_raw_prompt` (the
original's baseline models)."""

SFT_TARGET_TEMPLATE = "<think> {reasoning} </think>\n<answer> {answer_label} </answer>"
"""The assistant turn of the SFT data; ``\\n`` here is a real newline."""

IMAGE_PLACEHOLDER = "<image>"
"""What verl's RL dataset splits a string prompt on to place the images."""


def num_images(row: Mapping[str, Any]) -> int:
    """Number of images of a row (0 for a text-only row whose images are None or absent)."""
    images = row.get("images")
    return len(images) if images else 0


def resolve_instruction(name_or_text: str | None) -> str:
    """The instruction called ``name_or_text`` in :data:`INSTRUCTION_PROMPTS`, or the text itself when it is one
    (it holds a space); None is the paper's.

    >>> resolve_instruction(None) == INSTRUCTION_PROMPT, resolve_instruction("Answer briefly.")
    (True, 'Answer briefly.')
    """
    if name_or_text is None:
        return INSTRUCTION_PROMPT
    if name_or_text in INSTRUCTION_PROMPTS:
        return INSTRUCTION_PROMPTS[name_or_text]
    if " " not in name_or_text.strip():
        raise ValueError(f"unknown instruction prompt {name_or_text!r}; fix: one of {sorted(INSTRUCTION_PROMPTS)} "
                         "or the instruction's full text")
    return name_or_text


def build_user_text(question: str, options: str | Mapping[str, Any], instruction: str = INSTRUCTION_PROMPT) -> str:
    """The text of the single user turn: instruction, question and lettered options.

    ``options`` is the JSON string of the row or a dict; options are written in their stored order.
    """
    parsed = parse_options(options, strict=False)
    text = instruction + "\n\n" + f"Question: {question}\n\nOptions:"
    return text + "".join(f"\n\n{letter}. {option}" for letter, option in parsed.items())


def user_text(row: Mapping[str, Any], instruction: str = INSTRUCTION_PROMPT) -> str:
    """:func:`build_user_text` of a row; a bad or missing field raises SchemaError naming the row."""
    try:
        return build_user_text(row["question"], row["options"], instruction)
    except SchemaError as exc:
        raise exc.for_row(row) from None
    except KeyError as exc:
        raise SchemaError(
            f"missing column {exc.args[0]!r} needed for the prompt",
            fix="load the row in the unified schema (question, options, ...)",
        ).for_row(row) from None


def _messages(row: Mapping[str, Any], image_parts: list[dict[str, Any]],
              instruction: str = INSTRUCTION_PROMPT) -> list[dict[str, Any]]:
    # No system turn: the Qwen2.5-VL chat template adds its default "You are a helpful assistant." itself.
    return [{"role": "user", "content": [*image_parts, {"type": "text", "text": user_text(row, instruction)}]}]


def build_messages(row: Mapping[str, Any], ignore_image: bool = False,
                   instruction: str = INSTRUCTION_PROMPT) -> list[dict[str, Any]]:
    """Chat messages for a row: one user turn, one ``{"type": "image"}`` part per image, then the text part.

    With ``ignore_image`` the image parts are left out (text-only ablation).

    >>> m = build_messages({"question": "Q", "options": '{"A": "x"}', "images": ["img"]})
    >>> [part["type"] for part in m[0]["content"]]
    ['image', 'text']
    """
    n = 0 if ignore_image else num_images(row)
    return _messages(row, [{"type": "image"} for _ in range(n)], instruction)


def build_messages_with_images(row: Mapping[str, Any], ignore_image: bool = False) -> list[dict[str, Any]]:
    """Like :func:`build_messages`, but each image part carries its image: ``{"type": "image", "image": img}``.

    That is the form qwen-vl-utils' ``process_vision_info`` reads (it resizes the images with its defaults).
    """
    images = [] if ignore_image else list(row.get("images") or [])
    return _messages(row, [{"type": "image", "image": image} for image in images])


def build_verl_prompt(row: Mapping[str, Any]) -> str:
    """The string prompt stored in verl's RL parquet: one ``<image>`` per image, then the user text, no separator.

    >>> build_verl_prompt({"question": "Q", "options": '{"A": "x"}', "images": [1, 2]})[:22]
    '<image><image>You will'
    """
    return IMAGE_PLACEHOLDER * num_images(row) + user_text(row)


def build_raw_prompt(row: Mapping[str, Any], mode: str, ignore_image: bool = False,
                     instruction: str = INSTRUCTION_PROMPT) -> str:
    """The prompt of the original's baseline models, no chat template: ``raw_image_tokens`` is ``"<image>\\n"`` per
    image then the user text; ``gemma3`` (Gemma 3, MedGemma) wraps ``"<start_of_image>"`` per image and the user
    text in Gemma's turn markers.

    >>> build_raw_prompt({"question": "Q", "options": '{"A": "x"}', "images": [1, 2]}, "raw_image_tokens")[:24]
    '<image>\\n<image>\\nYou will'
    >>> build_raw_prompt({"question": "Q", "options": '{"A": "x"}', "images": [1]}, "gemma3")[-39:]
    'A. x<end_of_turn>\\n<start_of_turn>model\\n'
    """
    n = 0 if ignore_image else num_images(row)
    text = user_text(row, instruction)
    if mode == "raw_image_tokens":
        return f"{IMAGE_PLACEHOLDER}\n" * n + text
    if mode == "gemma3":
        return "<bos><start_of_turn>user\n" + "<start_of_image>" * n + text + "<end_of_turn>\n<start_of_turn>model\n"
    raise ValueError(f"unknown prompt mode {mode!r}; fix: --prompt_mode one of {PROMPT_MODES}")


def build_sft_target(reasoning: str, answer_label: str) -> str:
    """The SFT assistant turn: ``<think> {reasoning} </think>\\n<answer> {answer_label} </answer>``, with the
    reasoning and the label stripped first, as the original's converters do (R1 reasoning often ends in a newline).

    >>> build_sft_target("Red is shown.", "A")
    '<think> Red is shown. </think>\\n<answer> A </answer>'
    >>> build_sft_target("\\nRed is shown.\\n\\n", " A ")
    '<think> Red is shown. </think>\\n<answer> A </answer>'
    """
    return SFT_TARGET_TEMPLATE.format(reasoning=reasoning.strip(), answer_label=answer_label.strip())
