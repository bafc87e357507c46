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

SFT_TARGET_TEMPLATE = "<think> {reasoning} </think>\n<answer> {answer_label} </answer>"
"""The assistant turn of the SFT data; ``\\n`` here is a real newline."""

IMAGE_PLACEHOLDER = "<image>"
"""What verl's RL dataset splits a string prompt on to place the images."""


def num_images(row: Mapping[str, Any]) -> int:
    """Number of images of a row (0 for a text-only row whose images are None or absent)."""
    images = row.get("images")
    return len(images) if images else 0


def build_user_text(question: str, options: str | Mapping[str, Any]) -> str:
    """The text of the single user turn: instruction, question and lettered options.

    ``options`` is the JSON string of the row or a dict; options are written in their stored order.
    """
    parsed = parse_options(options, strict=False)
    text = INSTRUCTION_PROMPT + "\n\n" + f"Question: {question}\n\nOptions:"
    return text + "".join(f"\n\n{letter}. {option}" for letter, option in parsed.items())


def _user_text_of(row: Mapping[str, Any]) -> str:
    try:
        return build_user_text(row["question"], row["options"])
    except SchemaError as exc:
        raise exc.for_row(row) from None
    except KeyError as exc:
        raise SchemaError(
            f"missing column {exc.args[0]!r} needed for the prompt",
            fix="load the row in the unified schema (question, options, ...)",
        ).for_row(row) from None


def _messages(row: Mapping[str, Any], image_parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # No system turn: the Qwen2.5-VL chat template adds its default "You are a helpful assistant." itself.
    return [{"role": "user", "content": [*image_parts, {"type": "text", "text": _user_text_of(row)}]}]


def build_messages(row: Mapping[str, Any], ignore_image: bool = False) -> list[dict[str, Any]]:
    """Chat messages for a row: one user turn, one ``{"type": "image"}`` part per image, then the text part.

    With ``ignore_image`` the image parts are left out (text-only ablation).

    >>> m = build_messages({"question": "Q", "options": '{"A": "x"}', "images": ["img"]})
    >>> [part["type"] for part in m[0]["content"]]
    ['image', 'text']
    """
    n = 0 if ignore_image else num_images(row)
    return _messages(row, [{"type": "image"} for _ in range(n)])


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
    return IMAGE_PLACEHOLDER * num_images(row) + _user_text_of(row)


def build_sft_target(reasoning: str, answer_label: str) -> str:
    """The SFT assistant turn: ``<think> {reasoning} </think>\\n<answer> {answer_label} </answer>``, with the
    reasoning and the label stripped first, as the original's converters do (R1 reasoning often ends in a newline).

    >>> build_sft_target("Red is shown.", "A")
    '<think> Red is shown. </think>\\n<answer> A </answer>'
    >>> build_sft_target("\\nRed is shown.\\n\\n", " A ")
    '<think> Red is shown. </think>\\n<answer> A </answer>'
    """
    return SFT_TARGET_TEMPLATE.format(reasoning=reasoning.strip(), answer_label=answer_label.strip())
