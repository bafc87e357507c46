"""RL configs checked key by key against verl's own config, from the files as well as the overrides.

Hydra merges the project's YAML files over verl's ``ppo_trainer`` without complaint about keys verl does not have:
``data.shufle: false`` in a file silently keeps verl's ``shuffle: true`` (and with it the easy-to-hard order is
lost). Misspelled command-line overrides are caught by Hydra; keys in files are caught here. The schema is verl's
``ppo_trainer`` itself: each section's keys, plus, for a section that names a dataclass in ``_target_``, that
dataclass's fields (verl reads some fields that its YAML does not list, e.g. ``rollout.enable_sleep_mode``).
Sections whose verl value is an empty mapping or null are open (model ``override_config``, engine kwargs), and so are
the keyword arguments handed to Ray (``ray_kwargs.ray_init``).

Types: a value must have the kind of verl's default (number, boolean, string, list, mapping); a null default
accepts anything. ``trainer.total_epochs: one`` or ``trainer.save_freq: [100]`` are errors naming the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from pathlib import Path
from typing import Any

import yaml

OPEN_SECTIONS = ("ray_kwargs.ray_init",)
"""Sections whose keys are another library's keyword arguments: anything goes below them."""


@functools.lru_cache(maxsize=1)
def verl_defaults() -> dict:
    """verl's ``ppo_trainer`` config as a plain mapping (interpolations unresolved)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        cfg = compose(config_name="ppo_trainer")
    return OmegaConf.to_container(cfg, resolve=False)


@functools.cache
def _dataclass_fields(target: str) -> dict[str, Any]:
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception:  # an unimportable target: fall back to the YAML's keys
        return {}
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _kind(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return None if value.startswith("${") or value == "???" else "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return None


def _compatible(expected: str, got: str) -> bool:
    # a string default also takes a number or a list (verl reads file keys as a path or a list of paths); nothing
    # else changes kind
    return expected == got or (expected == "string" and got in ("number", "list"))


@dataclasses.dataclass
class SchemaProblem:
    key: str
    message: str
    source: str = "the command line"

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}"


def check(composed: dict, defaults: dict | None = None) -> list[SchemaProblem]:
    """Every unknown key and wrong-kind value of ``composed`` (a resolved plain mapping) against verl's defaults."""
    defaults = verl_defaults() if defaults is None else defaults
    problems: list[SchemaProblem] = []

    def walk(node: dict, base: Any, path: str, open_: bool) -> None:
        fields = _dataclass_fields(base["_target_"]) if isinstance(base, dict) and "_target_" in base else {}
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if open_ or here in OPEN_SECTIONS:
                continue
            if not isinstance(base, dict):
                continue
            if key in base:
                expected, got = _kind(base[key]), _kind(value)
                if isinstance(value, dict) and isinstance(base[key], dict):
                    walk(value, base[key], here, open_=not base[key])
                elif expected and got and not _compatible(expected, got):
                    problems.append(SchemaProblem(here, f"expected a {expected} (verl's default is {base[key]!r}), "
                                                        f"got {value!r}; fix: give a {expected}"))
                continue
            if key in fields:
                continue
            known = sorted(set(base) | set(fields) - {"_target_"})
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {path + '.' if path else ''}{near[0]}?" if near else "verl has no such key"
            problems.append(SchemaProblem(here, f"unknown key ({hint}); fix: correct or remove it (verl's keys: "
                                                f"verl/trainer/config/_generated_ppo_trainer.yaml)"))

    walk(composed, defaults, "", open_=False)
    return problems


def _lookup(tree: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def attribute(problems: list[SchemaProblem], files: list[str | Path],
              overrides: list[str] | tuple[str, ...] = ()) -> list[SchemaProblem]:
    """Name, for each problem, where its key was set: an override (merged last), else the last of ``files``."""
    from_command_line = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    loaded = []
    for path in files:
        try:
            loaded.append((str(path), yaml.safe_load(Path(path).read_text()) or {}))
        except (OSError, yaml.YAMLError):
            continue
    for problem in problems:
        if problem.key in from_command_line:
            continue
        for path, tree in reversed(loaded):
            if _lookup(tree, problem.key):
                problem.source = path
                break
    return problems


def config_files(config: str | Path, overlays: list[str] = ()) -> list[Path]:
    """The project's YAML files a config composes, in merge order (verl's own, named ``/...``, left out)."""
    root = Path(config).resolve().parent
    order: list[Path] = []

    def visit(path: Path) -> None:
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return
        entries = [e for e in tree.get("defaults") or [] if isinstance(e, str)]
        if "_self_" not in entries:
            entries.append("_self_")
        for entry in entries:
            if entry == "_self_":
                order.append(path)
            elif not entry.startswith("/"):
                visit(root / f"{entry}.yaml")

    visit(Path(config).resolve())
    order.extend(root / "overlays" / f"{name}.yaml" for name in overlays)
    return order
