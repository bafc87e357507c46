"""The RL preflight on every config of configs/rl, with the tiny model and one shared synthetic parquet."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlthinker import synthetic
from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet
from medvlthinker.train.preflight import PreflightError, run_preflight

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs" / "rl").glob("*.yaml"))
ONE = ROOT / "configs" / "rl" / "qwen2.5-vl-3b_rl_pmc.yaml"


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory, tiny_model_dir, train_image_rows, train_text_rows):
    """Hydra overrides that swap in the tiny model and a 4-row parquet (2 image rows, 2 text-only rows)."""
    path = tmp_path_factory.mktemp("preflight") / "train.parquet"
    write_verl_parquet(convert_to_verl(synthetic.to_dataset(train_image_rows[:2] + train_text_rows[:2])), path)
    return [f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{path}]", f"data.val_files=[{path}]"]


def test_every_paper_row_has_a_config():
    assert len(CONFIGS) == 13, [c.name for c in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_passes_preflight(config, tiny_overrides):
    report = run_preflight(config, tiny_overrides, sample_rows=4)
    assert len(report.prompt_lengths) == 8  # 4 rows from train_files and 4 from val_files
    assert report.over_limit == 0 and min(report.prompt_lengths) > 60
    # the image rows are longer than the text rows by their image tokens
    assert max(report.prompt_lengths) > min(report.prompt_lengths)
    assert report.rewards["well-formed correct"] == [1.0] * 8
    assert set(report.rewards["malformed (no think block)"]) == {0.0}
    assert report.fix["carried_by_config"] and report.fix["active"] == report.fix["needed"]
    assert any("position-id fix" in line for line in report.lines)


@pytest.mark.parametrize(
    "extra, message",
    [
        # verl 0.9 ignores the old top-level key: the run would score with the default scorer and crash
        (["custom_reward_function.path=medvlthinker/reward.py", "reward.custom_reward_function.path=null"],
         r"top level.*silently ignores.*reward\.custom_reward_function\.path"),
        (["reward.custom_reward_function.path=null"], r"reward\.custom_reward_function\.path is not set"),
        (["reward.custom_reward_function.path=pkg://medvlthinker.grading",
          "reward.custom_reward_function.name=no_such_function"], r"cannot be loaded"),
        (["data.not_a_verl_key=1"], r"Hydra cannot compose"),
        (["data.max_prompt_length=80"], r"exceed data\.max_prompt_length=80 and would be rejected"),
        (["data.val_files=[/nonexistent/val.parquet]"], r"data\.val_files: /nonexistent/val\.parquet does not exist"),
        (["ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=null"], r"worker_process_setup_hook"),
        (["actor_rollout_ref.rollout.agent.num_workers=7"], r"does not split over"),
        (["trainer.n_gpus_per_node=7"], r"verl rejects the config.*divisible"),
    ],
    ids=["legacy-reward-key", "no-reward", "bad-reward-name", "unknown-key", "prompt-too-long", "missing-file",
         "fix-not-carried", "agent-workers", "gpu-count"],
)
def test_preflight_names_the_problem(tiny_overrides, extra, message):
    with pytest.raises(PreflightError, match=message):
        run_preflight(ONE, tiny_overrides + extra, sample_rows=2)


def test_cli_reports_and_fails_cleanly(tiny_overrides):
    from click.testing import CliRunner

    import importlib.util

    spec = importlib.util.spec_from_file_location("rl_preflight_cli", ROOT / "train" / "rl" / "preflight.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    ok = CliRunner().invoke(cli.main, [str(ONE), *tiny_overrides, "--sample-rows", "2"])
    assert ok.exit_code == 0, ok.output
    assert "preflight passed" in ok.output and "prompt tokens (images included)" in ok.output
    bad = CliRunner().invoke(cli.main, [str(ONE), *tiny_overrides, "reward.custom_reward_function.path=null"])
    assert bad.exit_code == 1
    assert "preflight FAILED" in bad.output
