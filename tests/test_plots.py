"""The figures: numbers behind them (from medvlthinker.stats), and PNG + PDF files that open."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest
from PIL import Image
from test_tables import ROOT, make_records, write_run

from medvlthinker import grading, stats
from medvlthinker.analysis import AnalysisError, plots
from medvlthinker.analysis.paper_table import build_table
from medvlthinker.analysis.published import load_published
from medvlthinker.analysis.runs import load_records, load_runs
from medvlthinker.benchmarks import AVG
from medvlthinker.demo import synthetic
from medvlthinker.inference.regrade import regrade_records


@pytest.fixture(scope="module")
def rows():
    return synthetic.make_eval_rows(rows_per_benchmark=6, seed=5, image_size=(32, 32))


@pytest.fixture(scope="module")
def sampled(rows):
    return regrade_records(make_records(rows, seed=1, p_correct=0.4, n_rollouts=8))


def _check_files(paths, stem, out_dir):
    assert sorted(paths) == sorted(os.path.join(out_dir, f"{stem}.{ext}") for ext in ("png", "pdf"))
    with Image.open(paths[0]) as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
        assert len(img.getcolors(1 << 20)) > 8  # something was drawn
    with open(paths[1], "rb") as handle:
        assert handle.read(5) == b"%PDF-"


def test_doctests():
    assert doctest.testmod(plots).failed == 0


def test_metrics_at_n_match_the_statistics(sampled, tmp_path):
    metrics = plots.metrics_at_n(sampled)
    assert list(metrics) == ["PMC", "MMMU", "MedX-M", "PathVQA", "SLAKE", "VQA-Rad", AVG]
    slake = [r for r in sampled if r["dataset_name"] == "slake_closed"]
    assert metrics["SLAKE"]["mean"] == pytest.approx(100 * stats.avg_at_n(slake))
    assert metrics["SLAKE"]["majority"] == pytest.approx(100 * stats.maj_at_n(slake))
    assert metrics["SLAKE"]["pass_at_n"] == pytest.approx(100 * sum(r["num_correct"] > 0 for r in slake) / 6)
    assert metrics["SLAKE"]["n"] == 8 and metrics["SLAKE"]["rows"] == 6
    assert metrics[AVG]["mean"] == pytest.approx(sum(metrics[b]["mean"] for b in list(metrics)[:6]) / 6)
    for m in metrics.values():
        assert m["mean"] <= m["pass_at_n"]
    _check_files(plots.plot_metrics_at_n(metrics, tmp_path), "metrics_at_n", tmp_path)


def test_pass_at_k_curves_use_the_unbiased_estimator(sampled, tmp_path):
    curves = plots.pass_at_k_curves(sampled)
    assert [k for k, _ in curves["PMC"]] == list(range(1, 9))  # every k, as the original computes them
    pmc = [r for r in sampled if r["dataset_name"] == "pmc_vqa"]
    for k, value in curves["PMC"]:
        direct = sum(stats.pass_at_k(8, r["num_correct"], k) for r in pmc) / len(pmc)
        assert value == pytest.approx(100 * direct)
    values = [v for _, v in curves["PMC"]]
    assert values == sorted(values) and values[0] == pytest.approx(plots.metrics_at_n(pmc)["PMC"]["mean"])
    other = plots.pass_at_k_curves(sampled, ks=[1, 3])
    assert [k for k, _ in other["SLAKE"]] == [1, 3]
    _check_files(plots.plot_pass_at_k({"a": curves, "b": other}, tmp_path), "pass_at_k", tmp_path)


def test_uneven_rollouts_are_refused(sampled):
    broken = [dict(r) for r in sampled]
    broken[0]["num_rollouts"] = 7
    with pytest.raises(AnalysisError, match="PMC: rows have different numbers of rollouts"):
        plots.pass_at_k_curves(broken)


def test_radar_from_table_and_published(tmp_path, rows):
    run = write_run(tmp_path / "run", make_records(rows, seed=0))
    table = build_table(load_runs([("demo", run)]), n_resamples=1)
    values = plots.radar_values(table)
    assert values["demo"]["VQA-Rad"] == table.row("demo").cells["VQA-Rad"].mean
    published = load_published()
    paths = plots.plot_radar(values | {"GPT-4o": published["GPT-4o"]}, tmp_path / "fig")
    _check_files(paths, "radar", str(tmp_path / "fig"))
    with pytest.raises(AnalysisError, match="lacks"):
        plots.plot_radar({"x": {"PMC": 1.0}}, tmp_path)


def test_make_plots_cli(tmp_path, rows):
    greedy = write_run(tmp_path / "greedy", make_records(rows, seed=0))
    sampling = write_run(tmp_path / "sampling", make_records(rows, seed=3, n_rollouts=4))
    pass_rate = write_run(tmp_path / "pass_rate", make_records(synthetic.make_text_rows(n=12), seed=4,
                                                               p_correct=0.3, n_rollouts=16))
    out = tmp_path / "plots"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "analysis", "make_plots.py"), "--run", f"base={greedy}",
         "--published_model", "Qwen2.5-VL-3B-Instruct", "--sampling_run", f"base={sampling}",
         "--pass_rate_dir", pass_rate, "--output_dir", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    stems = {"radar", "metrics_at_n", "pass_at_k", "pass_count_distribution"}
    assert sorted(os.listdir(out)) == sorted(f"{s}.{e}" for s in stems for e in ("png", "pdf"))
    assert "pass_count_distribution:" in result.stdout


def _voting_record(letters, answer_label="A"):
    rollouts = [{"output_text": "", "pred_letter": p, "is_correct": p == answer_label} for p in letters]
    return {"dataset_name": "slake_closed", "dataset_index": 0, "answer_label": answer_label, "answer": "Yes",
            "options": '{"A": "Yes", "B": "No"}', "rollouts": rollouts, "num_rollouts": len(rollouts),
            "num_correct": sum(r["is_correct"] for r in rollouts)}


def test_majority_vote_counts_unconverted_predictions_as_the_original():
    # Two identical unparsed answers outvote the one right letter in the original's Counter over pred_letter.
    record = _voting_record(["maybe", "maybe", "A"])
    assert stats.maj_at_n([record]) == 0.0
    assert plots.metrics_at_n([record])["SLAKE"]["majority"] == 0.0
    # opt-in: only predictions that map to an option letter vote
    assert stats.maj_at_n([record], drop_unconverted=True) == 1.0
    assert plots.metrics_at_n([record], drop_unconverted=True)["SLAKE"]["majority"] == 100.0


def test_pass_at_k_uses_recorded_grades_and_a_pooled_panel(rows, tmp_path):
    """The original's pass@k figure reads the is_correct written at generation and adds a pooled "All" panel."""
    slake = next(r for r in rows if r["dataset_name"] == "slake_closed")
    pmc = next(r for r in rows if r["dataset_name"] == "pmc_vqa")
    # strict (the generation grader) takes the FIRST answer tag, regrade the LAST: they disagree on this text
    texts = {id(slake): f"<think>t</think><answer>{slake['answer_label']}</answer> no: <answer>Z</answer>",
             id(pmc): "<answer>Z</answer>"}
    records = []
    for row in (slake, pmc):
        rollouts = [grading.grade_rollout(texts[id(row)], row, mode="strict") for _ in range(2)]
        records.append({"dataset_name": row["dataset_name"], "dataset_index": row["dataset_index"],
                        "answer_label": row["answer_label"], "answer": row["answer"], "options": row["options"],
                        "rollouts": rollouts, "num_rollouts": 2, "num_correct": sum(r["is_correct"] for r in rollouts)})
    run = write_run(tmp_path / "sampling", records)
    loaded = load_records(run)
    metrics, curves = plots.sampling_figures(loaded)
    assert curves["SLAKE"] == [(1, 100.0), (2, 100.0)]  # the recorded strict grades, not the regrade
    assert curves["PMC"] == [(1, 0.0), (2, 0.0)]
    assert curves[plots.ALL] == [(1, 50.0), (2, 50.0)]  # every row of the six benchmarks pooled
    assert metrics["SLAKE"]["mean"] == 0.0  # metrics@n come from the regrade, as the original's regraded file
    _, regraded = plots.sampling_figures(loaded, pass_at_k_grading="regrade")  # the opt-in
    assert regraded["SLAKE"] == [(1, 0.0), (2, 0.0)]
    written = plots.make_plots(tmp_path / "fig", sampling_runs={"m": loaded})
    _check_files(written["pass_at_k"], "pass_at_k", str(tmp_path / "fig"))


def test_a_dollar_in_a_model_name_is_drawn_as_text(sampled, tmp_path):
    # matplotlib reads text between two $ as mathtext, where "$^$" or "$\\x$" does not parse
    names = ("run$^$1", r"ckpt $\x$ final")
    written = plots.make_plots(tmp_path, sampling_runs={name: sampled for name in names})
    assert set(written) == {*(f"metrics_at_n:{name}" for name in names), "pass_at_k"}
    _check_files(written["pass_at_k"], "pass_at_k", str(tmp_path))
    from medvlthinker.curate import curation_report

    assert curation_report.plot_pass_count_distribution({1: 3, 2: 1}, tmp_path / "counts.png", title="run$^$1").is_file()
