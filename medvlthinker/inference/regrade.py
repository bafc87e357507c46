"""Regrading eval records (what the published table uses): mode "regrade", optional llava-med rule.

The records keep every output_text, so the table can be recomputed with either grader without generating again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medvlthinker.grading import grade_record
from medvlthinker.inference.records import RESULTS_FILE, accuracy_table, collect_records, read_records, write_json, \
    write_jsonl


def regrade_records(records: Iterable[Mapping[str, Any]], *, mode: str = "regrade",
                    llava_med_rule: bool = False) -> list[dict[str, Any]]:
    """Every record with its rollouts re-graded from output_text (pred_letter, is_correct, num_correct)."""
    return [grade_record(record, mode=mode, llava_med_rule=llava_med_rule) for record in records]


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records from an output directory (eval_results.jsonl, else its shards) or a JSONL file."""
    path = Path(path)
    if path.is_dir():
        merged = path / RESULTS_FILE
        records = read_records(merged) if merged.exists() else collect_records(path)
    else:
        records = read_records(path)
    if not records:
        raise FileNotFoundError(f"no eval records found at {path}; fix: point at an eval output directory or its "
                                f"eval_results.jsonl")
    return records


def regrade(path: str | os.PathLike, output: str | os.PathLike | None = None, *, mode: str = "regrade",
            llava_med_rule: bool = False) -> dict[str, Any]:
    """Regrade the records at ``path``; write ``<stem>.{mode}[-llava].jsonl`` and the matching accuracy JSON
    into ``output`` (default: beside the input). Returns the accuracy table (with conversion-failure rates)."""
    path = Path(path)
    records = regrade_records(load_results(path), mode=mode, llava_med_rule=llava_med_rule)
    out_dir = Path(output) if output else (path if path.is_dir() else path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = mode + ("-llava" if llava_med_rule else "")
    write_jsonl(out_dir / f"eval_results.{tag}.jsonl", records)
    table = accuracy_table(records)
    write_json(out_dir / f"accuracy.{tag}.json", table)
    return table
