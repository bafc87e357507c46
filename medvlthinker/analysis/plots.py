"""The paper's figures, as PNG and PDF (matplotlib, Agg backend, no timestamps in the files).

- pass-count distribution of a pass-rate run (n=16): :func:`plot_pass_counts` draws it with
  :func:`medvlthinker.curate.curation_report.plot_pass_count_distribution`, the curation stage's own plot;
- metrics@n per benchmark from a sampled run (the paper: temperature 0.5, n=5): mean accuracy, majority vote and
  pass@n (:func:`metrics_at_n`, :func:`plot_metrics_at_n`), from the regraded rollouts as in the original;
- pass@k curves with the unbiased estimator 1 - C(n-c, k) / C(n, k) (the paper: n=64, every k from 1 to n), one
  panel per benchmark plus the pooled "All" panel, one line per model (:func:`pass_at_k_curves`,
  :func:`plot_pass_at_k`), from the strict grades recorded at generation as in the original;
- a radar of the six benchmarks for several models (:func:`plot_radar`), from a table or the published numbers;
- the RL reward curve, the mean reward per GRPO step from verl's console log (:func:`plot_reward_curve`).

The numbers come from :mod:`medvlthinker.stats`; every plotting function returns the files it wrote.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medvlthinker import stats  # noqa: E402
from medvlthinker.analysis import AnalysisError  # noqa: E402
from medvlthinker.analysis.paper_table import PaperTable  # noqa: E402
from medvlthinker.analysis.runs import graded  # noqa: E402
from medvlthinker.benchmarks import AVG, BENCHMARKS  # noqa: E402
from medvlthinker.inference.settings import PASS_RATE  # noqa: E402

FORMATS = ("png", "pdf")
ALL = "All"
"""The pooled pass@k panel: every row of the six benchmarks at once (the original's last panel)."""
PASS_AT_K_GRADING = "recorded"
"""The original's pass@k figure reads the ``is_correct`` recorded at generation (the strict grader)."""
_METADATA = {"png": {}, "pdf": {"CreationDate": None, "ModDate": None}}
_COLOURS = ("#3b6ea5", "#d1603d", "#3f9b5a", "#8e5ea2", "#c9a227", "#5b5b5b", "#2aa1b3", "#b5475d")


# User text (model names, titles) is drawn as written, not read as mathtext, where "$^$" fails to draw.
_plain_text = matplotlib.rc_context({"text.parse_math": False})


def save_figure(fig, out_dir: str | os.PathLike, stem: str, formats: Sequence[str] = FORMATS) -> list[str]:
    """Save ``fig`` as ``out_dir/stem.{png,pdf}`` (150 dpi) and close it; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    try:
        for fmt in formats:
            if fmt not in _METADATA:
                raise AnalysisError(f"unsupported plot format {fmt!r}; use one of {list(_METADATA)}")
            path = os.path.join(out_dir, f"{stem}.{fmt}")
            fig.savefig(path, dpi=150, metadata=_METADATA[fmt], bbox_inches="tight")
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def _group(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records by benchmark column label, in the paper's column order (other data sets are left out)."""
    grouped: dict[str, list[Mapping[str, Any]]] = {b.label: [] for b in BENCHMARKS}
    names = {b.dataset_name: b.label for b in BENCHMARKS}
    for record in records:
        label = names.get(record["dataset_name"])
        if label is not None:
            grouped[label].append(record)
    return {label: recs for label, recs in grouped.items() if recs}


def _rollouts_per_row(label: str, records: Sequence[Mapping[str, Any]]) -> int:
    counts = {int(r["num_rollouts"]) for r in records}
    if len(counts) != 1:
        raise AnalysisError(
            f"{label}: rows have different numbers of rollouts {sorted(counts)}; metrics@n and pass@k need the "
            f"same n for every row: resume the sampling run until every row has all its rollouts"
        )
    return counts.pop()


# ---- pass-count distribution -------------------------------------------------------------------------------------


def plot_pass_counts(
    pass_rate_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    expected_rollouts: int | None = PASS_RATE.n,
    stem: str = "pass_count_distribution",
    title: str | None = None,
) -> list[str]:
    """The pass-count distribution of a pass-rate run (an eval output directory with n rollouts per row)."""
    from medvlthinker.curate import curation, curation_report

    counts = curation.load_pass_counts(pass_rate_dir, expected_rollouts=expected_rollouts)
    max_count = expected_rollouts or max((c for _, c in counts.values()), default=0)
    distribution = curation_report.pass_count_distribution([c for _, c in counts.values()], max_count=max_count)
    os.makedirs(out_dir, exist_ok=True)
    return [
        str(curation_report.plot_pass_count_distribution(distribution, os.path.join(out_dir, f"{stem}.{fmt}"), title))
        for fmt in FORMATS
    ]


# ---- metrics@n ---------------------------------------------------------------------------------------------------


def metrics_at_n(
    records: Iterable[Mapping[str, Any]], *, drop_unconverted: bool = False
) -> dict[str, dict[str, float]]:
    """Per benchmark (and "Avg." over those present): ``{"mean", "majority", "pass_at_n", "n", "rows"}`` in percent.

    ``mean`` is the accuracy of single samples (avg@n), ``majority`` the majority vote over the n samples (every
    rollout votes, as in the original; ``drop_unconverted`` keeps conversion failures out, see
    :func:`medvlthinker.stats.maj_at_n`), ``pass_at_n`` whether any of the n is correct.
    """
    out: dict[str, dict[str, float]] = {}
    for label, recs in _group(records).items():
        n = _rollouts_per_row(label, recs)
        out[label] = {
            "mean": 100.0 * stats.avg_at_n(recs),
            "majority": 100.0 * stats.maj_at_n(recs, drop_unconverted=drop_unconverted),
            "pass_at_n": 100.0 * stats.mean_pass_at_k(recs, n),
            "n": n,
            "rows": len(recs),
        }
    if not out:
        raise AnalysisError("no records of the six benchmarks; pass the output directory of a sampling run")
    if len(out) > 1:
        out[AVG] = {
            key: sum(v[key] for v in out.values()) / len(out) for key in ("mean", "majority", "pass_at_n")
        } | {"n": min(v["n"] for v in out.values()), "rows": sum(v["rows"] for v in out.values())}
    return out


@_plain_text
def plot_metrics_at_n(
    metrics: Mapping[str, Mapping[str, float]], out_dir: str | os.PathLike, *, stem: str = "metrics_at_n",
    title: str | None = None,
) -> list[str]:
    """Grouped bars per benchmark: mean, majority vote, pass@n."""
    labels = list(metrics)
    series = (("mean", "mean (avg@n)"), ("majority", "majority vote"), ("pass_at_n", "pass@n"))
    n = int(min(m["n"] for m in metrics.values()))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.0, 3.4))
    for i, (key, name) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        bars = ax.bar(xs, [metrics[label][key] for label in labels], width, label=name.replace("@n", f"@{n}")
                      if "pass" in name else name, color=_COLOURS[i])
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 122)  # headroom for the legend above the 100% bars
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_title(title or f"Metrics@{n} per benchmark", fontsize=10)
    ax.legend(fontsize=7, ncols=3, loc="upper center", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


# ---- pass@k ------------------------------------------------------------------------------------------------------


def default_ks(n: int) -> list[int]:
    """Every k from 1 to n, as the original computes its curves.

    >>> default_ks(5)
    [1, 2, 3, 4, 5]
    """
    return list(range(1, n + 1))


def log2_ticks(ks: Sequence[int]) -> list[int]:
    """The ks labelled on the log2 axis: the powers of two among them, and the largest.

    >>> log2_ticks(range(1, 65)), log2_ticks([1, 3])
    ([1, 2, 4, 8, 16, 32, 64], [1, 3])
    """
    ks = sorted(ks)
    ticks = [k for k in ks if k & (k - 1) == 0]
    return ticks + [ks[-1]] if ks[-1] not in ticks else ticks


def pass_at_k_curves(
    records: Iterable[Mapping[str, Any]], ks: Sequence[int] | None = None, *, pooled: bool = True
) -> dict[str, list[tuple[int, float]]]:
    """Per benchmark: ``[(k, pass@k in percent), ...]``, the mean over rows of the unbiased estimator; with
    ``pooled`` also :data:`ALL`, the mean over every row of the six benchmarks together (so a benchmark weighs by
    its rows, as in the original's "All" panel)."""
    curves = {}
    groups = _group(records)
    for label, recs in groups.items():
        n = _rollouts_per_row(label, recs)
        use = [k for k in (ks or default_ks(n)) if 1 <= k <= n]
        curves[label] = [(k, 100.0 * stats.mean_pass_at_k(recs, k)) for k in use]
    if not curves:
        raise AnalysisError("no records of the six benchmarks; pass the output directory of a sampling run")
    if pooled:
        every = [r for recs in groups.values() for r in recs]
        n = _rollouts_per_row(ALL, every)
        use = [k for k in (ks or default_ks(n)) if 1 <= k <= n]
        curves[ALL] = [(k, 100.0 * stats.mean_pass_at_k(every, k)) for k in use]
    return curves


@_plain_text
def plot_pass_at_k(
    curves_by_model: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    out_dir: str | os.PathLike,
    *,
    stem: str = "pass_at_k",
    title: str | None = None,
) -> list[str]:
    """One panel per benchmark, then the pooled "All" panel when the curves have it (rows of up to 4 panels), one
    line per model, k on a log2 axis."""
    labels = [label for label in [b.label for b in BENCHMARKS] + [ALL]
              if any(label in c for c in curves_by_model.values())]
    cols = min(4, len(labels))
    rows = (len(labels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels):
        for i, (model, curves) in enumerate(curves_by_model.items()):
            if label not in curves:
                continue
            ks, values = zip(*curves[label])
            ax.plot(ks, values, marker="o", markersize=3, color=_COLOURS[i % len(_COLOURS)], label=model)
            ax.set_xscale("log", base=2)
            ticks = log2_ticks(ks)
            ax.set_xticks(ticks, [str(k) for k in ticks])
            ax.minorticks_off()
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("k", fontsize=8)
        ax.set_ylabel("pass@k (%)", fontsize=8)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))  # a percentage: never below 0, even when all are 0
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=7, frameon=False)
    fig.suptitle(title or "pass@k (unbiased estimator)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


# ---- radar -------------------------------------------------------------------------------------------------------


def radar_values(table: PaperTable) -> dict[str, dict[str, float]]:
    """``{model: {column: accuracy}}`` of the models that have all six benchmarks."""
    return {
        row.model: {b.label: row.cells[b.label].mean for b in BENCHMARKS}
        for row in table.rows
        if all(b.label in row.cells for b in BENCHMARKS)
    }


@_plain_text
def plot_radar(
    values_by_model: Mapping[str, Mapping[str, float]],
    out_dir: str | os.PathLike,
    *,
    stem: str = "radar",
    title: str | None = None,
) -> list[str]:
    """A radar (spider) chart of the six benchmark accuracies, one polygon per model (0-100 %)."""
    import math

    if not values_by_model:
        raise AnalysisError("radar: no model has all six benchmarks; evaluate on the full eval set")
    labels = [b.label for b in BENCHMARKS]
    for model, values in values_by_model.items():
        missing = [label for label in labels if label not in values]
        if missing:
            raise AnalysisError(f"radar: model {model!r} lacks {missing}; it needs all six benchmarks")
    angles = [2 * math.pi * i / len(labels) for i in range(len(labels))]
    fig = plt.figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_offset(math.pi / 2)  # first benchmark at the top, clockwise in column order
    ax.set_theta_direction(-1)
    for i, (model, values) in enumerate(values_by_model.items()):
        ys = [values[label] for label in labels]
        colour = _COLOURS[i % len(_COLOURS)]
        ax.plot(angles + angles[:1], ys + ys[:1], color=colour, linewidth=1.4, label=model)
        ax.fill(angles + angles[:1], ys + ys[:1], color=colour, alpha=0.08)
    ax.set_xticks(angles, labels, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80], ["20", "40", "60", "80"], fontsize=6)
    ax.set_title(title or "Accuracy per benchmark (%)", fontsize=10, pad=14)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=7, frameon=False, ncols=2)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def sampling_figures(
    records: Sequence[Mapping[str, Any]],
    *,
    metrics_grading: str = "regrade",
    pass_at_k_grading: str = PASS_AT_K_GRADING,
    drop_unconverted: bool = False,
    options: Mapping[int, Any] | None = None,
    name: str = "sampling run",
) -> tuple[dict[str, dict[str, float]], dict[str, list[tuple[int, float]]]]:
    """The numbers of a sampled run's two figures, each graded as the original graded it: ``(metrics@n, pass@k
    curves)``. The original's metrics@n come from its regraded file, its pass@k curves from the generation file."""
    if records and max(len(r["rollouts"]) for r in records) < 2:
        raise AnalysisError(f"{name}: every row has one rollout, so metrics@n and pass@k would be plain accuracy; fix: "
                            "pass a sampled run (eval/run_offline_inference.py --preset metrics_at_n or pass_at_k), "
                            "or its greedy run as --run")
    metrics = metrics_at_n(graded(records, metrics_grading, options), drop_unconverted=drop_unconverted)
    curves = pass_at_k_curves(graded(records, pass_at_k_grading, options))
    return metrics, curves


# ---- RL reward curve ----------------------------------------------------------------------------------------------


@_plain_text
def plot_reward_curve(
    curve: Sequence[tuple[int, float]], out_dir: str | os.PathLike, *, stem: str = "reward_curve",
    title: str = "GRPO: mean reward per step",
) -> list[str]:
    """The mean reward (verl's ``critic/score/mean``) against the training step."""
    if not curve:
        raise AnalysisError("the RL log has no step lines with critic/score/mean; fix: pass verl's console log "
                            "(trainer.logger=[console]) of a run that finished at least one step")
    steps, rewards = zip(*curve)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(steps, rewards, marker="o", color=_COLOURS[0])
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


# ---- one call for the scripts ------------------------------------------------------------------------------------


def make_plots(
    out_dir: str | os.PathLike,
    *,
    table: PaperTable | None = None,
    published: Mapping[str, Mapping[str, float]] | None = None,
    sampling_runs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    pass_rate_dir: str | os.PathLike | None = None,
    pass_rate_rollouts: int | None = PASS_RATE.n,
    metrics_grading: str = "regrade",
    pass_at_k_grading: str = PASS_AT_K_GRADING,
    drop_unconverted: bool = False,
    options: Mapping[int, Any] | None = None,
    reward_curve: Sequence[tuple[int, float]] | None = None,
) -> dict[str, list[str]]:
    """Every plot the inputs allow: ``{"radar": [...], "metrics_at_n:MODEL": [...], "pass_at_k": [...],
    "pass_count_distribution": [...], "reward_curve": [...]}``.

    ``published`` rows (e.g. the paper's base model) are drawn on the radar next to the table's models.
    ``sampling_runs`` maps a model name to its records as loaded (n > 1 rollouts per row). The metrics@n bars grade
    them with ``metrics_grading`` (the original: regrade) and the pass@k curves with ``pass_at_k_grading`` (the
    original: the strict grades recorded at generation; ``"regrade"`` is the opt-in that grades both figures
    alike). ``options`` fills in records without options (:func:`medvlthinker.inference.regrade.regrade_records`).
    """
    written: dict[str, list[str]] = {}
    radar: dict[str, dict[str, float]] = {}
    if table is not None:
        radar.update(radar_values(table))
    for model, row in (published or {}).items():
        radar[f"{model} (paper)"] = {b.label: row[b.label] for b in BENCHMARKS}
    if radar:
        written["radar"] = plot_radar(radar, out_dir)
    if sampling_runs:
        curves = {}
        for i, (model, records) in enumerate(sampling_runs.items()):
            stem = "metrics_at_n" if len(sampling_runs) == 1 else f"metrics_at_n_{i}"
            metrics, curves[model] = sampling_figures(
                records, metrics_grading=metrics_grading, pass_at_k_grading=pass_at_k_grading,
                drop_unconverted=drop_unconverted, options=options, name=f"--sampling_run {model}",
            )
            written[f"metrics_at_n:{model}"] = plot_metrics_at_n(
                metrics, out_dir, stem=stem, title=f"{model}: metrics@n per benchmark"
            )
        written["pass_at_k"] = plot_pass_at_k(curves, out_dir)
    if pass_rate_dir is not None:
        written["pass_count_distribution"] = plot_pass_counts(
            pass_rate_dir, out_dir, expected_rollouts=pass_rate_rollouts
        )
    if reward_curve is not None:
        written["reward_curve"] = plot_reward_curve(reward_curve, out_dir)
    return written
