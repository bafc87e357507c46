"""Outputs that appear whole or not at all.

A data set, parquet file or model directory is written beside its target (``.NAME.partial``) and renamed into place
only when complete, so an interrupted run never leaves a half-written output that a later stage would read, and an
existing output is kept until its replacement is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_writable(target: str | os.PathLike, overwrite: bool) -> Path:
    """Raise ``FileExistsError`` naming ``target`` when it exists and ``overwrite`` is off."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; fix: choose another output path or pass --overwrite")
    return target


@contextlib.contextmanager
def staged(target: str | os.PathLike, *, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield the temporary sibling path to write; on success it replaces ``target``, on error it is removed.

    ``directory=True`` creates the temporary directory (for callers that copy files into it); writers that create
    their own output (``save_to_disk``, ``to_parquet``) get a path that does not exist yet.
    """
    target = check_writable(target, overwrite)
    tmp = target.with_name(f".{target.name}.partial")
    _remove(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _remove(target)
    os.replace(tmp, target)
