"""Regrading eval records (what the published table uses): mode "regrade", optional llava-med rule.

The records keep every output_text, so the table can be recomputed with either grader without generating again.
Result files of the original recipe (``parsed_outputs``, ``prompts``, no options) are read too; their options come
from the eval set (``eval_data``), as the original's own regrade takes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medvlthinker.errors import UserError
from medvlthinker.grading import grade_record
from medvlthinker.inference.records import (
    ARGS_FILE,
    RESULTS_FILE,
    SHARD_RE,
    RecordsError,
    accuracy_table,
    read_records,
    read_run,
    shard_bounds,
    shard_files,
)
from medvlthinker.staging import write_json, write_jsonl


def eval_options(eval_data: str | os.PathLike | Any, split: str | None = None) -> dict[int, Any]:
    """``{dataset_index: options}`` of an eval set (a source for ``load_unified``, or a ``datasets.Dataset``).

    The original recipe's eval_results.jsonl records carry no options; its regrade joins them from the eval set
    by dataset_index, and so does :func:`attach_options`.
    """
    if isinstance(eval_data, (str, os.PathLike)):
        from medvlthinker.data import load_unified

        eval_data = load_unified(str(eval_data), split, validate=False)
    columns = eval_data.select_columns(["dataset_index", "options"])
    return {int(i): options for i, options in zip(columns["dataset_index"], columns["options"])}


def attach_options(records: Iterable[Mapping[str, Any]], options: Mapping[int, Any]) -> list[dict[str, Any]]:
    """Records without ``options`` get the eval set's options of their dataset_index; the others are kept."""
    out = []
    for record in records:
        if record.get("options") is None:
            index = int(record["dataset_index"])
            if index not in options:
                raise RecordsError(
                    f"record dataset_name={record.get('dataset_name')!r}, dataset_index={index} has no options and "
                    f"the eval set has no such row; fix: pass the eval set the run was made on"
                )
            record = {**record, "options": options[index]}
        out.append(dict(record))
    return out


GRADINGS = ("regrade", "strict", "recorded")
"""``regrade``: the published table's grader; ``strict``: the pass-rate grader; ``recorded``: the grades as written
at generation (docs/protocol.md section 3)."""


def regrade_records(records: Iterable[Mapping[str, Any]], mode: str = "regrade",
                    options: Mapping[int, Any] | None = None, *, llava_med_rule: bool = False) -> list[dict[str, Any]]:
    """Every record graded as ``mode`` asks: its rollouts re-graded from output_text (pred_letter, is_correct,
    num_correct), or, with ``"recorded"``, kept as written (num_rollouts/num_correct filled in when missing).

    ``options`` (:func:`eval_options`) fills in records written without them (the original recipe's result files);
    re-grading a record that has none is an error naming the record.
    """
    if mode not in GRADINGS:
        raise UserError(None, f"unknown grading {mode!r}", fix=f"use one of {GRADINGS}")
    if options is not None:
        records = attach_options(records, options)
    if mode == "recorded":
        out = []
        for record in records:
            record = dict(record)
            record.setdefault("num_rollouts", len(record["rollouts"]))
            record.setdefault("num_correct", sum(1 for r in record["rollouts"] if r["is_correct"]))
            out.append(record)
        return out
    out = []
    for record in records:
        if record.get("options") is None:
            raise RecordsError(
                f"record dataset_name={record.get('dataset_name')!r}, dataset_index={record.get('dataset_index')!r} "
                "has no options (a result file of the original recipe); fix: pass the eval set the run was made on "
                "with --eval_data (e.g. UCSC-VLAA/MedVLThinker-Eval) to join them, or grade with 'recorded'"
            )
        out.append(grade_record(record, mode=mode, llava_med_rule=llava_med_rule))
    return out


def shard_gap(path: str | os.PathLike, found: int) -> str | None:
    """For a run directory with shards but no merged file: which shards hold fewer rows than ``args.json``'s
    ``num_rows`` gives them (an unfinished run, or a last line torn by a kill, which the shard rule skips), or None.
    """
    path = Path(path)
    if not path.is_dir() or (path / RESULTS_FILE).is_file() or not (path / ARGS_FILE).is_file():
        return None
    import json

    num_rows = json.loads((path / ARGS_FILE).read_text()).get("num_rows")
    if not isinstance(num_rows, int) or found >= num_rows:
        return None
    shards = {int(m.group(1)): (int(m.group(2)), f) for f in shard_files(path) if (m := SHARD_RE.search(f.name))}
    short = []
    for world in sorted({w for w, _ in shards.values()}):
        for rank in range(world):
            start, end = shard_bounds(num_rows, rank, world)
            have = len(read_records(shards[rank][1])) if rank in shards and shards[rank][0] == world else 0
            if have < end - start:
                short.append(f"shard {rank} of {world}: {have} of {end - start}")
    return f"holds {found} of the run's {num_rows} rows ({'; '.join(short[:4]) or 'shards of another layout'})"


def regrade(path: str | os.PathLike, output: str | os.PathLike | None = None, *, mode: str = "regrade",
            llava_med_rule: bool = False, eval_data: str | os.PathLike | None = None,
            eval_split: str | None = None, allow_partial: bool = False) -> dict[str, Any]:
    """Regrade the records at ``path``; write ``<stem>.{mode}[-llava].jsonl`` and the matching accuracy JSON
    into ``output`` (default: beside the input). Returns the accuracy table (with conversion-failure rates).

    ``eval_data`` joins the options of records written without them (the original recipe's result files). A run
    directory whose shards hold fewer rows than the run has (:func:`shard_gap`) is an error naming the short
    shards, unless ``allow_partial`` (then a warning)."""
    path = Path(path)
    options = eval_options(eval_data, eval_split) if eval_data is not None else None
    found = read_run(path)
    gap = shard_gap(path, len(found))
    if gap and not allow_partial:
        raise RecordsError(str(path), f"{gap}: an unfinished run, or a shard's last line torn by a kill",
                           fix="rerun the same eval command (it resumes and merges), or pass --allow_partial to "
                               "regrade the rows there are")
    if gap:
        import warnings

        warnings.warn(f"{path}: {gap}; regrading those alone", stacklevel=2)
    records = regrade_records(found, mode, options, llava_med_rule=llava_med_rule)
    out_dir = Path(output) if output else (path if path.is_dir() else path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = mode + ("-llava" if llava_med_rule else "")
    write_jsonl(out_dir / f"eval_results.{tag}.jsonl", records)
    table = accuracy_table(records)
    write_json(out_dir / f"accuracy.{tag}.json", table)
    return table
