"""The visual-reliance and think/answer-only tables from eval runs whose args.json name their condition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medvlthinker.analysis import AnalysisError, ablations
from medvlthinker.demo import synthetic
from medvlthinker.inference.records import make_record
from medvlthinker.inference.requests import Completion, record_fields
from medvlthinker.staging import write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def _rows():
    """8 SLAKE-like image rows (yes/no) and 4 text-only rows of one data set."""
    rows = synthetic.make_image_rows(n=8, seed=4, dataset_name="slake_closed")
    for row in rows[:4]:  # 4 text-only rows
        row["images"] = None
    for i, row in enumerate(rows):
        row["dataset_index"] = i
    return rows


def _write_run(path: Path, rows, right, *, tokens=5, **args) -> str:
    """A run directory whose row i is answered right when ``right(i)``; args.json holds ``args``."""
    records = []
    for i, row in enumerate(rows):
        wrong = next(letter for letter in json.loads(row["options"]) if letter != row["answer_label"])
        letter = row["answer_label"] if right(i) else wrong
        records.append(make_record(record_fields(row), "p", 10, 0 if row["images"] is None else 4,
                                   [Completion(f"<think>x</think><answer> {letter} </answer>", tokens, "stop")]))
    path.mkdir(parents=True)
    write_jsonl(path / "eval_results.jsonl", records)
    (path / "args.json").write_text(json.dumps({"args": args}))
    return str(path)


@pytest.fixture()
def runs(tmp_path):
    rows = _rows()
    return {
        "as_is": _write_run(tmp_path / "as_is", rows, lambda i: True),
        "blank": _write_run(tmp_path / "blank", rows, lambda i: i < 4 or i in (4, 5), image_mode="blank"),
        "shuffled": _write_run(tmp_path / "shuffled", rows, lambda i: i < 4 or i == 7, image_mode="shuffled"),
        "answer_only": _write_run(tmp_path / "answer_only", rows, lambda i: i % 2 == 0, tokens=2,
                                  instruction_prompt="answer_only"),
    }


def test_visual_reliance_table(runs, tmp_path):
    specs = [f"sft={path}" for path in runs.values()]
    written = ablations.write_ablation_tables(specs, tmp_path / "tables", n_resamples=200)
    table = json.loads((tmp_path / "tables" / "visual_reliance.json").read_text())["models"]["sft"]
    slake, text = table["SLAKE"], table[ablations.TEXT_ONLY]
    assert slake["rows"] == 4 and slake["as_is"] == 100.0
    assert slake["modes"]["blank"]["accuracy"] == 50.0 and slake["modes"]["blank"]["diff"] == -50.0
    assert slake["modes"]["shuffled"]["accuracy"] == 25.0
    assert slake["modes"]["shuffled"]["mcnemar_b01"] == 3 and slake["modes"]["shuffled"]["mcnemar_p_value"] == 0.25
    assert slake["modes"]["shuffled"]["high"] <= 0.0
    assert slake["vrs"] == pytest.approx(0.75) and slake["blank_retained"] == pytest.approx(0.5)
    # the rows without images are their own line, and unchanged here
    assert text["rows"] == 4 and text["modes"]["blank"]["diff"] == 0.0 and "vrs" not in text
    assert "| sft | SLAKE | 4 | 100.0 | 50.0 (-50.0 [" in written["visual_reliance"]
    # the answer-only run is not taken for a repeat of as_is
    assert json.loads((tmp_path / "tables" / "think_answer_only.json").read_text())


def test_think_answer_only_table(runs, tmp_path):
    specs = [f"m={runs['as_is']}", f"m={runs['answer_only']}"]
    written = ablations.write_ablation_tables(specs, tmp_path / "t", n_resamples=200)
    assert set(written) == {"think_answer_only"}
    line = json.loads((tmp_path / "t" / "think_answer_only.json").read_text())["models"]["m"]["SLAKE"]
    assert line["think_tokens"] == 5.0 and line["answer_only_tokens"] == 2.0
    assert line["comparison"]["accuracy"] == 50.0 and line["comparison"]["reference_accuracy"] == 100.0
    assert "| m | SLAKE | 100.0 | 5.0 | 50.0 (-50.0" in written["think_answer_only"]


def test_a_model_without_its_reference_run_is_one_line(runs, tmp_path):
    with pytest.raises(AnalysisError, match=r"model 'm': no run with --image_mode as_is.*fix: add --run m=DIR"):
        ablations.write_ablation_tables([f"m={runs['blank']}"], tmp_path / "t")
    proc = subprocess.run([sys.executable, "analysis/make_ablation_tables.py", "--run", f"m={runs['as_is']}",
                           "--output_dir", str(tmp_path / "t")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "neither another --image_mode nor an answer-only run" in proc.stderr


def test_the_paper_table_does_not_average_two_conditions_as_repeats(runs):
    from medvlthinker.analysis import tables

    with pytest.raises(AnalysisError, match=r"model 'm': .*blank is a run with \{'image_mode': 'blank'.*fix: give "
                                            r"them different names"):
        tables.make_tables(tables.TableSettings([f"m={runs['as_is']}", f"m={runs['blank']}"], n_resamples=10))
    assert tables.make_tables(tables.TableSettings([f"m={runs['as_is']}", f"b={runs['blank']}"], n_resamples=10)).table.rows
