"""A whole PMC-VQA CSV -> a unified data set, in resumable chunks (the row rules are :mod:`.pmc_vqa`).

Work goes in chunks written next to the output, so an interrupted run resumes where it stopped; a chunk is rebuilt
when a figure it read changed since. ``num_proc`` worker processes decode and resize the images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medvlthinker.prepare.pmc_vqa import (
    check_compat,
    original_indices,
    original_pmc_vqa_fields,
    pmc_vqa_row,
    read_pmc_vqa_csv,
)
from medvlthinker.prepare.report import (
    MalformedRow,
    PrepareError,
    PrepareReport,
    check_on_error,
    check_rows_written,
    fail_or_record,
    write_report,
)


def _pmc_work(args: tuple) -> tuple[str, Any, dict[str, bool] | None]:
    record, position, image_dir, dataset_name, start_index, compat, index = args
    try:
        if compat == "original" and index is None:
            original_pmc_vqa_fields(record)  # raises the reason the original drops this row
        row, flags = pmc_vqa_row(record, position, image_dir, dataset_name=dataset_name, start_index=start_index,
                                 compat=compat, index=index)
    except MalformedRow as exc:
        return "malformed", (exc.reason, exc.detail, record.get("Figure_path")), None
    return "ok", row, flags


def _pmc_chunk(records, positions, image_dir, dataset_name, start_index, on_error, source, pool, progress, compat,
               indices):
    report = PrepareReport(source=source)
    rows = []
    work = [(records[p], p, str(image_dir), dataset_name, start_index, compat, indices[p] if indices else None)
            for p in positions]
    results = pool.imap(_pmc_work, work, chunksize=8) if pool is not None else map(_pmc_work, work)
    for position, (status, payload, flags) in zip(positions, results):
        report.rows_read += 1
        progress.update(1)
        if status == "malformed":
            reason, detail, figure = payload
            fail_or_record(report, on_error, position, MalformedRow(reason, detail), source, figure_path=figure)
            continue
        rows.append(payload)
        report.resized += int(flags["resized"])
        if flags["answer_text_mismatch"]:
            report.warnings["answer_text_differs_from_choice"] = report.warnings.get("answer_text_differs_from_choice", 0) + 1
    report.rows_written = len(rows)
    return rows, report


def _figures_digest(records, positions, image_dir) -> str:
    """What a chunk read from the figure folder: per row, its figure's size and mtime, or that it is missing.

    A finished chunk is reused only while this matches, so a figure added, fixed or replaced after a run (or a
    corrected --image_dir) makes its chunk be rebuilt instead of reporting the old result.
    """
    h = hashlib.sha256()
    for position in positions:
        figure = (records[position].get("Figure_path") or "").strip()
        try:
            stat = (Path(image_dir) / figure).stat() if figure else None
        except OSError:
            stat = None
        state = f"{stat.st_size}:{stat.st_mtime_ns}" if stat is not None and figure else "-"
        h.update(f"{figure}\0{state}\n".encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_pmc_vqa(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    on_error: str = "skip",
    dataset_name: str = "pmc_vqa",
    start_index: int = 0,
    limit: int | None = None,
    num_proc: int = 1,
    chunk_size: int = 5000,
    work_dir: str | os.PathLike | None = None,
    compat: str = "original",
) -> PrepareReport:
    """Raw PMC-VQA (CSV + figure folder) -> a unified data set at ``out_path`` (save_to_disk dir or .parquet).

    ``compat`` chooses the row rules (:data:`.pmc_vqa.COMPAT`); with ``"original"`` a row dropped for its image (missing or
    undecodable, which the original cannot load either) leaves a gap in dataset_index instead of shifting the rows
    after it, so the others still join with the released set.

    Rows are processed in chunks of ``chunk_size``, each written to ``work_dir`` (default ``<out_path>.chunks``) as
    soon as it is done; a re-run reuses the finished chunks (the run's settings must match, and a chunk whose figures
    changed since is rebuilt). A run that keeps no row raises :class:`PrepareError` with the report. ``num_proc`` worker
    processes decode and resize the images. Returns the report (also saved as ``<out_path>.report.json``).
    """
    import datasets
    from tqdm.auto import tqdm

    from medvlthinker.data import to_dataset
    from medvlthinker.staging import staged, write_text

    check_on_error(on_error)
    check_compat(compat)
    records = read_pmc_vqa_csv(csv_path, compat)
    if limit is not None:
        records = records[:limit]
    indices = original_indices(records) if compat == "original" else None
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir else out_path.with_name(out_path.name + ".chunks")
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "csv_sha256": _file_digest(Path(csv_path)),
        "rows": len(records),
        "chunk_size": chunk_size,
        "on_error": on_error,
        "dataset_name": dataset_name,
        "start_index": start_index,
        "compat": compat,
    }
    manifest = work / "settings.json"
    if manifest.exists() and json.loads(manifest.read_text()) != settings:
        raise PrepareError(
            f"{work} holds chunks of a run with other settings ({manifest.read_text().strip()}); fix: delete {work} "
            "or pass the same CSV and settings to resume"
        )
    write_text(manifest, json.dumps(settings, indent=2, sort_keys=True) + "\n")

    source = str(csv_path)
    total = PrepareReport(source=source)
    starts = list(range(0, len(records), chunk_size))
    pool = None
    if num_proc > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(num_proc)
    chunk_files = []
    try:
        with tqdm(total=len(records), desc="PMC-VQA rows", unit="row") as progress:
            for start in starts:
                end = min(start + chunk_size, len(records))
                chunk_file = work / f"rows-{start:08d}-{end:08d}.parquet"
                chunk_report = work / f"rows-{start:08d}-{end:08d}.report.json"
                chunk_inputs = work / f"rows-{start:08d}-{end:08d}.figures.sha256"
                chunk_files.append(chunk_file)
                figures = _figures_digest(records, range(start, end), image_dir)
                reusable = chunk_file.exists() and chunk_report.exists() and chunk_inputs.exists()
                if reusable and chunk_inputs.read_text().strip() == figures:
                    report = PrepareReport(**json.loads(chunk_report.read_text()))
                    progress.update(end - start)
                else:
                    rows, report = _pmc_chunk(
                        records, range(start, end), image_dir, dataset_name, start_index, on_error, source, pool, progress,
                        compat, indices,
                    )
                    chunk_inputs.unlink(missing_ok=True)  # the chunk counts as finished only once all three exist
                    with staged(chunk_file, overwrite=True) as tmp:
                        to_dataset(rows).to_parquet(str(tmp))
                    write_text(chunk_report, json.dumps(asdict(report), sort_keys=True) + "\n")
                    write_text(chunk_inputs, figures + "\n")
                total.merge(report)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    check_rows_written(total, image_dir=image_dir)
    _write_chunks(chunk_files, out_path, datasets)
    write_report(total, out_path)
    return total


def _write_chunks(chunk_files: list[Path], out_path: Path, datasets) -> None:
    """Join the chunk files into the output, streaming (the full PMC-VQA set does not fit in memory).

    The join is written beside the output and renamed into place (:func:`medvlthinker.staging.staged`), so a run
    killed while joining leaves the previous output, or none, never a torn one.
    """
    from medvlthinker.data import save_unified, to_dataset, unified_features
    from medvlthinker.staging import staged

    parquet = out_path.suffix == ".parquet"
    with staged(out_path, overwrite=True) as tmp:
        if not chunk_files:
            save_unified(to_dataset([]), tmp, parquet=parquet)
            return
        if parquet:
            import pyarrow.parquet as pq

            writer = None
            try:
                for chunk in chunk_files:
                    table = _read_chunk(chunk, pq)
                    if writer is None:
                        writer = pq.ParquetWriter(str(tmp), table.schema)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
            return
        import pyarrow.parquet as pq

        for chunk in chunk_files:
            _read_chunk(chunk, pq, metadata_only=True)
        cache = chunk_files[0].parent / "hf_cache"
        ds = datasets.Dataset.from_parquet([str(c) for c in chunk_files], features=unified_features(),
                                           cache_dir=str(cache))
        # from_parquet's fingerprint depends on the cache path; pin it to the content so reruns write identical files
        digest = hashlib.sha256("".join(_file_digest(c) for c in chunk_files).encode()).hexdigest()[:16]
        save_unified(ds.select(range(len(ds)), new_fingerprint=digest), tmp, parquet=False)


def _read_chunk(chunk: Path, pq, metadata_only: bool = False):
    try:
        return pq.read_metadata(chunk) if metadata_only else pq.read_table(chunk)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PrepareError(
            f"{chunk}: a finished chunk cannot be read ({type(exc).__name__}: {exc}); fix: delete it and its "
            ".report.json and re-run (only that chunk is rebuilt)"
        ) from None


