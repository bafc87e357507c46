"""Unified rows -> the SFT data set TRL's SFTTrainer reads (conversational prompt-completion form).

One output row per input row:

- ``prompt``: ``[{"role": "user", "content": [{"type": "image"} per image..., {"type": "text", "text": user_text}]}]``
  with ``user_text`` from :func:`medvlthinker.prompts.build_user_text` (docs/protocol.md section 2);
- ``completion``: ``[{"role": "assistant", "content": [{"type": "text", "text": target}]}]`` with ``target`` from
  :func:`medvlthinker.prompts.build_sft_target` (section 9);
- ``images``: the row's images (an empty list for a text-only row), then ``dataset_name`` and ``dataset_index``.

TRL renders the prompt with the chat template and the generation prompt, and the completion as the rest of the
conversation, so with ``completion_only_loss`` the loss covers exactly the assistant turn.

Images are stored as the original's training script hands them to the processor: through qwen-vl-utils'
``fetch_image`` (alpha composited on white, resized within ``MIN_PIXELS``/``MAX_PIXELS`` to multiples of 28), as
PNG, so the processor inside TRL leaves their size as it is (:func:`qwen_vl_image`). ``keep_image_bytes`` stores
the bytes as they are instead and leaves the resize to the processor (a smaller set, one resize fewer).
``resize_pmc`` first applies the PMC-VQA training-image rule of :func:`medvlthinker.images.pmc_resize` (the
released PMC-VQA sets are already resized).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medvlthinker import prompts
from medvlthinker.images import MAX_PIXELS, MIN_PIXELS, ImageDecodeError, decode_image, pmc_resize, to_png_bytes
from medvlthinker.schema import SchemaError, validate_row
from medvlthinker.staging import check_writable, staged

OUTPUT_COLUMNS = ("prompt", "completion", "images", "dataset_name", "dataset_index")


def sft_features():
    """The ``datasets.Features`` of an SFT data set (docs/protocol.md contract 4)."""
    import datasets

    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    turn = {"role": datasets.Value("string"), "content": datasets.List(part)}
    return datasets.Features(
        {
            "prompt": datasets.List(turn),
            "completion": datasets.List(turn),
            "images": datasets.List(datasets.Image()),
            "dataset_name": datasets.Value("string"),
            "dataset_index": datasets.Value("int64"),
        }
    )


def qwen_vl_image(img) -> Any:
    """``img`` as qwen-vl-utils' ``fetch_image`` returns it at the released checkpoints' pixel bounds, which is what
    the original's SFT collator gives the processor."""
    from qwen_vl_utils import fetch_image

    return fetch_image({"image": img, "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS})


def _image_for_output(image: Any, resize_pmc: bool, row: dict[str, Any], position: int,
                      keep_image_bytes: bool = False) -> Any:
    # Every image is decoded, also when its stored bytes pass through unchanged: a corrupt image stops the
    # conversion here, naming its row, instead of stopping SFT when the sampler reaches it.
    try:
        decoded = decode_image(image)
    except ImageDecodeError as exc:
        raise SchemaError(
            f"image {position} cannot be decoded ({exc})", fix="re-encode or replace the image, or drop the row"
        ).for_row(row) from exc
    if resize_pmc:
        decoded = pmc_resize(decoded)
    elif keep_image_bytes:
        return image
    if keep_image_bytes:
        return {"bytes": to_png_bytes(decoded), "path": None}
    return {"bytes": to_png_bytes(qwen_vl_image(decoded)), "path": None}


def to_sft_example(row: dict[str, Any], *, resize_pmc: bool = False, validate: bool = True,
                   keep_image_bytes: bool = False) -> dict[str, Any]:
    """One unified row -> one SFT example (see the module docstring).

    Raises :class:`SchemaError` naming the row when it breaks the schema or has no reasoning to train on.

    >>> ex = to_sft_example({"question": "Q?", "options": '{"A": "x", "B": "y"}', "answer_label": "B",
    ...                      "answer": "y", "reasoning": "Because.", "dataset_name": "m23k", "dataset_index": 0,
    ...                      "images": None})
    >>> ex["completion"][0]["content"][0]["text"]
    '<think> Because. </think>\\n<answer> B </answer>'
    >>> [part["type"] for part in ex["prompt"][0]["content"]], ex["images"]
    (['text'], [])
    """
    if validate:
        validate_row(row)
    reasoning = row.get("reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
        raise SchemaError(
            "the row has no reasoning, so there is no SFT target",
            fix="convert a set with a reasoning column (m23k, PMC-VQA GPT-4o reasoning) or drop rows without one",
        ).for_row(row)
    images = list(row.get("images") or [])
    # The prompt text comes from the same builder as eval and RL; the message layout (images first, then text)
    # is that of prompts.build_messages, with the "text" key present on every part so Arrow stores one struct type.
    messages = prompts.build_messages(row)
    content = [
        {"type": "image", "text": None} if part["type"] == "image" else {"type": "text", "text": part["text"]}
        for part in messages[0]["content"]
    ]
    target = prompts.build_sft_target(reasoning, row["answer_label"])
    return {
        "prompt": [{"role": "user", "content": content}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": target}]}],
        "images": [_image_for_output(image, resize_pmc, row, i, keep_image_bytes) for i, image in enumerate(images)],
        "dataset_name": row["dataset_name"],
        "dataset_index": row["dataset_index"],
    }


def convert_to_sft(ds, *, resize_pmc: bool = False, validate: bool = True, num_proc: int | None = None,
                   keep_image_bytes: bool = False):
    """A unified ``datasets.Dataset`` -> the SFT ``datasets.Dataset`` (contract 4), with a progress bar.

    Every row is checked as it is converted (the schema, a reasoning to train on, every image decoded); the first
    bad row raises :class:`SchemaError` naming it. ``num_proc`` workers share the rows.
    """
    import datasets

    if "images" in ds.column_names:
        # undecoded: keep_image_bytes passes the stored bytes through as they are
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    else:
        ds = ds.add_column("images", [None] * len(ds))

    def _convert(row):
        return to_sft_example(row, resize_pmc=resize_pmc, validate=validate, keep_image_bytes=keep_image_bytes)

    return ds.map(
        _convert,
        remove_columns=ds.column_names,
        features=sft_features(),
        num_proc=num_proc,
        desc="SFT examples (images decoded)",
    )


def write_sft_dataset(ds, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save an SFT data set with ``save_to_disk`` (written beside ``out_dir`` first, then renamed into place).

    An existing complete ``out_dir`` is an error unless ``overwrite``; a half-written one never exists. An empty set
    is refused (SFT cannot train on it), so it never replaces an earlier one.
    """
    out = check_writable(out_dir, overwrite)
    if len(ds) == 0:
        raise ValueError(f"{out}: no rows to write; fix: check the converter's input and its --subset/--size")
    with staged(out, overwrite=overwrite) as tmp:
        ds.save_to_disk(str(tmp))
    return out


def check_sft_dataset(ds, where: str = "the SFT data set") -> None:
    """Raise ``ValueError`` naming the file and the fix when ``ds`` is not in the contract-4 layout."""
    missing = [c for c in ("prompt", "completion", "images") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{where} lacks the column(s) {missing} (has {ds.column_names}); "
            "fix: build it with data_process/convert_sft_format.py"
        )
    if len(ds) == 0:
        raise ValueError(f"{where} has no rows; fix: check the converter's input and its --subset/--size")


def check_sft_rows(ds, where: str = "the SFT data set", *, num_proc: int | None = None) -> int:
    """Decode every image of every SFT example and check that each example has one image part per image and a
    non-empty target; the first bad row raises :class:`SchemaError` naming it and ``where``. Returns the rows.

    Run before training, so a corrupt image fails in seconds with its row instead of inside ``trainer.train()``.
    """
    import datasets

    check_sft_dataset(ds, where)
    columns = [c for c in ("prompt", "completion", "images", "dataset_name", "dataset_index") if c in ds.column_names]
    raw = ds.select_columns(columns).cast_column("images", datasets.List(datasets.Image(decode=False)))

    def _check(batch, indices):
        for offset, position in enumerate(indices):
            row = {k: batch[k][offset] for k in batch}
            named = {"dataset_name": row.get("dataset_name"), "dataset_index": row.get("dataset_index")}
            images = row["images"] or []
            parts = sum(part["type"] == "image" for turn in row["prompt"] for part in turn["content"])
            if parts != len(images):
                raise SchemaError(f"the prompt has {parts} image part(s) for {len(images)} image(s) (in {where})",
                                  position=position, fix="rebuild the set with data_process/convert_sft_format.py"
                                  ).for_row(named, position)
            target = "".join(part.get("text") or "" for turn in row["completion"] for part in turn["content"])
            if not target.strip():
                raise SchemaError(f"the completion is empty (in {where})", position=position,
                                  fix="drop the row or rebuild the set from rows with a reasoning",
                                  ).for_row(named, position)
            for i, image in enumerate(images):
                try:
                    decode_image(image)
                except ImageDecodeError as exc:
                    raise SchemaError(f"image {i} cannot be decoded ({exc}) (in {where})",
                                      fix="re-encode or replace the image and rebuild the set, or drop the row"
                                      ).for_row(named, position) from exc
        return {"ok": [True] * len(indices)}

    raw.map(_check, batched=True, batch_size=64, with_indices=True, remove_columns=raw.column_names,
            keep_in_memory=True, num_proc=num_proc, desc="checking SFT rows (images decoded)")
    return len(ds)
