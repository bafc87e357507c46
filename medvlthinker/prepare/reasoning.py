"""The SFT(PMC) set: a teacher's reasoning joined onto the PMC-VQA training rows (docs/protocol.md section 7).

The original recipe asked GPT-4o every PMC-VQA training question three times (temperature 1.0, max_tokens 4096)
and kept, per question, the ``<think>`` body of the first answer the strict grader accepts. Here the teacher runs
through the project's runner (``data_process/generate_reasoning.py`` = ``eval/run_offline_inference.py`` with
:data:`TEACHER_SAMPLING`), so any backend's records (contract 3) serve; :func:`merge_reasoning` is the join:

1. the training rows are shuffled with seed 42 (``numpy.random.default_rng(42).permutation``, the permutation
   ``datasets.Dataset.shuffle(seed=42)`` draws), which is the row order of the output;
2. each row's record is found by dataset_index; its rollouts are graded again, strict, against the row
   (:func:`medvlthinker.grading.grade_rollout`), in rollout order;
3. the first strict-correct rollout with a non-empty ``<think>...</think>`` body (first match, dot matches
   newline, stripped) gives ``reasoning``;
4. a row without one is dropped and listed in the report by dataset_index, under ``no_record`` (the teacher
   never answered it), ``no_correct`` (no rollout correct) or ``no_think`` (correct rollouts, none with a
   ``<think>`` body).

>>> think_body("<think>\\n a\\nb </think><answer>A</answer>")
'a\\nb'
>>> think_body("<answer>A</answer>") is None
True
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.cli import UserError
from medvlthinker.grading import grade_rollout
from medvlthinker.inference.settings import SamplingSettings

TEACHER_SAMPLING = SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=4096, n=3, seed=42)
"""The teacher's sampling: three answers per question at temperature 1.0, 4096 new tokens, seed 42."""

TEACHER_SPLIT = "train"
SHUFFLE_SEED = 42
DEFAULT_TRAIN_SET = "UCSC-VLAA/MedVLThinker-pmc_vqa"
RELEASED_REASONING_SET = "UCSC-VLAA/MedVLThinker-pmc_vqa-gpt_4o_reasoning-tokenized"
DROP_REASONS = ("no_record", "no_correct", "no_think")

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def think_body(text: str | None) -> str | None:
    """The body of the first ``<think>...</think>`` of ``text``, stripped; None when there is none or it is empty."""
    match = _THINK.search(text or "")
    if match is None:
        return None
    body = match.group(1).strip()
    return body or None


def teacher_runner_args(user_args: Iterable[str]) -> list[str]:
    """The runner's command line for the teacher: :data:`TEACHER_SAMPLING` and the train split, then the user's
    flags (click keeps the last value of a repeated option, so a flag the user gives wins).

    A ``--preset`` replaces the teacher's sampling (the runner's preset only fills flags not given, and the
    teacher's would all be given).

    >>> teacher_runner_args(["--model", "M"])[:4]
    ['--split', 'train', '--n', '3']
    >>> teacher_runner_args(["--model", "M", "--preset", "pass_rate"])
    ['--split', 'train', '--model', 'M', '--preset', 'pass_rate']
    """
    user_args = list(user_args)
    if any(arg == "--preset" or arg.startswith("--preset=") for arg in user_args):
        return ["--split", TEACHER_SPLIT, *user_args]
    s = TEACHER_SAMPLING
    return ["--split", TEACHER_SPLIT, "--n", str(s.n), "--temperature", str(s.temperature), "--top_p", str(s.top_p),
            "--max_tokens", str(s.max_tokens), "--seed", str(s.seed), *user_args]


def select_reasoning(record: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    """``(reasoning, rollout position, None)`` from the first strict-correct rollout with a ``<think>`` body, or
    ``(None, None, reason)`` with reason ``no_correct`` or ``no_think``. Grading uses the row's options and answer."""
    any_correct = False
    for position, rollout in enumerate(record.get("rollouts") or []):
        text = rollout.get("output_text")
        if not grade_rollout(text, row, mode="strict")["is_correct"]:
            continue
        any_correct = True
        body = think_body(text)
        if body is not None:
            return body, position, None
    return None, None, "no_think" if any_correct else "no_correct"


def read_teacher_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a teacher run: an ``eval_results.jsonl`` (or any records file), or the run's output
    directory (its merged file, else its shard files, so an unfinished run can be merged as far as it got)."""
    from medvlthinker.inference.records import read_run

    path = Path(path)
    if not path.exists():
        raise UserError(str(path), "no such records file or run directory",
                        fix="pass the --output_dir of data_process/generate_reasoning.py or its eval_results.jsonl")
    records = read_run(path) if path.is_file() or any(path.iterdir()) else []
    if not records:
        raise UserError(str(path), "holds no records",
                        fix="run data_process/generate_reasoning.py first (or let it finish)")
    return records


@dataclass
class ReasoningReport:
    """What the merge kept and dropped; every dropped row is listed by dataset_index."""

    source: str = ""
    records_path: str = ""
    seed: int = SHUFFLE_SEED
    num_rollouts: int | None = TEACHER_SAMPLING.n
    rows_in: int = 0
    records: int = 0
    rows_out: int = 0
    kept_from_rollout: dict[int, int] = field(default_factory=dict)
    dropped: dict[str, list[int]] = field(default_factory=lambda: {r: [] for r in DROP_REASONS})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dropped_counts"] = {reason: len(rows) for reason, rows in self.dropped.items()}
        return out

    def summary(self) -> str:
        counts = ", ".join(f"{reason} {len(rows)}" for reason, rows in self.dropped.items())
        return f"{self.rows_out} of {self.rows_in} rows kept with reasoning; dropped: {counts}"


def _index_records(records: Iterable[Mapping[str, Any]], num_rollouts: int | None) -> dict[int, Mapping[str, Any]]:
    by_index: dict[int, Mapping[str, Any]] = {}
    for position, record in enumerate(records):
        index = record.get("dataset_index")
        where = f"record {position} (dataset_name={record.get('dataset_name')!r}, dataset_index={index!r})"
        if not isinstance(index, int) or isinstance(index, bool) or not isinstance(record.get("rollouts"), list):
            raise UserError(where, "needs an int dataset_index and a rollouts list",
                            fix="pass the records of eval/run_offline_inference.py (contract 3)")
        n = len(record["rollouts"])
        if num_rollouts is not None and n != num_rollouts:
            raise UserError(where, f"has {n} rollouts, expected {num_rollouts}",
                            fix=f"generate with --n {num_rollouts}, or pass --num_rollouts {n} (0: any)")
        if index in by_index:
            raise UserError(where, f"dataset_index {index} has two records",
                            fix="remove the duplicate (each question is answered once, n times)")
        by_index[index] = record
    return by_index


def merge_reasoning(ds, records: Iterable[Mapping[str, Any]], *, seed: int = SHUFFLE_SEED,
                    num_rollouts: int | None = TEACHER_SAMPLING.n, source: str = "", records_path: str = ""):
    """``(dataset, report)``: the rows of ``ds`` (unified schema) that get a reasoning, in seeded shuffle order,
    with ``reasoning`` set; the report lists every dropped dataset_index by reason. A record whose dataset_index
    is not in ``ds``, or whose dataset_name differs from the row's, is an error (records of another set)."""
    import datasets

    from medvlthinker.curate.curation import order_positions
    from medvlthinker.data import unified_features

    by_index = _index_records(records, num_rollouts)
    meta = ds.select_columns(["dataset_name", "dataset_index", "options", "answer", "answer_label"]).to_dict()
    indices = meta["dataset_index"]
    position_of = {index: position for position, index in enumerate(indices)}
    if len(position_of) != len(indices):
        duplicate = next(i for i, c in Counter(indices).items() if c > 1)
        raise UserError(f"{source or 'the training set'} dataset_index {duplicate}", "occurs more than once",
                        fix="give every row a unique dataset_index (the join key with the teacher's records)")
    for index, record in by_index.items():
        if index not in position_of:
            raise UserError(f"{records_path or 'records'} dataset_index {index}", "has no row in the training set",
                            fix="merge the records with the data set the teacher answered (same --dataset_name)")
        name = meta["dataset_name"][position_of[index]]
        if record.get("dataset_name") != name:
            raise UserError(f"{records_path or 'records'} dataset_index {index}",
                            f"is dataset_name {record.get('dataset_name')!r}, the row is {name!r}",
                            fix="merge the records with the data set the teacher answered")

    report = ReasoningReport(source=source, records_path=records_path, seed=seed, num_rollouts=num_rollouts,
                             rows_in=len(indices), records=len(by_index))
    kept_positions, reasonings, from_rollout = [], [], Counter()
    for position in order_positions([0] * len(indices), order="random", seed=seed):
        index = indices[position]
        record = by_index.get(index)
        if record is None:
            report.dropped["no_record"].append(index)
            continue
        row = {key: meta[key][position] for key in ("options", "answer", "answer_label")}
        reasoning, rollout, reason = select_reasoning(record, row)
        if reasoning is None:
            report.dropped[reason].append(index)
            continue
        kept_positions.append(position)
        reasonings.append(reasoning)
        from_rollout[rollout] += 1
    report.rows_out = len(kept_positions)
    report.kept_from_rollout = dict(sorted(from_rollout.items()))
    out = ds.select(kept_positions)
    if "reasoning" in out.column_names:
        out = out.remove_columns("reasoning")
    out = out.add_column("reasoning", reasonings, feature=datasets.Value("string"))
    columns = list(unified_features())
    out = out.select_columns(columns + [c for c in out.column_names if c not in columns])
    return out, report


def build_reasoning_set(train_set: str, records_path: str | os.PathLike, output: str | os.PathLike, *,
                        split: str | None = TEACHER_SPLIT, seed: int = SHUFFLE_SEED,
                        num_rollouts: int | None = TEACHER_SAMPLING.n, overwrite: bool = False) -> ReasoningReport:
    """Load, merge, validate and write the SFT(PMC) set to ``output`` (save_to_disk directory or ``.parquet``),
    with the report in ``<output>.report.json``. Nothing is written when no row keeps a reasoning."""
    from medvlthinker.data import load_unified, save_unified, validate_dataset
    from medvlthinker.staging import check_writable, staged, write_json

    check_writable(output, overwrite)
    ds = load_unified(train_set, split)
    records = read_teacher_records(records_path)
    merged, report = merge_reasoning(ds, records, seed=seed, num_rollouts=num_rollouts, source=str(train_set),
                                     records_path=str(records_path))
    output = Path(output)
    report_path = output.with_name(output.name + ".report.json")
    write_json(report_path, report.to_dict())
    if not len(merged):
        raise UserError(str(records_path),
                        f"no row has a strict-correct rollout with a <think> body ({report.summary()})",
                        fix=f"check the teacher's outputs (report: {report_path}); nothing was written")
    validate_dataset(merged, source=str(output))
    with staged(output, overwrite=overwrite) as tmp:
        save_unified(merged, tmp, parquet=output.suffix == ".parquet")
    return report
