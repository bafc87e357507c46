"""Launch verl's GRPO trainer on a paper RL config, with optional overlays: what ``train/rl/train.sh`` runs.

    python -m medvlthinker.train.rl configs/rl/qwen2.5-vl-3b_rl_pmc.yaml [configs/rl/overlays/cpu.yaml] [key=value ...]

An overlay is a YAML file in ``configs/rl/overlays/`` merged over the paper config (Hydra's ``+overlays=NAME``), such
as the CPU-sized twin ``cpu.yaml``. Before verl starts, the launcher checks the data files and the checkpoint
folder (the preflight's cheap checks, run even with ``SKIP_PREFLIGHT=1``), exports the config's
``ray_kwargs.ray_init.runtime_env.env_vars`` into its own environment (verl hands them to every Ray worker; the
driver needs the same, e.g. ``VERL_PLATFORM``) and installs the 3-D position-id fix in the driver; then it runs
verl's own ``main_ppo`` with the same config and overrides.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from medvlthinker.cli import entry_point
from medvlthinker.errors import UserError

OVERLAY_GROUP = "overlays"


class LaunchError(UserError):
    """A launcher argument that cannot work; the message names it and the fix."""


def split_arguments(config: str | os.PathLike, args: list[str] | tuple[str, ...]) -> list[str]:
    """Hydra overrides for ``args``: overlay files become one ``+overlays=[...]`` selection, the rest pass through;
    an argument that is neither (a path with a space the shell split, an option) is a :class:`LaunchError`.

    >>> split_arguments("configs/rl/qwen2.5-vl-3b_rl_pmc.yaml", ["configs/rl/overlays/cpu.yaml", "data.seed=1"])
    ['+overlays=[cpu]', 'data.seed=1']
    """
    group_dir = (Path(config).resolve().parent / OVERLAY_GROUP)
    overlays, overrides = [], []
    for i, arg in enumerate(args):
        if "=" not in arg and arg.endswith((".yaml", ".yml")):
            path = Path(arg).resolve()
            if not path.is_file():
                raise LaunchError(f"overlay {arg} not found; fix: pass a file of {group_dir}")
            if path.parent != group_dir:
                raise LaunchError(f"overlay {arg} is not in {group_dir}; fix: put it there (overlays are a Hydra "
                                  f"config group next to the paper configs)")
            check_overlay_header(path)
            overlays.append(path.stem)
        elif "=" not in arg:
            before = args[i - 1] if i else ""
            hint = ("", "write Hydra overrides as key=value; the script's own options are listed by --help")
            if "=" in before and (before.count("[") > before.count("]") or before.count("'") % 2):
                # the shell split an unquoted value at a space: the previous argument opened a list or a quote
                hint = (" (a value with a space is split in two by the shell)",
                        f"quote the whole override, e.g. '{before} {arg}'")
            raise LaunchError(arg, f"neither key=value nor an overlay .yaml file{hint[0]}", fix=hint[1])
        else:
            overrides.append(arg)
    return ([f"+{OVERLAY_GROUP}=[{','.join(overlays)}]"] if overlays else []) + overrides


PACKAGE_HEADER = "# @package _global_"


def check_overlay_header(path: Path) -> None:
    """An overlay's keys are the paper config's only under Hydra's ``# @package _global_`` header line; without it
    Hydra nests them under ``overlays.`` and verl's schema refuses the unknown ``overlays`` key."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("#"):
            break
        if line.split("#", 1)[1].split() == ["@package", "_global_"]:
            return
    raise LaunchError(str(path), f"the overlay lacks Hydra's '{PACKAGE_HEADER}' header, so its keys would land "
                      "under overlays.* instead of the config's own", fix=f"add '{PACKAGE_HEADER}' as its first line")


def main(argv: list[str] | None = None) -> None:
    config, overrides = _prepare(argv)
    from verl.trainer.main_ppo import main as main_ppo

    sys.argv = [sys.argv[0], f"--config-path={config.parent}", f"--config-name={config.stem}", *overrides]
    main_ppo()


@entry_point
def _prepare(argv: list[str]) -> tuple[Path, list[str]]:
    """The config and overrides, composed once and checked, and this driver's environment; a mistake in them ends as
    one line (verl's own errors during training keep their traceback)."""
    if not argv or not Path(argv[0]).is_file():
        raise LaunchError(argv[0] if argv else None, "no such config file",
                          fix="python -m medvlthinker.train.rl CONFIG.yaml [OVERLAY.yaml ...] [key=value ...]")
    config = Path(argv[0]).resolve()
    overrides = split_arguments(config, argv[1:])

    from medvlthinker.train.preflight import PreflightReport, check_data_files, check_run_layout, cpu_profile
    from medvlthinker.train.preflight_config import compose_config, runtime_env_vars

    cfg = compose_config(config, overrides)
    # the preflight's cheap checks run even when it is skipped: an empty or too small data set, an unwritable
    # checkpoint folder or the CPU profile on several nodes would otherwise stop verl only after its start-up
    check_run_layout(cfg, PreflightReport(str(config)), cpu=cpu_profile(cfg))
    check_data_files(cfg, PreflightReport(str(config)))
    os.environ.update(runtime_env_vars(cfg))
    from medvlthinker.compat import verl_cpu, verl_fixes

    verl_cpu.install_all()  # what the new environment makes due in this driver (verl was imported to compose)
    verl_fixes.install_all()
    return config, overrides


if __name__ == "__main__":
    main()
