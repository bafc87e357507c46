"""Inference pieces without a vLLM engine: settings, request builder, records/accuracy, regrade, the runner on the
transformers backend (validation before generation, the window bound, interleaved data parallel, resume with
another dp_size, kill-and-resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.grading import grade_rollout
from medvlthinker.inference import (
    RequestBuilder,
    RunConfig,
    SamplingSettings,
    accuracy_table,
    run,
    run_rank,
    shard_bounds,
)
from medvlthinker.inference.assign import slowest_share
from medvlthinker.inference.records import make_record, read_records
from medvlthinker.inference.regrade import regrade
from medvlthinker.inference.workloads import eval_set_lengths
from medvlthinker.schema import SchemaError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "eval" / "run_offline_inference.py"


def test_sampling_settings_convert_to_both_backends():
    s = SamplingSettings(temperature=1.0, top_p=0.9, max_tokens=12, n=4, seed=7)
    params = s.to_vllm()
    assert (params.n, params.temperature, params.top_p, params.max_tokens) == (4, 1.0, 0.9, 12)
    hf = s.to_hf_generate_kwargs(eos_token_id=[1, 2])
    assert hf["do_sample"] and hf["num_return_sequences"] == 4 and hf["top_k"] == 0 and hf["max_new_tokens"] == 12
    greedy = SamplingSettings(n=3).to_hf_generate_kwargs()
    assert greedy["do_sample"] is False and greedy["num_return_sequences"] == 1
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0.0)


def test_request_builder_matches_processor(tiny_processor, eval_rows):
    builder = RequestBuilder(tiny_processor, max_pixels=64 * 28 * 28)
    row = next(r for r in eval_rows if r["dataset_name"] == "MMMU-medical")  # two images
    req = builder.build(row)
    assert req.prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                 "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|>")
    assert req.prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert all(w % 28 == 0 and h % 28 == 0 for w, h in (img.size for img in req.images))
    ids = tiny_processor(text=[req.prompt], images=req.images, return_tensors="pt")["input_ids"]
    assert req.prompt_tokens == ids.shape[1]
    assert req.image_tokens == int((ids == 151655).sum())
    text_only = RequestBuilder(tiny_processor, ignore_image=True).build(row)
    assert "<|image_pad|>" not in text_only.prompt and text_only.images == [] and text_only.image_tokens == 0


def test_an_rgba_image_reaches_the_model_pasted_on_white_as_in_the_original(tiny_processor, eval_rows):
    # The original hands the stored image to qwen-vl-utils, whose to_rgb pastes RGBA on white; a plain RGB
    # conversion would show the colours hidden under the transparent pixels.
    import io

    from PIL import Image
    from qwen_vl_utils import fetch_image

    rgba = Image.new("RGBA", (56, 56), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 28, 28))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    row = dict(next(r for r in eval_rows if r["dataset_name"] == "pmc_vqa"), images=[{"bytes": buf.getvalue()}])
    image = RequestBuilder(tiny_processor).build(row).images[0]
    assert image.tobytes() == fetch_image({"image": Image.open(io.BytesIO(buf.getvalue()))}).tobytes()
    assert image.getpixel((50, 50)) == (255, 255, 255) and image.getpixel((5, 5)) == (0, 0, 255)


def test_shards_and_accuracy_table():
    bounds = [shard_bounds(7, r, 3) for r in range(3)]
    assert bounds == [(0, 3), (3, 5), (5, 7)]
    row = {"dataset_name": "slake_closed", "dataset_index": 0, "answer_label": "B", "answer": "No",
           "options": '{"A": "Yes", "B": "No"}', "question": "q", "misc": None}
    good = make_record(row, "p", 10, 4, ["<answer>B</answer>", "<answer>A</answer>"])
    bad = make_record({**row, "dataset_index": 1}, "p", 10, 4, ["<answer>no idea</answer>", "<answer>no</answer>"])
    other = make_record({**row, "dataset_index": 2, "dataset_name": "pmc_vqa"}, "p", 10, 4, ["<answer>B</answer>"] * 2)
    assert good["num_correct"] == 1 and bad["num_correct"] == 1 and bad["rollouts"][0]["pred_letter"] == "no idea"
    table = accuracy_table([good, bad, other])
    assert table["slake_closed"] == {"accuracy": 50.0, "rows": 2, "num_rollouts": 2, "conversion_failure_rate": 0.25}
    assert table["pmc_vqa"]["accuracy"] == 100.0
    assert table["_average"]["accuracy"] == 75.0


def test_regrade_reproduces_grading_rules(tmp_path):
    row = {"dataset_name": "pmc_vqa", "dataset_index": 3, "answer_label": "C", "answer": "Lung",
           "options": '{"A": "Heart", "B": "Liver", "C": "Lung", "D": "Brain"}', "question": "q", "misc": None}
    texts = ["<answer>A</answer> wait <answer>C. Lung\nbecause</answer>",  # strict: A; regrade: last tag, 1st line
             "So the answer is: C",                                            # strict: whole text; regrade: C
             "<think>x</think><answer>lung tissue</answer>"]                   # only the llava rule accepts it
    record = make_record(row, "p", 1, 0, texts)
    assert [r["is_correct"] for r in record["rollouts"]] == [False, False, False]
    (tmp_path / "eval_results.jsonl").write_text(json.dumps(record) + "\n")
    table = regrade(tmp_path)
    regraded = read_records(tmp_path / "eval_results.regrade.jsonl")[0]
    for rollout, text in zip(regraded["rollouts"], texts):
        assert rollout == grade_rollout(text, row, mode="regrade")
    assert regraded["num_correct"] == 2 and table["pmc_vqa"]["accuracy"] == pytest.approx(200 / 3)
    llava = regrade(tmp_path, llava_med_rule=True)
    assert llava["pmc_vqa"]["accuracy"] == 100.0
    assert (tmp_path / "accuracy.regrade-llava.json").exists()


def test_bad_image_stops_before_generation(tmp_path, tiny_model_dir):
    rows = synthetic.make_eval_rows(rows_per_benchmark=1, seed=3)
    rows[4]["images"] = [{"bytes": b"\x89PNG broken", "path": None}]
    to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(tmp_path / "data"),
                       output_dir=str(tmp_path / "out"), max_tokens=2, progress=False)
    with pytest.raises(SchemaError, match=r"dataset_name='slake_closed', dataset_index=4.*cannot be decoded"):
        run(config)
    assert not list((tmp_path / "out").glob("shard-*"))  # nothing was generated


def test_hf_backend_run_writes_contract_files(tmp_path, tiny_model_dir, eval_dataset_dir):
    config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(eval_dataset_dir),
                       subset=["pmc_vqa", "slake_closed"], output_dir=str(tmp_path), max_tokens=3, n=2,
                       temperature=1.0, max_pixels=64 * 28 * 28, progress=False)
    table = run(config)
    records = read_records(tmp_path / "eval_results.jsonl")
    assert [r["dataset_index"] for r in records] == sorted(r["dataset_index"] for r in records)
    assert len(records) == 8 and {r["num_rollouts"] for r in records} == {2}
    assert set(records[0]) == {"dataset_name", "dataset_index", "answer_label", "answer", "options", "question",
                               "prompt", "prompt_tokens", "image_tokens", "rollouts", "num_rollouts", "num_correct",
                               "misc"}
    assert set(table) == {"pmc_vqa", "slake_closed", "_average"}
    assert json.loads((tmp_path / "accuracy.json").read_text()) == table
    args = json.loads((tmp_path / "args.json").read_text())
    assert args["sampling"]["n"] == 2 and len(args["model_config_sha256"]) == 64
    assert args["versions"]["transformers"]
    # a rerun finds everything done and generates nothing new
    before = (tmp_path / "shard-000-of-001.jsonl").read_text()
    run(config)
    assert (tmp_path / "shard-000-of-001.jsonl").read_text() == before
    # the run's cost: each invocation's wall seconds and devices, the records' generated tokens
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert [i["devices"] for i in cost["invocations"]] == [1, 1] and cost["invocations"][0]["seconds"] > 0
    assert cost["generated_tokens"] == sum(r["output_tokens"] for rec in records for r in rec["rollouts"]) > 0
    assert cost["device_hours"] == pytest.approx(cost["wall_seconds"] / 3600)


class CountingBuilder(RequestBuilder):
    """A request builder that records, each time a request is built, how many built requests have no record in
    the shard file yet: the requests the run holds at that moment."""

    def __init__(self, processor, shard, **kwargs):
        super().__init__(processor, **kwargs)
        self.shard = shard
        self.built = 0
        self.in_flight = []

    def build(self, row):
        self.built += 1
        written = self.shard.read_text().count("\n") if self.shard.exists() else 0
        self.in_flight.append(self.built - written)
        return super().build(row)


def test_window_bounds_the_requests_in_flight(tmp_path, tiny_model_dir, tiny_processor, eval_dataset_dir):
    from medvlthinker.inference.backends import HfBackend

    config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(eval_dataset_dir),
                       output_dir=str(tmp_path), max_tokens=3, window=3, batch_size=8, progress=False,
                       max_pixels=64 * 28 * 28)
    builder = CountingBuilder(tiny_processor, tmp_path / "shard-000-of-001.jsonl", max_pixels=64 * 28 * 28)
    backend = HfBackend(str(tiny_model_dir), batch_size=8)
    assert run_rank(config, 0, backend=backend, builder=builder) == 24
    # requests are built only as the engine takes them: never more than the window exist, and it fills up
    assert builder.built == 24 and max(builder.in_flight) == 3
    assert backend.peak_in_flight == 3
    # generate pads a sequence that stopped early: its count ends at its first stop token
    from medvlthinker.inference.backends import Completion

    stop = tiny_processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert backend._completion("a", [9, 9, stop, backend.pad_token_id]) == Completion("a", 3, "stop")
    assert backend._completion("b", [9, 9, 9, 9]) == Completion("b", 4, "length")
    records = read_records(tmp_path / "shard-000-of-001.jsonl")
    assert sorted(r["dataset_index"] for r in records) == list(range(24))
    for rollout in (ro for r in records for ro in r["rollouts"]):
        assert rollout["finish_reason"] in ("stop", "length") and 1 <= rollout["output_tokens"] <= 3
        if rollout["output_tokens"] < 3:
            assert rollout["finish_reason"] == "stop"
        if rollout["finish_reason"] == "length":
            assert rollout["output_tokens"] == 3


def test_rerun_with_another_dp_size_skips_finished_rows(tmp_path, tiny_model_dir, eval_dataset_dir):
    from medvlthinker.inference.backends import HfBackend

    common = dict(model=str(tiny_model_dir), backend="hf", dataset_name=str(eval_dataset_dir),
                  output_dir=str(tmp_path), max_tokens=2, progress=False, max_pixels=64 * 28 * 28)
    # rank 0 of a dp_size 2 run finishes (interleaved: the even rows), rank 1 never runs; args.json is written
    # first, as run() does, so the rerun can tell it is the same run
    from medvlthinker.inference.runner import write_args

    write_args(RunConfig(dp_size=2, **common), 24)
    run_rank(RunConfig(dp_size=2, **common), 0, backend=HfBackend(str(tiny_model_dir)))
    first = [r["dataset_index"] for r in read_records(tmp_path / "shard-000-of-002.jsonl")]
    assert first == list(range(0, 24, 2))
    run(RunConfig(dp_size=1, **common))  # rerun on one engine: only the odd rows are generated
    second = [r["dataset_index"] for r in read_records(tmp_path / "shard-000-of-001.jsonl")]
    assert sorted(second) == list(range(1, 24, 2))
    assert [r["dataset_index"] for r in read_records(tmp_path / "eval_results.jsonl")] == list(range(24))


def test_doctests_of_assignment_window_and_workloads():
    import doctest

    from medvlthinker.inference import assign, backends, workloads

    for module in (assign, backends, workloads):
        assert doctest.testmod(module).failed == 0


def test_interleaved_assignment_balances_the_eval_set():
    # The eval set in its row order, each row at its benchmark's mean answer length: contiguous shards give the
    # rank holding MedXpertQA-MM about 1.5x the mean work; interleaved ranks are within 1% of each other.
    work = eval_set_lengths()
    for world in (4, 8, 16, 32):
        assert slowest_share(work, world, "contiguous") > 1.45
        assert slowest_share(work, world, "interleaved") < 1.01


def _cli(tmp_path, data, out, *extra):
    return [sys.executable, str(SCRIPT), "--model", os.environ["TINY_MODEL"], "--backend", "hf",
            "--dataset_name", str(data), "--output_dir", str(out), "--max_pixels", str(64 * 28 * 28), *extra]


@pytest.fixture
def cli_env(tiny_model_dir):
    env = dict(os.environ, TINY_MODEL=str(tiny_model_dir), OMP_NUM_THREADS="1")
    os.environ["TINY_MODEL"] = str(tiny_model_dir)
    return env


@pytest.mark.slow
def test_two_data_parallel_ranks_shard_and_merge(tmp_path, eval_dataset_dir, cli_env):
    out = tmp_path / "out"
    proc = subprocess.run(_cli(tmp_path, eval_dataset_dir, out, "--dp_size", "2", "--max_tokens", "2"),
                          env=cli_env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = [r["dataset_index"] for r in read_records(out / "shard-000-of-002.jsonl")]
    second = [r["dataset_index"] for r in read_records(out / "shard-001-of-002.jsonl")]
    assert sorted(first) == list(range(0, 24, 2)) and sorted(second) == list(range(1, 24, 2))  # interleaved
    merged = [r["dataset_index"] for r in read_records(out / "eval_results.jsonl")]
    assert merged == list(range(24))
    assert json.loads((out / "accuracy.json").read_text())["_average"]["accuracy"] >= 0


@pytest.mark.slow
def test_kill_midway_and_resume(tmp_path, cli_env):
    rows = synthetic.make_text_rows(n=30, seed=4, dataset_name="medqa")
    to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "out"
    cmd = _cli(tmp_path, tmp_path / "data", out, "--max_tokens", "48", "--batch_size", "1")
    shard = out / "shard-000-of-001.jsonl"
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if shard.exists() and shard.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = shard.read_text()
    assert 2 <= partial.count("\n") < 30, "the run must be killed midway"
    with shard.open("a") as fh:  # a torn write, as a kill inside write() would leave
        fh.write('{"dataset_name": "medqa", "dataset_ind')
    done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    indices = [r["dataset_index"] for r in read_records(shard)]
    assert sorted(indices) == list(range(30)) and len(indices) == len(set(indices))
    assert shard.read_text().startswith(partial)  # the records written before the kill were kept as they were
    assert [r["dataset_index"] for r in read_records(out / "eval_results.jsonl")] == list(range(30))


# ---------------------------------------------------------------- the command line: flags from RunConfig, presets


def _parsed(*argv: str) -> RunConfig:
    """The RunConfig eval/run_offline_inference.py would run for ``argv`` (parsed by the real command, not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_offline_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = dict(module.main.make_context("run_offline_inference.py", ["--model", "m", "--output_dir", "o", *argv])
                  .params)
    params.pop("debug", None)
    subset, engine_kwargs = params.pop("subset"), params.pop("engine_kwargs")
    return RunConfig(subset=list(subset) or None, engine_kwargs=json.loads(engine_kwargs), **params)


def test_every_runconfig_field_is_a_flag_with_its_help():
    import dataclasses

    from medvlthinker.options import cli_options

    options = {o.name: o for o in cli_options(RunConfig)}
    hidden = {f.name for f in dataclasses.fields(RunConfig) if not f.metadata.get("cli", True)}
    assert hidden == {"ignore_eos", "progress"}
    assert set(options) == {f.name for f in dataclasses.fields(RunConfig)} - hidden
    assert all(o.help for o in options.values())
    assert options["n"].help == dataclasses.fields(SamplingSettings)[3].metadata["help"]  # declared once
    assert options["model"].required and options["subset"].multiple


@pytest.mark.parametrize("preset, expected", [
    ("eval", (0.0, 1.0, 4096, 1, 42)),
    ("pass_rate", (1.0, 1.0, 4096, 16, 42)),
    ("metrics_at_n", (0.5, 1.0, 4096, 5, 42)),
    ("pass_at_k", (0.5, 0.95, 4096, 64, 42)),
])
def test_presets_set_the_papers_sampling(preset, expected):
    from medvlthinker.inference.settings import PRESETS

    config = _parsed("--preset", preset)
    assert (config.temperature, config.top_p, config.max_tokens, config.n, config.seed) == expected
    assert config.sampling == PRESETS[preset]


def test_no_preset_is_the_eval_preset_and_explicit_flags_win():
    from medvlthinker.inference.settings import EVAL_GREEDY

    assert _parsed().sampling == EVAL_GREEDY
    # before or after --preset, a typed flag overrides the preset's value and leaves the others
    for argv in (["--preset", "pass_rate", "--n", "4"], ["--n", "4", "--preset", "pass_rate"]):
        config = _parsed(*argv)
        assert (config.temperature, config.n) == (1.0, 4)
    assert _parsed("--preset", "pass_rate", "--temperature", "0").temperature == 0.0


def test_unknown_preset_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", "m", "--output_dir", str(tmp_path / "o"),
                           "--preset", "greedy"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'greedy' is not one of" in lines[0]
    assert "pass_rate" in lines[0] and "Traceback" not in proc.stderr
