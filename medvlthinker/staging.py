"""Outputs that appear whole or not at all: the one place that writes a temporary sibling and renames it.

A data set, parquet file, model directory, JSON or JSONL file is written beside its target (``.NAME.partial``) and
renamed into place only when complete, so an interrupted run never leaves a half-written output that a later stage
would read, and an existing output is kept until its replacement is complete.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     out = write_json(Path(folder) / "accuracy.json", {"PMC": 50.0})
...     print(out.read_text(), end="")
...     print(sorted(p.name for p in out.parent.iterdir()))  # no temporary file is left behind
{
  "PMC": 50.0
}
['accuracy.json']
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medvlthinker.errors import UserError


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
def staged(target: str | os.PathLike, *, overwrite: bool = False, directory: bool = False,
           private: bool = False) -> Iterator[Path]:
    """Yield the temporary sibling path to write; on success it replaces ``target``, on error it is removed.

    ``directory=True`` creates the temporary directory (for callers that copy files into it); writers that create
    their own output (``save_to_disk``, ``to_parquet``) get a path that does not exist yet. ``private`` gives each
    process and thread its own temporary name, for a target that several writers may produce at once (the last
    complete one wins).
    """
    target = check_writable(target, overwrite)
    owner = f".{os.getpid()}-{threading.get_ident()}" if private else ""
    tmp = target.with_name(f".{target.name}{owner}.partial")
    _remove(tmp)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next(p for p in target.parents if p.exists() and not p.is_dir())
        raise UserError(str(target), f"its folder cannot be created: {blocking} is a file",
                        fix="choose an output path none of whose folders is a file") from None
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() or target.is_dir():
        _remove(target)  # a file replaces a file in one step; a directory must make room first
    os.replace(tmp, target)


def write_text(path: str | os.PathLike, text: str, *, private: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all, replacing an earlier file."""
    with staged(path, overwrite=True, private=private) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (non-ASCII kept), whole or not at all."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """One JSON record per line (non-ASCII kept), whole or not at all; ``records`` is streamed."""
    with staged(path, overwrite=True) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


class DiskFullError(UserError):
    """No space left on the device while writing into a folder; the message names it and its free space."""

    def __init__(self, folder: str | os.PathLike, what: str = "writing") -> None:
        free_bytes = _free_bytes(Path(folder))
        free = "free space unknown" if free_bytes is None else f"{free_bytes / 2**30:.2f} GiB free"
        super().__init__(str(folder), f"no space left on the device while {what} ({free})",
                         fix="free space there or point the output at a disk with room, then run again")


# How a full disk reads where the libraries hide the errno: safetensors' Rust writer ("os error 28") and torch.save's
# C++ stream writer, which reports only a short write ("unexpected pos ...", "file write failed").
_DISK_FULL_TEXT = ("No space left on device", "os error 28")
_TORCH_WRITER_TEXT = ("inline_container", "PytorchStreamWriter")
_NEARLY_FULL_BYTES = 64 * 2**20


def _free_bytes(folder: Path) -> int | None:
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, is a full disk: ENOSPC, a library's message for it,
    or torch's short write while the disk has (almost) no room left."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    if any(s in text for s in _DISK_FULL_TEXT):
        return True
    if any(s in text for s in _TORCH_WRITER_TEXT):
        free = _free_bytes(Path(folder))
        return free is not None and free < _NEARLY_FULL_BYTES
    return False


@contextlib.contextmanager
def disk_full_named(folder: str | os.PathLike, what: str = "writing") -> Iterator[None]:
    """A full disk inside the block (:func:`is_disk_full`) becomes :class:`DiskFullError` naming ``folder``; other
    errors pass."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc, folder):
            raise
        raise DiskFullError(folder, what) from None
