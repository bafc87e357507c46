"""Raw training sources -> unified rows (docs/protocol.md sections 1 and 7).

* PMC-VQA (the public release): a CSV with the columns ``Figure_path, Question, Answer, Choice A .. Choice D,
  Answer_label`` (choices read ``"A: text"`` or ``" A:text"``) and a folder of figures. Images get the PMC-VQA
  resize rule (:func:`medvlthinker.images.pmc_resize`). Work goes in chunks written next to the output, so an
  interrupted run resumes where it stopped. ``compat="original"`` (the default) keeps exactly the rows of the
  original's prepare_pmc_vqa.py, with its dataset_index (the count of kept rows), so the result joins with the
  released ``UCSC-VLAA/MedVLThinker-pmc_vqa`` and the files derived from it; ``compat="lenient"`` is the opt-in
  described at :data:`COMPAT`.
* m23k-style text MCQ with reasoning (``UCSC-VLAA/MedVLThinker-m23k-tokenized`` or any table with ``question``,
  ``options`` (dict, JSON string or list), ``answer_label`` / ``answer_idx``, ``answer``, ``reasoning``).

A malformed source row is never dropped silently: it is counted by reason with examples in a
:class:`PrepareReport`, and either skipped (``on_error="skip"``) or fatal (``on_error="fail"``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.images import ImageDecodeError, decode_image, image_sha256, pmc_resize
from medvlthinker.schema import LETTERS, SchemaError, parse_options, validate_row

ON_ERROR = ("skip", "fail")
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

# m23k column aliases, first present wins (docs/data.md lists the mapping)
M23K_LABEL_COLUMNS = ("answer_label", "answer_idx", "answer_letter")
M23K_ANSWER_COLUMNS = ("answer", "answer_string")


class MalformedRow(ValueError):
    """One source row that cannot become a unified row: ``reason`` is a short key, ``detail`` says what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class PrepareError(ValueError):
    """A fatal preparation problem (a missing column, a malformed row with on_error="fail"); names the fix."""


@dataclass
class PrepareReport:
    """What a preparation run read, wrote and skipped, by reason, with the first examples of each reason."""

    source: str
    rows_read: int = 0
    rows_written: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    resized: int = 0
    max_examples: int = 5

    def add_malformed(self, position: int, exc: MalformedRow, extra: Mapping[str, Any] | None = None) -> None:
        self.malformed[exc.reason] = self.malformed.get(exc.reason, 0) + 1
        if sum(1 for e in self.examples if e["reason"] == exc.reason) < self.max_examples:
            self.examples.append({"source_row": position, "reason": exc.reason, "detail": exc.detail, **(extra or {})})

    def merge(self, other: PrepareReport) -> None:
        self.rows_read += other.rows_read
        self.rows_written += other.rows_written
        self.resized += other.resized
        for mine, theirs in ((self.malformed, other.malformed), (self.warnings, other.warnings)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        for example in other.examples:
            if sum(1 for e in self.examples if e["reason"] == example["reason"]) < self.max_examples:
                self.examples.append(example)

    @property
    def skipped(self) -> int:
        return sum(self.malformed.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["malformed"] = dict(sorted(self.malformed.items()))
        out["warnings"] = dict(sorted(self.warnings.items()))
        out["skipped"] = self.skipped
        return out

    def summary(self) -> str:
        lines = [f"{self.source}: read {self.rows_read} rows, wrote {self.rows_written}, skipped {self.skipped} malformed"]
        if self.resized:
            lines.append(f"  images resized by the PMC-VQA rule: {self.resized}")
        for reason, count in sorted(self.malformed.items()):
            lines.append(f"  malformed, {reason}: {count}")
            for example in (e for e in self.examples if e["reason"] == reason):
                lines.append(f"    e.g. source row {example['source_row']}: {example['detail']}")
        for reason, count in sorted(self.warnings.items()):
            lines.append(f"  kept with a warning, {reason}: {count}")
        return "\n".join(lines)


def _fail_or_record(report: PrepareReport, on_error: str, position: int, exc: MalformedRow, source: str, **extra) -> None:
    if on_error == "fail":
        raise PrepareError(
            f"{source}, source row {position}: {exc.reason}: {exc.detail}; fix: repair the row, or pass "
            "--on_error skip to skip malformed rows (they are counted in the report)"
        ) from exc
    report.add_malformed(position, exc, extra)


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


# ------------------------------------------------------------------------------------------------------ PMC-VQA
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
    if compat not in COMPAT:
        raise ValueError(f"compat must be one of {COMPAT}, got {compat!r}")
    fields = original_pmc_vqa_fields(record) if compat == "original" else lenient_pmc_vqa_fields(record)
    if compat == "original" and index is None:
        raise ValueError("compat='original' needs the row's index among the kept rows (original_indices)")
    options, label = fields["options"], fields["answer_label"]
    figure = (record.get("Figure_path") or "").strip()
    if not figure:
        raise MalformedRow("image_missing", "Figure_path is empty")
    path = Path(image_dir) / figure
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


def _pmc_work(args: tuple) -> tuple[str, Any, dict[str, bool] | None]:
    record, position, image_dir, dataset_name, start_index, compat, index = args
    try:
        if compat == "original" and index is None:
            original_pmc_vqa_fields(record)  # raises the reason the original drops this row
        row, flags = pmc_vqa_row(record, position, image_dir, dataset_name=dataset_name, start_index=start_index,
                                 compat=compat, index=index)
    except MalformedRow as exc:
        return "malformed", (exc.reason, exc.detail, record.get("Figure_path")), None
    return "ok", row, flags


def _pmc_chunk(records, positions, image_dir, dataset_name, start_index, on_error, source, pool, progress, compat,
               indices):
    report = PrepareReport(source=source)
    rows = []
    work = [(records[p], p, str(image_dir), dataset_name, start_index, compat, indices[p] if indices else None)
            for p in positions]
    results = pool.imap(_pmc_work, work, chunksize=8) if pool is not None else map(_pmc_work, work)
    for position, (status, payload, flags) in zip(positions, results):
        report.rows_read += 1
        progress.update(1)
        if status == "malformed":
            reason, detail, figure = payload
            _fail_or_record(report, on_error, position, MalformedRow(reason, detail), source, figure_path=figure)
            continue
        rows.append(payload)
        report.resized += int(flags["resized"])
        if flags["answer_text_mismatch"]:
            report.warnings["answer_text_differs_from_choice"] = report.warnings.get("answer_text_differs_from_choice", 0) + 1
    report.rows_written = len(rows)
    return rows, report


def _figures_digest(records, positions, image_dir) -> str:
    """What a chunk read from the figure folder: per row, its figure's size and mtime, or that it is missing.

    A finished chunk is reused only while this matches, so a figure added, fixed or replaced after a run (or a
    corrected --image_dir) makes its chunk be rebuilt instead of reporting the old result.
    """
    h = hashlib.sha256()
    for position in positions:
        figure = (records[position].get("Figure_path") or "").strip()
        try:
            stat = (Path(image_dir) / figure).stat() if figure else None
        except OSError:
            stat = None
        state = f"{stat.st_size}:{stat.st_mtime_ns}" if stat is not None and figure else "-"
        h.update(f"{figure}\0{state}\n".encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_pmc_vqa(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    on_error: str = "skip",
    dataset_name: str = "pmc_vqa",
    start_index: int = 0,
    limit: int | None = None,
    num_proc: int = 1,
    chunk_size: int = 5000,
    work_dir: str | os.PathLike | None = None,
    compat: str = "original",
) -> PrepareReport:
    """Raw PMC-VQA (CSV + figure folder) -> a unified data set at ``out_path`` (save_to_disk dir or .parquet).

    ``compat`` chooses the row rules (:data:`COMPAT`); with ``"original"`` a row dropped for its image (missing or
    undecodable, which the original cannot load either) leaves a gap in dataset_index instead of shifting the rows
    after it, so the others still join with the released set.

    Rows are processed in chunks of ``chunk_size``, each written to ``work_dir`` (default ``<out_path>.chunks``) as
    soon as it is done; a re-run reuses the finished chunks (the run's settings must match, and a chunk whose figures
    changed since is rebuilt). A run that keeps no row raises :class:`PrepareError` with the report. ``num_proc`` worker
    processes decode and resize the images. Returns the report (also saved as ``<out_path>.report.json``).
    """
    import datasets
    from tqdm.auto import tqdm

    from medvlthinker.synthetic import to_dataset

    _check_on_error(on_error)
    if compat not in COMPAT:
        raise ValueError(f"compat must be one of {COMPAT}, got {compat!r}")
    records = read_pmc_vqa_csv(csv_path, compat)
    if limit is not None:
        records = records[:limit]
    indices = original_indices(records) if compat == "original" else None
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir else out_path.with_name(out_path.name + ".chunks")
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "csv_sha256": _file_digest(Path(csv_path)),
        "rows": len(records),
        "chunk_size": chunk_size,
        "on_error": on_error,
        "dataset_name": dataset_name,
        "start_index": start_index,
        "compat": compat,
    }
    manifest = work / "settings.json"
    if manifest.exists() and json.loads(manifest.read_text()) != settings:
        raise PrepareError(
            f"{work} holds chunks of a run with other settings ({manifest.read_text().strip()}); fix: delete {work} "
            "or pass the same CSV and settings to resume"
        )
    manifest.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")

    source = str(csv_path)
    total = PrepareReport(source=source)
    starts = list(range(0, len(records), chunk_size))
    pool = None
    if num_proc > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(num_proc)
    chunk_files = []
    try:
        with tqdm(total=len(records), desc="PMC-VQA rows", unit="row") as progress:
            for start in starts:
                end = min(start + chunk_size, len(records))
                chunk_file = work / f"rows-{start:08d}-{end:08d}.parquet"
                chunk_report = work / f"rows-{start:08d}-{end:08d}.report.json"
                chunk_inputs = work / f"rows-{start:08d}-{end:08d}.figures.sha256"
                chunk_files.append(chunk_file)
                figures = _figures_digest(records, range(start, end), image_dir)
                reusable = chunk_file.exists() and chunk_report.exists() and chunk_inputs.exists()
                if reusable and chunk_inputs.read_text().strip() == figures:
                    report = PrepareReport(**json.loads(chunk_report.read_text()))
                    progress.update(end - start)
                else:
                    rows, report = _pmc_chunk(
                        records, range(start, end), image_dir, dataset_name, start_index, on_error, source, pool, progress,
                        compat, indices,
                    )
                    tmp = chunk_file.with_suffix(".parquet.tmp")
                    to_dataset(rows).to_parquet(str(tmp))
                    chunk_inputs.unlink(missing_ok=True)  # the chunk counts as finished only once all three exist
                    os.replace(tmp, chunk_file)
                    chunk_report.write_text(json.dumps(asdict(report), sort_keys=True) + "\n")
                    chunk_inputs.write_text(figures + "\n")
                total.merge(report)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    check_rows_written(total, image_dir=image_dir)
    _write_chunks(chunk_files, out_path, datasets)
    _write_report(total, out_path)
    return total


def check_rows_written(report: PrepareReport, *, image_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`PrepareError` with the malformed-row report when no row survived (an output with no rows
    would only fail a later stage); an existing output is left as it was."""
    if report.rows_written:
        return
    lines = report.summary().splitlines()
    fix = "repair the source rows listed above"
    images = report.malformed.get("image_missing", 0)
    if image_dir is not None and images * 2 > max(report.skipped, 1):
        fix = f"check --image_dir {image_dir}: the CSV's Figure_path entries must be relative to it"
    elif report.malformed.get("answer_mismatch", 0) * 2 > max(report.skipped, 1):
        fix = "check the Answer column, or pass --compat lenient (the chosen option's text is then used)"
    raise PrepareError(f"{'; '.join(line.strip() for line in lines)}; no row was written; fix: {fix}")


def _write_report(report: PrepareReport, out_path: Path) -> Path:
    path = out_path.with_name(out_path.name.removesuffix(".parquet") + ".report.json")
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _write_chunks(chunk_files: list[Path], out_path: Path, datasets) -> None:
    """Join the chunk files into the output, streaming (the full PMC-VQA set does not fit in memory).

    The join is written beside the output and renamed into place (:func:`medvlthinker.staging.staged`), so a run
    killed while joining leaves the previous output, or none, never a torn one.
    """
    from medvlthinker.data import save_unified, unified_features
    from medvlthinker.staging import staged
    from medvlthinker.synthetic import to_dataset

    parquet = out_path.suffix == ".parquet"
    with staged(out_path, overwrite=True) as tmp:
        if not chunk_files:
            save_unified(to_dataset([]), tmp, parquet=parquet)
            return
        if parquet:
            import pyarrow.parquet as pq

            writer = None
            try:
                for chunk in chunk_files:
                    table = _read_chunk(chunk, pq)
                    if writer is None:
                        writer = pq.ParquetWriter(str(tmp), table.schema)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
            return
        import pyarrow.parquet as pq

        for chunk in chunk_files:
            _read_chunk(chunk, pq, metadata_only=True)
        cache = chunk_files[0].parent / "hf_cache"
        ds = datasets.Dataset.from_parquet([str(c) for c in chunk_files], features=unified_features(),
                                           cache_dir=str(cache))
        # from_parquet's fingerprint depends on the cache path; pin it to the content so reruns write identical files
        digest = hashlib.sha256("".join(_file_digest(c) for c in chunk_files).encode()).hexdigest()[:16]
        save_unified(ds.select(range(len(ds)), new_fingerprint=digest), tmp, parquet=False)


def _read_chunk(chunk: Path, pq, metadata_only: bool = False):
    try:
        return pq.read_metadata(chunk) if metadata_only else pq.read_table(chunk)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PrepareError(
            f"{chunk}: a finished chunk cannot be read ({type(exc).__name__}: {exc}); fix: delete it and its "
            ".report.json and re-run (only that chunk is rebuilt)"
        ) from None


# ---------------------------------------------------------------------------------------------------------- m23k
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


def read_table(source: str | os.PathLike, split: str | None = "train"):
    """Any table ``datasets`` reads: a Hub name, a save_to_disk directory, a .parquet, .jsonl/.json or .csv file."""
    import datasets

    path = Path(source)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise PrepareError(f"{source}: unknown file type; fix: pass a .parquet, .jsonl, .json or .csv file")
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    else:
        try:
            loaded = datasets.load_dataset(str(source), split=split)
        except Exception as exc:
            raise PrepareError(
                f"cannot load {source!r} ({type(exc).__name__}: {exc}); fix: check the name and split, connect to "
                "the Hub, or pass a local path"
            ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise PrepareError(f"{source} has no split {split!r} (it has {list(loaded)}); fix: pass --split")
        loaded = loaded[split]
    return loaded


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

    from medvlthinker.synthetic import to_dataset

    _check_on_error(on_error)
    table = read_table(source, split)
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
            _fail_or_record(report, on_error, position, exc, str(source), dataset_index=record.get("dataset_index"))
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
        _write_report(report, out_path)
    return ds, report
