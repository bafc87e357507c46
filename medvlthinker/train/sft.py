"""Supervised fine-tuning of Qwen2.5-VL with TRL's SFTTrainer, driven by one YAML file (docs/protocol.md section 9).

A config (``configs/sft/*.yaml``) is loaded into :class:`SFTRunConfig`, a typed dataclass: unknown keys are
rejected naming the key and the file, values are type-checked, and ``key=value`` overrides from the command line
go through the same checks. :func:`build_trainer` turns it into a ``trl.SFTTrainer``; :func:`run_sft` trains,
resumes from the newest checkpoint in ``output_dir`` when there is one, and saves the final model with the base
model's processor and chat template.

The data is the converter's output (docs/protocol.md contract 4, ``data_process/convert_sft_format.py``): conversational
prompt-completion rows, so TRL's ``completion_only_loss`` puts the loss on the assistant turn only (with
transformers < 5.18 ``assistant_only_loss`` is not available for image data; this masks the same tokens).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medvlthinker.errors import UserError


class ConfigError(UserError):
    """A config that cannot run; the message names the file, the key and the fix."""


@dataclass
class SFTRunConfig:
    """One SFT experiment. Defaults are the paper's hyperparameters (docs/protocol.md section 9)."""

    model_name_or_path: str = field(metadata={"help": "Base model: a Hub name or a local model directory."})
    train_data: str = field(metadata={"help": "SFT data set directory written by convert_sft_format.py."})
    output_dir: str = field(metadata={"help": "Where checkpoints (checkpoint-N/) and the final model go."})

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of the steps spent warming up."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    global_batch_size: int = field(
        default=16,
        metadata={"help": "Examples per optimizer step over all processes; gradient accumulation is derived from "
                          "it, the per-device batch and the world size (16 = 1 x 8 GPUs x 2 in the paper)."},
    )
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Examples per forward pass per device."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the training set."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs rule)."})
    save_strategy: str = field(default="epoch", metadata={"help": "'epoch', 'steps' or 'no'."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint interval when save_strategy is 'steps'."})
    save_total_limit: int | None = field(default=None, metadata={"help": "Keep at most this many checkpoints."})
    bf16: bool = field(default=True, metadata={"help": "bf16 mixed precision (GPU)."})
    dtype: str = field(
        default="float32",
        metadata={"help": "dtype the weights are loaded in: float32, as the original (fp32 master weights, bf16 "
                          "compute by mixed precision); bfloat16 is an opt-in that halves the weight memory but, "
                          "outside FSDP's mixed precision, makes AdamW update bf16 weights."},
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa', 'eager' or 'flash_attention_2'."})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Recompute activations in backward."})
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate examples to this many tokens (None: never truncate)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N examples."})
    logging_steps: int = field(default=1, metadata={"help": "Log the loss every N optimizer steps."})
    seed: int = field(default=42, metadata={"help": "Seed of the data order and initialisation."})
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={"help": "e.g. ['wandb']."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loader worker processes."})
    resume: bool = field(default=True, metadata={"help": "Resume from the newest checkpoint in output_dir."})
    trainer_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Further trl.SFTConfig fields by name (checked against SFTConfig)."},
    )

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """global_batch_size / (per_device_train_batch_size x world_size); an error when it does not divide."""
        per_step = self.per_device_train_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global_batch_size {self.global_batch_size} is not a multiple of per_device_train_batch_size "
                f"{self.per_device_train_batch_size} x world size {world_size}; fix: change global_batch_size or "
                "per_device_train_batch_size, or launch on a matching number of GPUs"
            )
        return self.global_batch_size // per_step


# Fields of SFTRunConfig that set an SFTConfig field of the same name; trainer_args may not set them again.
_DIRECT_FIELDS = (
    "output_dir", "learning_rate", "lr_scheduler_type", "weight_decay", "adam_beta1",
    "adam_beta2", "max_grad_norm", "per_device_train_batch_size", "num_train_epochs", "max_steps",
    "save_strategy", "save_steps", "save_total_limit", "bf16", "gradient_checkpointing", "max_length",
    "logging_steps", "seed", "report_to", "dataloader_num_workers",
)
_MANAGED_TRAINER_ARGS = (*_DIRECT_FIELDS, "warmup_ratio", "warmup_steps", "gradient_accumulation_steps",
                         "completion_only_loss", "assistant_only_loss", "model_init_kwargs")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """``value`` checked against the annotation ``tp`` (YAML's "1e-5" string is accepted for a float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}; fix: write it as [a, b]")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item_tp, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    hint = ' (YAML reads a bare no/yes/off/on as a boolean: quote it, e.g. "no")' if isinstance(value, bool) else ""
    raise ConfigError(
        f"{source}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}; "
        f"fix: set {key} to a {_type_name(tp)}{hint}"
    )


def _sft_config_field_names() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)}


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> SFTRunConfig:
    """Validate a mapping (a parsed YAML file) into an :class:`SFTRunConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of key: value, got {type(data).__name__}")
    hints = typing.get_type_hints(SFTRunConfig)
    fields = {f.name: f for f in dataclasses.fields(SFTRunConfig)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown}; fix: remove them, or use one of {sorted(fields)} "
            "(other trl.SFTConfig fields go under trainer_args)"
        )
    missing = [
        name for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {missing}; fix: add them to the config")
    values = {k: _coerce(k, v, hints[k], source) for k, v in data.items()}
    extra = values.get("trainer_args", {})
    known = _sft_config_field_names()
    for key in extra:
        if key not in known:
            raise ConfigError(f"{source}: trainer_args.{key} is not a trl.SFTConfig field; fix: remove it")
        if key in _MANAGED_TRAINER_ARGS:
            raise ConfigError(
                f"{source}: trainer_args.{key} is set by this project's config; fix: "
                + (f"set {key} at the top level" if key in _DIRECT_FIELDS else "remove it")
            )
    cfg = SFTRunConfig(**values)
    for key in ("global_batch_size", "per_device_train_batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{source}: {key} must be at least 1")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise ConfigError(f"{source}: warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.save_strategy not in ("epoch", "steps", "no"):
        raise ConfigError(f"{source}: save_strategy must be 'epoch', 'steps' or 'no', got {cfg.save_strategy!r}")
    if cfg.dtype not in ("bfloat16", "float16", "float32", "auto"):
        raise ConfigError(f"{source}: dtype must be bfloat16, float16, float32 or auto, got {cfg.dtype!r}")
    return cfg


_STRING_FIELDS = frozenset(
    name for name, tp in typing.get_type_hints(SFTRunConfig).items() if tp is str or tp == (str | None)
)


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """``["learning_rate=2e-5", "trainer_args.eval_strategy=no"]`` -> a nested mapping (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; fix: write e.g. learning_rate=2e-5")
        key, raw = item.split("=", 1)
        # A string field keeps the text as typed (YAML would read save_strategy=no as False).
        try:
            value = raw if key.strip() in _STRING_FIELDS else (yaml.safe_load(raw) if raw else "")
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        target = out
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | os.PathLike, overrides: typing.Iterable[str] = ()) -> SFTRunConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate. Raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; fix: pass one of configs/sft/*.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    overrides = list(overrides)
    data = _merge(data, parse_overrides(overrides))
    source = str(path) + (f" (with overrides {overrides})" if overrides else "")
    return config_from_dict(data, source)


def world_size() -> int:
    """Processes in this run (``WORLD_SIZE`` as set by accelerate/torchrun; 1 when launched plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_sft_config(cfg: SFTRunConfig, *, n_processes: int | None = None):
    """The ``trl.SFTConfig`` of a run."""
    from trl import SFTConfig

    n = n_processes or world_size()
    kwargs = {name: getattr(cfg, name) for name in _DIRECT_FIELDS}
    # transformers 5 deprecates warmup_ratio; a float warmup_steps below 1 is the same ratio.
    kwargs["warmup_steps"] = cfg.warmup_ratio
    if cfg.gradient_checkpointing:
        kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    kwargs.update(cfg.trainer_args)
    return SFTConfig(
        **kwargs,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps(n),
        # Prompt-completion data: the loss covers the completion (the assistant turn) only.
        completion_only_loss=True,
    )


def load_train_dataset(cfg: SFTRunConfig, *, check_images: bool = False, num_proc: int | None = None):
    """The SFT data set of ``cfg.train_data`` (checked against contract 4), first ``max_train_samples`` rows.

    It is read through :func:`medvlthinker.data.load_disk_dataset`, so TRL's tokenisation caches never land in
    the data set's folder (which may be read-only). With ``check_images`` every kept row is checked and its images
    decoded (:func:`medvlthinker.converters.sft_format.check_sft_rows`).
    """
    import datasets

    from medvlthinker.converters.sft_format import check_sft_dataset, check_sft_rows
    from medvlthinker.data import load_disk_dataset

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
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


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
"""``model_name_or_path: tiny`` names the tiny random Qwen2.5-VL of :func:`medvlthinker.tiny.tiny_model_path`."""


def resolve_model_path(name: str) -> str:
    if name == TINY_MODEL:
        from medvlthinker.tiny import tiny_model_path

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
    """The newest ``checkpoint-N`` directory in ``output_dir``, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def run_sft(cfg: SFTRunConfig, *, train_dataset=None, callbacks=None):
    """Train; resume from the newest checkpoint when ``cfg.resume``; save the final model and processor.

    Returns the trainer (its ``state.log_history`` holds the logged losses).
    """
    trainer = build_trainer(cfg, train_dataset=train_dataset, callbacks=callbacks)
    resume_from = last_checkpoint(cfg.output_dir) if cfg.resume else None
    if resume_from and trainer.is_world_process_zero():
        print(f"resuming from {resume_from}")
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(cfg.output_dir)  # also saves the processor (config, tokenizer, chat template)
    return trainer


# ---------------------------------------------------------------- throughput


# Dense bf16 peak of one device, for MFU (vendor datasheets, no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "H20": 148e12, "L40S": 362e12}


def training_flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per text token of a Qwen2.5-VL language model: 6 x (non-embedding + LM-head params)
    for the matrix multiplies, plus 12 x layers x hidden x seq_len for attention scores (the PaLM estimate)."""
    text = config.get_text_config()
    hidden, layers = text.hidden_size, text.num_hidden_layers
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = hidden // heads
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o, k, v projections
    mlp = 3 * hidden * text.intermediate_size
    matmul_params = layers * (attn + mlp) + hidden * text.vocab_size  # the LM head is a matmul too
    return 6.0 * matmul_params + 12.0 * layers * hidden * seq_len


def peak_flops(device: str) -> float | None:
    """bf16 peak of the current GPU from :data:`PEAK_BF16_FLOPS`, or None (CPU, unknown GPU)."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def benchmark_sft_step(
    model_dir: str,
    *,
    seq_len: int = 2048,
    batch_size: int = 1,
    steps: int = 5,
    warmup: int = 2,
    random_weights: bool = False,
    gradient_checkpointing: bool = True,
    peak: float | None = None,
) -> dict[str, Any]:
    """Tokens/s and MFU of full training steps (forward, backward, AdamW with the paper's betas) on one device.

    Text-only sequences of ``seq_len`` random token ids (throughput does not depend on the ids or the weights);
    ``random_weights`` builds the model from ``model_dir``'s config.json alone (the config-only dirs in
    configs/models). Returns the figures as a dict.
    """
    import time

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = AutoConfig.from_pretrained(model_dir)
    if random_weights:
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    else:
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    model.to(device).train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4)
    vocab = config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(vocab, 151643), (batch_size, seq_len), generator=gen).to(device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    tokens_per_s = batch_size * seq_len * steps / elapsed
    flops_per_token = training_flops_per_token(config, seq_len)
    peak = peak if peak is not None else peak_flops(device)
    return {
        "model_dir": str(model_dir),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "params": sum(p.numel() for p in model.parameters()),
        "seq_len": seq_len,
        "batch_size": batch_size,
        "steps": steps,
        "gradient_checkpointing": gradient_checkpointing,
        "seconds_per_step": elapsed / steps,
        "tokens_per_s": tokens_per_s,
        "tflops_per_s": tokens_per_s * flops_per_token / 1e12,
        "mfu": tokens_per_s * flops_per_token / peak if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
