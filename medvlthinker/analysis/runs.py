"""The eval runs an analysis reads: ``MODEL=DIR`` specs and ``ROOT/MODEL/REPEAT/`` trees, each repeat's records
read by the one records reader (:func:`medvlthinker.inference.records.read_run`) and graded by the one
:func:`~medvlthinker.inference.regrade.regrade_records`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlthinker.analysis import AnalysisError
from medvlthinker.inference.records import ARGS_FILE, RESULTS_FILE, read_run, shard_files
from medvlthinker.inference.regrade import regrade_records


def load_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The eval records of one run directory (or JSONL file), sorted by dataset_index.

    The records reader every stage uses (:func:`medvlthinker.inference.records.read_run`): eval_results.jsonl,
    else the union of the shard files of an unfinished run; the original recipe's field names are read too.
    """
    try:
        return read_run(run_dir, required=("dataset_name", "dataset_index", "rollouts"))
    except (ValueError, FileNotFoundError) as exc:
        raise AnalysisError(str(exc)) from None


def image_cluster(record: Mapping[str, Any]) -> str:
    """The resampling unit of a row: its ``misc.image_id`` when known (rows sharing an image move together)."""
    misc = record.get("misc")
    if isinstance(misc, str):
        try:
            misc = json.loads(misc) if misc else {}
        except ValueError:
            misc = {}
    if isinstance(misc, Mapping) and misc.get("image_id") not in (None, ""):
        return f"image:{misc['image_id']}"
    return f"row:{record['dataset_index']}"


@dataclass
class ModelRuns:
    """The repeats of one model: a name and, per repeat, its graded records."""

    name: str
    dirs: list[str]
    repeats: list[list[dict[str, Any]]]


def parse_run_specs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["MODEL=DIR", ...]`` -> ``[(model, dir), ...]``; a bare DIR is named after its folder."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(os.path.normpath(spec)), spec
        if not name or not path:
            raise AnalysisError(f"--run {spec!r}: expected MODEL=DIR")
        pairs.append((name, path))
    return pairs


def discover_runs(root: str | os.PathLike) -> list[tuple[str, str]]:
    """Run directories under ``root`` laid out as ``ROOT/MODEL/REPEAT/`` (or ``ROOT/MODEL/`` for one run).

    Models and repeats are taken in sorted order.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise AnalysisError(f"--runs_root {root}: not a directory")
    pairs = []
    for model in sorted(os.listdir(root)):
        model_dir = os.path.join(root, model)
        if not os.path.isdir(model_dir):
            continue
        if _is_run_dir(model_dir):
            pairs.append((model, model_dir))
            continue
        for repeat in sorted(os.listdir(model_dir)):
            repeat_dir = os.path.join(model_dir, repeat)
            if os.path.isdir(repeat_dir) and _is_run_dir(repeat_dir):
                pairs.append((model, repeat_dir))
    if not pairs:
        raise AnalysisError(f"--runs_root {root}: no MODEL/REPEAT/{RESULTS_FILE} found below it")
    return pairs


def _is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, RESULTS_FILE)) or bool(shard_files(path))


def run_condition(run_dir: str | os.PathLike) -> dict[str, str]:
    """``{"image_mode": ..., "prompt": ...}`` of a run, from its args.json (a run without one, such as the original
    recipe's result files, is the paper's: ``as_is`` and ``think``). ``prompt`` is ``think`` for the paper's
    instruction, ``answer_only``, or ``other`` (another instruction).

    >>> run_condition("/nonexistent")
    {'image_mode': 'as_is', 'prompt': 'think'}
    """
    path = Path(run_dir)
    args_path = (path if path.is_dir() else path.parent) / ARGS_FILE
    args: dict[str, Any] = {}
    if args_path.is_file():
        try:
            args = json.loads(args_path.read_text())["args"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AnalysisError(f"{args_path}: unreadable ({exc}); fix: rerun the eval into that directory") from None
    mode = "none" if args.get("ignore_image") else args.get("image_mode") or "as_is"
    instruction = args.get("instruction_prompt")
    prompt = "think" if instruction in (None, "medvlthinker") else (
        "answer_only" if instruction == "answer_only" else "other")
    return {"image_mode": mode, "prompt": prompt}


def load_runs(
    pairs: Sequence[tuple[str, str]], grading_mode: str = "regrade", options: Mapping[int, Any] | None = None
) -> list[ModelRuns]:
    """Group ``(model, dir)`` pairs by model (first-seen order) and load and grade every repeat."""
    models: dict[str, ModelRuns] = {}
    conditions: dict[str, tuple[str, dict[str, str]]] = {}
    for name, path in pairs:
        # repeats are averaged per row: a run with another image mode or prompt is another experiment
        condition = run_condition(path)
        first = conditions.setdefault(name, (os.fspath(path), condition))
        if first[1] != condition:
            raise AnalysisError(f"model {name!r}: {path} is a run with {condition} but {first[0]} with {first[1]}; "
                                "fix: give them different names, or compare them with analysis/make_ablation_tables.py")
        runs = models.setdefault(name, ModelRuns(name, [], []))
        runs.dirs.append(os.fspath(path))
        runs.repeats.append(graded(load_records(path), grading_mode, options))
    return list(models.values())


def graded(records: Iterable[Mapping[str, Any]], grading_mode: str = "regrade",
           options: Mapping[int, Any] | None = None) -> list[dict[str, Any]]:
    """:func:`~medvlthinker.inference.regrade.regrade_records`, its errors raised as :class:`AnalysisError`."""
    try:
        return regrade_records(records, grading_mode, options)
    except ValueError as exc:
        raise AnalysisError(str(exc)) from None


def load_sampling_runs(specs: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``MODEL=DIR`` specs of sampled runs (n > 1 rollouts per row) -> ``{model: records}``, as loaded."""
    return {name: load_records(path) for name, path in parse_run_specs(specs)}
