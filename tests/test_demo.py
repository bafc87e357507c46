"""A reduced `make demo`: the same script, every stage, fewer rows and steps; the paper's effects in miniature.

The assertions (docs/demo.md, "The reduced run in the tests"): every stage runs, the pass counts have a middle band,
SFT raises the format rate and the accuracy above the warm-started base, and the RL row and reward curve are there.
``DEMO_TEST_SEED`` picks the seed. The task and the summary numbers are checked on their own, without training, first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medvlthinker import grading, prompts
from medvlthinker.analysis import demo_summary
from medvlthinker.demo import demo_task

ROOT = Path(__file__).resolve().parent.parent
DEMO_SEED = int(os.environ.get("DEMO_TEST_SEED", "0"))


def run_in_own_session(args: list[str], timeout: float, **kwargs) -> tuple[int, str, str]:
    """Run ``args`` in a session of its own and return (exit code, stdout, stderr); past ``timeout`` seconds the
    whole process group is killed (Ray's and vLLM's processes too, not only the script) and the timeout raised."""
    proc = subprocess.Popen(args, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            **kwargs)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, stdout, stderr


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(60)  # a child left alive keeps the pipes open: the run would hang until the sleep ends
def test_a_timed_out_run_takes_its_children_down(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = f"sleep 900 & echo $! > {pid_file}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_in_own_session(["bash", "-c", script], timeout=2)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), f"the script's child {child} outlived the timeout"
    assert run_in_own_session(["bash", "-c", "echo out; echo err >&2; exit 3"], timeout=30) == (3, "out\n", "err\n")


def test_task_answers_are_visible_and_eval_is_held_out(tmp_path):
    paths = demo_task.write_task_data(tmp_path, rows_per_benchmark=6, train_rows=30, warmup_rows=64, seed=3)
    import datasets

    sets = {name: datasets.load_from_disk(path) for name, path in paths.items()}
    assert set(sets["eval"]["dataset_name"]) == set(demo_task.EVAL_BENCHMARKS)
    assert all(r["images"] is None for r in sets["train_m23k"])

    def hashes(ds):
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
        return {hashlib.sha256(i["bytes"]).hexdigest() for r in ds for i in (r["images"] or [])}

    assert hashes(sets["eval"]) and not hashes(sets["eval"]) & hashes(sets["train_pmc_vqa"])
    assert not hashes(sets["eval"]) & hashes(sets["warmup"])
    for row in list(sets["eval"]) + list(sets["train_pmc_vqa"]):
        kind = json.loads(row["misc"])["kind"]
        image = row["images"][0].convert("RGB")
        pixels = [image.getpixel((x, y)) for x in range(56) for y in range(56)]
        colours = {name for name, rgb in demo_task.COLOURS.items() if rgb in pixels}
        assert len(colours) == 1, row["question"]
        seen = colours.pop()
        filled = sum(any(image.getpixel((cx + dx, cy + dy)) == demo_task.COLOURS[seen]
                         for dx in range(-3, 4) for dy in range(-3, 4)) for cx, cy in ((14, 14), (42, 14), (14, 42),
                                                                                       (42, 42)))
        answer, options = row["answer"], json.loads(row["options"])
        if kind == "colour":
            assert answer == seen.capitalize()
            assert list(options.values()) == [c.capitalize() for c in demo_task.COLOURS][:len(options)]
        elif kind == "count":
            assert answer == str(filled)
            assert list(options.values()) == [str(k) for k in range(1, len(options) + 1)]
        else:
            assert kind == "yes_no" and options == {"A": "Yes", "B": "No"}
            assert (answer == "Yes") == (f" {seen}?" in row["question"])
        # the prompt and the grader are the paper's
        assert prompts.build_user_text(row["question"], row["options"]).startswith(prompts.INSTRUCTION_PROMPT)
        assert grading.grade_answer(row["answer_label"], row["answer"], row["answer_label"])
    # the answer letter alone says nothing: every letter of a 4-option colour or count question is an answer
    four = [r for r in sets["train_pmc_vqa"] if len(json.loads(r["options"])) == 4]
    assert len({r["answer_label"] for r in four}) >= 3
    for row in sets["train_m23k"]:
        kind, question = json.loads(row["misc"])["kind"], row["question"]
        if kind == "text_yes_no":
            stated = question.split(" ")[5]
            assert (row["answer"] == "Yes") == question.endswith(f" {stated}?")
        else:
            assert f" {row['answer'].lower()} " in question.lower()
    # the warm-start corpus: SFT conversations, half captions of pictures, half text-only questions in the paper's
    # format, in one-kind blocks of 16
    warmup = sets["warmup"]
    assert set(warmup.column_names) >= {"prompt", "completion", "images"}
    is_caption = [r["dataset_name"] == "warmup_caption" for r in warmup]
    assert sum(is_caption) == 32
    assert all(len(set(is_caption[i:i + 16])) == 1 for i in range(0, 64, 16))
    for row, caption in zip(warmup, is_caption):
        text = row["prompt"][0]["content"][-1]["text"]
        target = row["completion"][0]["content"][0]["text"]
        if caption:
            assert text == demo_task.CAPTION_REQUEST and len(row["images"]) == 1 and target.startswith("There ")
        else:
            assert text.startswith(prompts.INSTRUCTION_PROMPT) and not row["images"] and "<answer>" in target


def test_eval_answers_are_balanced_so_a_constant_letter_scores_chance():
    # 16 rows a benchmark: the colour and count questions of an option benchmark (8 each) take every colour and
    # every number twice, and every yes/no picture has one Yes and one No question
    rows = demo_task.make_eval_rows(rows_per_benchmark=16, seed=11)
    by_benchmark: dict[str, list[dict]] = {}
    for row in rows:
        by_benchmark.setdefault(row["dataset_name"], []).append(row)
    assert set(by_benchmark) == set(demo_task.EVAL_BENCHMARKS)
    for name, group in by_benchmark.items():
        n_options = demo_task.EVAL_BENCHMARKS[name][0]
        if n_options == 2:
            per_picture: dict[str, list[str]] = {}
            for row in group:
                per_picture.setdefault(json.loads(row["misc"])["image_id"], []).append(row["answer"])
            assert len(per_picture) == 8 and all(sorted(a) == ["No", "Yes"] for a in per_picture.values()), name
        else:
            kinds = [json.loads(r["misc"])["kind"] for r in group]
            colours = sorted(r["answer"] for r, k in zip(group, kinds) if k == "colour")
            counts = sorted(r["answer"] for r, k in zip(group, kinds) if k == "count")
            assert colours == sorted(2 * [c.capitalize() for c in demo_task.PICTURE_COLOURS]), name
            assert counts == sorted(2 * [str(k) for k in range(1, demo_task.MAX_FIGURES + 1)]), name
        # so a model that gives one letter whatever it sees scores the chance rate of a full round
        for letter in "AB":
            hits = sum(grading.grade_answer(letter, r["answer"], r["answer_label"]) for r in group)
            assert hits == len(group) // (2 if n_options == 2 else 4), (name, letter)
    # the training rows stay independent draws (their answers are what the pass rates measure)
    train = demo_task.make_train_rows(96, seed=11)
    yes_no = [r["answer"] for r in train if json.loads(r["misc"])["kind"] == "yes_no"]
    assert 0 < yes_no.count("Yes") < len(yes_no)


def test_summary_numbers_from_records_and_log():
    records = [
        {"dataset_name": "pmc_vqa", "rollouts": [{"output_text": "<think> x </think>\n<answer> A </answer>",
                                                  "is_correct": True}]},
        {"dataset_name": "pmc_vqa", "rollouts": [{"output_text": "<answer> B </answer>", "is_correct": False}]},
    ]
    scores = demo_summary.model_scores(records)
    assert scores["format_rate"] == 0.5 and scores["accuracy"] == 0.5 and scores["rows"] == 2
    labels = [{"answer_label": x} for x in "ABAC"]
    assert demo_summary.constant_letter_accuracy(labels) == 0.5
    chance = demo_summary.describe({"models": {"base": scores}, "pass_count_histogram": [1, 1], "pass_rollouts": 1,
                                    "constant_letter_accuracy": 0.375})
    assert "one letter for every question (chance) 37.5%" in chance
    log = ("(TaskRunner pid=7) step:1 - actor/lr:0.0005 - critic/score/mean:np.float64(0.125) - x:y\n"
           "noise\n(TaskRunner pid=7) step:2 - critic/score/mean:0.5\n")
    assert demo_summary.reward_curve(log) == [(1, 0.125), (2, 0.5)]
    summary = {"models": {"base": scores}, "pass_count_histogram": [1, 1], "pass_rollouts": 1}
    words = {curve: demo_summary.describe({**summary, "reward_curve": list(curve)}).splitlines()[-1]
             for curve in (((1, 0.625), (4, 0.625)), ((1, 0.25), (2, 0.5)), ((1, 0.5), (2, 0.25)))}
    assert "stayed at 0.62 over 2 steps" in words[((1, 0.625), (4, 0.625))]
    assert "rose from 0.25 to 0.50" in words[((1, 0.25), (2, 0.5))]
    assert "fell from 0.50 to 0.25" in words[((1, 0.5), (2, 0.25))]
    # the RL row against SFT's, and against chance, on the held-out rows
    rows = {"format_rate": 1.0, "rows": 48}
    two = {**summary, "reward_curve": [(1, 0.25), (2, 0.5)], "constant_letter_accuracy": 0.375}
    below = demo_summary.describe({**two, "models": {"sft": {**rows, "accuracy": 0.6}, "rl": {**rows, "accuracy": 0.2}}})
    assert "RL scores 20.0% (below chance) against SFT's 60.0%: epochs over a few questions fit" in below
    lower = demo_summary.describe({**two, "models": {"sft": {**rows, "accuracy": 0.6}, "rl": {**rows, "accuracy": 0.5}}})
    assert "RL scores 50.0% against SFT's 60.0%: epochs" in lower
    above = demo_summary.describe({**two, "models": {"sft": {**rows, "accuracy": 0.5}, "rl": {**rows, "accuracy": 0.6}}})
    assert above.endswith("On the held-out evaluation rows RL scores 60.0% against SFT's 50.0%.")


@pytest.mark.slow
@pytest.mark.vllm
# every stage of the pipeline, verl's start-up and six GRPO steps included: about 11 minutes on 2 cores, about
# twice that when the machine is slow (GRPO steps take 24-47 s with the response_logits overlay; one once took 330 s
# before it)
@pytest.mark.timeout(3700)
def test_reduced_demo_shows_the_effects(tmp_path):
    out = tmp_path / "demo"
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        DEMO_OUT=str(out),
        DEMO_SEED=str(DEMO_SEED),
        DEMO_ROWS_PER_BENCHMARK="8",
        DEMO_TRAIN_ROWS="64",
        DEMO_PASS_N="4",
        DEMO_RL_STEPS="6",
        # pass rates and evals on the transformers backend: four vLLM engine starts fewer (vLLM's own path is tested
        # in test_inference; the RL stage still samples with vLLM)
        DEMO_BACKEND="hf",
        # the visual-reliance runs of SFT only: three evals, not nine (make demo runs them for base, SFT and RL)
        DEMO_RELIANCE_MODELS="sft",
    )
    returncode, stdout, stderr = run_in_own_session(["bash", str(ROOT / "scripts" / "demo.sh")], timeout=3600,
                                                    cwd=ROOT, env=env)
    assert returncode == 0, stdout[-4000:] + stderr[-4000:]
    assert stdout.count("=== [") == 12  # eleven stages and "done"

    pass_records = [json.loads(x) for x in (out / "pass_rate/pmc_vqa/eval_results.jsonl").read_text().splitlines()]
    assert len(pass_records) == 64 and {r["num_rollouts"] for r in pass_records} == {4}

    import datasets

    curated = datasets.load_from_disk(str(out / "data/curated_pmc_vqa"))
    assert set(curated["pass_count"]) <= {1, 2, 3}  # the band: neither always wrong nor always right

    summary = json.loads((out / "summary.json").read_text())
    base, sft, rl = (summary["models"][m] for m in ("base", "sft", "rl"))
    assert base["rows"] == sft["rows"] == rl["rows"] == 48
    # a real spread of pass counts: the middle band holds at least a quarter of the training questions
    hist = summary["pass_count_histogram"]
    assert sum(hist[1:4]) >= 16, hist
    # SFT teaches the format and the link from the picture to the option letter (docs/demo.md has the margins)
    assert sft["format_rate"] >= 0.9 and sft["format_rate"] > base["format_rate"], (base, sft)
    assert sft["accuracy"] >= base["accuracy"] + 0.1, (base, sft)
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in (base, sft, rl))
    # GRPO learns: the demo's RL stage as it is (six epochs over the same 8 questions, 64 answers a step) raises the
    # mean reward of the last two steps above that of the first two (a step's mean alone moves by about 0.1 between
    # runs of the same model; docs/demo.md has the margins)
    curve = summary["reward_curve"]
    assert [s for s, _ in curve] == [1, 2, 3, 4, 5, 6]
    assert all(0.0 <= r <= 1.0 for _, r in curve), curve
    rewards = [r for _, r in curve]
    assert sum(rewards[-2:]) > sum(rewards[:2]), curve
    # the actor's log-probabilities at the response tokens (computed there only: the response_logits overlay) are
    # those of the vLLM engine that sampled them, at every step (a wrong position would be off by nats)
    log = (out / "rl/train.log").read_text()
    said = re.findall(r"verl_response_logits: log-probabilities at (\d+) of (\d+) packed positions", log)
    assert said and all(0 < int(k) < int(n) / 2 for k, n in said), said  # the answers are short, the prompt is not
    for step, metrics in demo_summary.step_metrics(log).items():
        assert metrics["training/rollout_probs_diff_max"] < 2e-3, (step, metrics["training/rollout_probs_diff_max"])
        assert metrics["training/rollout_actor_probs_pearson_corr"] > 0.999, step

    # visual reliance (docs/experiments.md): SFT answers the option questions from the picture, so with a blank or
    # another question's picture it falls to the chance rate of the balanced answers (1/4), while the text-only
    # questions, the same prompt in every mode, are answered exactly as before
    by_mode = {mode: regraded(out / "eval_reliance/sft" / mode) for mode in ("as_is", "blank", "shuffled")}
    option = {mode: [r for r in records if r["dataset_name"] != "text_only"] for mode, records in by_mode.items()}
    accuracy = {mode: sum(grading.row_accuracy(r) for r in rows) / len(rows) for mode, rows in option.items()}
    assert len(option["as_is"]) == 24 and accuracy["blank"] <= 0.25 + 0.1 and accuracy["shuffled"] <= 0.25 + 0.2, accuracy
    assert accuracy["as_is"] > max(accuracy["blank"], accuracy["shuffled"]), accuracy
    text = {mode: {r["dataset_index"]: r["rollouts"][0]["is_correct"] for r in records
                   if r["dataset_name"] == "text_only"} for mode, records in by_mode.items()}
    assert len(text["as_is"]) == 8 and text["blank"] == text["shuffled"] == text["as_is"], text
    reliance = json.loads((out / "report/tables/visual_reliance.json").read_text())["models"]["sft"]
    assert reliance["text-only"]["modes"]["blank"]["diff"] == 0.0 and reliance["PMC"]["vrs"] is not None
    assert "Visual reliance" in (out / "report/report.html").read_text()

    table = (out / "report/tables/table.md").read_text()
    assert "| base |" in table and "| sft |" in table and "| rl |" in table
    html = (out / "report/report.html").read_text()
    assert "RL (GRPO): mean reward per training step" in html and "data:image/png;base64," in html
    assert "open " + str(out / "report/report.html") in stdout
    assert "What this shows: a synthetic task" in stdout


def regraded(run_dir: Path) -> list[dict]:
    from medvlthinker.inference.records import read_run
    from medvlthinker.inference.regrade import regrade_records

    return regrade_records(read_run(run_dir))


def test_reliance_set_holds_the_option_questions_and_text_controls():
    eval_rows = demo_task.make_eval_rows(4, seed=0)
    rows = demo_task.reliance_rows(eval_rows, 5, seed=7)
    options = [r for r in rows if r["images"]]
    assert {r["dataset_name"] for r in options} == {"pmc_vqa", "MMMU-medical", "MedXpertQA-MM"}
    assert options == [r for r in eval_rows if len(json.loads(r["options"])) > 2]  # the same rows and indices
    texts = [r for r in rows if not r["images"]]
    assert len(texts) == 5 and {r["dataset_name"] for r in texts} == {"text_only"}
    assert min(r["dataset_index"] for r in texts) > max(r["dataset_index"] for r in eval_rows)


def test_warm_start_blocks_match_the_warm_start_batch_and_skip_eval_pictures():
    import inspect

    import yaml

    config = yaml.safe_load((ROOT / "configs/sft/demo_warmup.yaml").read_text())
    block = inspect.signature(demo_task.warmup_examples).parameters["batch_size"].default
    assert config["train_sampling_strategy"] == "sequential" and config["global_batch_size"] == block
    first = demo_task.caption_examples(3, seed=5)
    seen = {hashlib.sha256(first[0]["images"][0]["bytes"]).hexdigest()}
    again = demo_task.caption_examples(3, seed=5, exclude=frozenset(seen))
    assert len(again) == 3 and again[0]["images"] == first[1]["images"]
