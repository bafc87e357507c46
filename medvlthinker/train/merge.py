"""Checkpoints -> Hugging Face model directories that eval and further training load, each checked after merging.

- verl (GRPO) FSDP checkpoints ``<run>/global_step_N/actor``: merged by verl's own model merger
  (``python -m verl.model_merger merge --backend fsdp --local_dir <actor> --target_dir <out>``, docs/protocol.md
  section 8); it writes bf16 weights with the config, processor and tokenizer verl stored beside the shards.
- SFT checkpoints (TRL/transformers ``checkpoint-N`` or the final ``output_dir``): the trained weights with the
  base model's config, generation config, tokenizer, processor and chat template (docs/protocol.md section 9), so the
  merged model behaves like the base model in everything but its weights (TRL edits the saved config's special
  token ids, for one).

After either merge, :func:`check_merged_model` loads the directory with transformers, insists that every weight
was found, that a chat template is present, and that the model generates from the paper's prompt with an image.

CLI: ``python -m medvlthinker.train.merge verl ACTOR_DIR TARGET`` and ``... sft CHECKPOINT BASE_MODEL TARGET``
(``train/merge.sh`` wraps it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from medvlthinker.cli import Group
from medvlthinker.errors import UserError
from medvlthinker.staging import disk_full_named, staged


class MergeError(UserError, RuntimeError):
    """A checkpoint that cannot be merged, or a merged model that fails its check; the message says what to do."""


WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
# Everything except the weights that makes a model directory behave like the base model.
BASE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
    "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
)


# ---------------------------------------------------------------- verl


def resolve_actor_dir(path: str | os.PathLike) -> Path:
    """``global_step_N`` or ``global_step_N/actor`` -> the actor directory, checked for verl's FSDP layout."""
    path = Path(path)
    if (path / "actor").is_dir() and not (path / "fsdp_config.json").exists():
        path = path / "actor"
    if not path.is_dir():
        raise MergeError(f"{path} is not a directory; fix: pass <checkpoint dir>/global_step_N/actor")
    if not (path / "fsdp_config.json").is_file():
        raise MergeError(
            f"{path} has no fsdp_config.json, so it is not a verl FSDP actor checkpoint; "
            "fix: pass <trainer.default_local_dir>/global_step_N/actor"
        )
    shards = sorted(path.glob("model_world_size_*_rank_*.pt"))
    if not shards:
        raise MergeError(
            f"{path} holds no model_world_size_*_rank_*.pt shards; fix: the run saved no model "
            "(checkpoint save_contents must include 'model')"
        )
    if not (path / "huggingface" / "config.json").is_file():
        raise MergeError(f"{path}/huggingface/config.json is missing; verl writes it with every checkpoint")
    return path


def merge_verl_checkpoint(actor_dir: str | os.PathLike, target_dir: str | os.PathLike, *, check: bool = True,
                          overwrite: bool = False) -> Path:
    """Merge a verl FSDP actor checkpoint with verl's model merger into ``target_dir``; then check it.

    The merge is written beside ``target_dir`` and checked there (with ``check``), so a merge that fails (a
    half-written shard, a full disk) or whose model does not load leaves nothing at the target, and a replaced
    model leaves no stale file. An existing ``target_dir`` is an error unless ``overwrite``, before any work.
    """
    actor = resolve_actor_dir(actor_dir)
    target = Path(target_dir)
    if target.exists() and not overwrite:
        raise MergeError(f"{target} already exists; fix: choose another target or pass --overwrite")
    with staged(target, overwrite=True, directory=True) as tmp:
        cmd = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
               "--local_dir", str(actor), "--target_dir", str(tmp)]
        print("+ " + " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise MergeError(f"verl's model merger failed on {actor} (exit {done.returncode}: {last}); nothing was "
                             f"written to {target}; fix: check the checkpoint's shards (a run killed while saving "
                             "leaves them half-written: merge an earlier global_step_N) and the free disk space")
        if check:
            print(f"check: generated {check_merged_model(tmp)!r}", flush=True)
    return target


# ---------------------------------------------------------------- SFT


def _weight_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in WEIGHT_PATTERNS:
        files.extend(sorted(directory.glob(pattern)))
    return files


def _copy_base_files(base_model: str, target: Path) -> None:
    base = Path(base_model)
    if base.is_dir():
        copied = [name for name in BASE_FILES if (base / name).is_file()]
        if "config.json" not in copied:
            raise MergeError(f"base model {base} has no config.json; fix: pass the model SFT started from")
        for name in copied:
            shutil.copy2(base / name, target / name)
        return
    # A Hub name: the files come from the local Hugging Face cache (or the Hub when online).
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    AutoConfig.from_pretrained(base_model).save_pretrained(target)
    try:
        GenerationConfig.from_pretrained(base_model).save_pretrained(target)
    except OSError:
        pass
    AutoProcessor.from_pretrained(base_model).save_pretrained(target)


def merge_sft_checkpoint(
    checkpoint_dir: str | os.PathLike,
    base_model: str,
    target_dir: str | os.PathLike,
    *,
    check: bool = True,
    overwrite: bool = False,
) -> Path:
    """Trained weights of ``checkpoint_dir`` + the base model's config, tokenizer, processor, chat template."""
    ckpt = Path(checkpoint_dir)
    if not ckpt.is_dir():
        raise MergeError(f"SFT checkpoint {ckpt} does not exist; fix: pass <output_dir>/checkpoint-N or <output_dir>")
    weights = _weight_files(ckpt)
    if not weights:
        if list(ckpt.glob("pytorch_model_fsdp_*")):
            raise MergeError(
                f"{ckpt} holds sharded FSDP weights (pytorch_model_fsdp_*/), not a full state dict; fix: "
                f"`accelerate merge-weights {ckpt}/pytorch_model_fsdp_0 <dir>` and merge <dir>, or train with "
                "fsdp_state_dict_type: FULL_STATE_DICT (configs/accelerate/*.yaml do)"
            )
        raise MergeError(f"{ckpt} holds no model*.safetensors; fix: pass a checkpoint-N directory of an SFT run")
    target = Path(target_dir)
    if target.exists() and not overwrite:
        raise MergeError(f"{target} already exists; fix: choose another target or pass --overwrite")
    with disk_full_named(target.parent, "writing the merged model"), \
            staged(target, overwrite=True, directory=True) as tmp:
        for f in weights:
            shutil.copy2(f, tmp / f.name)
        _copy_base_files(base_model, tmp)
        if check:  # before the move: a model that does not load never lands at the target
            print(f"check: generated {check_merged_model(tmp)!r}", flush=True)
    return target


# ---------------------------------------------------------------- the check


def check_merged_model(model_dir: str | os.PathLike, *, max_new_tokens: int = 8) -> str:
    """Load ``model_dir`` with transformers and generate from the paper's prompt with one image.

    Raises :class:`MergeError` when a weight is missing or unexpected, the chat template is gone, or nothing is
    generated. Returns the generated text (noise for a tiny random model, but text).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medvlthinker import prompts
    from medvlthinker.demo import synthetic

    model_dir = Path(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    if not processor.chat_template:
        raise MergeError(f"{model_dir} has no chat template; fix: copy chat_template.jinja from the base model")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model, info = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise MergeError(f"{model_dir}: the weights do not match the architecture: {problems}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    row = synthetic.make_image_rows(n=1, seed=0)[0]
    text = processor.apply_chat_template(prompts.build_messages(row), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=row["images"], return_tensors="pt").to(device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False)
    new_tokens = out[0, inputs["input_ids"].shape[1]:]
    if len(new_tokens) == 0:
        raise MergeError(f"{model_dir}: the model generated no token")
    return processor.tokenizer.decode(new_tokens, skip_special_tokens=False)


# ---------------------------------------------------------------- CLI


@click.group(cls=Group)
def cli():
    """Merge training checkpoints into Hugging Face model directories, then check that they load and generate."""


@cli.command("verl")
@click.argument("actor_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("target_dir", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace an existing TARGET_DIR.")
@click.option("--no_check", is_flag=True, help="Skip the load-and-generate check.")
def verl_command(actor_dir, target_dir, overwrite, no_check):
    """ACTOR_DIR (<run>/global_step_N/actor) -> TARGET_DIR with verl's model merger (checked before it is moved
    into place)."""
    merge_verl_checkpoint(actor_dir, target_dir, check=not no_check, overwrite=overwrite)
    click.echo(f"merged model: {target_dir}")


@cli.command("sft")
@click.argument("checkpoint_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("base_model")
@click.argument("target_dir", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace an existing TARGET_DIR.")
@click.option("--no_check", is_flag=True, help="Skip the load-and-generate check.")
def sft_command(checkpoint_dir, base_model, target_dir, overwrite, no_check):
    """CHECKPOINT_DIR (an SFT checkpoint-N) + BASE_MODEL's config/tokenizer/processor -> TARGET_DIR."""
    merge_sft_checkpoint(checkpoint_dir, base_model, target_dir, check=not no_check, overwrite=overwrite)
    click.echo(f"merged model: {target_dir}")


if __name__ == "__main__":
    cli()
