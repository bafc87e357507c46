"""Pass-rate curation (docs/protocol.md section 6): attach pass_count, keep a band of it, order the rows by it.

A training question's pass_count is the number of strict-correct rollouts of its pass-rate record (``num_correct``
of the eval output, docs/protocol.md contract 3; the paper samples n=16 at temperature 1.0 with Qwen2.5-VL-3B-Instruct). Records
join rows on ``dataset_index``. A row without a record gets -1, so the default band [1, 7] drops it along with the
never-solved (0) and too-easy (8..16) questions.

The order of the paper's curriculum runs: filter, shuffle with seed 42 (the permutation of
``datasets.Dataset.shuffle(seed=42)``), then a stable sort by pass_count, descending for ``easy_to_hard``.

The report of a run (what each filter removed, the pass-count distributions, their table and plots) is
:mod:`medvlthinker.curate.curation_report`; its names are importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medvlthinker.curate.curation_report import NO_RESULT, CurationReport, pass_count_distribution
from medvlthinker.errors import UserError
from medvlthinker.inference.settings import CURATION

ORDERS = ("easy_to_hard", "hard_to_easy", "random", "none")
"""``easy_to_hard``: most-solved first (the paper's curriculum); ``hard_to_easy``: the reverse; ``random``: the
seeded shuffle alone; ``none``: the input order (the trainer shuffles)."""

class CurationError(UserError):
    """Pass-rate records that cannot be joined to the rows; the message names the record or row and the fix."""


# --------------------------------------------------------------------------------------------------- pass counts
def read_pass_rate_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a pass-rate run: a jsonl file, or an output directory (merged file, else its shards).

    The records reader every stage uses (:func:`medvlthinker.inference.records.read_run`): a half-written last
    line of a shard (a run killed mid-write) is skipped; any other bad line, and a row recorded twice, is an error.
    """
    from medvlthinker.inference.records import RESULTS_FILE, read_run

    try:
        records = read_run(path)
    except FileNotFoundError:
        raise CurationError(
            f"no pass-rate results at {path}; fix: pass the {RESULTS_FILE} written by eval/run_offline_inference.py "
            f"--preset pass_rate or its --output_dir (holding {RESULTS_FILE} or shard-*-of-*.jsonl)"
        ) from None
    except ValueError as exc:  # the reader's own errors, an empty run among them
        raise CurationError(str(exc)) from None
    return records


def pass_counts_from_records(
    records: Iterable[Mapping[str, Any]], *, expected_rollouts: int | None = CURATION.rollouts
) -> dict[int, tuple[str | None, int]]:
    """``{dataset_index: (dataset_name, num_correct)}`` from pass-rate records (contract 3).

    With ``expected_rollouts`` every record must have that many rollouts (the paper: 16), so a greedy eval file
    passed by mistake is caught. A dataset_index seen twice is an error: the pass-rate run covers each question
    once, and every other stage rejects a duplicate record too.
    """
    counts: dict[int, tuple[str | None, int]] = {}
    for position, record in enumerate(records):
        name, index = record.get("dataset_name"), record.get("dataset_index")
        where = f"pass-rate record {position} (dataset_name={name!r}, dataset_index={index!r})"
        if not isinstance(index, int) or not isinstance(record.get("num_correct"), int):
            raise CurationError(f"{where}: needs an int dataset_index and num_correct; fix: use the eval output records")
        num_correct = int(record["num_correct"])
        num_rollouts = record.get("num_rollouts")
        if expected_rollouts is not None and num_rollouts != expected_rollouts:
            raise CurationError(
                f"{where}: has {num_rollouts} rollouts, expected {expected_rollouts}; fix: run the pass-rate "
                f"estimate with n={expected_rollouts}, or pass the number of rollouts it used"
            )
        if not 0 <= num_correct <= (num_rollouts if isinstance(num_rollouts, int) else num_correct):
            raise CurationError(f"{where}: num_correct {num_correct} is outside 0..{num_rollouts}")
        if index in counts:
            raise CurationError(
                f"{where}: dataset_index {index} already has a record (result {counts[index]}); fix: remove the "
                "duplicate record (the pass-rate run must cover each question once)"
            )
        counts[index] = (name, num_correct)
    return counts


def load_pass_counts(path: str | os.PathLike, *,
                     expected_rollouts: int | None = CURATION.rollouts) -> dict[int, tuple[str | None, int]]:
    """:func:`pass_counts_from_records` over :func:`read_pass_rate_records`."""
    return pass_counts_from_records(read_pass_rate_records(path), expected_rollouts=expected_rollouts)


def _columns(ds, names: list[str]) -> dict[str, list]:
    return ds.select_columns(names).to_dict()


def attach_pass_count(ds, pass_counts: Mapping[int, tuple[str | None, int] | int]):
    """``ds`` with an int64 ``pass_count`` column (replacing one already there): the record's num_correct, or -1.

    ``pass_counts`` maps dataset_index to num_correct, or to (dataset_name, num_correct) as loaded; a record whose
    dataset_name differs from the row's means the results belong to another data set, which is an error.
    """
    import datasets

    cols = _columns(ds, ["dataset_index", "dataset_name"])
    check_unique_indices(cols["dataset_index"], cols["dataset_name"])
    values: list[int] = []
    for index, name in zip(cols["dataset_index"], cols["dataset_name"]):
        hit = pass_counts.get(index)
        if hit is None:
            values.append(NO_RESULT)
            continue
        record_name, count = hit if isinstance(hit, tuple) else (None, hit)
        if record_name is not None and record_name != name:
            raise CurationError(
                f"row (dataset_name={name!r}, dataset_index={index}): its pass-rate record is for dataset_name "
                f"{record_name!r}; fix: pass the pass-rate results of this data set"
            )
        values.append(int(count))
    if pass_counts and len(values) and all(v == NO_RESULT for v in values):
        some = sorted(pass_counts)[:3]
        raise CurationError(
            f"no pass-rate record matches a row of the data set ({len(pass_counts)} records, e.g. dataset_index "
            f"{some}; rows have e.g. {cols['dataset_index'][:3]}); fix: pass the pass-rate results of this data set"
        )
    if "pass_count" in ds.column_names:
        ds = ds.remove_columns("pass_count")
    return ds.add_column("pass_count", values, feature=datasets.Value("int64"))


def check_unique_indices(indices: list[int], names: list[Any]) -> None:
    """Raise :class:`CurationError` naming both rows when a dataset_index occurs twice (it is the join key)."""
    seen: dict[int, int] = {}
    for position, index in enumerate(indices):
        if index in seen:
            raise CurationError(
                f"row (dataset_name={names[position]!r}, dataset_index={index}; position {position}): duplicate "
                f"dataset_index, first at position {seen[index]}; fix: give every row a unique dataset_index (it "
                "joins the rows with their pass-rate records)"
            )
        seen[index] = position


# ----------------------------------------------------------------------------------------------- filter & order
def keep_band(counts: list[int], below: int = CURATION.remove_pass_count_below,
              above: int = CURATION.remove_pass_count_above) -> tuple[list[int], dict[str, int]]:
    """Positions whose pass_count lies in ``[below, above]``, and how many each filter removed."""
    if below > above:
        raise ValueError(f"remove_pass_count_below ({below}) > remove_pass_count_above ({above}) keeps nothing")
    keep, removed = [], {"no_result": 0, "below": 0, "above": 0}
    for position, count in enumerate(counts):
        if below <= count <= above:
            keep.append(position)
        elif count == NO_RESULT:
            removed["no_result"] += 1
        elif count < below:
            removed["below"] += 1
        else:
            removed["above"] += 1
    return keep, removed


def order_positions(counts: list[int], order: str = CURATION.order, seed: int = CURATION.seed) -> list[int]:
    """The positions of ``counts`` in curriculum order.

    The shuffle is numpy's ``default_rng(seed).permutation``, the permutation ``datasets.Dataset.shuffle(seed)``
    draws, so the result equals the original's ``shuffle(seed=42).sort("pass_count", reverse=True)``.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; fix: use one of {', '.join(ORDERS)}")
    if order == "none":
        return list(range(len(counts)))
    permutation = np.random.default_rng(seed).permutation(len(counts)).tolist()
    if order == "random":
        return permutation
    sign = -1 if order == "easy_to_hard" else 1
    return sorted(permutation, key=lambda position: sign * counts[position])  # sorted() is stable


def curate(
    ds,
    pass_counts: Mapping[int, Any] | None = None,
    *,
    remove_pass_count_below: int = CURATION.remove_pass_count_below,
    remove_pass_count_above: int = CURATION.remove_pass_count_above,
    order: str = CURATION.order,
    seed: int = CURATION.seed,
    max_count: int = CURATION.rollouts,
):
    """Attach pass_count (unless ``pass_counts`` is None and ``ds`` has it), keep the band, order the rows.

    Returns ``(curated_dataset, CurationReport)``; the curated rows keep every column plus ``pass_count``.
    """
    if pass_counts is not None:
        ds = attach_pass_count(ds, pass_counts)
    elif "pass_count" not in ds.column_names:
        raise CurationError("the data set has no pass_count column; fix: pass the pass-rate results")
    else:
        cols = _columns(ds, ["dataset_index", "dataset_name"])
        check_unique_indices(cols["dataset_index"], cols["dataset_name"])
    counts = _columns(ds, ["pass_count"])["pass_count"]
    keep, removed = keep_band(counts, remove_pass_count_below, remove_pass_count_above)
    kept_counts = [counts[p] for p in keep]
    ordered = [keep[p] for p in order_positions(kept_counts, order, seed)]
    report = CurationReport(
        rows_in=len(counts),
        rows_out=len(ordered),
        remove_pass_count_below=remove_pass_count_below,
        remove_pass_count_above=remove_pass_count_above,
        removed_no_result=removed["no_result"],
        removed_below=removed["below"],
        removed_above=removed["above"],
        order=order,
        seed=seed,
        distribution_in=pass_count_distribution(counts, max_count=max_count),
        distribution_out=pass_count_distribution(kept_counts, max_count=max_count),
    )
    return ds.select(ordered), report


# ------------------------------------------------------------------------------------------------------- I/O
def load_dataset_any(source: str | os.PathLike, split: str | None = None):
    """A data set in the unified schema (plus any extra columns) from a Hub name or a local path."""
    from medvlthinker.data import load_unified

    return load_unified(str(source), split, validate=False)


def save_curated(ds, path: str | os.PathLike, report: CurationReport | None = None, min_rows: int = 1) -> Path:
    """Validate the curated set, then write it in place of ``path`` (written beside it, renamed when complete).

    A set with fewer than ``min_rows`` rows (by default: none; a GRPO run needs at least a batch of questions), a
    broken row or a duplicate dataset_index raises :class:`CurationError` (or
    :class:`medvlthinker.schema.SchemaError`) naming it, and an existing ``path`` is left as it was.
    """
    from medvlthinker.staging import staged

    path = Path(path)
    if len(ds) < max(min_rows, 1):
        summary = "; ".join(report.summary().splitlines()) if report is not None else f"{len(ds)} rows"
        if len(ds) == 0:
            problem = "the curated set would have no rows"
            fix = "check that the pass-rate records belong to this data set, or widen --remove_pass_count_below/above"
        else:
            problem = f"the curated set would have {len(ds)} rows, fewer than the {min_rows} --min_rows asks for"
            fix = ("widen --remove_pass_count_below/above, estimate pass rates on more training rows, or lower "
                   "--min_rows together with the RL batch size it stands for")
        raise CurationError(f"{path}: {problem} ({summary}); it is not written and an existing one is kept; fix: {fix}")
    from medvlthinker.data import save_unified, validate_dataset

    validate_dataset(ds, source=f"the curated set for {path}")
    with staged(path, overwrite=True) as tmp:
        save_unified(ds, str(tmp), parquet=path.suffix == ".parquet")
    return path
