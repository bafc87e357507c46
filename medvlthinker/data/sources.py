"""Where a data set comes from and how its table is read, before any schema: a Hugging Face dataset name (Hub) or a
local path (a ``save_to_disk`` directory, a folder of ``.parquet`` files, one ``.parquet`` / ``.jsonl`` file, and
for :func:`load_table` a ``.csv``). :mod:`medvlthinker.data.loading` turns these tables into the unified schema.

A save_to_disk data set is read through a folder of links in datasets' cache (:func:`disk_view`), so the
``cache-*.arrow`` files of later ``map``/``filter``/``cast`` calls land there and never in the data set's own
folder: a shared or read-only data set works, and a writable one is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from medvlthinker.errors import UserError

_SPLIT_PREFERENCE = ("test", "train", "validation")
_LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".arrow")


def looks_local(name: str) -> bool:
    """Whether a data set or model name is meant as a local path rather than a Hub name (``org/name``).

    >>> looks_local("./runs/m"), looks_local("/models/x"), looks_local("Qwen/Qwen2.5-VL-3B-Instruct")
    (True, True, False)
    """
    return name.startswith(("/", "./", "../", "~")) or name.endswith(_LOCAL_SUFFIXES) or name.count("/") > 1


def source_kind(source: str | os.PathLike) -> str:
    """How ``source`` is read: ``"disk"``, ``"parquet_dir"``, ``"parquet"``, ``"jsonl"`` or ``"hub"``.

    >>> source_kind("UCSC-VLAA/MedVLThinker-Eval")
    'hub'
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "disk"
        if any(path.rglob("*.parquet")):
            return "parquet_dir"
        raise FileNotFoundError(
            f"{path} is a directory but neither a save_to_disk data set (no state.json / dataset_dict.json) nor "
            f"a folder of .parquet files; fix: point --dataset_name at a save_to_disk directory, a .parquet or "
            f".jsonl file, or a Hugging Face dataset name"
        )
    if path.is_file():
        if path.suffix == ".parquet":
            return "parquet"
        if path.suffix in (".jsonl", ".json"):
            return "jsonl"
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; fix: use a .parquet or .jsonl file, or a "
            f"save_to_disk directory"
        )
    text = str(source)
    if looks_local(text):
        raise FileNotFoundError(
            f"{text} does not exist; fix: check the path (a save_to_disk directory, .parquet or .jsonl file), or "
            f"give a Hugging Face dataset name such as UCSC-VLAA/MedVLThinker-Eval"
        )
    return "hub"


def disk_view(path: str | os.PathLike) -> Path:
    """A folder mirroring the save_to_disk data set at ``path`` with symbolic links, in datasets' cache.

    ``datasets`` writes the cache file of every ``map``/``filter``/``cast`` beside the Arrow files a data set was
    loaded from; loading through the links sends those files to the view instead of the data set's folder. The
    view's name hashes the data set's path and the size and mtime of each file, so a changed data set gets a new
    view (and old caches are never reused for new content). ``cache-*.arrow`` files of the data set are not linked.
    """
    import datasets

    path = Path(path).expanduser().resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("cache-"))
    digest = hashlib.sha256(str(path).encode())
    for file in files:
        stat = file.stat()
        digest.update(f"\0{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    key = digest.hexdigest()[:20]
    roots = [Path(datasets.config.HF_DATASETS_CACHE), Path(tempfile.gettempdir())]
    for root in roots:
        root = root / "medvlthinker_views"
        view = root / f"{path.name}-{key}"
        if view.is_dir():
            return view
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{view.name}.", dir=root))
        except OSError:
            continue  # an unwritable cache: try the next place
        for file in files:
            link = tmp / file.relative_to(path)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file)
        try:
            os.replace(tmp, view)
        except OSError:  # another process made the same view first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        return view
    return path


def load_disk_dataset(path: str | os.PathLike, source: str | None = None):
    """``datasets.load_from_disk`` through :func:`disk_view`; an unreadable folder is a one-line error naming it."""
    import datasets

    source = source or str(path)
    state = Path(path).expanduser() / "state.json"
    try:
        empty = state.is_file() and not json.loads(state.read_text(encoding="utf-8")).get("_data_files")
    except (OSError, ValueError):
        empty = False
    if empty:  # save_to_disk of 0 rows writes no Arrow file, and load_from_disk then fails with an IndexError
        raise ValueError(f"{source} has no rows (no data files); fix: check the stage that wrote it (its input, "
                         "--subset/--size) and re-run it")
    try:
        return datasets.load_from_disk(str(disk_view(path)))
    except (FileNotFoundError, ValueError, OSError, IndexError) as exc:
        raise FileNotFoundError(
            f"{source}: cannot be read as a save_to_disk data set ({type(exc).__name__}: {exc}); fix: rewrite it "
            "with save_to_disk (or the stage that made it), or point at a .parquet / .jsonl file"
        ) from exc


def pick_split(dsd, split: str | None, source: str):
    """One split of a ``DatasetDict``: ``split``, else the only one, else test, train, validation in that order."""
    names = list(dsd.keys())
    if split is not None:
        if split not in dsd:
            raise ValueError(f"{source} has no split {split!r}; it has {names}; fix: pass --split one of {names}")
        return dsd[split]
    if len(names) == 1:
        return dsd[names[0]]
    for name in _SPLIT_PREFERENCE:
        if name in dsd:
            return dsd[name]
    raise ValueError(f"{source} has several splits {names}; fix: choose one with split=/--split")


def load_hub(name: str, split: str | None, num_proc: int | None = None):
    """``datasets.load_dataset`` of a Hub name; any failure is one error naming the source and the ways out."""
    import datasets

    try:
        return datasets.load_dataset(name, split=split, num_proc=num_proc)
    except Exception as exc:  # offline, unknown name, missing split: all say the same thing to the user
        raise FileNotFoundError(
            f"cannot load {name!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}); fix: check the name "
            f"and split, connect to the Hub (HF_HUB_OFFLINE unset), or pass a local path (save_to_disk "
            f"directory, .parquet or .jsonl file)"
        ) from exc


def check_not_empty(path: str | os.PathLike) -> None:
    """A local data file without a byte of content is an error naming it (the readers' own messages for one, a
    datasets schema mismatch or a bare StopIteration, do not say so)."""
    path = Path(path).expanduser()
    if not path.is_file() or path.stat().st_size > 4096:
        return
    if not path.read_bytes().strip():
        raise UserError(str(path), "the file is empty", fix="point at the data file with the rows, or rebuild it")


_TABLE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def load_table(source: str | os.PathLike, split: str | None = "train"):
    """A source table as it is, before its conversion to the unified schema (the raw input of data_process/).

    Any source :func:`load_unified` reads, plus a ``.csv`` file; no column is added, cast or validated. A local file
    is read as one table whatever ``split`` says; ``split`` picks a split of a Hub data set or a saved
    ``DatasetDict``.
    """
    import datasets

    path = Path(source).expanduser()
    if path.is_file():
        builder = _TABLE_BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"{source}: unknown file type {path.suffix!r}; fix: pass a .parquet, .jsonl, .json or "
                             ".csv file, a save_to_disk directory or a Hugging Face dataset name")
        check_not_empty(path)
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    kind, name = source_kind(source), str(source)
    if kind == "disk":
        loaded = load_disk_dataset(path, name)
    elif kind == "parquet_dir":
        loaded = datasets.Dataset.from_parquet(sorted(str(p) for p in path.rglob("*.parquet")))
    else:
        loaded = load_hub(name, split)
    return pick_split(loaded, split, name) if isinstance(loaded, datasets.DatasetDict) else loaded
