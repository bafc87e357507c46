"""Pass-rate curation (docs/protocol.md section 6): attach pass_count, keep a band of it, order the rows by it.

A training question's pass_count is the number of strict-correct rollouts of its pass-rate record (``num_correct``
of the eval output, docs/protocol.md contract 3; the paper samples n=16 at temperature 1.0 with Qwen2.5-VL-3B-Instruct). Records
join rows on ``dataset_index``. A row without a record gets -1, so the default band [1, 7] drops it along with the
never-solved (0) and too-easy (8..16) questions.

The order of the paper's curriculum runs: filter, shuffle with seed 42 (the permutation of
``datasets.Dataset.shuffle(seed=42)``), then a stable sort by pass_count, descending for ``easy_to_hard``.

>>> pass_count_distribution([0, 1, 1, 16, -1], max_count=2)
Traceback (most recent call last):
...
ValueError: pass_count 16 is above max_count 2; fix: pass max_count >= the number of rollouts per question
>>> pass_count_distribution([0, 1, 1, -1], max_count=2)
{-1: 1, 0: 1, 1: 2, 2: 0}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvlthinker.errors import UserError
from medvlthinker.inference.settings import CURATION

NO_RESULT = -1
"""pass_count of a row that has no pass-rate record."""

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
    except ValueError as exc:
        raise CurationError(str(exc)) from None
    if not records:
        raise CurationError(
            f"{path}: holds no pass-rate records; fix: pass the eval_results.jsonl of a finished pass-rate run "
            "(eval/run_offline_inference.py, n=16, temperature 1.0), or finish that run first"
        )
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
@dataclass
class CurationReport:
    """What a curation run did: the rows each filter removed and the pass-count distributions."""

    rows_in: int
    rows_out: int
    remove_pass_count_below: int
    remove_pass_count_above: int
    removed_no_result: int
    removed_below: int
    removed_above: int
    order: str
    seed: int
    distribution_in: dict[int, int] = field(default_factory=dict)
    distribution_out: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # JSON keys are strings; keep them in numeric order so the file reads like the table
        for key in ("distribution_in", "distribution_out"):
            out[key] = {str(k): v for k, v in sorted(out[key].items())}
        return out

    def summary(self) -> str:
        return (
            f"rows in: {self.rows_in}\n"
            f"removed, no pass-rate result (pass_count -1): {self.removed_no_result}\n"
            f"removed, pass_count < {self.remove_pass_count_below}: {self.removed_below}\n"
            f"removed, pass_count > {self.remove_pass_count_above}: {self.removed_above}\n"
            f"rows out: {self.rows_out} (order {self.order}, seed {self.seed})"
        )


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


# ------------------------------------------------------------------------------------------------ distribution
def pass_count_distribution(counts: Iterable[int], max_count: int = CURATION.rollouts) -> dict[int, int]:
    """``{pass_count: rows}`` for 0..max_count (zeros included), plus -1 when some rows have no result."""
    tally = Counter(int(c) for c in counts)
    for value in tally:
        if value > max_count:
            raise ValueError(
                f"pass_count {value} is above max_count {max_count}; fix: pass max_count >= the number of rollouts "
                "per question"
            )
        if value < NO_RESULT:
            raise ValueError(f"pass_count {value} is negative; only -1 (no result) may be")
    out = {NO_RESULT: tally[NO_RESULT]} if tally[NO_RESULT] else {}
    out.update({k: tally[k] for k in range(max_count + 1)})
    return out


def format_distribution_table(distribution: Mapping[int, int]) -> str:
    """A plain-text table: pass_count, rows, percent, cumulative percent (-1 reads "none")."""
    total = sum(distribution.values()) or 1
    lines = [f"{'pass_count':>10} {'rows':>8} {'percent':>8} {'cum.%':>7}"]
    running = 0
    for key in sorted(distribution):
        running += distribution[key]
        label = "none" if key == NO_RESULT else str(key)
        lines.append(
            f"{label:>10} {distribution[key]:>8} {100 * distribution[key] / total:>8.2f} {100 * running / total:>7.2f}"
        )
    lines.append(f"{'total':>10} {sum(distribution.values()):>8}")
    return "\n".join(lines)


def plot_pass_count_distribution(distribution: Mapping[int, int], out_path: str | os.PathLike, title: str | None = None):
    """A bar plot of ``distribution`` saved to ``out_path`` (PNG, PDF or SVG by extension); returns the path.

    The file carries no timestamp, so the same distribution gives the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    metadata = {".png": {}, ".pdf": {"CreationDate": None, "ModDate": None}, ".svg": {"Date": None}}
    if suffix not in metadata:
        raise ValueError(f"unsupported plot format {out_path.name}; fix: end the path with .png, .pdf or .svg")
    keys = sorted(distribution)
    labels = ["none" if k == NO_RESULT else str(k) for k in keys]
    values = [distribution[k] for k in keys]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(keys) + 1.5), 3.2))
    try:
        bars = ax.bar(labels, values, color=["#9a9a9a" if k == NO_RESULT else "#3b6ea5" for k in keys])
        ax.bar_label(bars, fontsize=7, padding=1)
        ax.set_xlabel("pass_count (correct rollouts)")
        ax.set_ylabel("questions")
        ax.set_title(title or f"Pass-count distribution ({sum(values)} questions)", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.hashsalt": "medvlthinker"}):
            fig.savefig(out_path, dpi=150, metadata=metadata[suffix])
    finally:
        plt.close(fig)
    return out_path


# ------------------------------------------------------------------------------------------------------- I/O
def _unified_io():
    try:
        from medvlthinker.data import load_unified, save_unified
    except ImportError:  # the loader package is optional here: fall back to datasets' own local formats
        return None
    return load_unified, save_unified


def load_dataset_any(source: str | os.PathLike, split: str | None = None):
    """A data set in the unified schema (plus any extra columns) from a Hub name or a local path.

    Goes through ``medvlthinker.data.load_unified``; without it, reads a save_to_disk directory or a parquet file.
    """
    io = _unified_io()
    if io is not None:
        return io[0](str(source), split, validate=False)
    import datasets

    path = Path(source)
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        return ds[split or next(iter(ds))] if isinstance(ds, datasets.DatasetDict) else ds
    if path.suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path))
    raise CurationError(f"cannot read {source}; fix: pass a save_to_disk directory or a .parquet file")


def save_dataset(ds, path: str | os.PathLike) -> None:
    """save_to_disk directory, or a parquet file when ``path`` ends in .parquet."""
    io = _unified_io()
    if io is not None:
        io[1](ds, str(path))
    elif str(path).endswith(".parquet"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
    else:
        ds.save_to_disk(str(path))


def save_curated(ds, path: str | os.PathLike, report: CurationReport | None = None) -> Path:
    """Validate the curated set, then write it in place of ``path`` (written beside it, renamed when complete).

    A set with no rows, a broken row or a duplicate dataset_index raises :class:`CurationError` (or
    :class:`medvlthinker.schema.SchemaError`) naming it, and an existing ``path`` is left as it was.
    """
    from medvlthinker.staging import staged

    path = Path(path)
    if len(ds) == 0:
        summary = "; ".join(report.summary().splitlines()) if report is not None else "0 rows"
        raise CurationError(
            f"{path}: the curated set would have no rows ({summary}); it is not written and an existing one is kept; "
            "fix: check that the pass-rate records belong to this data set, or widen --remove_pass_count_below/above"
        )
    io = _unified_io()
    if io is not None:
        from medvlthinker.data import validate_dataset

        validate_dataset(ds, source=f"the curated set for {path}")
    with staged(path, overwrite=True) as tmp:
        if io is not None:
            io[1](ds, str(tmp), parquet=path.suffix == ".parquet")
        elif path.suffix == ".parquet":
            ds.to_parquet(str(tmp))
        else:
            ds.save_to_disk(str(tmp))
    return path


def write_curation_outputs(report: CurationReport, out_dir: str | os.PathLike, plot_format: str = "png") -> dict[str, Path]:
    """``curation_report.json``, ``pass_count_distribution.txt`` and the before/after plots in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out_dir / "curation_report.json",
        "table": out_dir / "pass_count_distribution.txt",
        "plot_in": out_dir / f"pass_count_distribution.{plot_format}",
        "plot_out": out_dir / f"pass_count_distribution_kept.{plot_format}",
    }
    paths["report"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["table"].write_text(
        "all rows\n" + format_distribution_table(report.distribution_in)
        + "\n\nkept rows\n" + format_distribution_table(report.distribution_out) + "\n\n" + report.summary() + "\n",
        encoding="utf-8",
    )
    plot_pass_count_distribution(report.distribution_in, paths["plot_in"], title=f"All rows ({report.rows_in})")
    plot_pass_count_distribution(
        report.distribution_out,
        paths["plot_out"],
        title=f"Kept rows, pass_count {report.remove_pass_count_below}..{report.remove_pass_count_above} ({report.rows_out})",
    )
    return paths
