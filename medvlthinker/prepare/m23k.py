"""m23k-style text multiple-choice questions with reasoning -> unified text-only rows (docs/protocol.md section 1).

The source is ``UCSC-VLAA/MedVLThinker-m23k-tokenized`` or any table with ``question``, ``options`` (dict, JSON
string or list), ``answer_label`` / ``answer_idx``, ``answer`` and ``reasoning`` (docs/data.md lists the mapping),
read with :func:`medvlthinker.data.sources.load_table`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medvlthinker.data.sources import load_table
from medvlthinker.prepare.report import (
    MalformedRow,
    PrepareReport,
    check_on_error,
    check_rows_written,
    fail_or_record,
    write_report,
)
from medvlthinker.schema import LETTERS, SchemaError, parse_options, validate_row

# column aliases, first present wins
M23K_LABEL_COLUMNS = ("answer_label", "answer_idx", "answer_letter")
M23K_ANSWER_COLUMNS = ("answer", "answer_string")


def _m23k_options(raw: Any) -> dict[str, str]:
    if isinstance(raw, (list, tuple)):
        raw = {LETTERS[i]: v for i, v in enumerate(raw)}
    if isinstance(raw, Mapping):
        # a dict column read through Arrow becomes a struct holding every key seen in the table: drop the Nones
        raw = {str(k).strip(): v for k, v in raw.items() if v is not None}
        if all(len(k) == 1 and k in LETTERS for k in raw):
            raw = dict(sorted(raw.items()))
    try:
        options = parse_options(raw, strict=True)
    except SchemaError as exc:
        raise MalformedRow("bad_options", exc.problem) from None
    return {k: v.strip() for k, v in options.items()}


def _first_present(record: Mapping[str, Any], names: Iterable[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in record and record[name] is not None:
            return name, record[name]
    return None, None


def m23k_row(
    record: Mapping[str, Any],
    position: int,
    *,
    dataset_name: str | None = None,
    start_index: int = 0,
    require_reasoning: bool = False,
) -> dict[str, Any]:
    """One m23k-style record -> a unified text-only row. Raises :class:`MalformedRow`.

    ``answer_label`` comes from ``answer_label``, ``answer_idx`` or ``answer_letter`` (a letter, or an int taken
    as a 0-based option index); a given ``answer`` / ``answer_string`` must equal that option's text (after
    stripping). ``dataset_index`` and ``dataset_name`` are kept when the source has them (else the position plus
    ``start_index``, and ``dataset_name`` or "m23k"); other columns go to ``misc``.
    """
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise MalformedRow("empty_question", f"question is {question!r}")
    if "options" not in record or record["options"] is None:
        raise MalformedRow("bad_options", "no options")
    options = _m23k_options(record["options"])
    label_column, label = _first_present(record, M23K_LABEL_COLUMNS)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(options):
        label = LETTERS[label]
    label = label.strip().upper() if isinstance(label, str) else label
    if label not in options:
        raise MalformedRow(
            "bad_answer_label",
            f"{label_column or '/'.join(M23K_LABEL_COLUMNS)} {label!r} is not one of the options {list(options)}",
        )
    answer_column, answer = _first_present(record, M23K_ANSWER_COLUMNS)
    if answer is not None and str(answer).strip() != options[label]:
        raise MalformedRow(
            "answer_mismatch", f"{answer_column} {str(answer)[:60]!r} differs from option {label} {options[label][:60]!r}"
        )
    reasoning = record.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise MalformedRow("bad_reasoning", f"reasoning is a {type(reasoning).__name__}, expected a string")
    if require_reasoning and not (reasoning or "").strip():
        raise MalformedRow("missing_reasoning", "reasoning is empty (needed for SFT targets)")
    index = record.get("dataset_index")
    if index is None:
        index = start_index + position
    elif not isinstance(index, int) or isinstance(index, bool):
        raise MalformedRow("bad_dataset_index", f"dataset_index {index!r} is not an int")
    name = dataset_name or record.get("dataset_name") or "m23k"
    used = {"question", "options", "reasoning", "dataset_index", "dataset_name", "images", "hash", "misc",
            *M23K_LABEL_COLUMNS, *M23K_ANSWER_COLUMNS}
    try:
        misc = json.loads(record["misc"]) if isinstance(record.get("misc"), str) else {}
    except ValueError:
        misc = {"source_misc": record["misc"]}
    misc = misc if isinstance(misc, dict) else {"source_misc": misc}
    misc.update({k: v for k, v in record.items() if k not in used and _jsonable(v)})
    options_json = json.dumps(options, ensure_ascii=False)
    row = {
        "images": None,
        "question": question.strip(),
        "options": options_json,
        "answer_label": label,
        "answer": options[label],
        "reasoning": reasoning,
        "dataset_name": name,
        "dataset_index": index,
        "hash": record.get("hash") or hashlib.sha256(f"{question.strip()}\n{options_json}".encode()).hexdigest(),
        "misc": json.dumps(misc, ensure_ascii=False, sort_keys=True, default=str),
    }
    try:
        validate_row(row)
    except SchemaError as exc:
        raise MalformedRow("schema", exc.problem) from None
    return row


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def prepare_m23k(
    source: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    split: str | None = "train",
    on_error: str = "skip",
    dataset_name: str | None = None,
    start_index: int = 0,
    require_reasoning: bool = False,
    limit: int | None = None,
):
    """An m23k-style source -> ``(unified Dataset, PrepareReport)``; written to ``out_path`` when given
    (save_to_disk dir or .parquet, plus ``<out_path>.report.json``)."""
    from tqdm.auto import tqdm

    from medvlthinker.data import to_dataset

    check_on_error(on_error)
    table = load_table(source, split)
    if limit is not None:
        table = table.select(range(min(limit, len(table))))
    if "images" in table.column_names:
        table = table.remove_columns("images")  # m23k is text-only; never decode images to ignore them
    report = PrepareReport(source=str(source))
    rows, seen = [], {}
    for position, record in enumerate(tqdm(table, desc="m23k rows", unit="row")):
        report.rows_read += 1
        try:
            row = m23k_row(
                record, position, dataset_name=dataset_name, start_index=start_index, require_reasoning=require_reasoning
            )
            if row["dataset_index"] in seen:
                raise MalformedRow(
                    "duplicate_dataset_index",
                    f"dataset_index {row['dataset_index']} already used by source row {seen[row['dataset_index']]}",
                )
        except MalformedRow as exc:
            fail_or_record(report, on_error, position, exc, str(source), dataset_index=record.get("dataset_index"))
            continue
        seen[row["dataset_index"]] = position
        rows.append(row)
    report.rows_written = len(rows)
    ds = to_dataset(rows)
    if out_path is not None:
        from medvlthinker.data import save_unified
        from medvlthinker.staging import staged

        out_path = Path(out_path)
        check_rows_written(report)
        with staged(out_path, overwrite=True) as tmp:
            save_unified(ds, tmp, parquet=out_path.suffix == ".parquet")
        write_report(report, out_path)
    return ds, report
