"""The SFT config: TRL's ``SFTConfig`` with the paper's defaults (docs/protocol.md section 9) and the project's fields.

:class:`SFTRunConfig` *is* the ``trl.SFTConfig`` the trainer gets: every TRL/transformers field is a key of a
config file, and each carries its help text (``python train/sft/train_sft.py --help``). The project adds the fields
a run needs beyond TRL's (the base model, the data, the global batch, the weights' dtype, resuming) and redeclares
the ones whose paper value differs from TRL's default.

A config file (``configs/sft/*.yaml``) plus ``key=value`` overrides is loaded by :func:`load_config`: the project's
checks run on the plain mapping first (an unknown key names the file, the key and the nearest known key; a value of
the wrong type names the key and the type; fields the project derives are refused), then TRL's parser
(``trl.TrlParser``) builds the dataclass, whose ``__post_init__`` is transformers' own validation. A
``trainer_args:`` mapping, the spelling of older configs, is still read as top-level keys, with a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import types
import typing
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import SFTConfig

from medvlthinker.errors import UserError


class ConfigError(UserError):
    """A config that cannot run; the message names the file, the key and the fix."""


def world_size() -> int:
    """Processes in this run (``WORLD_SIZE`` as set by accelerate/torchrun; 1 when launched plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    if "default_factory" in kwargs:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text}, **kwargs)


@dataclass
class SFTRunConfig(SFTConfig):
    """One SFT experiment: ``trl.SFTConfig`` with the paper's hyperparameters as defaults (docs/protocol.md
    section 9) and the project's own fields."""

    # ---- the project's fields (required ones are checked by load_config: dataclass order wants defaults here)
    model_name_or_path: str | None = _help("Base model: a Hub name, a local model directory, or 'tiny'.", None)
    train_data: str | None = _help("SFT data set directory written by convert_sft_format.py.", None)
    global_batch_size: int = _help(
        "Examples per optimizer step over all processes; gradient_accumulation_steps is derived from it, the "
        "per-device batch and the number of processes (16 = 1 x 8 GPUs x 2 in the paper).", 16)
    num_processes: int | None = _help("Processes the batch is split over (default: WORLD_SIZE, as set by "
                                      "accelerate/torchrun; 1 when launched plainly).", None)
    dtype: str = _help(
        "dtype the weights are loaded in: float32, as the original (fp32 master weights, bf16 compute by mixed "
        "precision); bfloat16 is an opt-in that halves the weight memory but, outside FSDP's mixed precision, "
        "makes AdamW update bf16 weights.", "float32")
    attn_implementation: str = _help("'sdpa', 'eager' or 'flash_attention_2'.", "sdpa")
    max_train_samples: int | None = _help("Train on the first N examples.", None)
    allow_outside_images: bool = _help("Read image paths of train_data that lead outside its folder (only for a "
                                       "data set you trust).", False)
    resume: bool = _help("Resume from the newest checkpoint in output_dir.", True)

    # ---- TRL/transformers fields whose paper value differs from the library default
    output_dir: str | None = _help("Where checkpoints (checkpoint-N/) and the final model go.", None)
    learning_rate: float = _help("Peak learning rate.", 1e-5)
    lr_scheduler_type: str = _help("transformers scheduler name.", "cosine")
    warmup_ratio: float | None = _help("Fraction of the steps spent warming up (given to transformers as a "
                                       "fractional warmup_steps, which transformers 5 reads as this ratio).", 0.05)
    weight_decay: float = _help("AdamW weight decay.", 1e-4)
    adam_beta2: float = _help("AdamW beta2.", 0.95)
    per_device_train_batch_size: int = _help("Examples per forward pass per device.", 1)
    num_train_epochs: float = _help("Epochs over the training set.", 5.0)
    save_strategy: str = _help("'epoch', 'steps' or 'no'.", "epoch")
    bf16: bool = _help("bf16 mixed precision (GPU).", True)
    gradient_checkpointing: bool = _help("Recompute activations in backward (without reentrant autograd).", True)
    max_length: int | None = _help("Truncate examples to this many tokens (None: never truncate).", None)
    logging_steps: float = _help("Log the loss every N optimizer steps.", 1)
    report_to: list[str] = _help("e.g. ['wandb'].", default_factory=lambda: ["none"])
    completion_only_loss: bool | None = _help(
        "Loss on the completion (the assistant turn) only; the project's prompt-completion data needs it.", True)

    def __post_init__(self) -> None:
        n = self.num_processes or world_size()
        self.gradient_accumulation_steps = accumulation_steps(self.global_batch_size,
                                                              self.per_device_train_batch_size, n)
        if self.warmup_ratio is not None:
            # transformers 5 deprecates warmup_ratio; a float warmup_steps below 1 is the same ratio
            self.warmup_steps, self.warmup_ratio = self.warmup_ratio, None
        if self.gradient_checkpointing and self.gradient_checkpointing_kwargs is None:
            self.gradient_checkpointing_kwargs = {"use_reentrant": False}
        super().__post_init__()


def accumulation_steps(global_batch_size: int, per_device: int, processes: int) -> int:
    """global_batch_size / (per_device x processes); a :class:`ConfigError` when it does not divide.

    >>> accumulation_steps(16, 1, 8), accumulation_steps(16, 1, 16)
    (2, 1)
    """
    per_step = per_device * processes
    if global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size {global_batch_size} is not a multiple of per_device_train_batch_size {per_device} x "
            f"world size {processes}; fix: change global_batch_size or per_device_train_batch_size, or launch on a "
            "matching number of GPUs"
        )
    return global_batch_size // per_step


REQUIRED = ("model_name_or_path", "train_data", "output_dir")

# Fields the project sets from others; a config may not set them itself.
DERIVED = {
    "gradient_accumulation_steps": "derived from global_batch_size; set global_batch_size",
    "warmup_steps": "set warmup_ratio",
    "completion_only_loss": "the loss covers the assistant turn by construction; remove it",
    "assistant_only_loss": "the loss covers the assistant turn by construction; remove it",
    "model_init_kwargs": "the model is loaded by the project; set dtype or attn_implementation",
}

# Fields a config sets at the top level: the project's and the paper's (a trainer_args entry may not set them).
TOP_LEVEL = frozenset(SFTRunConfig.__annotations__) | {
    "adam_beta1", "max_grad_norm", "max_steps", "save_steps", "save_total_limit", "seed", "dataloader_num_workers",
}

_CHOICES = {
    "save_strategy": ("epoch", "steps", "no"),
    "dtype": ("bfloat16", "float16", "float32", "auto"),
}


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SFTRunConfig) if f.init}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _is_string(tp: Any) -> bool:
    """A field whose command-line value is kept as typed (YAML would read save_strategy=no as False)."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    args = [a for a in args if a is not type(None)]
    return bool(args) and all(a is str or (isinstance(a, type) and issubclass(a, enum.Enum)) for a in args)


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
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}; fix: write it as [a, b]")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(f"{key}[{i}]", v, item_tp, source) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
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
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        if isinstance(value, str):
            return value
    else:  # a type transformers checks itself (Literal, a config class, ...)
        return value
    hint = ' (YAML reads a bare no/yes/off/on as a boolean: quote it, e.g. "no")' if isinstance(value, bool) else ""
    raise ConfigError(
        f"{source}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}; "
        f"fix: set {key} to a {_type_name(tp)}{hint}"
    )


def _flatten_trainer_args(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``trainer_args: {k: v}`` (the older spelling of further SFTConfig fields) as top-level keys."""
    extra = data.pop("trainer_args", None) or {}
    if extra:
        warnings.warn(f"{source}: trainer_args is deprecated; write its keys ({', '.join(map(str, extra))}) at the "
                      "top level of the config (or key=value instead of trainer_args.key=value)", FutureWarning,
                      stacklevel=2)
    if not isinstance(extra, dict):
        raise ConfigError(f"{source}: trainer_args must be a mapping, got {extra!r}")
    for key, value in extra.items():
        if key not in SFTConfig.__dataclass_fields__:
            raise ConfigError(f"{source}: trainer_args.{key} is not a trl.SFTConfig field; fix: remove it")
        if key in DERIVED or key in TOP_LEVEL:
            raise ConfigError(
                f"{source}: trainer_args.{key} is set by this project's config; fix: "
                + (f"set {key} at the top level" if key in TOP_LEVEL and key not in DERIVED else "remove it")
            )
        if key in data:
            raise ConfigError(f"{source}: {key} is set twice (top level and trainer_args); fix: keep one")
        data[key] = value
    return data


def check_mapping(data: Any, source: str = "<config>") -> dict[str, Any]:
    """The project's checks of a parsed config mapping; returns the typed values (keys of :class:`SFTRunConfig`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of key: value, got {type(data).__name__}")
    data = _flatten_trainer_args(dict(data), source)
    fields = _fields()
    unknown = [k for k in data if k not in fields]
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(fields), n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"{source}: unknown key(s) {unknown}{hint}; fix: correct or remove them (the keys: "
                          "python train/sft/train_sft.py --help)")
    derived = [k for k in data if k in DERIVED]
    if derived:
        raise ConfigError(f"{source}: {derived[0]} is set by this project; fix: {DERIVED[derived[0]]}")
    missing = [name for name in REQUIRED if data.get(name) is None]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {missing}; fix: add them to the config")
    hints = typing.get_type_hints(SFTRunConfig)
    values = {k: _coerce(k, v, hints[k], source) for k, v in data.items()}
    for key in ("global_batch_size", "per_device_train_batch_size"):
        if values.get(key, 1) < 1:
            raise ConfigError(f"{source}: {key} must be at least 1")
    warmup = values.get("warmup_ratio", 0.0)
    if warmup is not None and not 0.0 <= warmup < 1.0:
        raise ConfigError(f"{source}: warmup_ratio must be in [0, 1), got {warmup}")
    for key, allowed in _CHOICES.items():
        if key in values and values[key] not in allowed:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(allowed)}, got {values[key]!r}")
    for key in ("learning_rate", "num_train_epochs"):
        if key in values and values[key] is not None and not values[key] > 0:
            raise ConfigError(f"{source}: {key} must be above 0, got {values[key]!r}; fix: set the paper's value "
                              f"({getattr(SFTRunConfig, key)!r}) or another positive number")
    if values.get("attn_implementation") == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError(f"{source}: attn_implementation is flash_attention_2 but the flash-attn package is not "
                              "installed; fix: pip install flash-attn (GPU), or use attn_implementation: sdpa")
    return values


def parser():
    """TRL's parser over :class:`SFTRunConfig` (its ``format_help`` lists every key with its help)."""
    from trl import TrlParser

    return TrlParser(SFTRunConfig)


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> SFTRunConfig:
    """Check a mapping (a parsed YAML file) and build the :class:`SFTRunConfig` with TRL's parser."""
    values = check_mapping(data, source)
    # the world size must divide the batch before transformers' own checks run, so its message comes first
    accumulation_steps(values.get("global_batch_size", SFTRunConfig.global_batch_size),
                       values.get("per_device_train_batch_size", SFTRunConfig.per_device_train_batch_size),
                       values.get("num_processes") or world_size())
    hf = parser()
    unused = hf.set_defaults_with_config(**values)
    if unused:  # check_mapping knows the same keys; a difference is a bug, not a user's mistake
        raise RuntimeError(f"TrlParser left {unused} unused")
    try:
        (cfg,) = hf.parse_args_into_dataclasses(args=[])
    except ConfigError:
        raise
    except ValueError as exc:
        text = " ".join(str(exc).split())
        fix = "add use_cpu=true to train on CPU, or run on a GPU" if "bf16" in text else "correct the config"
        raise ConfigError(f"{source}: {text}; fix: {fix}") from None
    return cfg


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["learning_rate=2e-5", "eval_strategy=no"]`` -> a nested mapping (values parsed as YAML)."""
    hints = typing.get_type_hints(SFTRunConfig)
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; fix: write e.g. learning_rate=2e-5")
        key, raw = item.split("=", 1)
        key = key.strip()
        leaf_name = key.rsplit(".", 1)[-1]
        try:
            keep_text = leaf_name in hints and _is_string(hints[leaf_name])
            value = raw if keep_text else (yaml.safe_load(raw) if raw else "")
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        target = out
        *parents, leaf = key.split(".")
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


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> SFTRunConfig:
    """Read a YAML config, apply ``key=value`` overrides, check, build. Raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; fix: pass one of configs/sft/*.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    overrides = list(overrides)
    if isinstance(data, dict):
        data = _merge(data, parse_overrides(overrides))
    source = str(path) + (f" (with overrides {overrides})" if overrides else "")
    return config_from_dict(data, source)


def build_sft_config(cfg: SFTRunConfig, *, n_processes: int | None = None) -> SFTRunConfig:
    """The trainer arguments of ``cfg`` for ``n_processes`` (``cfg`` itself: it is a ``trl.SFTConfig``)."""
    if n_processes is None or n_processes == (cfg.num_processes or world_size()):
        return cfg
    accumulation_steps(cfg.global_batch_size, cfg.per_device_train_batch_size, n_processes)
    return dataclasses.replace(cfg, num_processes=n_processes)


def project_values(cfg: SFTRunConfig) -> dict[str, Any]:
    """The project's own fields and the paper-default fields of ``cfg`` (what ``--print_config`` shows)."""
    resolved = cfg.to_dict()  # plain values: transformers turns its enums back into their strings
    # warmup_ratio has become warmup_steps by now (SFTRunConfig.__post_init__)
    names = ["warmup_steps" if name == "warmup_ratio" else name for name in SFTRunConfig.__annotations__]
    return {name: resolved[name] for name in names}
