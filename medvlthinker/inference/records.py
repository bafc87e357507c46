"""Eval records on disk (docs/protocol.md contract 3): shard files, resume, merge, the accuracy table.

Layout of an output directory:

- ``shard-{rank:03d}-of-{world:03d}.jsonl``: one record per line, appended as each row finishes;
- ``eval_results.jsonl``: every record, sorted by dataset_index (written by :func:`merge_results`);
- ``accuracy.json``: per benchmark ``{"accuracy": %, "rows", "num_rollouts", "conversion_failure_rate"}`` and
  ``"_average": {"accuracy": unweighted mean of the benchmarks}``;
- ``args.json``: the run's arguments, library versions, model config hash and sampling settings.

``num_rollouts`` in accuracy.json is the number of rollouts per row (the run's n; the largest when rows differ).

Every stage reads records here, by one rule: :func:`read_run` (a run directory or one file: merge, regrade, tables,
curation, the reasoning merge), :func:`collect_records` (the shards alone: merge) and :func:`read_records` (one
shard: the runner's resume, which repairs a torn last line). Files are written whole through
:mod:`medvlthinker.staging`; shards are appended line by line (:class:`ShardWriter`).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medvlthinker.errors import UserError
from medvlthinker.grading import grade_rollout, is_conversion_failure, row_accuracy
from medvlthinker.staging import write_json, write_jsonl, write_text

SHARD_RE = re.compile(r"shard-(\d{3,})-of-(\d{3,})\.jsonl$")
RESULTS_FILE = "eval_results.jsonl"
ACCURACY_FILE = "accuracy.json"
ARGS_FILE = "args.json"


def shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:03d}-of-{world:03d}.jsonl"


def shard_bounds(num_rows: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, end) of ``rank``'s shard; the first ``num_rows % world`` shards get one extra row.

    >>> [shard_bounds(10, r, 3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0..{world - 1}; fix: --node_rank < --node_size")
    base, extra = divmod(num_rows, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def make_record(request_row: Mapping[str, Any], prompt: str, prompt_tokens: int, image_tokens: int,
                texts: Iterable[Any], *, llava_med_rule: bool = False) -> dict[str, Any]:
    """One record of contract 3; every rollout graded in strict mode (the pass_count rule).

    ``texts`` holds output strings or backend completions (``text``, ``output_tokens``, ``finish_reason``); a
    completion's token count and finish reason are kept in its rollout.
    """
    rollouts = []
    for item in texts:
        text = item if isinstance(item, str) else item.text
        rollout = grade_rollout(text, request_row, mode="strict", llava_med_rule=llava_med_rule)
        if not isinstance(item, str):
            rollout["output_tokens"] = int(item.output_tokens)
            rollout["finish_reason"] = item.finish_reason
            if getattr(item, "model", None):
                rollout["model"] = item.model
        rollouts.append(rollout)
    return {
        "dataset_name": request_row["dataset_name"],
        "dataset_index": int(request_row["dataset_index"]),
        "answer_label": request_row["answer_label"],
        "answer": request_row["answer"],
        "options": request_row["options"],
        "question": request_row["question"],
        "prompt": prompt,
        "prompt_tokens": prompt_tokens,
        "image_tokens": image_tokens,
        "rollouts": rollouts,
        "num_rollouts": len(rollouts),
        "num_correct": sum(1 for r in rollouts if r["is_correct"]),
        "misc": request_row.get("misc"),
    }


# The original recipe's run_offline_inference.py (and so every released eval_results.jsonl) names two fields of
# contract 3 differently; reading maps them to this project's names, writing never uses them.
ORIGINAL_FIELD_NAMES = {"parsed_outputs": "rollouts", "prompts": "prompt"}


def normalize_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record in this project's layout: the original's ``parsed_outputs`` / ``prompts`` become ``rollouts`` /
    ``prompt``; a record already in this layout is returned as is.

    >>> normalize_record({"dataset_index": 3, "prompts": "p", "parsed_outputs": []})
    {'dataset_index': 3, 'prompt': 'p', 'rollouts': []}
    """
    clash = [old for old, new in ORIGINAL_FIELD_NAMES.items() if old in record and new in record]
    if clash:
        raise ValueError(
            f"record dataset_index={record.get('dataset_index')!r} has both {clash[0]!r} and "
            f"{ORIGINAL_FIELD_NAMES[clash[0]]!r}; fix: keep one of the two fields"
        )
    if not any(old in record for old in ORIGINAL_FIELD_NAMES):
        return record
    return {ORIGINAL_FIELD_NAMES.get(key, key): value for key, value in record.items()}


REQUIRED_FIELDS = ("dataset_name", "dataset_index")


class RecordsError(UserError):
    """Records that cannot be read as one run; the message names the file, the line and the fix."""


def _numbered_lines(fh: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    """``(line_number, line, is_last)``, streamed (a pass-rate run's file can be larger than memory allows)."""
    number, pending = 0, None
    for line in fh:
        if pending is not None:
            yield number, pending, False
        number, pending = number + 1, line
    if pending is not None:
        yield number, pending, True


def _scan(path: Path, *, torn_ok: bool) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line_number, line, record)`` of a JSONL file, records in this project's layout. A torn last line is
    skipped when ``torn_ok`` (a shard: the run was killed while appending and redoes the row), else an error."""
    with path.open(encoding="utf-8") as fh:
        for number, line, last in _numbered_lines(fh):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if last and torn_ok:
                    continue
                what = "a torn last line: the merged file was not written whole" if last else "not a JSON record"
                raise RecordsError(f"{path}:{number}: {what}; fix: rerun the same eval command (it resumes and "
                                   "merges again), or delete that line") from None
            if not isinstance(record, dict):
                raise RecordsError(f"{path}:{number}: a JSON {type(record).__name__}, not a record; fix: pass eval "
                                   "output (eval_results.jsonl or an --output_dir)")
            try:
                yield number, line, normalize_record(record)
            except ValueError as exc:
                raise RecordsError(f"{path}:{number}: {exc}") from None


def _ends_cleanly(path: Path) -> bool:
    """Whether appending to ``path`` starts a new line (empty, or its last byte is a newline)."""
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_records(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Records of one JSONL file in file order (none when it does not exist), read by the shard rule: a torn
    last line, left by a run killed mid-write, is skipped. With ``repair`` the file is rewritten without it, so
    appending continues on a clean line (the runner's resume)."""
    path = Path(path)
    if not path.exists():
        return []
    scanned = list(_scan(path, torn_ok=True))
    if repair and not _ends_cleanly(path):
        write_text(path, "".join(line if line.endswith("\n") else line + "\n" for _, line, _ in scanned))
    return [record for _, _, record in scanned]


def run_files(path: str | os.PathLike) -> list[Path]:
    """The record files of a run: ``path`` itself, or in an output directory its merged file, else its shards."""
    path = Path(path)
    if path.is_dir():
        merged = path / RESULTS_FILE
        files = [merged] if merged.is_file() else shard_files(path)
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"{path}: no eval records ({RESULTS_FILE} or shard-*-of-*.jsonl); fix: pass the "
                                "--output_dir of eval/run_offline_inference.py or its eval_results.jsonl")
    return files


def _read_files(files: Iterable[Path], required: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records of ``files`` as one run, sorted by dataset_index (the rules of :func:`read_run`)."""
    seen: dict[int, str] = {}
    records: list[dict[str, Any]] = []
    for file in files:
        for number, _, record in _scan(file, torn_ok=bool(SHARD_RE.search(file.name))):
            missing = [k for k in dict.fromkeys((*REQUIRED_FIELDS, *required)) if k not in record]
            if missing or not isinstance(record["dataset_index"], int):
                raise RecordsError(f"{file}:{number}: record without {missing or ['an int dataset_index']}; fix: pass "
                                   "eval output (docs/protocol.md contract 3)")
            index = record["dataset_index"]
            if index in seen:
                raise RecordsError(f"{file}:{number}: dataset_index {index} is already recorded at {seen[index]}; "
                                   "fix: remove the duplicate line (one record per row), or rerun with --overwrite")
            seen[index] = f"{file}:{number}"
            records.append(record)
    return sorted(records, key=lambda r: r["dataset_index"])


def read_run(path: str | os.PathLike, *, required: tuple[str, ...] = REQUIRED_FIELDS) -> list[dict[str, Any]]:
    """The records of one run, sorted by dataset_index: the one reader behind resume, merge, regrade, tables,
    curation and the reasoning merge.

    ``path`` is an output directory (its eval_results.jsonl, else the union of its shards) or one JSONL file.
    One rule everywhere: a torn last line is skipped in a shard (the run was killed while appending and redoes
    the row) and is an error in any other file; a dataset_index recorded twice is an error naming both places;
    the original recipe's field names are read as this project's (:func:`normalize_record`). A run without any
    record is an error (a table or regrade of nothing would read as an accuracy of 0).
    """
    records = _read_files(run_files(path), required)
    if not records:
        raise RecordsError(f"{path}: holds no records; fix: pass the --output_dir of a finished (or started) "
                           "eval/run_offline_inference.py run, or its eval_results.jsonl")
    return records


class ShardWriter:
    """Appends records to a shard file, one line each, flushed at once (a kill loses at most the line being
    written, which :func:`read_records` drops on resume)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def shard_files(output_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.join(str(output_dir), "shard-*-of-*.jsonl"))
                  if SHARD_RE.search(p))


def finished_indices(output_dir: str | os.PathLike) -> set[int]:
    """dataset_index values already written in any shard file of ``output_dir`` (torn last lines repaired)."""
    done: set[int] = set()
    for path in shard_files(output_dir):
        done.update(int(r["dataset_index"]) for r in read_records(path, repair=True))
    return done


def collect_records(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of every shard in ``output_dir``, sorted (:func:`read_run`'s rules; none when no shard)."""
    return _read_files(shard_files(output_dir), REQUIRED_FIELDS)


def accuracy_table(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{dataset_name: {"accuracy", "rows", "num_rollouts", "conversion_failure_rate"}, "_average": ...}``.

    Accuracy per benchmark is the mean over its rows of num_correct / num_rollouts, in percent (docs/protocol.md
    section 5); the average is unweighted over benchmarks. A conversion failure is a rollout whose pred_letter
    is not an option letter.
    """
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"acc": 0.0, "rows": 0, "n": 0, "rollouts": 0, "fail": 0})
    for record in records:
        entry = per[record["dataset_name"]]
        entry["acc"] += row_accuracy(record)
        entry["rows"] += 1
        entry["n"] = max(entry["n"], record["num_rollouts"])
        entry["rollouts"] += len(record["rollouts"])
        entry["fail"] += sum(1 for r in record["rollouts"] if is_conversion_failure(r["pred_letter"], record["options"]))
    table: dict[str, Any] = {}
    for name in sorted(per):
        entry = per[name]
        table[name] = {
            "accuracy": 100.0 * entry["acc"] / entry["rows"],
            "rows": entry["rows"],
            "num_rollouts": entry["n"],
            "conversion_failure_rate": entry["fail"] / entry["rollouts"] if entry["rollouts"] else 0.0,
        }
    benchmarks = [v["accuracy"] for v in table.values()]
    table["_average"] = {"accuracy": sum(benchmarks) / len(benchmarks) if benchmarks else 0.0}
    return table


def merge_results(output_dir: str | os.PathLike, *, expected_rows: int | None = None) -> dict[str, Any]:
    """Merge the shards of ``output_dir`` into eval_results.jsonl and accuracy.json; return the accuracy table.

    With ``expected_rows`` a merge that finds fewer records raises, naming how many are missing (rerun the
    same command: it resumes).
    """
    records = collect_records(output_dir)
    if not records:
        raise FileNotFoundError(f"no shard-*-of-*.jsonl records in {output_dir}; fix: run eval/run_offline_inference.py first")
    if expected_rows is not None and len(records) < expected_rows:
        raise RecordsError(
            f"{output_dir} holds {len(records)} of {expected_rows} records; fix: rerun the same command to resume "
            f"the unfinished shards, then merge"
        )
    write_jsonl(Path(output_dir) / RESULTS_FILE, records)
    table = accuracy_table(records)
    write_json(Path(output_dir) / ACCURACY_FILE, table)
    return table
