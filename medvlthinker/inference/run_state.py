"""What an output directory already holds, checked before a run adds to it or replaces it.

Resume appends to the records already there, so a rerun must be the same run: the same model (and model config),
data set, subset, size, prompt and sampling settings. The run's fingerprint is every setting of
:class:`~medvlthinker.inference.run_config.RunConfig` that can change a record, plus the model config's hash and the
number of rows, and what the model and data paths hold (:func:`content_hashes`: a path with new weights or new rows
is another run); settings that only change how the work is spread or paced (``dp_size``, ``window``, ``ray``, ...)
are left out, so a resume may use another GPU count. A rerun whose fingerprint differs from the one stored in
``args.json`` stops before generating anything and before ``args.json`` is rewritten, naming the settings that
differ.

``--overwrite`` sets the old outputs aside (in a hidden folder of the output directory) instead of deleting them,
after the data set has been validated, and puts them back if the new run fails; they are deleted only once the new
run has written its records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medvlthinker.errors import UserError
from medvlthinker.inference.records import ACCURACY_FILE, ARGS_FILE, RESULTS_FILE, shard_files

EXECUTION_SETTINGS = frozenset({
    "output_dir", "overwrite", "progress", "dp_size", "tp_size", "node_size", "node_rank", "window", "batch_size",
    "gpu_memory_utilization", "engine_kwargs", "ray", "ray_address", "api_key_env",
    "mm_processor_cache_gb", "full_image_check", "allow_outside_images",
})
"""RunConfig fields that change how a run is executed, not what its records hold: free to change on resume."""

ASIDE_PREFIX = ".replaced-"


class RunMismatch(UserError):
    """The output directory holds records of another run; the message names the settings and the fix."""


CONTENT_KEYS = ("model_sha256", "data_sha256")
"""args.json keys of :func:`content_hashes` (a directory written before they existed is compared without them)."""

_WHOLE_FILE_BYTES = 64 << 20
_SAMPLE_BYTES = 1 << 20
_MODEL_FILES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".model", ".txt", ".jinja")


def files_digest(root: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> str | None:
    """A content hash of a file, or of every file under a folder (``suffixes`` picks them): each file's relative
    name, size and bytes; a file over 64 MiB (model shards, big Arrow files) by its first and last MiB, which
    differ whenever its tensors or rows do. None when ``root`` is not a local path (a Hub name).

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a.json").write_text("1")
    >>> first = files_digest(d); _ = (d / "a.json").write_text("2"); files_digest(d) != first
    True
    """
    root = Path(root).expanduser()
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(("cache-", "."))
        and (suffixes is None or p.suffix in suffixes))
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"\0{path.relative_to(root) if path != root else path.name}\0{size}\0".encode())
        with path.open("rb") as fh:
            if size <= _WHOLE_FILE_BYTES:
                digest.update(fh.read())
            else:
                digest.update(fh.read(_SAMPLE_BYTES))
                fh.seek(size - _SAMPLE_BYTES)
                digest.update(fh.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def content_hashes(args: dict[str, Any]) -> dict[str, str | None]:
    """What the run's ``model`` and ``dataset_name`` paths hold (:func:`files_digest`), for the fingerprint."""
    return {"model_sha256": files_digest(args["model"], _MODEL_FILES),
            "data_sha256": files_digest(args["dataset_name"])}


def fingerprint(args: dict[str, Any], *, model_config_sha256: str | None, num_rows: int | None,
                **content: str | None) -> dict[str, Any]:
    """The settings that define a run's records (``content``: :func:`content_hashes`).

    >>> fingerprint({"model": "m", "dp_size": 8, "n": 16}, model_config_sha256=None, num_rows=10)
    {'model': 'm', 'n': 16, 'model_config_sha256': None, 'num_rows': 10}
    """
    kept = {k: v for k, v in args.items() if k not in EXECUTION_SETTINGS}
    return {**kept, "model_config_sha256": model_config_sha256, "num_rows": num_rows, **content}


class RunLocked(UserError):
    """Another run is writing into the same output directory."""


LOCK_PREFIX = ".lock-node-"


@contextmanager
def output_lock(output_dir: str | Path, node_rank: int = 0) -> Iterator[None]:
    """Hold ``output_dir``'s lock for this node while the block runs; a second run into the same folder (which
    would generate every row again and leave each one recorded twice) raises :class:`RunLocked` at once.

    The lock is an ``flock`` on an empty hidden file, one per node (the nodes of a multi-node run share the folder
    and write their own shards); the system releases it when the process ends, so a killed run leaves no stale
    lock. The file stays, empty, so the folder's content is the same before and after a refused run.
    """
    import fcntl

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{LOCK_PREFIX}{node_rank}"
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(str(out), f"another run (node {node_rank}) is writing into this folder",
                            fix="wait for it to finish (then rerun to resume), or use another --output_dir") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
                             num_rows=stored_json.get("num_rows"),
                             **{k: stored_json[k] for k in CONTENT_KEYS if k in stored_json})
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
    return [*shard_files(out), *(p for p in (out / RESULTS_FILE, out / ACCURACY_FILE, out / ARGS_FILE) if p.exists()),
            *sorted(out.glob("cost*.json"))]


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
