"""What an SFT run may resume from: the run's identity, the newest complete checkpoint, a full disk at a save.

A run writes ``run_identity.json`` into ``output_dir`` before it trains: the base model, the data set (its path, rows
and ``datasets`` fingerprint, which changes with the content) and the trainer arguments that shape the result
(:data:`IDENTITY_ARGS`). A later run in the same ``output_dir`` resumes only when its identity is the same; another
model, data set or hyperparameter stops it before the model loads, naming the first difference.

A checkpoint cut short (a disk-full or a killed save leaves ``checkpoint-N`` without ``trainer_state.json`` or
without weights) is skipped with a warning; the run resumes from the newest complete one, or starts afresh. A full
disk at a save is one line (:func:`medvlthinker.staging.disk_full_named`).

transformers' Trainer already replays the data order on resume: the sampler is accelerate's seedable sampler
(seed ``data_seed`` or ``seed``, re-seeded each epoch), the batches already trained in the interrupted epoch are
skipped (``ignore_data_skip`` false) and the RNG state of the checkpoint is restored. ``tests/test_sft_resume.py``
holds it to that: the batches after a resume are those of an uninterrupted run.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from medvlthinker.staging import write_text
from medvlthinker.train.sft_config import ConfigError, SFTRunConfig

IDENTITY_FILE = "run_identity.json"

# The trainer arguments whose change makes a resumed run a different experiment.
IDENTITY_ARGS = (
    "global_batch_size", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "optim",
    "max_grad_norm", "num_train_epochs", "max_steps", "seed", "data_seed", "max_length", "dtype",
    "max_train_samples", "completion_only_loss", "bf16", "fp16",
)

# What a save writes for the weights: one file, a sharded index, or FSDP's sharded state folder.
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "adapter_model.safetensors", "pytorch_model_fsdp.bin", "pytorch_model_fsdp_0")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ResumeError(ConfigError):
    """``output_dir`` holds checkpoints of another run."""


def run_identity(cfg: SFTRunConfig, dataset: Any) -> dict[str, Any]:
    """The identity of a run: the model, the data set and the trainer arguments of :data:`IDENTITY_ARGS`."""
    args = cfg.to_dict()
    return {
        "model_name_or_path": cfg.model_name_or_path,
        "train_data": str(Path(cfg.train_data).resolve()) if cfg.train_data else None,
        "train_rows": len(dataset),
        "train_fingerprint": getattr(dataset, "_fingerprint", None),
        "trainer_args": {name: _plain(args.get(name, getattr(cfg, name, None))) for name in IDENTITY_ARGS},
    }


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    flat_old = {**{k: v for k, v in old.items() if k != "trainer_args"}, **old.get("trainer_args", {})}
    flat_new = {**{k: v for k, v in new.items() if k != "trainer_args"}, **new.get("trainer_args", {})}
    return [f"{key} was {flat_old.get(key)!r}, now {flat_new.get(key)!r}"
            for key in flat_new if flat_old.get(key) != flat_new.get(key)]


def complete_checkpoint(path: Path) -> str | None:
    """None when ``path`` is a complete checkpoint, else what it lacks."""
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "trainer_state.json is missing or unreadable"
    if not any((path / name).exists() and (path / name).stat().st_size > 0 for name in _WEIGHTS):
        return "no model weights"
    return None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` of ``output_dir``; newer incomplete ones are skipped with a warning."""
    for path in reversed(checkpoints(output_dir)):
        lacks = complete_checkpoint(path)
        if lacks is None:
            return str(path)
        warnings.warn(f"skipping the incomplete checkpoint {path} ({lacks}, as after a failed save); resuming from "
                      "the one before it", stacklevel=2)
    return None


def prepare_output_dir(cfg: SFTRunConfig, dataset: Any, *, overwrite: bool = False,
                       main_process: bool = True) -> str | None:
    """Check ``output_dir`` against this run's identity; return the checkpoint to resume from (or None).

    With ``overwrite`` the checkpoints and identity of an earlier run are removed first. On the main process the
    identity file is (re)written, so the next run compares against it.
    """
    out = Path(cfg.output_dir)
    identity = run_identity(cfg, dataset)
    found = checkpoints(out)
    if overwrite:  # every process starts afresh; the main one removes the earlier run's checkpoints
        if main_process:
            for path in found:
                shutil.rmtree(path)
            (out / IDENTITY_FILE).unlink(missing_ok=True)
        found = []
    resume_from = last_complete_checkpoint(out) if (cfg.resume and found) else None
    recorded = out / IDENTITY_FILE
    if resume_from and recorded.is_file():
        try:
            old = json.loads(recorded.read_text())
        except ValueError:
            old = {}
        diff = _differences(old, identity)
        if diff:
            raise ResumeError(
                f"output_dir {out} holds checkpoints of another run ({'; '.join(diff[:3])}); fix: pass --overwrite "
                "to start this run afresh there (its checkpoints are removed), or choose a new output_dir"
            )
    elif resume_from:
        warnings.warn(f"{out} has checkpoints but no {IDENTITY_FILE}: resuming from {resume_from} without checking "
                      "that it was written by this config", stacklevel=2)
    if main_process:  # written whole (a rename), so the other processes read the old identity or the new one
        write_text(recorded, json.dumps(identity, indent=1) + "\n")
    return resume_from
