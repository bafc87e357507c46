"""Unified rows -> the parquet verl's RLHFDataset reads for GRPO (docs/protocol.md contract 5).

One output row per input row:

- ``data_source``: the row's ``dataset_name`` (what verl hands the reward as ``data_source``);
- ``prompt``: ``[{"role": "user", "content": prompts.build_verl_prompt(row)}]``, i.e. one ``<image>`` per image
  then the user text of docs/protocol.md section 2 with no separator; verl splits the string on ``<image>`` into image
  and text parts, which gives the same message as eval and SFT (images first, then the text);
- ``images``: ``[{"bytes": <encoded image>}]`` per image, an empty list for a text-only row (``data.image_key``);
- ``ability``: ``"medical_mcqa"``; ``reward_model``: ``{"style": "rule", "ground_truth": answer}``;
- ``extra_info``: ``answer``, ``answer_label``, ``options`` (JSON string), ``dataset_name``, ``dataset_index``,
  ``index`` (position in the file), ``split``; :func:`medvlthinker.reward.compute_score` reads ``answer`` and
  ``answer_label``.

Images are encoded as the original's converter encodes them (:func:`original_encoding`: ``datasets`` re-encodes a
JPEG at quality 75, a PNG losslessly); ``keep_image_bytes`` stores their bytes unchanged instead. ``resize_pmc``
applies the PMC-VQA training-image rule (the released PMC-VQA sets are already resized). The Arrow schema is fixed (:func:`verl_features`), so a
text-only file and an image file have the same column types and can be listed together in ``data.train_files``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medvlthinker import prompts
from medvlthinker.images import ImageDecodeError, decode_image, pmc_resize, to_png_bytes
from medvlthinker.schema import SchemaError, validate_row
from medvlthinker.staging import check_writable, staged

ABILITY = "medical_mcqa"
IMAGE_PLACEHOLDER = "<image>"
OUTPUT_COLUMNS = ("data_source", "prompt", "images", "ability", "reward_model", "extra_info")


def verl_features():
    """The ``datasets.Features`` of a verl RL parquet (contract 5)."""
    import datasets

    string, int64 = datasets.Value("string"), datasets.Value("int64")
    return datasets.Features(
        {
            "data_source": string,
            "prompt": datasets.List({"role": string, "content": string}),
            "images": datasets.List({"bytes": datasets.Value("binary")}),
            "ability": string,
            "reward_model": {"style": string, "ground_truth": string},
            "extra_info": {
                "answer": string,
                "answer_label": string,
                "options": string,
                "dataset_name": string,
                "dataset_index": int64,
                "index": int64,
                "split": string,
            },
        }
    )


def original_encoding(data: bytes) -> bytes:
    """The bytes the original's converter stores for an image: it builds its parquet from PIL images, which
    ``datasets`` encodes in their own format with PIL's defaults, so a JPEG is re-encoded at quality 75 (a second
    lossy pass the RL model then sees) and a PNG is rewritten losslessly."""
    import io

    from datasets.features.image import image_to_bytes
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return image_to_bytes(img)


def _image_bytes(image: Any, resize_pmc: bool, row: dict[str, Any], position: int,
                 keep_image_bytes: bool = False) -> bytes:
    # Every image is decoded, also when its stored bytes pass through unchanged: a corrupt image stops the
    # conversion here, naming its row, instead of reaching the trainer.
    try:
        decoded = decode_image(image)
        if resize_pmc:
            return to_png_bytes(pmc_resize(decoded))
        if not keep_image_bytes:
            return original_encoding(_stored_bytes(image) or to_png_bytes(decoded))
        return _stored_bytes(image) or to_png_bytes(decoded)
    except ImageDecodeError as exc:
        raise SchemaError(
            f"image {position} cannot be decoded ({exc})", fix="re-encode or replace the image, or drop the row"
        ).for_row(row) from exc


def _stored_bytes(image: Any) -> bytes | None:
    if isinstance(image, dict) and image.get("bytes"):
        return image["bytes"]
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, dict) and image.get("path") and os.path.exists(image["path"]):
        return Path(image["path"]).read_bytes()
    return None


def to_verl_example(
    row: dict[str, Any], index: int, *, split: str = "train", resize_pmc: bool = False, validate: bool = True,
    keep_image_bytes: bool = False,
) -> dict[str, Any]:
    """One unified row -> one verl RL row (see the module docstring).

    >>> ex = to_verl_example({"question": "Q?", "options": '{"A": "x", "B": "y"}', "answer_label": "B",
    ...                       "answer": "y", "dataset_name": "m23k", "dataset_index": 7, "images": None}, 0)
    >>> ex["prompt"][0]["content"].startswith("You will solve"), ex["images"], ex["reward_model"]["ground_truth"]
    (True, [], 'y')
    """
    if validate:
        validate_row(row)
    images = list(row.get("images") or [])
    content = prompts.build_verl_prompt(row)
    if content.count(IMAGE_PLACEHOLDER) != len(images):
        # verl splits the prompt on every "<image>": one in the question text would pair text with the wrong image
        raise SchemaError(
            f"the prompt holds {content.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER!r} placeholders for "
            f"{len(images)} image(s): the question or options contain the text {IMAGE_PLACEHOLDER!r}",
            fix=f"remove {IMAGE_PLACEHOLDER!r} from the question and options text",
        ).for_row(row)
    return {
        "data_source": row["dataset_name"],
        "prompt": [{"role": "user", "content": content}],
        "images": [{"bytes": _image_bytes(image, resize_pmc, row, i, keep_image_bytes)}
                   for i, image in enumerate(images)],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": row["answer"]},
        "extra_info": {
            "answer": row["answer"],
            "answer_label": row["answer_label"],
            "options": row["options"],
            "dataset_name": row["dataset_name"],
            "dataset_index": row["dataset_index"],
            "index": index,
            "split": split,
        },
    }


def convert_to_verl(
    ds, *, split: str = "train", resize_pmc: bool = False, validate: bool = True, num_proc: int | None = None,
    keep_image_bytes: bool = False,
):
    """A unified ``datasets.Dataset`` -> the verl RL ``datasets.Dataset``, in the input's row order.

    Every row is checked as it is converted (the schema, every image decoded, one placeholder per image); the first
    bad row raises :class:`SchemaError` naming it. ``num_proc`` workers share the rows; a progress bar shows them.
    Row order matters: the easy-to-hard curriculum runs read the file in order (``data.shuffle=False``).
    Images are stored as the original's converter stores them (:func:`original_encoding`); ``keep_image_bytes``
    keeps their stored bytes instead (no second JPEG pass).
    """
    import datasets

    if "images" in ds.column_names:
        # undecoded: the stored bytes are what original_encoding re-encodes (or what keep_image_bytes keeps)
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    else:
        ds = ds.add_column("images", [None] * len(ds))

    def _convert(row, index):
        return to_verl_example(row, index, split=split, resize_pmc=resize_pmc, validate=validate,
                               keep_image_bytes=keep_image_bytes)

    return ds.map(
        _convert,
        with_indices=True,
        remove_columns=ds.column_names,
        features=verl_features(),
        num_proc=num_proc,
        desc="verl RL rows (images decoded)",
    )


def write_verl_parquet(ds, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the RL rows to ``path`` (a .parquet file), written beside it first and then renamed into place.

    An empty set is refused (verl cannot train on it), so it never replaces an earlier file.
    """
    out = check_verl_output(path, overwrite)
    if len(ds) == 0:
        raise ValueError(f"{out}: no rows to write; fix: check the converter's input and its --subset/--size")
    with staged(out, overwrite=overwrite) as tmp:
        ds.to_parquet(str(tmp))
    return out


def check_verl_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output path checked before any work: a .parquet name, not an existing file unless ``overwrite``."""
    out = Path(path)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: verl's RLHFDataset reads .parquet files; fix: name the output *.parquet")
    return check_writable(out, overwrite)


def check_verl_parquet(path: str | os.PathLike) -> int:
    """Raise ``ValueError`` naming the file and the fix when it is not a contract-5 parquet; return its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; fix: build it with data_process/convert_verl_format.py")
    schema = pq.read_schema(path)
    missing = [c for c in OUTPUT_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {missing} (has {schema.names}); "
            "fix: rebuild it with data_process/convert_verl_format.py"
        )
    info = schema.field("extra_info").type
    extra = {info.field(i).name for i in range(info.num_fields)} if pa.types.is_struct(info) else set()
    if not {"answer", "answer_label"} <= extra:
        raise ValueError(
            f"{path}: extra_info lacks answer/answer_label, which the reward needs; "
            "fix: rebuild it with data_process/convert_verl_format.py"
        )
    rows = pq.read_metadata(path).num_rows
    if rows == 0:
        raise ValueError(f"{path} has no rows; fix: check the converter's input and its --subset/--size")
    return rows
