"""What an output directory already holds, checked before a run adds to it or replaces it.

Resume appends to the records already there, so a rerun must be the same run: the same model (and model config),
data set, subset, size, prompt and sampling settings. The run's fingerprint is every setting of
:class:`~medvlthinker.inference.runner.RunConfig` that can change a record, plus the model config's hash and the
number of rows; settings that only change how the work is spread or paced (``dp_size``, ``window``, ``ray``, ...)
are left out, so a resume may use another GPU count. A rerun whose fingerprint differs from the one stored in
``args.json`` stops before generating anything and before ``args.json`` is rewritten, naming the settings that
differ.

``--overwrite`` sets the old outputs aside (in a hidden folder of the output directory) instead of deleting them,
after the data set has been validated, and puts them back if the new run fails; they are deleted only once the new
run has written its records.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from medvlthinker.errors import UserError
from medvlthinker.inference.records import ACCURACY_FILE, ARGS_FILE, RESULTS_FILE, shard_files

EXECUTION_SETTINGS = frozenset({
    "output_dir", "overwrite", "progress", "dp_size", "tp_size", "node_size", "node_rank", "window", "batch_size",
    "gpu_memory_utilization", "engine_kwargs", "ray", "ray_address", "api_base", "api_key_env",
    "allow_outside_images",
})
"""RunConfig fields that change how a run is executed, not what its records hold: free to change on resume."""

ASIDE_PREFIX = ".replaced-"


class RunMismatch(UserError):
    """The output directory holds records of another run; the message names the settings and the fix."""


def fingerprint(args: dict[str, Any], *, model_config_sha256: str | None, num_rows: int | None) -> dict[str, Any]:
    """The settings that define a run's records.

    >>> fingerprint({"model": "m", "dp_size": 8, "n": 16}, model_config_sha256=None, num_rows=10)
    {'model': 'm', 'n': 16, 'model_config_sha256': None, 'num_rows': 10}
    """
    kept = {k: v for k, v in args.items() if k not in EXECUTION_SETTINGS}
    return {**kept, "model_config_sha256": model_config_sha256, "num_rows": num_rows}


def has_records(output_dir: str | Path) -> bool:
    out = Path(output_dir)
    return (out / RESULTS_FILE).is_file() or any(p.stat().st_size for p in shard_files(out))


def check_same_run(output_dir: str | Path, current: dict[str, Any]) -> None:
    """Raise :class:`RunMismatch` when ``output_dir`` holds records whose run had another fingerprint."""
    out = Path(output_dir)
    if not has_records(out):
        return
    args_path = out / ARGS_FILE
    if not args_path.is_file():
        raise RunMismatch(f"{out}: holds records but no {ARGS_FILE}, so they cannot be told apart from this run's; "
                          "fix: use another --output_dir, or --overwrite to replace them")
    try:
        stored_json = json.loads(args_path.read_text())
        stored = fingerprint(stored_json["args"], model_config_sha256=stored_json.get("model_config_sha256"),
                             num_rows=stored_json.get("num_rows"))
    except (ValueError, KeyError, TypeError) as exc:
        raise RunMismatch(f"{args_path}: unreadable ({exc}); fix: use another --output_dir, or --overwrite") from None
    differ = [k for k in sorted(set(stored) | set(current))
              if k in stored and k in current and stored[k] != current[k]]
    if differ:
        shown = "; ".join(f"{k}: {stored[k]!r} there, {current[k]!r} now" for k in differ[:4])
        more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
        raise RunMismatch(f"{out}: holds records of another run ({shown}{more}); resuming would mix the two; fix: "
                          "rerun with the same settings to resume, use another --output_dir, or --overwrite to "
                          "replace them")


def _runner_files(out: Path) -> list[Path]:
    return [*shard_files(out), *(p for p in (out / RESULTS_FILE, out / ACCURACY_FILE, out / ARGS_FILE) if p.exists())]


def set_aside(output_dir: str | Path) -> Path | None:
    """Move the runner's files of ``output_dir`` into a hidden folder there; the folder, or None when none."""
    out = Path(output_dir)
    files = _runner_files(out)
    if not files:
        return None
    aside = out / f"{ASIDE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in files:
        path.rename(aside / path.name)
    return aside


def restore(output_dir: str | Path, aside: Path | None) -> None:
    """Put the set-aside files back, dropping what the failed run wrote."""
    if aside is None:
        return
    out = Path(output_dir)
    for path in _runner_files(out):
        path.unlink()
    for path in aside.iterdir():
        path.rename(out / path.name)
    aside.rmdir()


def discard(aside: Path | None) -> None:
    if aside is not None:
        shutil.rmtree(aside)
