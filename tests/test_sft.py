"""SFT with TRL on the tiny model: config validation, the loss mask, a few steps per data kind, overfitting."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import yaml

from medvlthinker import prompts
from medvlthinker.converters.sft_format import convert_to_sft
from medvlthinker.data import to_dataset
from medvlthinker.train import sft, sft_benchmark, sft_config

ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIGS = sorted((ROOT / "configs" / "sft").glob("qwen2.5-vl-*_sft_*.yaml"))
TINY_CONFIG = ROOT / "configs" / "sft" / "tiny_cpu.yaml"
# The config is transformers' TrainingArguments, which refuses bf16 on a machine without a GPU unless told.
CPU = ["use_cpu=true"]
# The trainer arguments every config resolved to before the config became a trl.SFTConfig (on CPU, per world size;
# only the fields that differ from SFTConfig's defaults).
RESOLVED = ROOT / "tests" / "data" / "sft_trainer_arguments.json"


def _load_script(relpath: str):
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- config


def test_paper_configs_carry_the_protocol_hyperparameters():
    assert {p.name for p in PAPER_CONFIGS} == {
        f"qwen2.5-vl-{size}_sft_{data}.yaml" for size in ("3b", "7b") for data in ("m23k", "pmc_vqa")
    }
    for path in PAPER_CONFIGS:
        cfg = sft_config.load_config(path, CPU)
        # warmup_ratio reaches transformers 5 as the fractional warmup_steps it reads as a ratio
        assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.warmup_steps, cfg.weight_decay) == (
            1e-5, "cosine", 0.05, 1e-4), path
        assert (cfg.adam_beta1, cfg.adam_beta2, cfg.num_train_epochs, cfg.save_strategy) == (
            0.9, 0.95, 5.0, "epoch"), path
        assert cfg.bf16 and cfg.global_batch_size == 16 and cfg.per_device_train_batch_size == 1
        # 1 per device x 8 GPUs x 2 accumulation steps; on 2 nodes x 8 GPUs accumulation drops to 1.
        assert sft_config.build_sft_config(cfg, n_processes=8).gradient_accumulation_steps == 2
        assert sft_config.build_sft_config(cfg, n_processes=16).gradient_accumulation_steps == 1
        size = "3B" if "3b" in path.name else "7B"
        assert cfg.model_name_or_path == f"Qwen/Qwen2.5-VL-{size}-Instruct"
        assert cfg.train_data.endswith("m23k" if "m23k" in path.name else "pmc_vqa_reasoning")


def test_weights_load_in_float32_as_the_original(tiny_model_dir):
    """The original calls from_pretrained without a dtype (fp32 weights; bf16 only as mixed-precision compute)."""
    for path in PAPER_CONFIGS:
        assert sft_config.load_config(path, CPU).dtype == "float32", path
    cfg = sft_config.load_config(PAPER_CONFIGS[0], [*CPU, f"model_name_or_path={tiny_model_dir}"])
    model, _ = sft.load_model_and_processor(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert cfg.bf16  # the compute stays bf16 mixed precision
    bf16 = sft_config.load_config(PAPER_CONFIGS[0], [*CPU, f"model_name_or_path={tiny_model_dir}", "dtype=bfloat16"])
    assert {p.dtype for p in sft.load_model_and_processor(bf16)[0].parameters()} == {torch.bfloat16}


def test_trainer_arguments_follow_the_config():
    # use_cpu: this machine has no GPU, and transformers refuses bf16 without one unless told.
    cfg = sft_config.load_config(PAPER_CONFIGS[0], ["output_dir=/tmp/x", "trainer_args.use_cpu=true"])
    args = sft_config.build_sft_config(cfg, n_processes=8)
    assert args.gradient_accumulation_steps == 2 and args.completion_only_loss is True
    assert (args.learning_rate, args.weight_decay, args.adam_beta2, args.warmup_steps) == (1e-5, 1e-4, 0.95, 0.05)
    assert args.lr_scheduler_type == "cosine" and args.save_strategy == "epoch" and args.bf16


def test_unknown_key_is_rejected_naming_key_and_file(tmp_path):
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["learnig_rate"] = 1e-5
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(sft_config.ConfigError, match=r"typo\.yaml: unknown key\(s\) \['learnig_rate'\]"):
        sft_config.load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        (["learning_rate=fast"], r"learning_rate must be float, got str 'fast'"),
        (["num_train_epochs=[1]"], r"num_train_epochs must be float"),
        (["trainer_args.not_a_field=1"], r"trainer_args\.not_a_field is not a trl\.SFTConfig field"),
        (["trainer_args.learning_rate=1"], r"trainer_args\.learning_rate is set by this project's config"),
        (["global_batch_size=3"], r"global_batch_size 3 is not a multiple"),
        (["warmup_ratio=1.5"], r"warmup_ratio must be in \[0, 1\)"),
        (["oops"], r"override 'oops' is not key=value"),
    ],
)
def test_bad_values_and_overrides_are_rejected(override, message):
    with pytest.raises(sft_config.ConfigError, match=message):
        sft_config.load_config(TINY_CONFIG, override)


def test_overrides_parse_as_yaml_and_nest():
    cfg = sft_config.load_config(TINY_CONFIG, ["learning_rate=2e-5", "max_length=512", "save_only_model=true"])
    assert cfg.learning_rate == 2e-5 and cfg.max_length == 512
    assert cfg.use_cpu and cfg.disable_tqdm and cfg.save_only_model


def test_the_old_trainer_args_spelling_warns_and_still_works():
    with pytest.warns(FutureWarning, match=r"trainer_args is deprecated; write its keys \(save_only_model\) at the top"):
        cfg = sft_config.load_config(TINY_CONFIG, ["trainer_args.save_only_model=true"])
    assert cfg.save_only_model


def test_every_config_gives_the_recorded_trainer_arguments():
    """Every YAML under configs/sft/ loads unchanged and resolves to the arguments it gave before."""
    import json

    from trl import SFTConfig

    def differing(args) -> dict:
        resolved = json.loads(json.dumps(args.to_dict(), default=str))
        return {k: v for k, v in resolved.items() if k in base and k != "logging_dir" and base[k] != v}

    base = json.loads(json.dumps(SFTConfig(output_dir="base", use_cpu=True).to_dict(), default=str))
    recorded = json.loads(RESOLVED.read_text())
    configs = sorted((ROOT / "configs" / "sft").glob("*.yaml"))
    assert {key.split("@")[0] for key in recorded} == {str(p.relative_to(ROOT)) for p in configs}
    for path in configs:
        cfg = sft_config.load_config(path, CPU if yaml.safe_load(path.read_text()).get("bf16", True) else [])
        for n in (1, 2, 8, 16):
            key = f"{path.relative_to(ROOT)}@{n}"
            try:
                got = differing(sft_config.build_sft_config(cfg, n_processes=n))
            except sft_config.ConfigError as exc:
                got = f"ERROR {exc}"
            assert got == recorded[key], key


def test_unknown_key_names_the_nearest_key_and_help_lists_every_key():
    from click.testing import CliRunner

    with pytest.raises(sft_config.ConfigError, match=r"unknown key\(s\) \['lerning_rate'\] \(did you mean learning_rate\?\)"):
        sft_config.load_config(TINY_CONFIG, ["lerning_rate=1e-5"])
    with pytest.raises(sft_config.ConfigError, match=r"gradient_accumulation_steps is set by this project; fix: .*global_"):
        sft_config.load_config(TINY_CONFIG, ["gradient_accumulation_steps=4"])
    text = CliRunner().invoke(_load_script("train/sft/train_sft.py").main, ["--help"]).output
    for key, help_text in (("global_batch_size", "Examples per optimizer step"), ("train_data", "SFT data set"),
                           ("adam_epsilon", "Epsilon value")):  # the project's fields and TRL's, with their help
        assert f"--{key}" in text and help_text in text, key


def test_print_config_shows_the_resolved_config(tmp_path):
    from click.testing import CliRunner

    script = _load_script("train/sft/train_sft.py")
    for flag in ("--print_config", "--print-config"):  # the second: the old spelling, which warns
        result = CliRunner().invoke(script.main, [str(PAPER_CONFIGS[0]), *CPU, f"output_dir={tmp_path}", flag])
        assert result.exit_code == 0, result.output
        assert ("--print-config is deprecated; use --print_config" in result.output) == (flag == "--print-config")
        shown = yaml.safe_load(result.output.rsplit("gradient_accumulation_steps", 1)[0])
        assert (shown["lr_scheduler_type"], shown["global_batch_size"], shown["warmup_steps"]) == ("cosine", 16, 0.05)


def test_missing_train_data_names_the_path_and_the_fix(tmp_path):
    cfg = sft_config.load_config(TINY_CONFIG, [f"train_data={tmp_path / 'nowhere'}"])
    with pytest.raises(sft_config.ConfigError, match=r"nowhere does not exist; fix: build it with .*convert_sft_format"):
        sft.load_train_dataset(cfg)


@pytest.mark.parametrize("name", ["fsdp_1node_8gpu.yaml", "fsdp_2node_8gpu.yaml"])
def test_accelerate_fsdp_configs_are_valid(name, tiny_model_dir, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import ShardingStrategy, StateDictType
    from transformers import AutoModelForImageTextToText

    path = ROOT / "configs" / "accelerate" / name
    cluster = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys
    assert cluster.distributed_type == DistributedType.FSDP and cluster.mixed_precision == "bf16"
    assert cluster.num_processes == 8 * cluster.num_machines
    # What `accelerate launch --config_file` would do, up to the environment of the training processes.
    args = launch_command_parser().parse_args(["--config_file", str(path), "train/sft/train_sft.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    # sync_module_states needs a GPU to build the plugin; it is checked in the environment instead.
    assert env["FSDP_SYNC_MODULE_STATES"] == "true"
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    plugin.set_auto_wrap_policy(model)  # raises when the layer class to wrap is not in the model
    assert {c.__name__ for c in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]} == {
        "Qwen2_5_VLDecoderLayer"
    }


def test_sft_sh_rejects_a_bad_config_before_launching(tmp_path):
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\ntrain_data: y\noutput_dir: z\nepochs: 3\n")
    env = dict(os.environ, PYTHON=str(Path(os.sys.executable)))
    out = subprocess.run([str(ROOT / "train" / "sft" / "sft.sh"), str(bad)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode != 0
    assert "unknown key(s) ['epochs']" in out.stderr


# ---------------------------------------------------------------- the loss mask


def _cfg(tmp_path, tiny_model_dir, *extra):
    return sft_config.load_config(
        TINY_CONFIG,
        [f"model_name_or_path={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", f"train_data={tmp_path}", *extra],
    )


@pytest.mark.parametrize("kind", ["text", "image"])
def test_labels_cover_exactly_the_assistant_turn(kind, tmp_path, tiny_model_dir, train_text_rows, train_image_rows):
    import torch

    rows = (train_text_rows if kind == "text" else train_image_rows)[:2]
    ds = convert_to_sft(to_dataset(rows))
    trainer = sft.build_trainer(_cfg(tmp_path, tiny_model_dir), train_dataset=ds)
    processor = trainer.processing_class
    tokenizer = processor.tokenizer
    batch = trainer.data_collator([ds[0], ds[1]])
    for i, row in enumerate(rows):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        supervised = (labels != -100).nonzero().flatten()
        attended = (mask == 1).nonzero().flatten()
        # The supervised tokens are the labels themselves, one contiguous block ending at the last real token.
        assert torch.equal(labels[supervised], ids[supervised])
        assert torch.equal(supervised, torch.arange(int(supervised[0]), int(supervised[-1]) + 1))
        assert int(supervised[-1]) == int(attended[-1])
        # ... and exactly the assistant turn: the target text, <|im_end|> and the template's trailing newline.
        target = prompts.build_sft_target(row["reasoning"], row["answer_label"])
        expected = tokenizer(target + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        assert ids[supervised].tolist() == expected
        # Everything before it is the evaluation prompt (system turn, images, user text, generation prompt).
        prompt_text = processor.apply_chat_template(
            prompts.build_messages(row), tokenize=False, add_generation_prompt=True
        )
        prompt_ids = processor(text=[prompt_text], images=row["images"] or None)["input_ids"][0]
        prompt_ids = prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else list(prompt_ids)
        assert ids[int(attended[0]) : int(supervised[0])].tolist() == prompt_ids
        assert (labels[: int(supervised[0])] == -100).all()
    if kind == "image":
        n_pad = int((batch["input_ids"] == processor.image_token_id).sum())
        assert n_pad == int(batch["image_grid_thw"].prod(dim=1).sum()) // 4  # merge 2x2 patches per token


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_cli_trains_text_sft_and_saves_a_loadable_model_then_resumes(tmp_path, tiny_model_dir, train_text_rows):
    from click.testing import CliRunner
    from transformers import AutoProcessor

    from medvlthinker.converters.sft_format import write_sft_dataset

    data = write_sft_dataset(convert_to_sft(to_dataset(train_text_rows[:4])), tmp_path / "m23k")
    out = tmp_path / "run"
    script = _load_script("train/sft/train_sft.py")
    args = [str(TINY_CONFIG), f"model_name_or_path={tiny_model_dir}", f"train_data={data}", f"output_dir={out}",
            "max_steps=1", "save_strategy=steps", "save_steps=1", "max_length=256"]
    result = CliRunner().invoke(script.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").exists() and (out / "checkpoint-1").is_dir()
    processor = AutoProcessor.from_pretrained(out)
    assert processor.chat_template == AutoProcessor.from_pretrained(tiny_model_dir).chat_template
    # A second run with the same output_dir resumes from checkpoint-1 and, at max_steps, has nothing left to do.
    again = CliRunner().invoke(script.main, args, catch_exceptions=False)
    assert "resuming from" in again.output and again.exit_code == 0


@pytest.mark.slow
def test_loss_falls_when_overfitting_an_image_batch(tmp_path, tiny_model_dir, train_image_rows):
    ds = convert_to_sft(to_dataset(train_image_rows[:1]))
    cfg = _cfg(
        tmp_path, tiny_model_dir, "max_steps=8", "learning_rate=1e-3", "lr_scheduler_type=constant",
        "warmup_ratio=0", "global_batch_size=1", "per_device_train_batch_size=1", "save_strategy=no",
        "weight_decay=0",
    )
    trainer = sft.run_sft(cfg, train_dataset=ds)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # One example seen 8 times: the loss starts near ln(vocab) = 11.9 and must fall at every step
    # (measured: 11.9 -> 9.4).
    assert len(losses) == 8
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 1.5, losses


# ---------------------------------------------------------------- throughput


def test_flops_per_token_counts_every_matmul_parameter_of_the_3b_text_model():
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(ROOT / "configs" / "models" / "qwen2.5-vl-3b")
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    layers = model.model.language_model.layers
    matmul = sum(p.numel() for name, p in layers.named_parameters() if name.endswith("proj.weight"))
    matmul += model.lm_head.weight.numel()
    seq = 4096
    text = config.get_text_config()
    expected = 6 * matmul + 12 * text.num_hidden_layers * text.hidden_size * seq
    assert sft_benchmark.training_flops_per_token(config, seq) == pytest.approx(expected)
    assert 17e9 < sft_benchmark.training_flops_per_token(config, 0) < 20e9  # ~6 x 3.1B matmul parameters


def test_benchmark_runs_random_weights_from_a_config_only_dir(tmp_path):
    from medvlthinker.demo.tiny import write_config_only_model

    model_dir = write_config_only_model("tiny", tmp_path / "tiny", with_tokenizer=False)
    figures = sft_benchmark.benchmark_sft_step(str(model_dir), seq_len=32, steps=1, warmup=0, random_weights=True,
                                     gradient_checkpointing=False, peak=1e12)
    assert figures["tokens_per_s"] > 0 and figures["device"] == "cpu"
    assert figures["mfu"] == pytest.approx(figures["tflops_per_s"] / 1.0)
