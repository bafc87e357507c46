"""A self-contained static HTML report: the table, the figures and a sample browser, in one file.

Everything is inline (CSS, JavaScript, figures and image thumbnails as data URIs), so the file opens offline and
can be mailed or attached as is. The sample browser shows, per model, a few rows of each benchmark from its first
repeat: thumbnails (downscaled JPEG), question, options, gold answer, the model output and its grade, with filters
by benchmark, by result (correct / wrong / unparsed) and by model. Outputs are inserted as text, never as HTML.

The template lives in ``medvlthinker/resources/report/`` (``report.html.j2``, ``report.css``, ``report.js``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from medvlthinker import grading
from medvlthinker.analysis import AnalysisError, plots, tables
from medvlthinker.analysis.published import published_rows
from medvlthinker.analysis.render import write_tables
from medvlthinker.analysis.runs import ModelRuns, load_sampling_runs
from medvlthinker.analysis.tables import LABEL_OF
from medvlthinker.benchmarks import AVG, BENCHMARKS, COLUMNS
from medvlthinker.inference.image_modes import IMAGE_MODES
from medvlthinker.inference.regrade import eval_options
from medvlthinker.inference.settings import PASS_RATE
from medvlthinker.schema import parse_options
from medvlthinker.staging import write_json, write_text

STATUSES = ("correct", "wrong", "unparsed")
FIGURE_CAPTIONS = {
    "radar": "Accuracy on the six benchmarks",
    "metrics_at_n": "Metrics@n: mean accuracy, majority vote and pass@n per benchmark",
    "pass_at_k": "pass@k curves (unbiased estimator)",
    "pass_count_distribution": "Pass-count distribution of the pass-rate run",
    "reward_curve": "RL (GRPO): mean reward per training step",
}


def record_status(record: Mapping[str, Any]) -> str:
    """The result of a record's first rollout: ``unparsed`` (no option letter), ``correct`` or ``wrong``."""
    rollout = record["rollouts"][0]
    options = record.get("options")
    unparsed = rollout.get("pred_letter") is None if options is None else grading.is_conversion_failure(
        rollout.get("pred_letter"), options
    )
    if unparsed:
        return "unparsed"
    return "correct" if rollout["is_correct"] else "wrong"


MAX_THUMBNAIL_ASPECT = 4
"""A thumbnail is at most this many times longer than wide (or the reverse): a 27x1100 strip is padded, not drawn
as a 96 x 3,900 px column that pushes every other sample off the page."""


def thumbnail_uri(image: Any, max_side: int = 160, quality: int = 80) -> str:
    """An image (anything :func:`medvlthinker.images.decode_image` reads) as a downscaled JPEG data URI.

    Both sides are at most ``max_side``; an image more elongated than :data:`MAX_THUMBNAIL_ASPECT` is centred on
    a grey canvas of that aspect, so its whole content stays visible in a bounded box.

    >>> from PIL import Image
    >>> uri = thumbnail_uri(Image.new("RGB", (27, 1100)))
    >>> Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size
    (40, 160)
    """
    from PIL import Image

    from medvlthinker.images import decode_image

    img = decode_image(image).copy()
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    w, h = img.size
    if max(w, h) > MAX_THUMBNAIL_ASPECT * min(w, h):
        size = (max(w, h // MAX_THUMBNAIL_ASPECT), max(h, w // MAX_THUMBNAIL_ASPECT))
        canvas = Image.new("RGB", size, (224, 226, 230))
        canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
        img = canvas
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def output_note(output: str) -> str | None:
    """What the browser shows beside an output that would otherwise look like an empty box.

    >>> output_note(""), output_note(" \\n\\n"), output_note("B")
    ('(empty output)', '(output is only whitespace: 3 characters, 2 line breaks)', None)
    """
    if output == "":
        return "(empty output)"
    if not output.strip():
        breaks = output.count("\n")
        return f"(output is only whitespace: {len(output)} characters, {breaks} line break{'s' if breaks != 1 else ''})"
    return None


def visible_whitespace(output: str) -> str:
    """A whitespace-only output with its characters drawn (space ·, tab →, line break ↵), else ``output``."""
    if output.strip():
        return output
    return output.replace(" ", "·").replace("\t", "→").replace("\r", "").replace("\n", "↵\n")


def file_uri(path: str | os.PathLike) -> str:
    """A PNG/JPEG file as a data URI."""
    kind = "png" if str(path).lower().endswith(".png") else "jpeg"
    with open(path, "rb") as handle:
        return f"data:image/{kind};base64," + base64.b64encode(handle.read()).decode("ascii")


def choose_rows(
    model_runs: Sequence[ModelRuns], per_benchmark: int, seed: int = 0
) -> dict[str, list[int]]:
    """Per benchmark, up to ``per_benchmark`` dataset_index values answered by every model (seeded draw, sorted),
    so the browser shows the same questions for each model."""
    chosen: dict[str, list[int]] = {}
    rng = random.Random(seed)
    for bench in BENCHMARKS:
        common: set[int] | None = None
        for runs in model_runs:
            present = {int(r["dataset_index"]) for r in runs.repeats[0] if r["dataset_name"] == bench.dataset_name}
            common = present if common is None else common & present
        if common:
            pool = sorted(common)
            chosen[bench.dataset_name] = sorted(rng.sample(pool, min(per_benchmark, len(pool))))
    return chosen


def load_images(
    eval_data: str | os.PathLike | Any, indices: Sequence[int], split: str | None = None
) -> dict[int, list[Any]]:
    """``{dataset_index: images}`` of the given rows of the eval set (a source for ``load_unified`` or a Dataset).

    Only the requested rows are decoded. Rows missing from the eval set are left out (the browser then says the
    image was not loaded).
    """
    if isinstance(eval_data, (str, os.PathLike)):
        from medvlthinker.data import load_unified

        ds = load_unified(str(eval_data), split, validate=False)
    else:
        ds = eval_data
    position = {int(i): p for p, i in enumerate(ds["dataset_index"])}
    wanted = [position[i] for i in indices if i in position]
    subset = ds.select_columns(["dataset_index", "images"]).select(wanted)
    return {int(row["dataset_index"]): list(row["images"] or []) for row in subset}


def collect_samples(
    model_runs: Sequence[ModelRuns],
    *,
    per_benchmark: int = 8,
    eval_data: str | os.PathLike | Any | None = None,
    split: str | None = None,
    thumbnail_px: int = 160,
    output_chars: int = 3000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The browser's rows: per model, per benchmark, up to ``per_benchmark`` records of the first repeat."""
    chosen = choose_rows(model_runs, per_benchmark, seed)
    images: dict[int, list[Any]] = {}
    if eval_data is not None:
        images = load_images(eval_data, [i for idx in chosen.values() for i in idx], split)
    thumbs = {index: [thumbnail_uri(img, thumbnail_px) for img in imgs] for index, imgs in images.items()}
    samples = []
    for runs in model_runs:
        by_index = {int(r["dataset_index"]): r for r in runs.repeats[0]}
        for dataset_name, indices in chosen.items():
            for index in indices:
                record = by_index[index]
                rollout = record["rollouts"][0]
                output = rollout.get("output_text") or ""
                note = output_note(output)
                options = parse_options(record["options"], strict=False) if record.get("options") else {}
                samples.append(
                    {
                        "model": runs.name,
                        "benchmark": LABEL_OF[dataset_name],
                        "dataset_index": index,
                        "question": record.get("question", ""),
                        "options": options,
                        "answer_label": record["answer_label"],
                        "answer": record["answer"],
                        "output": visible_whitespace(output[:output_chars]),
                        "output_note": note,
                        "truncated": len(output) > output_chars,
                        "pred": str(rollout.get("pred_letter")),
                        "status": record_status(record),
                        "num_rollouts": record["num_rollouts"],
                        "num_correct": record["num_correct"],
                        # Without the eval set, image_tokens > 0 still tells an image row from a text-only one.
                        "num_images": len(images[index]) if index in images else int(bool(record.get("image_tokens"))),
                        "thumbnails": thumbs.get(index, []),
                    }
                )
    return samples


def _script_json(value: Any) -> str:
    # Inside <script> the text must not contain "</script>"; escaping <, > and & keeps the JSON valid and inert.
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _browser_data(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON the page reads: the samples, with each row's thumbnails stored once (models share the rows)."""
    thumbnails = {str(s["dataset_index"]): s["thumbnails"] for s in samples}
    return {
        "samples": [{k: v for k, v in s.items() if k != "thumbnails"} for s in samples],
        "thumbnails": thumbnails,
    }


def _resource(name: str) -> str:
    return (resources.files("medvlthinker") / "resources" / "report" / name).read_text(encoding="utf-8")


@dataclass
class Figure:
    uri: str
    caption: str


def figures_from(written: Mapping[str, Sequence[str]]) -> list[Figure]:
    """The PNGs of :func:`medvlthinker.analysis.plots.make_plots` output, in a fixed order, as data URIs."""
    figures = []
    for name, paths in written.items():
        png = next((p for p in paths if p.endswith(".png")), None)
        if png is None:
            continue
        base, _, model = name.partition(":")
        caption = FIGURE_CAPTIONS.get(base, base)
        figures.append(Figure(file_uri(png), f"{caption} ({model})" if model else caption))
    return figures


def render_report(
    result: tables.TableResult,
    samples: Sequence[Mapping[str, Any]],
    figures: Sequence[Figure] = (),
    *,
    title: str = "MedVLThinker evaluation report",
    subtitle: str | None = None,
    reliance: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML string."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(_resource("report.html.j2"))
    models = list(dict.fromkeys(s["model"] for s in samples))
    benchmarks = [b.label for b in BENCHMARKS if any(s["benchmark"] == b.label for s in samples)]
    per_cell = max(Counter((s["model"], s["benchmark"]) for s in samples).values(), default=0)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return template.render(
        title=title,
        subtitle=subtitle or f"{len(result.table.rows)} model(s); generated {stamp}",
        table=result.table,
        columns=COLUMNS,
        avg=AVG,
        level=round(100 * (1 - result.table.alpha)),
        comparison=result.comparison,
        paired=result.paired,
        reliance=reliance,
        reliance_modes=[m for m in IMAGE_MODES[1:] if reliance and any(
            m in line["modes"] for lines in reliance["models"].values() for line in lines.values())],
        figures=list(figures),
        sample_note=(
            f"{len(samples)} rows: per model, up to {per_cell} "
            "per benchmark from the first repeat (the first rollout of each row). Unparsed: the prediction maps to "
            "no option letter (a conversion failure)."
        ),
        sample_benchmarks=benchmarks,
        sample_models=models,
        statuses=STATUSES,
        samples_json=_script_json(_browser_data(samples)),
        css=_resource("report.css"),
        js=_resource("report.js"),
    )


def _reward_curve(rl_log: str | os.PathLike) -> list[tuple[int, float]]:
    from medvlthinker.analysis.demo_summary import reward_curve

    try:
        return reward_curve(open(rl_log, encoding="utf-8", errors="replace").read())
    except OSError as exc:
        raise AnalysisError(f"--rl_log {rl_log}: {exc.strerror}; fix: pass the log file of the RL run") from None


@dataclass(frozen=True)
class ReportSettings:
    """What :func:`make_report` reads, draws and writes: the flags of ``analysis/make_report.py``
    (:func:`medvlthinker.analysis.cli_options.report_settings` builds it from them)."""

    output_dir: str | os.PathLike
    """Where ``report.html``, ``tables/`` and ``plots/`` go."""
    table: tables.TableSettings = tables.TableSettings()
    """The runs and the table; its grading, resamples and seed serve the figures, samples and reliance table too."""
    sampling_runs: Sequence[str] = ()
    """``MODEL=DIR`` sampled runs (n > 1) for the metrics@n bars and the pass@k curves."""
    pass_rate_dir: str | os.PathLike | None = None
    """A pass-rate run for the pass-count plot."""
    pass_rate_rollouts: int | None = PASS_RATE.n
    """Rollouts per question of the pass-rate run."""
    published_models: Sequence[str] = ()
    """Published rows drawn on the radar."""
    pass_at_k_grading: str = plots.PASS_AT_K_GRADING
    """How rollouts are graded for the pass@k curves."""
    drop_unconverted: bool = False
    """Only predictions that map to an option letter vote in majority@n."""
    samples_per_benchmark: int = 8
    """Rows per benchmark and model in the sample browser."""
    title: str = "MedVLThinker evaluation report"
    rl_log: str | os.PathLike | None = None
    """verl's console log of an RL run: adds the reward curve."""
    reliance_runs: Sequence[str] = ()
    """``MODEL=DIR`` eval runs with ``--image_mode``: adds the visual-reliance table."""


def make_report(settings: ReportSettings) -> dict[str, Any]:
    """Tables, figures and ``report.html`` in ``settings.output_dir``: ``{"report": path, "tables": {...},
    "plots": {...}}``.

    Writes ``output_dir/tables/table.{md,tex,tsv,json}``, ``output_dir/plots/*.{png,pdf}`` and
    ``output_dir/report.html``. ``rl_log``, verl's console log of an RL run, adds the reward curve;
    ``reliance_runs`` (``MODEL=DIR`` eval runs with ``--image_mode``, the ``as_is`` one among them) the
    visual-reliance table (also ``output_dir/tables/visual_reliance.{md,json}``).
    """
    s, t = settings, settings.table
    output_dir = s.output_dir
    options = eval_options(t.eval_data, t.eval_split) if t.eval_data is not None else None
    result = tables.make_tables(t, options=options)
    table_paths = write_tables(result.table, os.path.join(output_dir, "tables"), result.comparison,
                                      result.paired)
    sampling = load_sampling_runs(s.sampling_runs)
    written = plots.make_plots(
        os.path.join(output_dir, "plots"), table=result.table, published=published_rows(s.published_models),
        sampling_runs=sampling, pass_rate_dir=s.pass_rate_dir, pass_rate_rollouts=s.pass_rate_rollouts,
        metrics_grading=t.grading_mode, pass_at_k_grading=s.pass_at_k_grading, drop_unconverted=s.drop_unconverted,
        options=options, reward_curve=_reward_curve(s.rl_log) if s.rl_log is not None else None,
    )
    samples = collect_samples(
        result.models, per_benchmark=s.samples_per_benchmark, eval_data=t.eval_data, split=t.eval_split, seed=t.seed
    )
    reliance = None
    if s.reliance_runs:
        from medvlthinker.analysis import ablations

        reliance = ablations.visual_reliance(
            ablations.load_conditions(s.reliance_runs, "image_mode", t.grading_mode, options),
            n_resamples=t.n_resamples, seed=t.seed)
        write_json(os.path.join(output_dir, "tables", "visual_reliance.json"), reliance)
        write_text(os.path.join(output_dir, "tables", "visual_reliance.md"),
                   ablations.visual_reliance_markdown(reliance) + "\n")
    html = render_report(result, samples, figures_from(written), title=s.title, reliance=reliance)
    path = os.path.join(output_dir, "report.html")
    write_text(path, html)
    return {"report": path, "tables": table_paths, "plots": written}
