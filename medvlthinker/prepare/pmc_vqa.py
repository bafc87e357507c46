"""PMC-VQA's row rules: one CSV record -> one unified row (docs/protocol.md sections 1 and 7).

The public release is a CSV with the columns ``Figure_path, Question, Answer, Choice A .. Choice D, Answer_label``
(choices read ``"A: text"`` or ``" A:text"``) and a folder of figures. Images get the PMC-VQA resize rule
(:func:`medvlthinker.images.pmc_resize`). ``compat="original"`` (the default) keeps exactly the rows of the
original's prepare_pmc_vqa.py, with its dataset_index (the count of kept rows), so the result joins with the
released ``UCSC-VLAA/MedVLThinker-pmc_vqa`` and the files derived from it; ``compat="lenient"`` is the opt-in
described at :data:`COMPAT`. The chunked, resumable run over a whole CSV is :mod:`medvlthinker.prepare.pmc_run`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medvlthinker.images import (
    ImageDecodeError,
    OutsideImageError,
    check_inside,
    decode_image,
    image_sha256,
    pmc_resize,
)
from medvlthinker.prepare.report import MalformedRow, PrepareError

COMPAT = ("original", "lenient")
"""PMC-VQA row rules. ``original``: the original's (quote characters stripped too; a choice without its ``X:``
prefix, or an Answer that differs from the chosen option, drops the row; dataset_index counts the kept rows).
``lenient`` (opt-in): also accepts ``X.`` / ``X)`` prefixes and bare choices, keeps a row whose Answer text differs
from its option (the option wins, with a warning), and uses the CSV position as dataset_index so indices do not
move when rows are dropped; it keeps more rows, but its indices do not join with the released set."""

# The original strips these around every field: whitespace, both quote characters, no-break and hair spaces.
ORIGINAL_STRIP = string.whitespace + "'\"\xa0\u200a"

PMC_COLUMNS = ("Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label")
PMC_LETTERS = "ABCD"


def check_compat(compat: str) -> None:
    if compat not in COMPAT:
        raise ValueError(f"compat must be one of {COMPAT}, got {compat!r}")


_CHOICE_PREFIX = re.compile(r"^\s*([A-Za-z])\s*[:.)]\s*")


def strip_choice_prefix(text: str, letter: str) -> str:
    """``" A:Lung"`` -> ``"Lung"``; the prefix is removed only when it is this choice's own letter.

    >>> strip_choice_prefix(" B:Diffusion-weighted imaging ", "B")
    'Diffusion-weighted imaging'
    >>> strip_choice_prefix("A: T2", "A"), strip_choice_prefix("C. 5 mm", "C"), strip_choice_prefix("D) None", "D")
    ('T2', '5 mm', 'None')
    >>> strip_choice_prefix("B: 3 cm", "A")
    'B: 3 cm'
    """
    match = _CHOICE_PREFIX.match(text)
    if match and match.group(1).upper() == letter:
        text = text[match.end():]
    return text.strip()


def pmc_vqa_options(record: Mapping[str, Any]) -> dict[str, str]:
    options = {}
    for letter in PMC_LETTERS:
        raw = record.get(f"Choice {letter}")
        text = strip_choice_prefix(raw or "", letter)
        if not text:
            raise MalformedRow("empty_option", f"Choice {letter} is empty ({raw!r})")
        options[letter] = text
    return options


def original_pmc_vqa_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The question, options, label and answer of one CSV record by the original's rules; raises
    :class:`MalformedRow` for each row the original drops.

    >>> original_pmc_vqa_fields({"Question": " 'Which?' ", "Answer": "MRI", "Answer_label": "B",
    ...     "Choice A": " A:CT", "Choice B": " B:MRI ", "Choice C": "C:'PET'", "Choice D": "D: US"})["options"]
    {'A': 'CT', 'B': 'MRI', 'C': 'PET', 'D': 'US'}
    """
    options = {}
    for letter in PMC_LETTERS:
        raw = (record.get(f"Choice {letter}") or "").strip(ORIGINAL_STRIP)
        prefix, sep, text = raw.partition(":")
        if not sep:
            raise MalformedRow("choice_without_prefix", f"Choice {letter} {raw!r} has no '{letter}:' prefix")
        if prefix.strip(ORIGINAL_STRIP) != letter:
            raise MalformedRow("choice_prefix_mismatch", f"Choice {letter} {raw!r} is prefixed with another letter")
        options[letter] = text.strip(ORIGINAL_STRIP)
    label = (record.get("Answer_label") or "").strip(ORIGINAL_STRIP)
    if label not in options:
        raise MalformedRow("bad_answer_label", f"Answer_label {record.get('Answer_label')!r} is not one of A, B, C, D")
    answer = (record.get("Answer") or "").strip(ORIGINAL_STRIP)
    if options[label] != answer:
        raise MalformedRow("answer_mismatch", f"Answer {answer[:60]!r} differs from option {label} {options[label][:60]!r}")
    return {"question": (record.get("Question") or "").strip(ORIGINAL_STRIP), "options": options,
            "answer_label": label, "answer": answer, "answer_mismatch": False}


def lenient_pmc_vqa_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The same fields by the lenient rules (:data:`COMPAT`); raises :class:`MalformedRow`."""
    question = (record.get("Question") or "").strip()
    if not question:
        raise MalformedRow("empty_question", "Question is empty")
    options = pmc_vqa_options(record)
    label = (record.get("Answer_label") or "").strip().upper()
    if label not in options:
        raise MalformedRow("bad_answer_label", f"Answer_label {record.get('Answer_label')!r} is not one of A, B, C, D")
    source_answer = (record.get("Answer") or "").strip()
    return {"question": question, "options": options, "answer_label": label, "answer": options[label],
            "answer_mismatch": strip_choice_prefix(source_answer, label) != options[label],
            "source_answer": source_answer}


def original_indices(records: Iterable[Mapping[str, Any]]) -> list[int | None]:
    """Per CSV record, its dataset_index in the original's output (the count of kept rows before it), or None
    for a row the original drops.

    >>> ok = {"Answer": "x", "Answer_label": "A", **{f"Choice {l}": f"{l}:x" for l in "ABCD"}}
    >>> original_indices([ok, {**ok, "Choice B": "x"}, ok])
    [0, None, 1]
    """
    out, kept = [], 0
    for record in records:
        try:
            original_pmc_vqa_fields(record)
        except MalformedRow:
            out.append(None)
            continue
        out.append(kept)
        kept += 1
    return out


def _png_bytes(img) -> bytes:
    # zlib level 3: lossless like the default 6 but 2-5x faster to write, for files 0-15% larger (measured on
    # 1024-px figures); encoding dominates the cost of a resized row
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def pmc_vqa_row(
    record: Mapping[str, Any],
    position: int,
    image_dir: str | os.PathLike,
    *,
    dataset_name: str = "pmc_vqa",
    start_index: int = 0,
    compat: str = "original",
    index: int | None = None,
) -> tuple[dict[str, Any], dict[str, bool]]:
    """One CSV record -> (unified row, flags). Raises :class:`MalformedRow`.

    ``dataset_index`` is ``start_index`` plus, with ``compat="original"``, ``index`` (the record's place among the
    rows the original keeps, :func:`original_indices`), else ``position`` (its place among the CSV's data rows).
    The image is stored as its original file bytes when the resize rule leaves it unchanged, else as PNG; ``hash``
    is the pixel hash of the source image before the resize (the eval images are not resized, so this is what an
    overlap check compares).
    """
    check_compat(compat)
    fields = original_pmc_vqa_fields(record) if compat == "original" else lenient_pmc_vqa_fields(record)
    if compat == "original" and index is None:
        raise ValueError("compat='original' needs the row's index among the kept rows (original_indices)")
    options, label = fields["options"], fields["answer_label"]
    figure = (record.get("Figure_path") or "").strip()
    if not figure:
        raise MalformedRow("image_missing", "Figure_path is empty")
    path = Path(image_dir) / figure
    try:
        check_inside(path, [image_dir])
    except OutsideImageError as exc:
        raise MalformedRow("image_outside", f"Figure_path {figure!r}: {exc.problem}") from None
    if not path.is_file():
        raise MalformedRow("image_missing", f"image file not found: {path}")
    raw = path.read_bytes()
    try:
        image = decode_image(raw)
    except ImageDecodeError as exc:
        raise MalformedRow("image_undecodable", f"{figure}: {exc}") from None
    resized = pmc_resize(image)
    was_resized = resized.size != image.size
    misc: dict[str, Any] = {"figure_path": figure, "source_row": position}
    if was_resized:
        misc["source_size"] = list(image.size)
    answer_mismatch = fields["answer_mismatch"]
    if answer_mismatch:
        misc["source_answer"] = fields["source_answer"]
    row = {
        "images": [{"bytes": _png_bytes(resized) if was_resized else raw, "path": None}],
        "question": fields["question"],
        "options": json.dumps(options, ensure_ascii=False),
        "answer_label": label,
        "answer": fields["answer"],
        "reasoning": None,
        "dataset_name": dataset_name,
        "dataset_index": start_index + (index if compat == "original" else position),
        "hash": image_sha256(image),
        "misc": json.dumps(misc, ensure_ascii=False, sort_keys=True),
    }
    return row, {"resized": was_resized, "answer_text_mismatch": answer_mismatch}


def read_pmc_vqa_csv(csv_path: str | os.PathLike, compat: str = "original") -> list[dict[str, str]]:
    """The CSV's records; a missing column or a CSV without data rows is fatal and names the file.

    ``Answer`` is required with ``compat="original"``, whose rules compare it with the chosen option (without it
    every row would be dropped as an answer mismatch); the lenient rules do not need it.
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            required = [c for c in PMC_COLUMNS if c != "Answer" or compat == "original"]
            missing = [c for c in required if c not in header]
            if missing:
                raise PrepareError(
                    f"{csv_path}: missing column(s) {missing}; it has {header}; fix: pass the PMC-VQA train CSV "
                    f"(columns {', '.join(PMC_COLUMNS)})"
                )
            records = [{(k or "").strip(): v for k, v in record.items()} for record in reader]
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{csv_path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); fix: pass the "
                           "PMC-VQA train CSV") from None
    except csv.Error as exc:
        raise PrepareError(f"{csv_path}: not a readable CSV ({exc}); fix: pass the PMC-VQA train CSV") from None
    if not records:
        raise PrepareError(f"{csv_path}: has a header but no data rows; fix: pass the PMC-VQA train CSV")
    return records

