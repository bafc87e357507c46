"""Pass-rate curation: pass_count from eval records, the [1, 7] band, the seeded curriculum order, the plots."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from medvlthinker.curate import curation, curation_report
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_process" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(row, num_correct, n=16):
    """A pass-rate record shaped like docs/protocol.md contract 3 (only the fields curation reads are meaningful)."""
    rollouts = [{"output_text": "", "pred_letter": "A", "is_correct": i < num_correct} for i in range(n)]
    return {
        "dataset_name": row["dataset_name"], "dataset_index": row["dataset_index"],
        "answer_label": row["answer_label"], "answer": row["answer"], "options": row["options"],
        "question": row["question"], "prompt": "", "prompt_tokens": 0, "image_tokens": 0,
        "rollouts": rollouts, "num_rollouts": n, "num_correct": num_correct, "misc": row["misc"],
    }


# 40 rows; pass counts cycle through 0..16 with ties, the last 3 rows have no record
ROWS = synthetic.make_text_rows(n=40, seed=5)
COUNTS = {row["dataset_index"]: (7 * i) % 17 for i, row in enumerate(ROWS[:-3])}


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("passrate") / "eval_results.jsonl"
    by_index = {r["dataset_index"]: r for r in ROWS}
    with path.open("w") as f:
        for index, count in sorted(COUNTS.items()):
            f.write(json.dumps(_record(by_index[index], count)) + "\n")
    return path


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "m23k"
    to_dataset(ROWS).save_to_disk(str(path))
    return path


def test_attach_pass_count_joins_on_dataset_index_and_marks_missing(results_file):
    counts = curation.load_pass_counts(results_file)
    ds = curation.attach_pass_count(to_dataset(ROWS), counts)
    got = dict(zip(ds["dataset_index"], ds["pass_count"]))
    assert ds.features["pass_count"] == datasets.Value("int64")
    assert all(got[i] == c for i, c in COUNTS.items())
    assert [got[r["dataset_index"]] for r in ROWS[-3:]] == [-1, -1, -1]


def test_record_for_another_data_set_or_wrong_rollouts_is_an_error(results_file):
    counts = curation.load_pass_counts(results_file)
    other = [dict(r, dataset_name="pmc_vqa") for r in ROWS[:2]]
    with pytest.raises(curation.CurationError, match=r"dataset_name='pmc_vqa', dataset_index=0\).*m23k"):
        curation.attach_pass_count(to_dataset(other), counts)
    greedy = [_record(ROWS[0], 1, n=1)]
    with pytest.raises(curation.CurationError, match="has 1 rollouts, expected 16"):
        curation.pass_counts_from_records(greedy)
    assert curation.pass_counts_from_records(greedy, expected_rollouts=None) == {0: ("m23k", 1)}


def test_shards_are_read_and_a_half_written_last_line_is_skipped(tmp_path):
    lines = [json.dumps(_record(ROWS[i], i)) for i in range(3)]
    (tmp_path / "shard-000-of-002.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n")
    (tmp_path / "shard-001-of-002.jsonl").write_text(lines[2] + "\n" + lines[2][:30])
    assert curation.load_pass_counts(tmp_path) == {0: ("m23k", 0), 1: ("m23k", 1), 2: ("m23k", 2)}
    with pytest.raises(curation.CurationError, match="no pass-rate results"):
        curation.load_pass_counts(tmp_path / "missing")


@pytest.mark.parametrize("order,reverse", [("easy_to_hard", True), ("hard_to_easy", False)])
def test_order_equals_the_original_shuffle_then_stable_sort(results_file, order, reverse):
    ds = to_dataset(ROWS).remove_columns("images")
    curated, report = curation.curate(ds, curation.load_pass_counts(results_file), order=order)
    # the original: filter 1..7, datasets' shuffle(seed=42), then datasets' sort on pass_count
    reference = curation.attach_pass_count(ds, curation.load_pass_counts(results_file))
    reference = reference.filter(lambda r: 1 <= r["pass_count"] <= 7).shuffle(seed=42).sort("pass_count", reverse=reverse)
    assert curated["dataset_index"] == reference["dataset_index"]
    passes = curated["pass_count"]
    assert passes == sorted(passes, reverse=reverse) and set(passes) <= set(range(1, 8))
    # ties are not left in input order: the shuffle happened
    tied = [i for i, p in zip(curated["dataset_index"], passes) if p == passes[0]]
    assert len(tied) >= 2
    assert report.rows_out == len(curated) == sum(1 for c in COUNTS.values() if 1 <= c <= 7)


def test_report_counts_each_filter():
    counts = [-1, -1, 0, 0, 0, 1, 4, 7, 8, 16]
    keep, removed = curation.keep_band(counts, 1, 7)
    assert keep == [5, 6, 7] and removed == {"no_result": 2, "below": 3, "above": 2}
    keep, removed = curation.keep_band(counts, -1, 16)  # -1 as the lower bound keeps rows without a result
    assert keep == list(range(10)) and removed == {"no_result": 0, "below": 0, "above": 0}
    assert curation.order_positions([3, 1, 2], "none") == [0, 1, 2]
    assert sorted(curation.order_positions([3, 1, 2], "random")) == [0, 1, 2]
    with pytest.raises(ValueError, match="easy_to_hard"):
        curation.order_positions([1], "curriculum")


def test_distribution_of_the_published_7b_m23k_counts():
    published = [8123, 4604, 3012, 2174, 1593, 1109, 811, 616, 455, 333, 218, 160, 109, 80, 39, 17, 3]
    counts = [k for k, n in enumerate(published) for _ in range(n)]
    dist = curation_report.pass_count_distribution(counts)
    assert list(dist) == list(range(17)) and list(dist.values()) == published and sum(dist.values()) == 23456
    table = curation_report.format_distribution_table(dist)
    assert "     0     8123    34.63" in table and table.endswith("total    23456")
    assert curation_report.pass_count_distribution([-1, 3], max_count=4) == {-1: 1, 0: 0, 1: 0, 2: 0, 3: 1, 4: 0}


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_plot_is_written_and_byte_identical_on_rerun(tmp_path, suffix, magic):
    dist = curation_report.pass_count_distribution([0, 0, 1, 2, 2, 2, -1])
    first = curation_report.plot_pass_count_distribution(dist, tmp_path / f"a{suffix}", title="m23k")
    second = curation_report.plot_pass_count_distribution(dist, tmp_path / f"b{suffix}", title="m23k")
    assert first.read_bytes()[:4] == magic and len(first.read_bytes()) > 1000
    assert first.read_bytes() == second.read_bytes()


def _tree_digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("out_name", ["curated", "curated.parquet"])
def test_script_writes_ordered_set_and_report_identically_twice(tmp_path, train_dir, results_file, out_name):
    main = _script("order_easy_to_hard").main
    digests = []
    for run in ("first", "second"):
        out = tmp_path / run / out_name
        result = CliRunner().invoke(
            main,
            ["--dataset_name", str(train_dir), "--results_jsonl_path", str(results_file), "--save_to_disk_path", str(out)],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert "removed, no pass-rate result (pass_count -1): 3" in result.output
        report_dir = out.with_name("curated_curation")
        digests.append({**_tree_digest(out), **_tree_digest(report_dir)})
    assert digests[0] == digests[1]
    assert any(name.endswith(".png") for name in digests[0])
    saved = datasets.Dataset.from_parquet(str(out)) if out_name.endswith(".parquet") else datasets.load_from_disk(str(out))
    report = json.loads((report_dir / "curation_report.json").read_text())
    expected = {
        "no_result": 3,
        "below": sum(1 for c in COUNTS.values() if c < 1),
        "above": sum(1 for c in COUNTS.values() if c > 7),
    }
    assert (report["removed_no_result"], report["removed_below"], report["removed_above"]) == tuple(expected.values())
    assert len(saved) == report["rows_out"] == 40 - sum(expected.values())
    assert saved["pass_count"] == sorted(saved["pass_count"], reverse=True)
    assert saved["question"][0] == next(r["question"] for r in ROWS if r["dataset_index"] == saved["dataset_index"][0])


@pytest.mark.slow
def test_curation_reads_a_real_pass_rate_run(tmp_path, tiny_model_dir):
    """prepare_m23k -> a pass-rate run of the inference runner (transformers backend, tiny model) -> curation."""
    from medvlthinker.inference.run_config import RunConfig
    from medvlthinker.inference.runner import run
    from medvlthinker.prepare import prepare_m23k

    source = tmp_path / "m23k.jsonl"
    rows = synthetic.make_text_rows(n=6, seed=9)
    source.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "images"}) + "\n" for r in rows))
    prepare_m23k(source, tmp_path / "m23k")
    out = tmp_path / "pass_rate"
    run(RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(tmp_path / "m23k"), split=None,
                  n=4, temperature=1.0, max_tokens=4, output_dir=str(out), progress=False))
    records = {r["dataset_index"]: r["num_correct"] for r in curation.read_pass_rate_records(out)}
    assert sorted(records) == list(range(6))
    result = CliRunner().invoke(
        _script("order_easy_to_hard").main,
        ["--dataset_name", str(tmp_path / "m23k"), "--results_jsonl_path", str(out), "--num_rollouts", "4",
         "--remove_pass_count_below", "0", "--remove_pass_count_above", "4", "--save_to_disk_path", str(tmp_path / "cur")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    curated = datasets.load_from_disk(str(tmp_path / "cur"))
    assert len(curated) == 6 and all(records[i] == p for i, p in zip(curated["dataset_index"], curated["pass_count"]))
    assert curated["pass_count"] == sorted(curated["pass_count"], reverse=True)
    # the distribution goes up to the rollouts of this run (4), not the paper's 16
    report = json.loads((tmp_path / "cur_curation" / "curation_report.json").read_text())
    assert sorted(int(k) for k in report["distribution_in"]) == [0, 1, 2, 3, 4]
