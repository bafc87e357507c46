"""Every stage script ends a user's mistake as one line, ``error: ...; fix: ...``, exit code 1, no traceback.

Each case gives a script a bad input (a missing file, a missing or unknown flag) that fails before any model or data
set loads, so the whole table runs in seconds; test_bad_inputs.py covers the deeper failures stage by stage.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_bad_inputs import error_line

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/medvlthinker-input"

# (script, arguments, a word the error line must hold); {tmp} is a fresh folder
CASES = [
    ("data_process/build_eval_set.py", [], "--output"),
    ("data_process/check_overlap.py", ["--train", MISSING, "--output_dir", "{tmp}/overlap"], MISSING),
    ("data_process/convert_sft_format.py", [MISSING, "{tmp}/sft"], MISSING),
    ("data_process/convert_verl_format.py", [MISSING, "{tmp}/rl.parquet"], MISSING),
    ("data_process/merge_reasoning.py", [], "--records"),
    ("data_process/order_easy_to_hard.py", [], "Missing option"),
    ("data_process/prepare_m23k.py", ["--source", MISSING + ".jsonl", "--output", "{tmp}/m23k"], MISSING),
    ("data_process/prepare_pmc_vqa.py", ["--csv_path", MISSING + ".csv", "--image_dir", "{tmp}", "--output",
                                         "{tmp}/pmc"], MISSING),
    ("eval/run_offline_inference.py", ["--no_such_flag"], "--no_such_flag"),
    ("eval/regrade.py", ["--no_such_flag"], "--no_such_flag"),
    ("eval/merge_results.py", ["--no_such_flag"], "--no_such_flag"),
    ("analysis/make_tables.py", ["--no_such_flag"], "--no_such_flag"),
    ("analysis/make_plots.py", ["--no_such_flag"], "--no_such_flag"),
    ("analysis/make_ablation_tables.py", ["--no_such_flag"], "--no_such_flag"),
    ("analysis/make_report.py", ["--no_such_flag"], "--no_such_flag"),
    ("train/sft/train_sft.py", [MISSING + ".yaml"], MISSING),
    ("train/rl/preflight.py", [MISSING + ".yaml"], MISSING),
    ("scripts/check_gpu_resolution.py", ["--no_such_flag"], "--no_such_flag"),
    ("benchmarks/benchmark_balance.py", [], "--eval_set_means"),
    ("benchmarks/benchmark_overlap_images.py", ["--threshold", "40"], "--image_threshold 40"),
    ("benchmarks/benchmark_cpu_allocator.py", ["--repeats", "x"], "--repeats"),
    ("benchmarks/benchmark_convert.py", ["--rows", "x"], "--rows"),
    ("benchmarks/benchmark_memory.py", ["--backend", "tpu"], "tpu"),
    ("benchmarks/benchmark_response_logits.py", ["--sequences", "x"], "--sequences"),
    ("benchmarks/benchmark_sft.py", ["--no_such_flag"], "--no_such_flag"),
    ("benchmarks/benchmark_throughput.py", ["--repeats", "x"], "--repeats"),
    ("benchmarks/benchmark_variable_length.py", ["--scale", "x"], "--scale"),
]


def _load(relpath: str):
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def keep_environ():
    # the benchmark scripts set vLLM's environment variables when imported; other tests must not see them
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def test_every_stage_script_is_covered():
    stage = {str(p.relative_to(ROOT)) for folder in ("data_process", "eval", "analysis", "benchmarks", "scripts")
             for p in (ROOT / folder).glob("*.py")}
    stage |= {str(p.relative_to(ROOT)) for p in (ROOT / "train").glob("*/*.py")}
    covered = {case[0] for case in CASES} | {"data_process/generate_reasoning.py"}
    assert stage - covered == set(), "add each new stage script to CASES"


@pytest.mark.parametrize("relpath, args, word", CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_and_exit_1(relpath, args, word, tmp_path, keep_environ):
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(_load(relpath).main, args)
    assert result.exit_code == 1, result.output
    assert word in error_line(result.output)


def test_the_teacher_script_is_one_line_and_exit_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load("data_process/generate_reasoning.py").main(["--no_such_flag"])
    assert exit_info.value.code == 1
    assert "--no_such_flag" in error_line(capsys.readouterr().err)


def test_the_merge_command_is_one_line_and_exit_1():
    from medvlthinker.train.merge import cli

    result = CliRunner().invoke(cli, ["sft", MISSING, "base", "target"])
    assert result.exit_code == 1, result.output
    assert MISSING in error_line(result.output)


def test_the_rl_launcher_is_one_line_and_exit_1(capsys):
    from medvlthinker.train import rl

    with pytest.raises(SystemExit) as exit_info:
        rl.main([MISSING + ".yaml"])
    assert exit_info.value.code == 1
    assert MISSING in error_line(capsys.readouterr().err)


def test_an_entry_point_shows_the_traceback_with_debug(capsys):
    from medvlthinker.cli import UserError, entry_point

    @entry_point
    def main(argv):
        raise UserError("x.yaml", "the key lr is missing", fix="add it")

    with pytest.raises(SystemExit):
        main([])
    assert error_line(capsys.readouterr().err) == "error: x.yaml: the key lr is missing; fix: add it"
    with pytest.raises(UserError):
        main(["--debug"])
