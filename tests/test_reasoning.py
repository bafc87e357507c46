"""The SFT(PMC) merge: first strict-correct of three, the <think> body, drops reported, join on dataset_index, the
seed-42 order; and the teacher run end to end through the runner with the tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from medvlthinker.cli import UserError
from medvlthinker.data import load_unified, to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.inference.records import read_records
from medvlthinker.prepare import reasoning
from medvlthinker.staging import write_jsonl

ROOT = Path(__file__).resolve().parents[1]

# 12 PMC-shaped rows whose dataset_index starts at 100, so a join by position would pick the wrong records
ROWS = synthetic.make_image_rows(n=12, seed=7, start_index=100, image_size=(32, 32))
BY_INDEX = {row["dataset_index"]: row for row in ROWS}


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_process" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wrong(row):
    return next(letter for letter in json.loads(row["options"]) if letter != row["answer_label"])


def _record(index, texts):
    row = BY_INDEX[index]
    return {"dataset_name": row["dataset_name"], "dataset_index": index, "answer_label": row["answer_label"],
            "answer": row["answer"], "options": row["options"], "question": row["question"], "prompt": "",
            "prompt_tokens": 0, "image_tokens": 0, "num_rollouts": len(texts), "num_correct": 0, "misc": None,
            # is_correct is recorded wrong on purpose: the merge grades the text again, strict
            "rollouts": [{"output_text": t, "pred_letter": None, "is_correct": False} for t in texts]}


def _texts(index, kind):
    row = BY_INDEX[index]
    right, wrong = row["answer_label"], _wrong(row)
    return {
        # the first rollout is wrong, the second and third are right: the second's body, stripped, across lines
        "second": [f"<think>no</think><answer>{wrong}</answer>",
                   f"<think>\n  step one\nstep two  \n</think>\n<answer> {right} </answer>",
                   f"<think>third</think><answer>{right}</answer>"],
        # the strict grader also takes "X. text" and the option text itself
        "first": [f"<think>a</think><answer>{right}. {row['answer']}</answer>",
                  f"<think>b</think><answer>{right}</answer>", "x"],
        "text": ["x", f"<think>by text</think><answer>{row['answer'].lower()}</answer>", "y"],
        "none": [f"<answer>{wrong}</answer>", "no tags", f"<think>{right}</think><answer>{wrong}</answer>"],
        # correct answers with no <think> body (none, and an empty one): the row is dropped as no_think
        "no_think": [f"<answer>{right}</answer>", f"<think>  </think><answer>{right}</answer>", "z"],
        # the first correct answer lacks a body, the next correct one has it
        "later_think": [f"<answer>{right}</answer>", "z", f"<think>later</think><answer>{right}</answer>"],
        # strict takes the FIRST answer tag: a right second tag does not count
        "first_tag": [f"<think>t</think><answer>{wrong}</answer><answer>{right}</answer>", "p", "q"],
    }[kind]


KINDS = {100: "second", 101: "first", 102: "none", 103: "text", 104: "no_think", 105: "later_think",
         106: "first_tag", 107: "second", 108: "first"}  # 109..111: no record
EXPECTED = {100: "step one\nstep two", 101: "a", 103: "by text", 105: "later", 107: "step one\nstep two", 108: "a"}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pmc") / "train"
    to_dataset(ROWS).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "eval_results.jsonl"
    write_jsonl(path, [_record(i, _texts(i, kind)) for i, kind in reversed(KINDS.items())])
    return path


def test_think_body_is_first_dotall_match_stripped():
    assert reasoning.think_body("<think> a\n\nb </think> x <think>c</think>") == "a\n\nb"
    assert reasoning.think_body("<think>unclosed") is None
    assert reasoning.think_body("<think>\n \n</think>") is None
    assert reasoning.think_body(None) is None


def test_merge_rules_on_hand_written_records(train_dir, records_file):
    ds = load_unified(str(train_dir))
    merged, report = reasoning.merge_reasoning(ds, read_records(records_file))
    got = dict(zip(merged["dataset_index"], merged["reasoning"]))
    assert got == EXPECTED
    assert report.dropped == {"no_record": [i for i in ds.shuffle(seed=42)["dataset_index"] if i >= 109],
                              "no_correct": [i for i in ds.shuffle(seed=42)["dataset_index"] if i in (102, 106)],
                              "no_think": [104]}
    assert report.rows_in == 12 and report.records == 9 and report.rows_out == 6
    assert report.kept_from_rollout == {0: 2, 1: 3, 2: 1}
    # the output order is datasets' shuffle(seed=42) of the training set, filtered
    assert merged["dataset_index"] == [i for i in ds.shuffle(seed=42)["dataset_index"] if i in EXPECTED]
    assert merged["dataset_index"] != sorted(merged["dataset_index"])
    # every other column is the training row's, joined on dataset_index
    for row in merged.select_columns(["dataset_index", "question", "options", "answer_label"]):
        source = BY_INDEX[row["dataset_index"]]
        assert (row["question"], row["options"], row["answer_label"]) == (
            source["question"], source["options"], source["answer_label"])
    assert merged.features["images"] == ds.features["images"] and len(merged[0]["images"]) == 1


def test_another_seed_gives_another_order(train_dir, records_file):
    ds = load_unified(str(train_dir))
    merged, _ = reasoning.merge_reasoning(ds, read_records(records_file), seed=0)
    assert merged["dataset_index"] == [i for i in ds.shuffle(seed=0)["dataset_index"] if i in EXPECTED]


def test_records_that_do_not_fit_stop_the_merge(train_dir):
    ds = load_unified(str(train_dir))
    with pytest.raises(UserError, match=r"dataset_index 999.*has no row in the training set"):
        reasoning.merge_reasoning(ds, [{**_record(100, ["a"] * 3), "dataset_index": 999}])
    with pytest.raises(UserError, match=r"dataset_index=100.*has 1 rollouts, expected 3; fix: generate with --n 3"):
        reasoning.merge_reasoning(ds, [_record(100, ["a"])])
    with pytest.raises(UserError, match=r"dataset_index 100 has two records"):
        reasoning.merge_reasoning(ds, [_record(100, ["a"] * 3), _record(100, ["b"] * 3)])
    with pytest.raises(UserError, match=r"is dataset_name 'm23k', the row is 'pmc_vqa'"):
        reasoning.merge_reasoning(ds, [{**_record(100, ["a"] * 3), "dataset_name": "m23k"}])


def test_merge_script_writes_valid_rows_and_the_report(tmp_path, train_dir, records_file):
    out = tmp_path / "sft_pmc"
    result = CliRunner().invoke(_script("merge_reasoning").main, [
        "--dataset_name", str(train_dir), "--records", str(records_file.parent), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 of 12 rows kept" in result.output
    saved = load_unified(str(out))  # validates the unified schema
    assert dict(zip(saved["dataset_index"], saved["reasoning"])) == EXPECTED
    report = json.loads((tmp_path / "sft_pmc.report.json").read_text())
    assert report["dropped_counts"] == {"no_record": 3, "no_correct": 2, "no_think": 1}
    again = CliRunner().invoke(_script("merge_reasoning").main, [
        "--dataset_name", str(train_dir), "--records", str(records_file), "--output", str(out)])
    assert again.exit_code == 1 and "already exists; fix: choose another output path or pass --overwrite" in again.output


def test_teacher_run_through_the_runner_then_merge(tmp_path, tiny_model_dir, train_dir):
    """The tiny random model as the teacher (hf backend): the runner records three rollouts per row with the
    teacher's sampling; it never answers right, so every row is reported, then one record gets a right answer."""
    rows = tmp_path / "train4"
    load_unified(str(train_dir)).select(range(4)).save_to_disk(str(rows))
    out = tmp_path / "teacher"
    try:  # the runner's one-line-error command returns; a plain click command exits
        _script("generate_reasoning").main([
            "--model", str(tiny_model_dir), "--backend", "hf", "--dataset_name", str(rows), "--output_dir", str(out),
            "--max_tokens", "4", "--max_pixels", str(16 * 28 * 28)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    args = json.loads((out / "args.json").read_text())
    assert args["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 4, "n": 3, "seed": 42,
                                "ignore_eos": False, "engine_seed_only": False}
    assert args["args"]["split"] == "train"
    records = read_records(out / "eval_results.jsonl")
    assert [r["dataset_index"] for r in records] == [100, 101, 102, 103]
    assert {r["num_rollouts"] for r in records} == {3}

    with pytest.raises(UserError, match="no row has a strict-correct rollout with a <think> body"):
        reasoning.build_reasoning_set(str(rows), out, tmp_path / "none")
    report = json.loads((tmp_path / "none.report.json").read_text())
    assert sorted(report["dropped"]["no_correct"]) == [100, 101, 102, 103] and not (tmp_path / "none").exists()

    right = BY_INDEX[102]["answer_label"]
    records[2]["rollouts"][1]["output_text"] = f"<think> from the teacher </think><answer>{right}</answer>"
    write_jsonl(out / "eval_results.jsonl", records)
    report = reasoning.build_reasoning_set(str(rows), out, tmp_path / "sft.parquet")
    saved = datasets.Dataset.from_parquet(str(tmp_path / "sft.parquet"))
    assert saved["dataset_index"] == [102] and saved["reasoning"] == ["from the teacher"]
    assert report.kept_from_rollout == {1: 1} and sorted(report.dropped["no_correct"]) == [100, 101, 103]


def test_a_preset_given_to_the_teacher_takes_effect():
    # the teacher's sampling flags, given explicitly, would outrank every value of a preset
    import importlib.util

    from medvlthinker.inference.settings import METRICS_AT_N

    spec = importlib.util.spec_from_file_location("run_offline_inference", ROOT / "eval" / "run_offline_inference.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)

    def resolved(*user):
        args = reasoning.teacher_runner_args(["--model", "M", "--dataset_name", "D", "--output_dir", "O", *user])
        params = runner.main.make_context("generate_reasoning.py", args).params
        return params["split"], params["n"], params["temperature"], params["max_tokens"]

    assert resolved() == ("train", 3, 1.0, 4096)
    assert resolved("--preset", "metrics_at_n") == ("train", METRICS_AT_N.n, METRICS_AT_N.temperature,
                                                    METRICS_AT_N.max_tokens)
    assert resolved("--preset=metrics_at_n", "--n", "7")[1] == 7  # a flag the user types still wins
