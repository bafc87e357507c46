"""Checkpoint merging: verl FSDP shards from two CPU processes, and an SFT checkpoint, into loadable model dirs.

Run as a script under torchrun, this module writes the verl checkpoint the first test merges:
``torchrun --nproc_per_node 2 tests/test_merge.py MODEL_DIR ACTOR_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_verl_fsdp_checkpoint(model_dir: str, actor_dir: str) -> None:
    """In each of the torchrun processes: shard the model with FSDP2 over gloo and save it with verl's manager."""
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    dist.init_process_group("gloo")
    # verl's FSDP workers name their 1-D mesh "fsdp"; the merger reads the sharding from it.
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("fsdp",))
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    for layer in model.model.language_model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    manager = FSDPCheckpointManager(
        model=model,
        optimizer=None,
        lr_scheduler=None,
        processing_class=AutoProcessor.from_pretrained(model_dir),
        checkpoint_config=OmegaConf.create({"save_contents": ["model"], "load_contents": ["model"]}),
    )
    manager.save_checkpoint(local_path=actor_dir, global_step=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    write_verl_fsdp_checkpoint(sys.argv[1], sys.argv[2])
    sys.exit(0)


import pytest  # noqa: E402

from medvlthinker.train import merge  # noqa: E402


def _state_dict(model_dir):
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    return model.state_dict()


@pytest.mark.slow
def test_verl_fsdp_shards_from_two_processes_merge_into_a_model_that_generates(tmp_path, tiny_model_dir):
    import torch

    actor = tmp_path / "run" / "global_step_1" / "actor"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), str(tiny_model_dir), str(actor)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((actor / "fsdp_config.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in actor.glob("model_world_size_*")) == [
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
    # Each rank holds half of a sharded weight.
    shard = torch.load(actor / "model_world_size_2_rank_0.pt", weights_only=False)
    key = "model.language_model.layers.0.mlp.up_proj.weight"
    assert shard[key]._local_tensor.shape[0] * 2 == shard[key].shape[0]

    target = tmp_path / "merged"
    # global_step_N is accepted for global_step_N/actor.
    merge.merge_verl_checkpoint(actor.parent, target)  # runs the load-and-generate check
    merged, source = _state_dict(target), _state_dict(tiny_model_dir)
    assert merged.keys() == source.keys()
    # verl's merger writes bf16, so the source is compared at bf16.
    for name, tensor in source.items():
        assert torch.equal(merged[name], tensor.to(torch.bfloat16).to(torch.float32)), name
    from transformers import AutoProcessor

    assert AutoProcessor.from_pretrained(target).chat_template == AutoProcessor.from_pretrained(
        tiny_model_dir).chat_template


def test_verl_merge_rejects_a_directory_without_shards(tmp_path):
    (tmp_path / "actor").mkdir()
    (tmp_path / "actor" / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 2}')
    with pytest.raises(merge.MergeError, match=r"no model_world_size_\*_rank_\*\.pt shards"):
        merge.merge_verl_checkpoint(tmp_path, tmp_path / "out")
    (tmp_path / "bare").mkdir()
    with pytest.raises(merge.MergeError, match=r"no fsdp_config\.json.*global_step_N/actor"):
        merge.resolve_actor_dir(tmp_path / "bare")


@pytest.mark.slow
def test_sft_checkpoint_merges_with_the_base_models_files(tmp_path, tiny_model_dir, train_image_rows):
    import torch

    from medvlthinker.converters.sft_format import convert_to_sft
    from medvlthinker.data import to_dataset
    from medvlthinker.train import sft, sft_config

    cfg = sft_config.load_config(ROOT / "configs" / "sft" / "tiny_cpu.yaml", [
        f"model_name_or_path={tiny_model_dir}", f"output_dir={tmp_path / 'sft'}", f"train_data={tmp_path}",
        "max_steps=1", "global_batch_size=1", "per_device_train_batch_size=1", "save_strategy=steps",
        "save_steps=1", "learning_rate=1e-3", "warmup_ratio=0",
    ])
    sft.run_sft(cfg, train_dataset=convert_to_sft(to_dataset(train_image_rows[:1])))
    ckpt = tmp_path / "sft" / "checkpoint-1"
    # Training edits the config it saves (special token ids, use_cache, dtype): the merge must not keep it.
    assert (ckpt / "config.json").read_bytes() != (tiny_model_dir / "config.json").read_bytes()
    target = merge.merge_sft_checkpoint(ckpt, str(tiny_model_dir), tmp_path / "merged")
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "preprocessor_config.json"):
        if (tiny_model_dir / name).exists():
            assert (target / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    merged, trained, base = _state_dict(target), _state_dict(ckpt), _state_dict(tiny_model_dir)
    assert all(torch.equal(merged[k], trained[k]) for k in trained)
    assert any(not torch.equal(merged[k], base[k]) for k in base)  # the step changed the weights
    with pytest.raises(merge.MergeError, match="already exists"):
        merge.merge_sft_checkpoint(ckpt, str(tiny_model_dir), target)


def test_a_full_disk_during_an_sft_merge_is_one_line_and_leaves_no_target(tmp_path, tiny_model_dir, monkeypatch):
    import errno
    import shutil

    import pytest

    from medvlthinker.staging import DiskFullError
    from medvlthinker.train import merge

    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    shutil.copy2(Path(tiny_model_dir) / "model.safetensors", ckpt / "model.safetensors")

    def no_space(src, dst, *args, **kwargs):  # what the OS answers when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(merge.shutil, "copy2", no_space)
    with pytest.raises(DiskFullError, match=r"no space left on the device while writing the merged model \(.* GiB free"):
        merge.merge_sft_checkpoint(ckpt, str(tiny_model_dir), tmp_path / "merged", check=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]
