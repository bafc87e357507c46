"""The evaluation ablations (docs/experiments.md): the visual-reliance table (``--image_mode``) and the
think/answer-only table (``--instruction_prompt answer_only``), from eval output directories.

Each run directory says what it is in its ``args.json`` (:func:`run_condition`): its image mode and its
instruction. Runs are given as ``MODEL=DIR`` like the paper table's, every condition of a model under the same
name; repeats of one condition (greedy reruns) are averaged per row as in the paper table.

Per benchmark and model, every condition is compared with the reference (``as_is``; the paper's think prompt) on
the rows both scored: the difference of accuracy with its paired-bootstrap interval (rows drawn together, by
image where the records carry ``misc.image_id``) and McNemar's p (:mod:`medvlthinker.stats`).

The visual-reliance table counts the rows with images only (in the ``as_is`` run); rows without images, the same
prompt in every mode, are reported on a line of their own ("text-only"), where every mode should score what
``as_is`` scores. Two summaries per benchmark:

- ``vrs`` (visual-reliance score): accuracy with the row's own images minus accuracy with another row's images
  (``as_is`` - ``shuffled``, as a fraction). Positive when the answers follow the picture; about 0 when the
  picture is not used; negative when the model does better with the wrong picture.
- ``blank_retained``: accuracy with blank images over accuracy with the real ones: the share of the accuracy that
  needs no picture at all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker import stats
from medvlthinker.analysis import AnalysisError
from medvlthinker.analysis.paper_table import row_values
from medvlthinker.analysis.render import md_table
from medvlthinker.analysis.runs import ModelRuns, graded, load_records, parse_run_specs, run_condition
from medvlthinker.benchmarks import BENCHMARKS
from medvlthinker.inference.image_modes import IMAGE_MODES
from medvlthinker.staging import write_json, write_text

TEXT_ONLY = "text-only"
"""The line of the visual-reliance table holding the rows without images."""

PROMPTS = ("think", "answer_only")
"""The conditions of the think/answer-only table: the paper's instruction and ``answer_only``."""

_IMAGE_MARKERS = ("<|image_pad|>", "<image>", "<start_of_image>")


def has_images(record: Mapping[str, Any]) -> bool:
    """Whether a record's row was shown images: its image token count, else an image marker in its prompt."""
    tokens = record.get("image_tokens")
    if tokens is not None:
        return tokens > 0
    prompt = record.get("prompt") or ""
    return any(marker in prompt for marker in _IMAGE_MARKERS)


def mean_output_tokens(records: Iterable[Mapping[str, Any]]) -> float | None:
    """Mean generated tokens per rollout, from the rollouts' ``output_tokens`` (None when no rollout has one)."""
    counts = [r["output_tokens"] for rec in records for r in rec["rollouts"] if r.get("output_tokens") is not None]
    return math.fsum(counts) / len(counts) if counts else None


@dataclass
class Conditions:
    """One model's runs by condition (an image mode, or a prompt)."""

    model: str
    runs: dict[str, ModelRuns] = field(default_factory=dict)


def load_conditions(run_specs: Sequence[str], key: str, grading_mode: str = "regrade",
                    options: Mapping[int, Any] | None = None) -> list[Conditions]:
    """``MODEL=DIR`` specs grouped by model and then by the runs' ``key`` (``image_mode`` or ``prompt``)."""
    models: dict[str, Conditions] = {}
    for name, path in parse_run_specs(run_specs):
        condition = run_condition(path)[key]
        runs = models.setdefault(name, Conditions(name)).runs.setdefault(condition, ModelRuns(name, [], []))
        runs.dirs.append(os.fspath(path))
        runs.repeats.append(graded(load_records(path), grading_mode, options))
    return list(models.values())


def _only(runs: ModelRuns, keep: Callable[[Mapping[str, Any]], bool]) -> ModelRuns:
    return ModelRuns(runs.name, runs.dirs, [[r for r in records if keep(r)] for records in runs.repeats])


def _groups(reference: ModelRuns) -> list[tuple[str, list[str]]]:
    """(label, dataset_names) of the benchmarks in the reference run, in the table's column order; data sets the
    registry does not know (a subset, a synthetic set) follow under their own names."""
    names = {r["dataset_name"] for r in reference.repeats[0]}
    known = [(b.label, [b.dataset_name]) for b in BENCHMARKS if b.dataset_name in names]
    other = sorted(names - {b.dataset_name for b in BENCHMARKS})
    return known + [(name, [name]) for name in other]


def _values(runs: ModelRuns, names: Sequence[str], cluster_by_image: bool) -> dict[int, tuple[float, str | None]]:
    out: dict[int, tuple[float, str | None]] = {}
    for name in names:
        if not any(r["dataset_name"] == name for r in runs.repeats[0]):
            continue
        index, values, clusters = row_values(runs, name, cluster_by_image)
        for i, (idx, value) in enumerate(zip(index, values)):
            out[idx] = (value, clusters[i] if clusters is not None else None)
    return out


def compare(condition: ModelRuns, reference: ModelRuns, names: Sequence[str], *, n_resamples: int = 2000,
            alpha: float = 0.05, seed: int = 0, cluster_by_image: bool = True) -> dict[str, Any] | None:
    """``condition`` against ``reference`` on the rows of ``names`` both scored, in percent: both accuracies, the
    difference (condition - reference) with its paired-bootstrap interval and p, and McNemar's p; None when they
    share no row."""
    a = _values(condition, names, cluster_by_image)
    b = _values(reference, names, cluster_by_image)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    xa, xb = [a[i][0] for i in common], [b[i][0] for i in common]
    clusters = [b[i][1] for i in common] if cluster_by_image else None
    boot = stats.paired_bootstrap(xa, xb, clusters=clusters, n_resamples=n_resamples, alpha=alpha, seed=seed)
    test = stats.mcnemar([x > 0.5 for x in xa], [x > 0.5 for x in xb])
    return {"rows": len(common), "accuracy": 100.0 * math.fsum(xa) / len(xa),
            "reference_accuracy": 100.0 * math.fsum(xb) / len(xb), "diff": 100.0 * boot["diff"],
            "low": 100.0 * boot["low"], "high": 100.0 * boot["high"], "p_value": boot["p_value"],
            "mcnemar_p_value": test["p_value"], "mcnemar_b01": test["b01"], "mcnemar_b10": test["b10"]}


def _check_reference(models: Sequence[Conditions], reference: str, flag: str) -> None:
    for m in models:
        if reference not in m.runs:
            raise AnalysisError(f"model {m.model!r}: no run with {flag} (its runs: {sorted(m.runs)}); fix: add "
                                f"--run {m.model}=DIR of its eval with {flag}")


def visual_reliance(models: Sequence[Conditions], **kwargs: Any) -> dict[str, Any]:
    """The visual-reliance table: per model and benchmark (image rows), and on the text-only rows, every image
    mode the model was run with against ``as_is``, and the ``vrs`` / ``blank_retained`` summaries."""
    _check_reference(models, "as_is", "--image_mode as_is")
    table: dict[str, Any] = {}
    for m in models:
        ref_all = m.runs["as_is"]
        with_images = {int(r["dataset_index"]) for r in ref_all.repeats[0] if has_images(r)}

        def image_rows(r, keep=with_images):
            return int(r["dataset_index"]) in keep

        def text_rows(r, keep=with_images):
            return int(r["dataset_index"]) not in keep

        lines: dict[str, Any] = {}
        groups = [(label, names, image_rows) for label, names in _groups(ref_all)]
        groups.append((TEXT_ONLY, sorted({r["dataset_name"] for r in ref_all.repeats[0]}), text_rows))
        for label, names, keep in groups:
            reference = _only(ref_all, keep)
            modes: dict[str, Any] = {}
            for mode in IMAGE_MODES[1:]:
                if mode in m.runs:
                    result = compare(_only(m.runs[mode], keep), reference, names, **kwargs)
                    if result is not None:
                        modes[mode] = result
            rows = len(_values(reference, names, False))
            if not rows:
                continue
            as_is = 100.0 * math.fsum(v for v, _ in _values(reference, names, False).values()) / rows
            line: dict[str, Any] = {"rows": rows, "as_is": as_is, "modes": modes}
            if label != TEXT_ONLY:
                line["vrs"] = (as_is - modes["shuffled"]["accuracy"]) / 100.0 if "shuffled" in modes else None
                line["blank_retained"] = (modes["blank"]["accuracy"] / as_is if "blank" in modes and as_is
                                          else None)
            lines[label] = line
        table[m.model] = lines
    return {"reference": "as_is", "models": table}


def think_answer_only(models: Sequence[Conditions], **kwargs: Any) -> dict[str, Any]:
    """The think/answer-only table: per model and benchmark, accuracy and mean generated tokens with the paper's
    instruction and with ``answer_only``, and their paired difference (answer_only - think)."""
    _check_reference(models, "think", "the paper's instruction")
    table: dict[str, Any] = {}
    for m in models:
        reference = m.runs["think"]
        lines: dict[str, Any] = {}
        for label, names in _groups(reference):
            def rows_of(runs, names=names):
                return [r for records in runs.repeats for r in records if r["dataset_name"] in names]

            line: dict[str, Any] = {"think_tokens": mean_output_tokens(rows_of(reference))}
            if "answer_only" in m.runs:
                line["answer_only_tokens"] = mean_output_tokens(rows_of(m.runs["answer_only"]))
                line["comparison"] = compare(m.runs["answer_only"], reference, names, **kwargs)
            lines[label] = line
        table[m.model] = lines
    return {"reference": "think", "models": table}


# ---- rendering ---------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "—" if value is None else (f"{value:.3f}" if value >= 0.001 else "<0.001")


def _diff(result: Mapping[str, Any] | None) -> str:
    if result is None:
        return "—"
    return (f"{result['accuracy']:.1f} ({result['diff']:+.1f} [{result['low']:+.1f}, {result['high']:+.1f}], "
            f"p {_p(result['p_value'])}, McNemar {_p(result['mcnemar_p_value'])})")


def visual_reliance_markdown(table: Mapping[str, Any]) -> str:
    """The visual-reliance table in Markdown: accuracy (%) per mode, and for each mode its difference to
    ``as_is`` in points with the 95% paired-bootstrap interval, the bootstrap p and McNemar's p."""
    modes = [m for m in IMAGE_MODES[1:] if any(m in line["modes"] for lines in table["models"].values()
                                              for line in lines.values())]
    header = ("Model", "Benchmark", "Rows", "as_is", *modes, "VRS", "blank / as_is")
    rows = []
    for model, lines in table["models"].items():
        for label, line in lines.items():
            rows.append([model, label, str(line["rows"]), _num(line["as_is"]),
                         *[_diff(line["modes"].get(mode)) for mode in modes],
                         _num(line.get("vrs"), 3), _num(line.get("blank_retained"), 2)])
    return "\n".join([
        "## Visual reliance",
        "",
        "Accuracy (%) with the rows' own images (as_is) and with each replacement; in brackets the difference to "
        "as_is in points, its 95% paired-bootstrap interval and p, and McNemar's p. VRS = (as_is - shuffled) / "
        "100; blank / as_is = the share of the accuracy kept without a picture. The text-only line holds the rows "
        "without images (the same prompt in every mode).",
        "",
        md_table(header, rows),
    ])


def think_answer_only_markdown(table: Mapping[str, Any]) -> str:
    """The think/answer-only table in Markdown."""
    rows = []
    for model, lines in table["models"].items():
        for label, line in lines.items():
            result = line.get("comparison")
            rows.append([model, label, _num(result["reference_accuracy"]) if result else "—",
                         _num(line["think_tokens"]), _diff(result), _num(line.get("answer_only_tokens"))])
    return "\n".join([
        "## Think / answer-only",
        "",
        "Accuracy (%) with the paper's instruction (think) and with the answer-only one; in brackets answer_only - "
        "think in points, its 95% paired-bootstrap interval and p, and McNemar's p; mean generated tokens per "
        "answer.",
        "",
        md_table(("Model", "Benchmark", "think", "think tokens", "answer_only", "answer_only tokens"), rows),
    ])


def write_ablation_tables(run_specs: Sequence[str], output_dir: str | os.PathLike, *, grading_mode: str = "regrade",
                          options: Mapping[int, Any] | None = None, **kwargs: Any) -> dict[str, str]:
    """Write the tables the runs hold (visual_reliance.{md,json} when a model has a run with another image mode,
    think_answer_only.{md,json} when one has an answer-only run) and return {name: markdown}."""
    out = Path(output_dir)
    written: dict[str, str] = {}
    def condition(spec: str) -> dict[str, str]:
        return run_condition(spec.partition("=")[2] or spec)

    # each table holds the other's reference condition only: image modes with the paper's prompt, prompts with
    # the rows' own images
    think_specs = [spec for spec in run_specs if condition(spec)["prompt"] == "think"]
    by_mode = load_conditions(think_specs, "image_mode", grading_mode, options)
    if any(set(m.runs) - {"as_is"} for m in by_mode):
        table = visual_reliance(by_mode, **kwargs)
        written["visual_reliance"] = visual_reliance_markdown(table)
        write_json(out / "visual_reliance.json", table)
    as_is_specs = [spec for spec in run_specs if condition(spec)["image_mode"] == "as_is"]
    by_prompt = load_conditions(as_is_specs, "prompt", grading_mode, options)
    if any("answer_only" in m.runs for m in by_prompt):
        table = think_answer_only([m for m in by_prompt if "answer_only" in m.runs], **kwargs)
        written["think_answer_only"] = think_answer_only_markdown(table)
        write_json(out / "think_answer_only.json", table)
    if not written:
        raise AnalysisError("the runs hold neither another --image_mode nor an answer-only run; fix: add --run "
                            "MODEL=DIR of such an eval (docs/experiments.md)")
    for name, text in written.items():
        write_text(out / f"{name}.md", text + "\n")
    return written

