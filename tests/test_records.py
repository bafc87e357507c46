"""Eval records on disk: the one reader (a file, a run directory, shards), its torn-line and duplicate rules, the
original recipe's layout, the one regrade_records, and the benchmarks registry every stage imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medvlthinker import benchmarks
from medvlthinker.analysis import paper_table, published, runs, tables
from medvlthinker.demo import synthetic
from medvlthinker.errors import UserError
from medvlthinker.inference import records, regrade

ROOT = Path(__file__).resolve().parent.parent


def _record(index: int, name: str = "pmc_vqa", **extra) -> dict:
    options = json.dumps({"A": "Yes", "B": "No"})
    output = "<think>t</think><answer>A</answer>"
    return {"dataset_name": name, "dataset_index": index, "answer_label": "A", "answer": "Yes", "options": options,
            "rollouts": [{"output_text": output, "pred_letter": "A", "is_correct": True}],
            "num_rollouts": 1, "num_correct": 1, **extra}


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def test_a_torn_shard_line_is_skipped_and_repaired_for_appending(tmp_path):
    shard = _write(tmp_path / records.shard_name(0, 1), [_line(_record(0)), _line(_record(1)), '{"dataset_ind'])
    assert [r["dataset_index"] for r in records.read_records(shard)] == [0, 1]
    assert shard.read_text().endswith('{"dataset_ind')  # reading alone changes nothing
    assert [r["dataset_index"] for r in records.read_records(shard, repair=True)] == [0, 1]
    assert shard.read_text() == _line(_record(0)) + _line(_record(1))
    # a complete last record without its newline gets one, so the next append starts a new line
    _write(shard, [_line(_record(0)), _line(_record(1)).rstrip("\n")])
    records.read_records(shard, repair=True)
    assert shard.read_text().endswith("}\n") and len(records.read_records(shard)) == 2
    assert records.read_records(tmp_path / "absent.jsonl") == []


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path):
    shard = _write(tmp_path / records.shard_name(0, 1), [_line(_record(0)), "not json\n", _line(_record(2))])
    with pytest.raises(records.RecordsError, match=rf"{re.escape(str(shard))}:2: not a JSON record; fix:"):
        records.read_records(shard)
    with pytest.raises(records.RecordsError, match=r":2: not a JSON record"):
        records.read_run(tmp_path)


def test_one_rule_for_files_directories_and_shards(tmp_path):
    run = tmp_path / "run"
    _write(run / records.shard_name(0, 2), [_line(_record(2)), _line(_record(0)), '{"torn'])
    _write(run / records.shard_name(1, 2), [_line(_record(1))])
    assert [r["dataset_index"] for r in records.read_run(run)] == [0, 1, 2]  # the union of the shards, sorted
    assert records.collect_records(run) == records.read_run(run)
    assert records.collect_records(tmp_path / "nothing") == []
    # a merged file wins over the shards, and a torn line there is an error: it was not written whole
    merged = _write(run / records.RESULTS_FILE, [_line(_record(0)), '{"torn'])
    with pytest.raises(records.RecordsError, match=r"eval_results.jsonl:2: a torn last line"):
        records.read_run(run)
    merged.unlink()
    _write(run / records.shard_name(1, 2), [_line(_record(1)), _line(_record(2))])
    for reader in (records.read_run, records.collect_records):
        with pytest.raises(records.RecordsError, match=r"shard-001-of-002.jsonl:2: dataset_index 2 is already "
                                                        r"recorded at .*shard-000-of-002.jsonl:1"):
            reader(run)
    with pytest.raises(FileNotFoundError, match="no eval records"):
        records.read_run(tmp_path / "empty")


def test_the_original_layout_is_read_as_this_projects(tmp_path):
    ours = _record(0, prompt="p")
    theirs = {("parsed_outputs" if k == "rollouts" else "prompts" if k == "prompt" else k): v for k, v in ours.items()}
    path = _write(tmp_path / "released.jsonl", [_line(theirs)])
    assert records.read_run(path) == [ours] == records.read_records(path)
    both = _write(tmp_path / "both.jsonl", [_line({**ours, "parsed_outputs": []})])
    with pytest.raises(records.RecordsError, match=r"both.jsonl:1: .*has both 'parsed_outputs' and 'rollouts'"):
        records.read_run(both)


def test_one_regrade_records_for_every_stage():
    package = ROOT / "medvlthinker"
    defined = [p for p in package.rglob("*.py") if "def regrade_records(" in p.read_text(encoding="utf-8")]
    assert defined == [package / "inference" / "regrade.py"]
    assert runs.regrade_records is regrade.regrade_records  # imported from its one home, not re-exported
    assert not hasattr(tables, "regrade_records")

    wrong = {**_record(0), "rollouts": [{"output_text": "<answer>B</answer>", "pred_letter": "A", "is_correct": True}]}
    assert regrade.regrade_records([wrong])[0]["num_correct"] == 0
    assert regrade.regrade_records([wrong], "recorded")[0]["num_correct"] == 1
    bare = {k: v for k, v in wrong.items() if k not in ("options", "num_rollouts", "num_correct")}
    assert regrade.regrade_records([bare], "recorded")[0]["num_rollouts"] == 1
    with pytest.raises(records.RecordsError, match=r"dataset_index=0 has no options .*fix: pass the eval set"):
        regrade.regrade_records([bare])
    joined = regrade.regrade_records([bare], "strict", {0: wrong["options"]})
    assert joined[0]["rollouts"][0]["pred_letter"] == "B"
    with pytest.raises(records.RecordsError, match="dataset_index=0 has no options and the eval set has no such row"):
        regrade.regrade_records([bare], options={})
    with pytest.raises(UserError, match="unknown grading 'loose'"):
        regrade.regrade_records([wrong], "loose")


def test_the_benchmarks_registry_feeds_eval_synthetic_data_and_analysis():
    assert benchmarks.EVAL_SET_ROWS == 8220
    assert synthetic.EVAL_BENCHMARKS == {
        b.dataset_name: (b.num_options, b.images_per_row, b.rows_per_image) for b in benchmarks.BENCHMARKS}
    assert paper_table.BENCHMARKS is benchmarks.BENCHMARKS and paper_table.COLUMNS[-1] == benchmarks.AVG
    assert published.HALF_WIDTHS == {**{b.label: b.half_width for b in benchmarks.BENCHMARKS},
                                  benchmarks.AVG: benchmarks.AVERAGE_HALF_WIDTH}
    from medvlthinker.inference.workloads import EVAL_SET

    assert [(name, rows) for name, rows, _ in EVAL_SET] == [(b.dataset_name, b.rows) for b in benchmarks.ROW_ORDER]
    # the rows of a benchmark are spelled once in the package (3362: PathVQA's closed questions)
    spelled = [p.relative_to(ROOT).as_posix() for p in (ROOT / "medvlthinker").rglob("*.py")
               if re.search(r"\b3362\b", p.read_text(encoding="utf-8"))]
    assert spelled == ["medvlthinker/benchmarks.py"]


def test_make_plots_prints_one_line_errors(tmp_path):
    for args, message in [
        (["--output_dir", str(tmp_path)], "error: nothing to plot"),
        (["--published_model", "nope", "--output_dir", str(tmp_path)], "error: --published_model 'nope': not a "
                                                                       "published row"),
    ]:
        done = subprocess.run([sys.executable, str(ROOT / "analysis" / "make_plots.py"), *args],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 1 and done.stderr.startswith(message), done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_merge_writes_the_shards_union_and_a_short_run_is_a_user_error(tmp_path):
    run = tmp_path / "run"
    _write(run / records.shard_name(0, 2), [_line(_record(1)), '{"torn'])
    _write(run / records.shard_name(1, 2), [_line(_record(0, "slake_closed"))])
    with pytest.raises(records.RecordsError, match=r"holds 2 of 3 records; fix: rerun the same command"):
        records.merge_results(run, expected_rows=3)
    table = records.merge_results(run, expected_rows=2)
    assert (run / records.RESULTS_FILE).read_text() == _line(_record(0, "slake_closed")) + _line(_record(1))
    assert table["_average"]["accuracy"] == 100.0
    assert json.loads((run / records.ACCURACY_FILE).read_text()) == table
