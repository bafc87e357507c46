"""Build the evaluation set from its sources (docs/protocol.md section 5, docs/eval_set.md).

The released ``UCSC-VLAA/MedVLThinker-Eval`` stays the default of every evaluation: the options of PathVQA, SLAKE
and VQA-RAD were written by an LLM, which cannot be asked again byte for byte. This builder records how the set is
made, so a user can rebuild it (with the original's options cache, exactly), or extend it. In this order:

1. ``pmc_vqa``: AdaptLLM/biomed-VQA-benchmark ``PMC-VQA`` test. question = ``input`` without its first
   "Question: " and without everything from "\\nThe choices are:" (stripped); options A-D from the columns
   ``A``..``D``; answer_label = ``label``.
2. ``pathvqa_closed``, ``slake_closed``, ``vqa_rad_closed``: the ``PathVQA``, ``SLAKE``, ``VQA_RAD`` test splits,
   rows with ``answer_type == "CLOSED"``. question = ``input`` as it is; options written by an LLM
   (:mod:`medvlthinker.prepare.option_writer`), lettered A, B, ... in its order; answer_label = the first option equal to
   ``label`` ignoring case, answer = that option's text; hash = the options cache key.
3. ``MMMU-medical``: MMMU/MMMU, the five health subjects, validation then dev, ``question_type ==
   "multiple-choice"``; ``<image n>`` tags removed from the question (stripped); options from the ``options``
   list; images ``image_1`` .. ``image_7`` where present.
4. ``MedXpertQA-MM``: TsinghuaC3I/MedXpertQA ``MM`` test; question = the text before "\\nAnswer Choices: ";
   options A-E from ``options``; answer_label = ``label``; images from the data set's image folder.

dataset_index counts the rows of the concatenation, 0..N-1. A row that cannot be built (options the LLM could not
write, a label outside its options, a missing image) keeps its dataset_index unused, is listed in the report with
its source row and reason, and by default stops the build (``on_failure="error"``) once every row was tried.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.benchmarks import BY_LABEL, ROW_ORDER
from medvlthinker.cli import UserError
from medvlthinker.prepare.option_writer import Completer, fill_options, row_key

ADAPTLLM = "AdaptLLM/biomed-VQA-benchmark"
MMMU = "MMMU/MMMU"
MEDXPERTQA = "TsinghuaC3I/MedXpertQA"
EVAL_SPLIT = "test"

MMMU_SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
                 "Public_Health")
MMMU_SPLITS = ("validation", "dev")
MMMU_MAX_IMAGES = 7

# the dataset_names come from the registry; the source configs are the sources' own names
PMC_VQA, PATHVQA, SLAKE, VQA_RAD, MMMU_MEDICAL, MEDXPERTQA_MM = (BY_LABEL[label].dataset_name for label in (
    "PMC", "PathVQA", "SLAKE", "VQA-Rad", "MMMU", "MedX-M"))
# dataset_name -> the AdaptLLM config; the repository stores each config in a folder of another name
CLOSED_SETS = {PATHVQA: "PathVQA", SLAKE: "SLAKE", VQA_RAD: "VQA_RAD"}
ADAPTLLM_FOLDERS = {"PMC-VQA": "pmc_vqa", "PathVQA": "pathvqa", "SLAKE": "SLAKE", "VQA_RAD": "vqa_rad"}
ORDER = tuple(b.dataset_name for b in ROW_ORDER)
"""The dataset_names in the order the builder writes them (the registry's row order)."""
ON_FAILURE = ("error", "skip")

_IMAGE_TAG = re.compile(r"<image \d+>")
PMC_CHOICES = "\nThe choices are:"
MEDXPERTQA_CHOICES = "\nAnswer Choices: "


# ---------------------------------------------------------------- reading the sources


def _is_local(source: str | os.PathLike) -> bool:
    return Path(source).expanduser().exists()


def read_source(source: str | os.PathLike, config: str, split: str, folders: tuple[str, ...] = ()):
    """One split of one config: from a local copy (``<source>/<folder>``, a save_to_disk folder, or parquet /
    jsonl files named after the split) or, for a name that is not a local path, the Hugging Face Hub."""
    import datasets

    from medvlthinker.data import load_disk_dataset

    if not _is_local(source):
        try:
            return datasets.load_dataset(str(source), config, split=split)
        except Exception as exc:  # offline, unknown name or config: the same advice
            raise UserError(f"{source} ({config}, {split})", f"cannot be loaded ({type(exc).__name__}: {exc})",
                            fix="connect to the Hub, or pass a local copy of the repository") from exc
    root = Path(source).expanduser()
    for name in dict.fromkeys((*folders, config)):
        folder = root / name
        if not folder.is_dir():
            continue
        if (folder / "state.json").exists() or (folder / "dataset_dict.json").exists():
            loaded = load_disk_dataset(folder)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        parquet = sorted(p for p in folder.rglob("*.parquet") if p.name.startswith(split) or p.parent.name == split)
        if parquet:
            return datasets.Dataset.from_parquet([str(p) for p in parquet])
        jsonl = sorted(folder.rglob(f"{split}.jsonl"))
        if jsonl:
            return datasets.Dataset.from_json([str(p) for p in jsonl])
    raise UserError(f"{root}", f"has no {config!r} {split!r} data (looked in {[*folders, config]})",
                    fix=f"pass a copy of the {source} repository holding <config>/ as save_to_disk, parquet or jsonl")


def _image_value(value: Any, base: Path | None = None, *, folders: list[Path] | None = None,
                 allow_outside: bool = False) -> dict[str, Any]:
    """An image as ``{"bytes", "path"}`` with the file's own bytes (not re-encoded). A path is read only inside
    ``folders`` (default: ``base``), see :func:`medvlthinker.images.check_inside`."""
    from medvlthinker.images import check_inside

    if isinstance(value, dict) and value.get("bytes"):
        return {"bytes": value["bytes"], "path": value.get("path")}
    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise FileNotFoundError("image has neither bytes nor a path")
    file = Path(path) if base is None or Path(path).is_absolute() else base / path
    check_inside(file, folders if folders is not None else [base] if base is not None else [],
                 allow_outside=allow_outside)
    if not file.is_file():
        raise FileNotFoundError(f"image file not found: {file}")
    return {"bytes": file.read_bytes(), "path": Path(path).name}


def _undecoded(ds, columns: tuple[str, ...]):
    import datasets

    for column in columns:
        if column in ds.column_names and isinstance(ds.features[column], datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


# ---------------------------------------------------------------- rows


@dataclass
class Failure:
    dataset_name: str
    dataset_index: int
    source_row: int
    reason: str
    detail: str


@dataclass
class SourceReport:
    source: str
    config: str
    split: str
    rows_read: int = 0
    rows_selected: int = 0
    rows_out: int = 0


@dataclass
class EvalSetReport:
    sources: dict[str, list[SourceReport]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    option_rows: int = 0
    option_cache_hits: int = 0
    option_calls: int = 0
    rows_out: int = 0
    next_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def summary(self) -> str:
        return (f"{self.rows_out} rows ({self.next_index} indices), {len(self.failures)} failed; options: "
                f"{self.option_cache_hits} from the cache, {self.option_calls} LLM calls")


def _row(name: str, images: list[dict[str, Any]], question: str, options: dict[str, str], label: str,
         misc: dict[str, Any], hash_: str | None = None) -> dict[str, Any]:
    if label not in options:
        raise ValueError(f"answer label {label!r} is not one of the options {list(options)}")
    return {"images": images or None, "question": question, "options": json.dumps(options, ensure_ascii=False),
            "answer_label": label, "answer": options[label], "reasoning": None, "dataset_name": name,
            "hash": hash_, "misc": json.dumps(misc, ensure_ascii=False)}


def pmc_question(text: str) -> str:
    """The PMC-VQA question: no leading "Question: ", nothing from the choices on.

    >>> pmc_question("Question: What is shown?\\nThe choices are:\\n(A) CT")
    'What is shown?'
    """
    return text.replace("Question: ", "", 1).strip().split(PMC_CHOICES)[0].strip()


def mmmu_question(text: str) -> str:
    """The MMMU question without its ``<image n>`` tags, stripped.

    >>> mmmu_question("<image 1> Which organ is shown in <image 2>?")
    'Which organ is shown in ?'
    """
    return _IMAGE_TAG.sub("", text).strip()


def medxpertqa_question(text: str) -> str:
    return text.split(MEDXPERTQA_CHOICES)[0]


def options_from_writer(written: list[str], answer: str) -> tuple[dict[str, str], str]:
    """Letters A, B, ... in the writer's order; the label is the first option equal to the answer ignoring case.

    >>> options_from_writer(["Yes", "No"], "no")
    ({'A': 'Yes', 'B': 'No'}, 'B')
    """
    from medvlthinker.schema import LETTERS

    options = {LETTERS[i]: text for i, text in enumerate(written)}
    label = next((k for k, v in options.items() if v.lower() == answer.lower()), None)
    if label is None:
        raise ValueError(f"answer {answer!r} is not among the written options {written}")
    return options, label


# ---------------------------------------------------------------- the builder


@dataclass
class Sources:
    """Where each source is read from: a Hub name or a local copy of its repository."""

    adaptllm: str = ADAPTLLM
    mmmu: str = MMMU
    medxpertqa: str = MEDXPERTQA
    medxpertqa_images: str | None = None  # default: <medxpertqa>/images
    allow_outside_images: bool = False  # read image paths outside each source's folder (a source you trust)

    def folders(self, source: str) -> list[Path]:
        """Where an image path of ``source`` may lead: its local copy, or for a Hub name the download caches."""
        from medvlthinker.data.loading import image_bases

        return [Path(source)] if _is_local(source) else image_bases(source, "hub")


class _Builder:
    def __init__(self, report: EvalSetReport) -> None:
        self.report = report
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, source_report: SourceReport, source_row: int, make: Callable[[], dict[str, Any]]) -> None:
        index = self.report.next_index
        self.report.next_index += 1
        source_report.rows_selected += 1
        try:
            row = make()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            reason = "image_missing" if isinstance(exc, OSError) else "bad_row"
            self.report.failures.append(Failure(name, index, source_row, reason, str(exc)))
            return
        row["dataset_index"] = index
        self.rows.append(row)
        source_report.rows_out += 1


def _adaptllm(sources: Sources, config: str, report: EvalSetReport, name: str):
    ds = read_source(sources.adaptllm, config, EVAL_SPLIT, (ADAPTLLM_FOLDERS[config],))
    source_report = SourceReport(str(sources.adaptllm), config, EVAL_SPLIT, rows_read=len(ds))
    report.sources.setdefault(name, []).append(source_report)
    return _undecoded(ds, ("image",)), source_report


def _misc(source: str, config: str, split: str, position: int, **extra: Any) -> dict[str, Any]:
    return {"source": source, "config": config, "split": split, "source_row": position, **extra}


def _iter_rows(ds) -> Iterator[tuple[int, dict[str, Any]]]:
    for position in range(len(ds)):
        yield position, ds[position]


def build_rows(sources: Sources, complete: Completer | None, options_cache: str | os.PathLike, *,
               workers: int = 8, max_tries: int = 5, option_model: str | None = None,
               progress: bool = True) -> tuple[list[dict[str, Any]], EvalSetReport]:
    """Every row of the evaluation set in order, and the report (failures listed, none dropped silently)."""
    if not _is_local(sources.medxpertqa):
        raise UserError(f"--medxpertqa {sources.medxpertqa}", "is not a local folder; its images come as a zip",
                        fix=f"download {MEDXPERTQA} (repo type dataset), unzip images.zip into it, pass that folder")
    report = EvalSetReport()
    build = _Builder(report)
    base_misc = _misc

    ds, src = _adaptllm(sources, "PMC-VQA", report, PMC_VQA)
    for position, r in _iter_rows(ds):
        build.add(PMC_VQA, src, position, lambda r=r, position=position: _row(
            PMC_VQA, [_image_value(r["image"], folders=sources.folders(sources.adaptllm),
                                    allow_outside=sources.allow_outside_images)], pmc_question(r["input"]),
            {k: r[k] for k in ("A", "B", "C", "D")}, r["label"],
            base_misc(ADAPTLLM, "PMC-VQA", EVAL_SPLIT, position)))

    closed = {}
    for name, config in CLOSED_SETS.items():
        ds, src = _adaptllm(sources, config, report, name)
        keep = [i for i, kind in enumerate(ds["answer_type"]) if kind == "CLOSED"]
        closed[name] = (ds, src, keep)
    pairs = [(ds[i]["input"], ds[i]["label"]) for ds, _, keep in closed.values() for i in keep]
    written = fill_options(pairs, complete, options_cache, workers=workers, max_tries=max_tries, model=option_model,
                           progress=progress)
    report.option_rows = len(written)
    report.option_cache_hits = sum(1 for r in written.values() if r.cached)
    report.option_calls = sum(r.attempts for r in written.values())

    def closed_row(name, config, r, position):
        key = row_key(r["input"], r["label"])
        result = written[key]
        if result.options is None:
            raise ValueError(f"the LLM wrote no usable options in {result.attempts} tries: {result.errors[-1]}")
        options, label = options_from_writer(result.options, r["label"])
        misc = base_misc(ADAPTLLM, config, EVAL_SPLIT, position, source_answer=r["label"])
        image = _image_value(r["image"], folders=sources.folders(sources.adaptllm),
                             allow_outside=sources.allow_outside_images)
        return _row(name, [image], r["input"], options, label, misc, hash_=key)

    for name, (ds, src, keep) in closed.items():
        for position in keep:
            r = ds[position]
            build.add(name, src, position, lambda n=name, r=r, p=position: closed_row(n, CLOSED_SETS[n], r, p))

    image_columns = tuple(f"image_{i}" for i in range(1, MMMU_MAX_IMAGES + 1))
    for subject in MMMU_SUBJECTS:
        for split in MMMU_SPLITS:
            ds = _undecoded(read_source(sources.mmmu, subject, split), image_columns)
            src = SourceReport(str(sources.mmmu), subject, split, rows_read=len(ds))
            report.sources.setdefault(MMMU_MEDICAL, []).append(src)
            for position, r in _iter_rows(ds):
                if r["question_type"] != "multiple-choice":
                    continue

                def mmmu_row(r=r, position=position, subject=subject, split=split):
                    from medvlthinker.schema import LETTERS

                    texts = ast.literal_eval(r["options"]) if isinstance(r["options"], str) else list(r["options"])
                    options = {LETTERS[i]: str(t) for i, t in enumerate(texts)}
                    images = [_image_value(r[c], folders=sources.folders(sources.mmmu),
                                           allow_outside=sources.allow_outside_images)
                              for c in image_columns if r.get(c) is not None]
                    return _row(MMMU_MEDICAL, images, mmmu_question(r["question"]), options, r["answer"],
                                base_misc(MMMU, subject, split, position, id=r.get("id")))

                build.add(MMMU_MEDICAL, src, position, mmmu_row)

    ds = read_source(sources.medxpertqa, "MM", EVAL_SPLIT)
    images_dir = Path(sources.medxpertqa_images or Path(sources.medxpertqa) / "images")
    src = SourceReport(str(sources.medxpertqa), "MM", EVAL_SPLIT, rows_read=len(ds))
    report.sources[MEDXPERTQA_MM] = [src]
    for position, r in _iter_rows(ds):
        def medx_row(r=r, position=position):
            options = {k: v for k, v in sorted((r["options"] or {}).items()) if v is not None}
            images = [_image_value(name, images_dir, allow_outside=sources.allow_outside_images)
                      for name in r["images"] or []]
            return _row(MEDXPERTQA_MM, images, medxpertqa_question(r["question"]), options, r["label"],
                        base_misc(MEDXPERTQA, "MM", EVAL_SPLIT, position, id=r.get("id")))

        build.add(MEDXPERTQA_MM, src, position, medx_row)

    report.rows_out = len(build.rows)
    return build.rows, report


def build_eval_set(sources: Sources, output: str | os.PathLike, *, complete: Completer | None,
                   options_cache: str | os.PathLike, on_failure: str = "error", overwrite: bool = False,
                   workers: int = 8, max_tries: int = 5, option_model: str | None = None,
                   progress: bool = True) -> EvalSetReport:
    """Build, validate (every image decoded) and write the evaluation set; the report goes to
    ``<output>.report.json`` in every case. With failures and ``on_failure="error"`` nothing else is written."""
    import datasets

    from medvlthinker.data import save_unified, unified_features, validate_dataset
    from medvlthinker.staging import check_writable, staged, write_json

    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    check_writable(output, overwrite)
    rows, report = build_rows(sources, complete, options_cache, workers=workers, max_tries=max_tries,
                              option_model=option_model, progress=progress)
    output = Path(output)
    report_path = output.with_name(output.name + ".report.json")
    write_json(report_path, report.to_dict())
    if report.failures and on_failure == "error":
        first = report.failures[0]
        raise UserError(f"{first.dataset_name} dataset_index {first.dataset_index} (source row {first.source_row})",
                        f"{first.reason}: {first.detail} ({len(report.failures)} row(s) failed, listed in "
                        f"{report_path})",
                        fix="rerun (rows with options cost no call), or pass --on_failure skip to build without them")
    features = unified_features(image_decode=False)
    ds = datasets.Dataset.from_list([{c: row.get(c) for c in features} for row in rows], features=features)
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image()))
    validate_dataset(ds, check_images=True, source=str(output), progress=progress)
    with staged(output, overwrite=overwrite) as tmp:
        save_unified(ds, tmp, parquet=output.suffix == ".parquet")
    return report
