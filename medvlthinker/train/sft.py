"""Supervised fine-tuning of Qwen2.5-VL with TRL's SFTTrainer, driven by one YAML file (docs/protocol.md section 9).

The config is :class:`medvlthinker.train.sft_config.SFTRunConfig`, a ``trl.SFTConfig`` with the paper's defaults,
loaded and checked by :func:`~medvlthinker.train.sft_config.load_config`. This module checks what a run can check
before the model loads (:func:`preflight`), builds the ``trl.SFTTrainer`` (:func:`build_trainer`) and trains
(:func:`run_sft`): it resumes from the newest complete checkpoint in ``output_dir`` when it was written by the same
run (:mod:`medvlthinker.train.sft_resume`) and saves the final model with the base model's processor and chat
template.

The data is the converter's output (docs/protocol.md contract 4, ``data_process/convert_sft_format.py``): conversational
prompt-completion rows, so TRL's ``completion_only_loss`` puts the loss on the assistant turn only (with
transformers < 5.18 ``assistant_only_loss`` is not available for image data; this masks the same tokens).
"""

from __future__ import annotations

import os
from pathlib import Path

from medvlthinker import env
from medvlthinker.staging import disk_full_named
from medvlthinker.train.sft_config import ConfigError, SFTRunConfig, build_sft_config
from medvlthinker.train.sft_resume import last_complete_checkpoint, prepare_output_dir


def load_train_dataset(cfg: SFTRunConfig, *, check_images: bool = False, num_proc: int | None = None):
    """The SFT data set of ``cfg.train_data`` (checked against contract 4), first ``max_train_samples`` rows.

    It is read through :func:`medvlthinker.data.load_disk_dataset`, so TRL's tokenisation caches never land in
    the data set's folder (which may be read-only). With ``check_images`` every kept row is checked and its images
    decoded (:func:`medvlthinker.converters.sft_format.check_sft_rows`).
    """
    import datasets

    from medvlthinker.converters.sft_format import check_sft_dataset, check_sft_rows
    from medvlthinker.data import load_disk_dataset
    from medvlthinker.data.loading import check_image_paths

    path = Path(cfg.train_data)
    if not path.exists():
        raise ConfigError(
            f"train_data {path} does not exist; fix: build it with data_process/convert_sft_format.py "
            "or point train_data at its output directory"
        )
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise ConfigError(
            f"train_data {path} is not a save_to_disk data set (no state.json); fix: point train_data at the output "
            "directory of data_process/convert_sft_format.py"
        )
    try:
        ds = load_disk_dataset(path, f"train_data {path}")
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ConfigError(f"train_data {path} is a DatasetDict without a 'train' split ({list(ds)}); fix: save "
                              "the SFT set with a 'train' split or as one Dataset")
        ds = ds["train"]
    where = f"train_data {path}"
    check_sft_dataset(ds, where=where)
    check_image_paths(ds, [path], allow_outside=cfg.allow_outside_images, source=where)
    if cfg.max_train_samples is not None:
        if cfg.max_train_samples < 1:
            raise ConfigError(f"max_train_samples is {cfg.max_train_samples}, which keeps no rows; fix: set it to at "
                              "least 1 or remove it")
        ds = ds.select(range(min(cfg.max_train_samples, len(ds))))
    if check_images:
        check_sft_rows(ds, where, num_proc=num_proc)
    return ds


def check_output_dir(cfg: SFTRunConfig) -> Path:
    """``output_dir`` created if needed and writable; raises :class:`ConfigError` naming it otherwise."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file; fix: point output_dir at a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output_dir {out} cannot be created ({exc.strerror}); fix: choose a writable place"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir {out} is not writable; fix: choose a writable place or fix its permissions")
    return out


def check_model_path(cfg: SFTRunConfig) -> None:
    """A local ``model_name_or_path`` must be a model directory (config.json); a Hub name is left to transformers."""
    name = cfg.model_name_or_path
    if name == TINY_MODEL:
        return
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(
            f"model_name_or_path {name}: no model directory there (no config.json); fix: point it at a model "
            "directory or a Hugging Face model name such as Qwen/Qwen2.5-VL-3B-Instruct"
        )


def is_main_process() -> bool:
    return env.integer("RANK") == 0


def preflight(cfg: SFTRunConfig, *, check_images: bool | None = None):
    """Everything a run can check before the model loads (minutes at 7B): the model path, the output directory,
    the data set's path, columns and rows, and, on the main process, every image decoded. Returns the data set.

    ``check_images`` defaults to the main process only: with several processes the launcher stops them all when
    it fails, and the images are decoded once instead of once per GPU.
    """
    check_model_path(cfg)
    check_output_dir(cfg)
    if check_images is None:
        check_images = is_main_process()
    return load_train_dataset(cfg, check_images=check_images, num_proc=cfg.dataloader_num_workers or None)


TINY_MODEL = "tiny"
"""``model_name_or_path: tiny`` names the tiny random Qwen2.5-VL of :func:`medvlthinker.demo.tiny.tiny_model_path`."""


def resolve_model_path(name: str) -> str:
    if name == TINY_MODEL:
        from medvlthinker.demo.tiny import tiny_model_path

        return str(tiny_model_path())
    return name


def load_model_and_processor(cfg: SFTRunConfig):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model_path(cfg.model_name_or_path)
    dtype = cfg.dtype if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype, attn_implementation=cfg.attn_implementation
    )
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def build_trainer(cfg: SFTRunConfig, *, train_dataset=None, callbacks=None):
    """A ready ``trl.SFTTrainer`` for ``cfg`` (the data set is loaded from ``cfg.train_data`` unless given)."""
    from trl import SFTTrainer

    from medvlthinker.compat.cpu_allocator import keep_freed_memory_on_cpu

    keep_freed_memory_on_cpu()  # on a CPU, half of each step would be the kernel refilling freed logits' pages
    # The data and the output directory are checked before the model loads, so a bad path fails in seconds.
    ds = train_dataset if train_dataset is not None else preflight(cfg)
    model, processor = load_model_and_processor(cfg)
    return SFTTrainer(
        model=model,
        args=build_sft_config(cfg),
        train_dataset=ds,
        processing_class=processor,
        callbacks=callbacks,
    )


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` directory in ``output_dir``, or None (incomplete ones are skipped)."""
    return last_complete_checkpoint(output_dir)


def run_sft(cfg: SFTRunConfig, *, train_dataset=None, callbacks=None, overwrite: bool = False):
    """Train; resume from the newest complete checkpoint when ``cfg.resume``; save the final model and processor.

    Before the model loads, ``output_dir`` is checked against this run's identity
    (:func:`medvlthinker.train.sft_resume.prepare_output_dir`): checkpoints of another run stop it, unless
    ``overwrite`` removes them. A full disk at a save is one line naming the folder and its free space.
    Returns the trainer (its ``state.log_history`` holds the logged losses).
    """
    ds = train_dataset if train_dataset is not None else preflight(cfg)
    resume_from = prepare_output_dir(cfg, ds, overwrite=overwrite, main_process=is_main_process())
    trainer = build_trainer(cfg, train_dataset=ds, callbacks=callbacks)
    if resume_from and trainer.is_world_process_zero():
        print(f"resuming from {resume_from}")
    with disk_full_named(cfg.output_dir, "saving a checkpoint or the model"):
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model(cfg.output_dir)  # also saves the processor (config, tokenizer, chat template)
    return trainer
