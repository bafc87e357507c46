"""The request builder shared by the backends: one row -> the prompt text and the image inputs; and
:class:`Completion`, what a backend hands back for each sample.

Prompt modes (``prompts.PROMPT_MODES``):

- ``qwen_chat`` (the paper's rows): the processor's (or tokenizer's) chat template applied to
  ``prompts.build_messages(row)`` with the generation prompt; images are decoded with
  ``medvlthinker.images.decode_image`` and resized by qwen-vl-utils' ``fetch_image`` with
  ``min_pixels``/``max_pixels`` (the original's ``process_vision_info`` path). vLLM and transformers therefore see
  the same text and the same pixels; their own processors' resize is then a no-op (the sizes are already
  multiples of 28 inside the same bounds).
- ``raw_image_tokens``, ``gemma3`` (the original's baseline models): ``prompts.build_raw_prompt``, no chat
  template; images decoded to RGB and not resized (the model's own processor does what it does).
- ``api`` (the api backend, :class:`ApiRequestBuilder`): the prompt is the user text, the images RGB and not
  resized; the server applies its chat template, and reports the prompt's token count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medvlthinker.images import MAX_PIXELS, MIN_PIXELS, ImageDecodeError, decode_image
from medvlthinker.prompts import INSTRUCTION_PROMPT, PROMPT_MODES, build_messages, build_raw_prompt, user_text
from medvlthinker.schema import SchemaError

PATCH_SIZE = 14
MERGE_SIZE = 2
IMAGE_PAD = "<|image_pad|>"


@dataclass(frozen=True)
class Completion:
    """One generated answer: its text, the number of tokens generated (the stop token included) and why it
    ended: ``"stop"`` (end of sequence) or ``"length"`` (max_tokens reached)."""

    text: str
    output_tokens: int
    finish_reason: str | None
    model: str | None = None  # the model that answered, when the backend is told (the api backend)


@dataclass
class Request:
    """One prompt ready for a backend. ``row`` keeps the fields the record needs (no images). ``max_tokens``
    overrides the run's for this request (vLLM backend; workloads of known lengths in the benchmarks)."""

    dataset_index: int
    prompt: str
    images: list = field(default_factory=list)
    prompt_tokens: int = 0
    image_tokens: int = 0
    row: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None

    def vllm_input(self) -> dict[str, Any]:
        """The ``LLM.generate`` prompt: text plus ``multi_modal_data`` when the row has images."""
        out: dict[str, Any] = {"prompt": self.prompt}
        if self.images:
            out["multi_modal_data"] = {"image": list(self.images)}
        return out


def image_token_count(width: int, height: int) -> int:
    """Tokens one (already resized) image takes in Qwen2.5-VL: one per 28x28 merged patch."""
    return (width // PATCH_SIZE) * (height // PATCH_SIZE) // (MERGE_SIZE * MERGE_SIZE)


RECORD_ROW_FIELDS = ("dataset_name", "dataset_index", "answer_label", "answer", "options", "question", "misc")


class RequestBuilder:
    """Builds :class:`Request` objects from unified rows.

    ``processor`` is a transformers processor or tokenizer with a chat template; ``chat_template`` overrides it
    (a template string). ``ignore_image`` drops the images (text-only ablation). ``prompt_mode`` is one of
    ``prompts.PROMPT_MODES`` and ``instruction`` replaces the paper's instruction (LLaVA-Med, HuatuoGPT-Vision).
    In the modes without a chat template ``image_tokens`` is None (the model's processor expands the image
    markers) and ``prompt_tokens`` counts the text as written.
    """

    def __init__(
        self,
        processor: Any,
        *,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        ignore_image: bool = False,
        chat_template: str | None = None,
        prompt_mode: str = "qwen_chat",
        instruction: str = INSTRUCTION_PROMPT,
    ) -> None:
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"unknown prompt mode {prompt_mode!r}; fix: --prompt_mode one of {PROMPT_MODES}")
        if min_pixels > max_pixels:
            raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}; fix: --min_pixels <= --max_pixels")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.ignore_image = ignore_image
        self.chat_template = chat_template
        self.prompt_mode = prompt_mode
        self.instruction = instruction
        if prompt_mode == "qwen_chat" and chat_template is None and not getattr(processor, "chat_template", None) \
                and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("the processor has no chat template; fix: pass --chat_template PATH (a .jinja file)")

    def render(self, row: Mapping[str, Any]) -> str:
        """The full prompt text: chat template over :func:`medvlthinker.prompts.build_messages`, generation
        prompt appended (``qwen_chat``); else :func:`medvlthinker.prompts.build_raw_prompt`."""
        if self.prompt_mode != "qwen_chat":
            return build_raw_prompt(row, self.prompt_mode, ignore_image=self.ignore_image,
                                    instruction=self.instruction)
        messages = build_messages(row, ignore_image=self.ignore_image, instruction=self.instruction)
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if self.chat_template is not None:
            kwargs["chat_template"] = self.chat_template
        target = self.processor if hasattr(self.processor, "apply_chat_template") else self.tokenizer
        return target.apply_chat_template(messages, **kwargs)

    def images(self, row: Mapping[str, Any]) -> list:
        """The row's images, decoded (RGB) and, in ``qwen_chat`` mode, resized by qwen-vl-utils; a bad image
        raises SchemaError naming the row."""
        decoded = decoded_images(row, ignore_image=self.ignore_image)
        if self.prompt_mode != "qwen_chat":
            return decoded
        from qwen_vl_utils import fetch_image

        return [fetch_image({"image": img, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels})
                for img in decoded]

    def build(self, row: Mapping[str, Any]) -> Request:
        prompt = self.render(row)
        images = self.images(row)
        if self.prompt_mode != "qwen_chat":
            return Request(dataset_index=int(row["dataset_index"]), prompt=prompt, images=images,
                           prompt_tokens=len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]),
                           image_tokens=None, row=record_fields(row))
        image_tokens = sum(image_token_count(*img.size) for img in images)
        n_pad = prompt.count(IMAGE_PAD)
        if n_pad != len(images):
            raise SchemaError(
                f"the rendered prompt has {n_pad} image placeholders but the row has {len(images)} images",
                fix="use the Qwen2.5-VL chat template (one <|vision_start|><|image_pad|><|vision_end|> per image)",
            ).for_row(row)
        text_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        # each <|image_pad|> expands to the image's tokens in the model input
        prompt_tokens = text_tokens - n_pad + image_tokens
        return Request(
            dataset_index=int(row["dataset_index"]),
            prompt=prompt,
            images=images,
            prompt_tokens=prompt_tokens,
            image_tokens=image_tokens,
            row=record_fields(row),
        )


def record_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a row its record keeps (no images)."""
    return {key: row.get(key) for key in RECORD_ROW_FIELDS}


def decoded_images(row: Mapping[str, Any], *, ignore_image: bool = False) -> list:
    """The row's images as RGB PIL images, not resized; a bad image raises SchemaError naming the row."""
    if ignore_image:
        return []
    out = []
    stored = row.get("images") or []
    for pos, image in enumerate(stored):
        try:
            out.append(decode_image(image))
        except ImageDecodeError as exc:
            raise SchemaError(
                f"image {pos} of {len(stored)} cannot be decoded ({exc})",
                fix="re-encode or replace the image, or drop the row",
            ).for_row(row) from exc
    return out


class ApiRequestBuilder:
    """Requests for the api backend: the prompt is the user text (the server renders the chat messages with its
    own template), the images RGB and not resized (the original's API rows). ``prompt_tokens`` is filled in from
    the server's usage report; ``image_tokens`` is None (the API does not report it)."""

    def __init__(self, *, ignore_image: bool = False, instruction: str = INSTRUCTION_PROMPT) -> None:
        self.ignore_image = ignore_image
        self.instruction = instruction

    def build(self, row: Mapping[str, Any]) -> Request:
        return Request(dataset_index=int(row["dataset_index"]), prompt=user_text(row, self.instruction),
                       images=decoded_images(row, ignore_image=self.ignore_image), image_tokens=None,
                       row=record_fields(row))
