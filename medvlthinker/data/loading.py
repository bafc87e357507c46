"""``load_unified`` / ``save_unified``: one loader for every data set of the project.

A source is a Hugging Face dataset name (Hub) or a local path:

- a ``save_to_disk`` directory (a ``Dataset``, or a ``DatasetDict`` whose split is chosen with ``split``);
- a directory of ``.parquet`` files (a downloaded Hub snapshot), or one ``.parquet`` file;
- a ``.jsonl`` file, one row per line, whose image entries are file paths relative to the jsonl's folder.

Whatever the source, the result is a ``datasets.Dataset`` with the unified features (``images`` as
``Sequence(Image)``, ``dataset_index`` int64, the optional columns present and None where absent); extra
columns are kept. An image stored as a path must lie inside the source's folder (the jsonl's, the parquet's, the
save_to_disk folder; for a Hub data set the datasets and Hub caches) unless ``allow_outside_images``
(:func:`check_image_paths`). Validation (on by default) raises :class:`medvlthinker.schema.SchemaError` naming the row
and the source; image decoding is checked only with ``check_images`` because it reads every image.

Where a source is and how its table is read (the Hub, a save_to_disk folder through :func:`disk_view`, parquet,
a raw table for data_process/) is :mod:`medvlthinker.data.sources`; this module is the unified-schema view of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any

from medvlthinker.data.sources import check_not_empty, load_disk_dataset, load_hub, pick_split, source_kind
from medvlthinker.schema import COLUMNS, REQUIRED_COLUMNS, SchemaError, validate_row


def unified_features(image_decode: bool = True):
    """The ``datasets.Features`` of the unified schema (``image_decode=False`` keeps images as dicts)."""
    import datasets

    return datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image(decode=image_decode)),
            "question": datasets.Value("string"),
            "options": datasets.Value("string"),
            "answer_label": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "reasoning": datasets.Value("string"),
            "dataset_name": datasets.Value("string"),
            "dataset_index": datasets.Value("int64"),
            "hash": datasets.Value("string"),
            "misc": datasets.Value("string"),
        }
    )


def to_dataset(rows: list[dict]):
    """Rows -> ``datasets.Dataset`` with the unified features (images as ``Sequence(Image)``)."""
    import datasets

    features = unified_features()
    if not rows:  # from_list cannot build an empty table (e.g. a preparation chunk whose rows were all dropped)
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return datasets.Dataset.from_list(rows, features=features)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    base = path.parent
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SchemaError(
                    f"{path}:{lineno} is not valid JSON ({exc})",
                    fix="write one JSON object per line",
                ) from None
            if not isinstance(row, dict):
                raise SchemaError(f"{path}:{lineno} is a JSON {type(row).__name__}, not an object",
                                  fix="write one JSON object (a row) per line")
            images = row.get("images")
            if isinstance(images, list):
                row["images"] = [_resolve_image(image, base) for image in images]
            rows.append(row)
    return rows


def _resolve_image(image: Any, base: Path) -> Any:
    # Paths in a jsonl file are relative to its folder, so the file and its images move together.
    if isinstance(image, str):
        return {"path": str(base / image) if not os.path.isabs(image) else image, "bytes": None}
    if isinstance(image, dict) and image.get("path") and not image.get("bytes"):
        p = image["path"]
        return {"path": str(base / p) if not os.path.isabs(p) else p, "bytes": None}
    return image


def image_bases(source: str | os.PathLike, kind: str) -> list[Path]:
    """The folders an image path of ``source`` may point into (see :func:`check_image_paths`)."""
    path = Path(source).expanduser()
    if kind in ("parquet", "jsonl"):
        return [path.parent]
    if kind in ("disk", "parquet_dir"):
        return [path]
    import datasets
    from huggingface_hub import constants

    return [Path(datasets.config.HF_DATASETS_CACHE), Path(constants.HF_HUB_CACHE)]


def check_image_paths(ds, bases: list[Path], *, allow_outside: bool = False, source: str = "the data set") -> None:
    """Refuse a row whose image is stored as a file path (no bytes) outside ``bases``, naming the row.

    Rows carry images as bytes or as paths, and a path is opened wherever it points: ``../../secret/x.png`` or
    ``/etc/...`` in a row of an untrusted data set would be read, embedded into a training set or base64-sent to an
    api endpoint. The scan reads the Arrow columns (no image is decoded); ``allow_outside`` skips it.
    """
    if allow_outside or "images" not in ds.column_names or len(ds) == 0:
        return
    import pyarrow.compute as pc

    from medvlthinker.data.paging import mapped_files, release_mapped_pages
    from medvlthinker.images import OutsideImageError, check_inside

    named = [c for c in ("dataset_name", "dataset_index") if c in ds.column_names]
    view = ds.select_columns(["images", *named]).with_format("arrow")
    files = mapped_files(ds)
    position = 0
    # small batches, one chunk at a time: only offsets, validity and paths are read, never the image bytes (a
    # combined column, or a large batch of an indexed data set, would copy them)
    for table in view.iter(batch_size=64):
        start = 0
        for images in table.column("images").chunks:
            flat = pc.list_flatten(images)
            if len(flat):
                parents = pc.list_parent_indices(images).to_pylist()
                stored = flat.field("bytes")
                no_bytes = pc.or_kleene(pc.is_null(stored), pc.equal(pc.binary_length(stored), 0))
                by_path = pc.and_(pc.fill_null(no_bytes, True), pc.is_valid(flat.field("path")))
                paths = flat.field("path")
                for i in [i for i, hit in enumerate(by_path.to_pylist()) if hit]:
                    try:
                        check_inside(paths[i].as_py(), bases)
                    except OutsideImageError as exc:
                        row = {c: table.column(c)[start + parents[i]].as_py() for c in named}
                        raise SchemaError(f"{exc.problem} (in {source})", fix=exc.fix).for_row(
                            row, position + start + parents[i]) from None
            start += len(images)
        position += table.num_rows
        release_mapped_pages(files)


def _fill_optional(row: dict[str, Any]) -> dict[str, Any]:
    for column in COLUMNS:
        row.setdefault(column, None)
    if isinstance(row.get("misc"), (dict, list)):
        row["misc"] = json.dumps(row["misc"])
    if isinstance(row.get("options"), dict):
        row["options"] = json.dumps(row["options"])
    return row


def _normalize(ds, source: str):
    """Add the missing optional columns and cast the unified ones to their features (extras are kept)."""
    import datasets

    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise SchemaError(
            f"data set {source} lacks the column(s) {missing} (it has {ds.column_names})",
            fix="convert it to the unified schema of docs/protocol.md section 1 (see data_process/)",
        )
    features = unified_features()
    for column in COLUMNS:
        if column not in ds.column_names:
            ds = ds.add_column(column, [None] * len(ds), feature=features[column])
    target = datasets.Features({name: ds.features[name] for name in ds.column_names})
    changed = False
    for column in COLUMNS:
        if ds.features[column] != features[column]:
            target[column] = features[column]
            changed = True
    if changed:
        try:
            ds = ds.cast(target)
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"data set {source} cannot be cast to the unified features ({type(exc).__name__}: {exc})",
                fix="store options/answer/... as strings, dataset_index as an integer and images as a list of "
                "images (docs/protocol.md section 1)",
            ) from exc
    order = list(COLUMNS) + [c for c in ds.column_names if c not in COLUMNS]
    return ds.select_columns(order) if ds.column_names != order else ds


def _with_source(exc: SchemaError, source: str) -> SchemaError:
    return SchemaError(
        f"{exc.problem} (in {source})",
        dataset_name=exc.dataset_name,
        dataset_index=exc.dataset_index,
        position=exc.position,
        fix=exc.fix,
    )


def validate_dataset(ds, *, check_images: bool = False, source: str = "the data set", progress: bool = True) -> int:
    """Validate every row of a unified ``Dataset``; return the number of rows.

    Raises :class:`SchemaError` naming the first bad row (dataset_name, dataset_index, position) and ``source``.
    With ``check_images`` every image is decoded with :func:`medvlthinker.images.decode_image`.
    """
    from medvlthinker.schema import validate_rows

    columns = [c for c in ds.column_names if c in COLUMNS and c != "images"]
    try:
        n = validate_rows(ds.select_columns(columns))
    except SchemaError as exc:
        raise _with_source(exc, source) from exc
    if check_images and "images" in ds.column_names:
        check_dataset_images(ds, source=source, progress=progress)
    return n


def check_dataset_images(ds, *, source: str = "the data set", progress: bool = True, decode: bool = True) -> None:
    """Check every image of every row; a failure raises :class:`SchemaError` naming the row.

    ``decode``: decode every image's pixels (:func:`medvlthinker.images.decode_image`); else read each header and
    verify what can be verified without decoding (:func:`medvlthinker.images.check_image`), for a stage that
    decodes every image itself afterwards.
    """
    from tqdm.auto import tqdm

    from medvlthinker.data.paging import raw_rows
    from medvlthinker.images import check_image, decode_image

    # read through Arrow as stored: a cast to undecoded images would write a copy of every image first
    raw = ds.select_columns(["images", "dataset_name", "dataset_index"])
    rows = tqdm(raw_rows(raw), total=len(raw), desc="checking images", unit="row",
                disable=not progress or len(raw) < 64)
    for position, row in enumerate(rows):
        try:
            validate_row(
                {**row, "question": "", "options": '{"A": ""}', "answer_label": "A", "answer": ""},
                check_images=True,
                image_decoder=decode_image if decode else check_image,
            )
        except SchemaError as exc:
            raise _with_source(
                SchemaError(exc.problem, dataset_name=exc.dataset_name, dataset_index=exc.dataset_index,
                            position=position, fix=exc.fix),
                source,
            ) from exc


def load_unified(
    source: str | os.PathLike,
    split: str | None = None,
    *,
    subset: list[str] | None = None,
    size: int | None = None,
    validate: bool = True,
    check_images: bool = False,
    num_proc: int | None = None,
    allow_outside_images: bool = False,
):
    """Load ``source`` as a unified ``datasets.Dataset``.

    ``split`` picks a split of a Hub data set or a saved ``DatasetDict`` (default: the only one, else ``test``,
    ``train``, ``validation``). ``subset`` keeps the rows whose ``dataset_name`` is listed (an unknown name is an
    error that lists the available ones); ``size`` then keeps the first N rows. ``validate`` checks the schema of
    every kept row; ``check_images`` also decodes every image. ``num_proc`` goes to the Hub/parquet readers and
    the subset filter. ``allow_outside_images`` reads image paths outside the source's folder
    (:func:`check_image_paths`).
    """
    import datasets

    kind = source_kind(source)
    name = str(source)
    if kind == "disk":
        loaded = load_disk_dataset(Path(source).expanduser(), name)
        ds = pick_split(loaded, split, name) if isinstance(loaded, datasets.DatasetDict) else loaded
    elif kind in ("parquet", "parquet_dir"):
        path = Path(source).expanduser()
        files = [str(path)] if kind == "parquet" else sorted(str(p) for p in path.rglob("*.parquet"))
        if kind == "parquet_dir" and split is not None:
            in_split = [f for f in files if split in Path(f).relative_to(path).as_posix()]
            files = in_split or files
        ds = datasets.Dataset.from_parquet(files, num_proc=num_proc)
    elif kind == "jsonl":
        check_not_empty(source)
        rows = [_fill_optional(row) for row in _read_jsonl(Path(source).expanduser())]
        rows = _subset_rows(rows, subset, name)
        if size is not None:
            rows = rows[: _check_size(size)]
        if validate:
            try:
                from medvlthinker.schema import validate_rows

                validate_rows([{**r, "images": r["images"] if isinstance(r["images"], list) else None}
                               for r in rows])
            except SchemaError as exc:
                raise _with_source(exc, name) from exc
        extras = sorted({k for r in rows for k in r if k not in COLUMNS})
        ds = datasets.Dataset.from_list([{c: r.get(c) for c in (*COLUMNS, *extras)} for r in rows],
                                        features=unified_features() if not extras else None)
        ds = _normalize(ds, name)
        check_image_paths(ds, image_bases(source, kind), allow_outside=allow_outside_images, source=name)
        if check_images:
            check_dataset_images(ds, source=name)
        return ds
    else:
        loaded = load_hub(name, split, num_proc)
        ds = pick_split(loaded, split, name) if isinstance(loaded, datasets.DatasetDict) else loaded

    ds = _normalize(ds, name)
    if subset:
        wanted = set(subset)
        present = set(ds.unique("dataset_name"))
        unknown = sorted(wanted - present)
        if unknown:
            raise ValueError(
                f"subset {unknown} not found in {name}; its dataset_name values are {sorted(present)}; fix: pass "
                f"--subset with names from that list"
            )
        ds = ds.filter(lambda n: n in wanted, input_columns="dataset_name", num_proc=num_proc)
    if size is not None:
        ds = ds.select(range(min(_check_size(size), len(ds))))
    check_image_paths(ds, image_bases(source, kind), allow_outside=allow_outside_images, source=name)
    if validate:
        validate_dataset(ds, check_images=check_images, source=name)
    elif check_images:
        check_dataset_images(ds, source=name)
    return ds


def _check_size(size: int) -> int:
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}; fix: pass a positive --dataset_size or leave it out")
    return size


def _subset_rows(rows: list[dict[str, Any]], subset: SequenceABC[str] | None, name: str) -> list[dict[str, Any]]:
    if not subset:
        return rows
    wanted = set(subset)
    present = {r.get("dataset_name") for r in rows}
    unknown = sorted(wanted - present)
    if unknown:
        raise ValueError(
            f"subset {unknown} not found in {name}; its dataset_name values are {sorted(map(str, present))}; fix: "
            f"pass --subset with names from that list"
        )
    return [r for r in rows if r.get("dataset_name") in wanted]


def save_unified(ds, path: str | os.PathLike, *, parquet: bool | None = None) -> Path:
    """Write a unified data set: ``save_to_disk`` to a directory, or one parquet file when ``path`` ends in
    ``.parquet`` or ``parquet`` is set (images referenced by path are embedded as bytes, so the file stands alone)."""
    path = Path(path)
    if parquet or (parquet is None and path.suffix == ".parquet"):
        from datasets.table import embed_table_storage

        path.parent.mkdir(parents=True, exist_ok=True)
        embedded = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        embedded.to_parquet(str(path))
    else:
        ds.save_to_disk(str(path))
    return path
