"""The paper table: published numbers, per-cell statistics, renderers, the comparisons and the CLI.

``write_run`` builds eval output directories in the layout of eval/run_offline_inference.py (docs/protocol.md contract 3) from the
synthetic eval rows, graded with the protocol's grader; the plot and report tests reuse it.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import random
import statistics
import subprocess
import sys
from dataclasses import replace

import pytest

from medvlthinker import grading, stats
from medvlthinker.analysis import AnalysisError, tables
from medvlthinker.analysis.paper_table import build_table, compare_published, paired_comparison, row_values
from medvlthinker.analysis.published import average_of, check_published_averages, load_published
from medvlthinker.analysis.render import TSV_FIELDS, expected_intervals_markdown, to_latex, to_markdown, to_tsv
from medvlthinker.analysis.runs import discover_runs, load_records, load_runs
from medvlthinker.benchmarks import AVG, BENCHMARKS, COLUMNS
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _output(row, kind: str, rng: random.Random) -> str:
    options = json.loads(row["options"])
    if kind == "correct":
        body = rng.choice([row["answer_label"], f"{row['answer_label']}. {row['answer']}", row["answer"]])
    elif kind == "wrong":
        body = rng.choice([k for k in options if k != row["answer_label"]])
    else:
        body = "I cannot tell from this image"
    return f"<think>The image shows a figure.</think>\n<answer>{body}</answer>"


def make_records(rows, *, seed: int, p_correct: float = 0.6, p_unparsed: float = 0.1, n_rollouts: int = 1):
    """Eval records (contract 3) for ``rows``; each rollout is correct / wrong / unparsed at random."""
    rng = random.Random(seed)
    records = []
    for row in rows:
        rollouts = []
        for _ in range(n_rollouts):
            u = rng.random()
            kind = "correct" if u < p_correct else "unparsed" if u < p_correct + p_unparsed else "wrong"
            rollouts.append(grading.grade_rollout(_output(row, kind, rng), row, mode="strict"))
        records.append(
            {
                "dataset_name": row["dataset_name"],
                "dataset_index": row["dataset_index"],
                "answer_label": row["answer_label"],
                "answer": row["answer"],
                "options": row["options"],
                "question": row["question"],
                "prompt": f"<|im_start|>user\n{row['question']}<|im_end|>\n<|im_start|>assistant\n",
                "prompt_tokens": 100,
                "image_tokens": 4 * len(row["images"] or []),
                "rollouts": rollouts,
                "num_rollouts": n_rollouts,
                "num_correct": sum(r["is_correct"] for r in rollouts),
                "misc": row["misc"],
            }
        )
    return records


def write_run(directory, records, *, shards: int = 0) -> str:
    """Write records as eval_results.jsonl (or, with ``shards``, only as unmerged shard files)."""
    os.makedirs(directory, exist_ok=True)
    if shards:
        for rank in range(shards):
            with open(os.path.join(directory, f"shard-{rank:03d}-of-{shards:03d}.jsonl"), "w") as handle:
                for record in records[rank::shards]:
                    handle.write(json.dumps(record) + "\n")
    else:
        with open(os.path.join(directory, "eval_results.jsonl"), "w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    return str(directory)


@pytest.fixture(scope="module")
def rows():
    return synthetic.make_eval_rows(rows_per_benchmark=8, seed=3, image_size=(32, 32))


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, rows):
    """ROOT/MODEL/REPEAT layout: model "base" with three repeats, model "tuned" with two."""
    root = tmp_path_factory.mktemp("runs")
    for repeat in range(3):
        write_run(root / "base" / f"r{repeat}", make_records(rows, seed=10 + repeat, p_correct=0.5))
    for repeat in range(2):
        write_run(root / "tuned" / f"r{repeat}", make_records(rows, seed=20 + repeat, p_correct=0.8))
    return root


# ---- published numbers -------------------------------------------------------------------------------------------


def test_doctests():
    assert doctest.testmod(tables).failed == 0


def test_published_average_column_follows_from_the_six_benchmarks():
    published = load_published()
    assert len(published) == 19
    for model, row in published.items():
        mean = math.fsum(row[b.label] for b in BENCHMARKS) / 6
        assert abs(mean - row[AVG]) <= 0.01, model
        assert average_of(row) == pytest.approx(mean)
    assert published["Qwen2.5-VL-3B-Instruct"] == {
        "PMC": 44.77, "MMMU": 44.12, "MedX-M": 20.69, "PathVQA": 61.96, "SLAKE": 61.30, "VQA-Rad": 62.01,
        "Avg.": 49.14,
    }
    assert published["32B RL(m23k)"]["MMMU"] == 70.00
    check_published_averages(published)


def test_a_wrong_published_average_is_caught(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model," + ",".join(COLUMNS) + "\nX,1,2,3,4,5,6,9.50\n")
    with pytest.raises(AnalysisError, match="'X'.*Avg. 9.5.*3.5"):
        check_published_averages(load_published(bad))


# ---- cells -------------------------------------------------------------------------------------------------------


def test_cells_match_a_direct_computation(runs_root, rows):
    models = load_runs(discover_runs(runs_root), grading_mode="regrade")
    assert [m.name for m in models] == ["base", "tuned"] and len(models[0].repeats) == 3
    table = build_table(models, n_resamples=300, seed=7)
    base = models[0]

    per_bench_values, per_bench_clusters = {}, {}
    repeat_accs = [{} for _ in base.repeats]
    for bench in BENCHMARKS:
        cell = table.row("base").cells[bench.label]
        by_repeat = []
        for r, records in enumerate(base.repeats):
            recs = sorted((x for x in records if x["dataset_name"] == bench.dataset_name),
                          key=lambda x: x["dataset_index"])
            by_repeat.append(recs)
            repeat_accs[r][bench.label] = 100 * sum(x["num_correct"] / x["num_rollouts"] for x in recs) / len(recs)
        values = [statistics.fmean(by_repeat[r][i]["num_correct"] for r in range(3)) for i in range(8)]
        clusters = [json.loads(x["misc"])["image_id"] for x in by_repeat[0]]
        mean, low, high = stats.bootstrap_ci(values, n_resamples=300, seed=7, clusters=clusters)
        assert (cell.mean, cell.low, cell.high) == pytest.approx((100 * mean, 100 * low, 100 * high), abs=1e-9)
        accs = [repeat_accs[r][bench.label] for r in range(3)]
        assert cell.mean == pytest.approx(statistics.fmean(accs))
        assert cell.spread == pytest.approx(statistics.stdev(accs))
        assert (cell.rows, cell.repeats, cell.num_rollouts) == (8, 3, 24)
        unparsed = sum(grading.is_conversion_failure(ro["pred_letter"], x["options"])
                       for recs in by_repeat for x in recs for ro in x["rollouts"])
        assert cell.conversion_failure_rate == pytest.approx(unparsed / 24)
        per_bench_values[bench.label], per_bench_clusters[bench.label] = values, clusters

    avg = table.row("base").cells[AVG]
    mean, low, high = stats.bootstrap_average_ci(per_bench_values, n_resamples=300, seed=7,
                                                 clusters=per_bench_clusters)
    assert (avg.mean, avg.low, avg.high) == pytest.approx((100 * mean, 100 * low, 100 * high), abs=1e-9)
    assert avg.mean == pytest.approx(statistics.fmean(table.row("base").cells[b.label].mean for b in BENCHMARKS))
    assert avg.low < avg.mean < avg.high
    # The interval is clustered by image: two rows share an image in PathVQA, so it must differ from a row bootstrap.
    unclustered = build_table(models, n_resamples=300, seed=7, cluster_by_image=False)
    assert unclustered.row("base").cells["PathVQA"].low != table.row("base").cells["PathVQA"].low


def test_grading_mode_regrade_takes_the_last_answer(tmp_path, rows):
    row = rows[0]
    wrong = next(k for k in json.loads(row["options"]) if k != row["answer_label"])
    text = f"<think>x</think><answer>{wrong}</answer> no wait <answer>{row['answer_label']}</answer>"
    record = make_records([row], seed=0)[0]
    record["rollouts"] = [grading.grade_rollout(text, row, mode="strict")]
    record["num_correct"] = 0
    write_run(tmp_path / "run", [record])
    strict = load_runs([("m", str(tmp_path / "run"))], grading_mode="strict")[0].repeats[0][0]
    regraded = load_runs([("m", str(tmp_path / "run"))], grading_mode="regrade")[0].repeats[0][0]
    assert (strict["num_correct"], regraded["num_correct"]) == (0, 1)


def test_shards_are_read_when_the_merged_file_is_absent(tmp_path, rows):
    records = make_records(rows, seed=1)
    write_run(tmp_path / "sharded", records, shards=3)
    loaded = load_records(tmp_path / "sharded")
    assert [r["dataset_index"] for r in loaded] == sorted(r["dataset_index"] for r in records)


def test_errors_name_the_file_and_the_fix(tmp_path, rows):
    run = write_run(tmp_path / "a", make_records(rows, seed=1))
    with open(os.path.join(run, "eval_results.jsonl"), "a") as handle:
        handle.write('{"dataset_name": "pmc_va')
    with pytest.raises(AnalysisError, match=r"eval_results.jsonl:49: a torn last line.*delete that line"):
        load_records(run)
    with pytest.raises(AnalysisError, match=r"no eval records \(eval_results.jsonl or shard-\*-of-\*.jsonl\)"):
        load_records(tmp_path)
    full = write_run(tmp_path / "full", make_records(rows, seed=1))
    part = write_run(tmp_path / "part", make_records(rows[:-1], seed=2))
    models = load_runs([("m", full), ("m", part)])
    with pytest.raises(AnalysisError, match=r"model 'm', vqa_rad_closed: .*part holds 7 rows.*resume"):
        build_table(models, n_resamples=10)


def test_missing_benchmark_leaves_the_average_empty(tmp_path, rows):
    run = write_run(tmp_path / "pmc_only", make_records([r for r in rows if r["dataset_name"] == "pmc_vqa"], seed=0))
    table = build_table(load_runs([("m", run)]), n_resamples=10)
    row = table.row("m")
    assert set(row.cells) == {"PMC"} and row.missing == ["MMMU", "MedX-M", "PathVQA", "SLAKE", "VQA-Rad"]
    assert row.cells["PMC"].spread is None
    assert "| m | " in to_markdown(table) and "—" in to_markdown(table)


# ---- comparisons and rendering -----------------------------------------------------------------------------------


def test_published_and_paired_comparisons(runs_root):
    models = load_runs(discover_runs(runs_root))
    table = build_table(models, n_resamples=200)
    published = load_published()
    comparison = compare_published(table, published, {"base": "Qwen2.5-VL-3B-Instruct"})
    assert list(comparison) == ["base"]
    cell = comparison["base"]["cells"]["PMC"]
    assert cell["diff"] == pytest.approx(table.row("base").cells["PMC"].mean - 44.77)
    assert comparison["base"]["cells"][AVG]["published"] == 49.14
    with pytest.raises(AnalysisError, match="no published row 'nope'"):
        compare_published(table, published, {"base": "nope"})

    paired = paired_comparison(models[1], models[0], n_resamples=200, seed=3)
    assert set(paired) == set(COLUMNS)
    # Direct: per row, the repeat-averaged accuracy of each model, paired by dataset_index, clustered by image.
    _, va, clusters = row_values(models[1], "slake_closed")
    _, vb, _ = row_values(models[0], "slake_closed")
    direct = stats.paired_bootstrap(va, vb, clusters=clusters, n_resamples=200, seed=3)
    assert paired["SLAKE"]["diff"] == pytest.approx(100 * direct["diff"])
    assert (paired["SLAKE"]["low"], paired["SLAKE"]["high"]) == pytest.approx((100 * direct["low"],
                                                                                100 * direct["high"]))
    assert paired["SLAKE"]["p_value"] == direct["p_value"]
    assert paired[AVG]["diff"] == pytest.approx(table.row("tuned").cells[AVG].mean - table.row("base").cells[AVG].mean)
    assert paired[AVG]["p_value"] is None

    md = to_markdown(table, comparison, {"a": "tuned", "b": "base", "results": paired})
    assert "| Model | PMC | MMMU | MedX-M | PathVQA | SLAKE | VQA-Rad | Avg. |" in md
    base = table.row("base")
    assert f"| base | {base.cells['PMC'].mean:.2f} ±{base.cells['PMC'].spread:.2f} |" in md
    assert f"[{base.cells[AVG].low:.2f}, {base.cells[AVG].high:.2f}]" in md
    assert "base vs Qwen2.5-VL-3B-Instruct" in md and "Paired comparison: tuned − base" in md

    tex = to_latex(table, comparison)
    assert tex.count("\\\\") == len(table.rows) + 1 and "\\toprule" in tex
    tsv = to_tsv(table, comparison).splitlines()
    assert tsv[0].split("\t") == list(TSV_FIELDS)
    assert len(tsv) == 1 + 2 * len(COLUMNS)
    first = dict(zip(TSV_FIELDS, tsv[1].split("\t")))
    assert first["model"] == "base" and first["dataset_name"] == "pmc_vqa" and first["published"] == "44.77"
    assert float(first["mean"]) == pytest.approx(base.cells["PMC"].mean)


def test_make_tables_cli(runs_root, tmp_path):
    out = tmp_path / "tables"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "analysis", "make_tables.py"),
         "--run", f"base={runs_root / 'base' / 'r0'}", "--run", f"base={runs_root / 'base' / 'r1'}",
         "--run", f"tuned={runs_root / 'tuned' / 'r0'}",
         "--compare", "base=Qwen2.5-VL-3B-Instruct", "--paired", "tuned", "base",
         "--n_resamples", "100", "--output_dir", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["table.json", "table.md", "table.tex", "table.tsv"]
    data = json.loads((out / "table.json").read_text())
    assert [r["model"] for r in data["table"]["rows"]] == ["base", "tuned"]
    assert data["table"]["rows"][0]["cells"]["PMC"]["repeats"] == 2
    assert data["paired"]["a"] == "tuned" and "Avg." in data["paired"]["results"]
    assert "| Model | PMC |" in result.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "analysis", "make_tables.py"),
                          "--run", f"x={tmp_path / 'nowhere'}", "--output_dir", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no eval records" in bad.stderr


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "analysis", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_settings_defaults_are_the_flags_defaults():
    from dataclasses import FrozenInstanceError

    from medvlthinker.analysis import report
    from medvlthinker.analysis.cli_options import report_settings, table_settings

    params = _script("make_tables").make_context("make_tables.py", ["--output_dir", "out"]).params
    assert table_settings(params) == tables.TableSettings()
    params = _script("make_report").make_context("make_report.py", ["--output_dir", "out"]).params
    assert report_settings(params) == report.ReportSettings("out")
    flags = ["--run", "a=x", "--run", "a=y", "--grading", "strict", "--paired", "a", "b", "--no_cluster",
             "--alpha", "0.1", "--published", "p.csv", "--output_dir", "out"]
    settings = table_settings(_script("make_tables").make_context("make_tables.py", flags).params)
    assert (settings.run_specs, settings.grading_mode, settings.paired, settings.cluster_by_image, settings.alpha,
            settings.published_path) == (("a=x", "a=y"), "strict", ("a", "b"), False, 0.1, "p.csv")
    with pytest.raises(FrozenInstanceError):
        settings.seed = 1


def test_a_dashed_flag_still_works_and_names_its_snake_case_spelling(runs_root, tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(_script("make_tables"), ["--runs-root", str(runs_root), "--n-resamples=20",
                                                         "--output-dir", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[:3] == [
        "warning: --runs-root is deprecated; spell it --runs_root",
        "warning: --n-resamples is deprecated; spell it --n_resamples",
        "warning: --output-dir is deprecated; spell it --output_dir"]
    data = json.loads((tmp_path / "t" / "table.json").read_text())
    assert data["table"]["n_resamples"] == 20 and [r["model"] for r in data["table"]["rows"]] == ["base", "tuned"]
    assert "--output-dir" not in CliRunner().invoke(_script("make_tables"), ["--help"]).output


def test_reproduction_guide_lists_the_expected_intervals():
    guide = open(os.path.join(ROOT, "docs", "reproduction.md"), encoding="utf-8").read()
    assert expected_intervals_markdown() in guide
    assert "| Qwen2.5-VL-3B-Instruct | 44.77 [42.6, 47.0] |" in guide
    for row in load_published():
        if row not in ("GPT-4o", "HuatuoGPT-Vision-7B", "MedGemma 4B"):
            assert f"| {row} |" in guide.split("## Compute")[0], row


# The record layout of the original recipe's eval/run_offline_inference.py (released eval_results.jsonl files):
# ``prompts`` and ``parsed_outputs`` instead of ``prompt`` and ``rollouts``, and no options.
ORIGINAL_FIELDS = ("dp_index", "prompts", "dataset_name", "dataset_index", "answer_label", "answer", "parsed_outputs",
                   "num_rollouts", "num_correct")


def original_layout(record):
    renamed = {**record, "dp_index": 0, "prompts": record["prompt"], "parsed_outputs": record["rollouts"]}
    return {key: renamed[key] for key in ORIGINAL_FIELDS}


def test_original_result_files_are_read_by_the_table_and_the_regrade(tmp_path, rows):
    from medvlthinker.data import save_unified
    from medvlthinker.inference.regrade import regrade

    records = make_records(rows, seed=11, n_rollouts=2)
    ours = write_run(tmp_path / "ours", records)
    theirs = write_run(tmp_path / "theirs", [original_layout(r) for r in records])
    loaded = load_records(theirs)
    assert [r["rollouts"] for r in loaded] == [r["rollouts"] for r in records]
    assert "parsed_outputs" not in loaded[0] and loaded[0]["prompt"] == records[0]["prompt"]

    # the original's own regrade joins the options from the eval set by dataset_index; so do the table and regrade
    eval_set = to_dataset(rows)
    # (the original's records carry no misc.image_id, so both tables resample rows)
    settings = tables.TableSettings(n_resamples=20, compare_published_names=False)
    expected = tables.make_tables(replace(settings, run_specs=[f"m={ours}"], cluster_by_image=False)).table
    joined = tables.make_tables(replace(settings, run_specs=[f"m={theirs}"], cluster_by_image=False,
                                        eval_data=eval_set)).table
    assert joined.row("m").cells == expected.row("m").cells
    with pytest.raises(AnalysisError, match=r"has no options .*--eval_data"):
        tables.make_tables(replace(settings, run_specs=[f"m={theirs}"]))
    recorded = tables.make_tables(replace(settings, run_specs=[f"m={theirs}"], grading_mode="recorded")).table
    assert recorded.row("m").cells[AVG].mean == tables.make_tables(
        replace(settings, run_specs=[f"m={ours}"], grading_mode="recorded")).table.row("m").cells[AVG].mean

    save_unified(eval_set, tmp_path / "evalset")
    assert regrade(theirs, tmp_path / "r1", eval_data=str(tmp_path / "evalset")) == regrade(ours, tmp_path / "r2")


def test_cost_column_from_the_runs_and_the_rl_log(tmp_path, rows):
    records = make_records(rows, seed=1, p_correct=0.5)
    runs = {}
    for name, seconds, devices in (("base", 720.0, 8), ("rl", 360.0, 8)):
        runs[name] = write_run(tmp_path / name, records)
        (tmp_path / name / "cost.json").write_text(json.dumps({
            "invocations": [{"seconds": seconds, "devices": devices, "backend": "vllm"}], "wall_seconds": seconds,
            "device_hours": seconds * devices / 3600, "generated_tokens": 1000}))
    log = tmp_path / "train.log"
    log.write_text("{'trainer': {'n_gpus_per_node': 8, 'nnodes': 1}}\n"
                   "(TaskRunner pid=1) step:1 - timing_s/step:np.float64(900.0) - perf/throughput:50.0\n"
                   "(TaskRunner pid=1) step:2 - timing_s/step:900.0 - perf/throughput:70.0\n")
    out = tmp_path / "tables"
    cmd = [sys.executable, os.path.join(ROOT, "analysis", "make_tables.py"), "--run", f"base={runs['base']}",
           "--run", f"rl={runs['rl']}", "--n_resamples", "50", "--output_dir", str(out)]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and not (out / "cost.json").exists()  # opt-in
    result = subprocess.run(cmd + ["--cost", "--rl_log", f"rl={log}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    cost = json.loads((out / "cost.json").read_text())
    assert cost["base"]["eval_device_hours"] == pytest.approx(1.6) and cost["base"]["device_hours"] == pytest.approx(1.6)
    rl = cost["rl"]["rl"]
    assert (rl["steps"], rl["seconds_per_step"], rl["tokens_per_second_per_device"], rl["devices"]) == (2, 900, 60, 8)
    assert cost["rl"]["device_hours"] == pytest.approx(0.8 + 4.0)
    assert "| rl | 0.800 | 4.000 | 900.0 | 60.0 | 4.800 |" in result.stdout
    bad = subprocess.run(cmd + ["--rl_log", f"sft={log}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--rl_log sft=...: no run named 'sft'" in bad.stderr
