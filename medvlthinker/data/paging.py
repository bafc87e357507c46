"""Reading a memory-mapped data set row by row without keeping its pages in the process's resident memory.

``datasets`` memory-maps the Arrow files of a data set (``save_to_disk`` folders, and the cache files it writes for
Hub and parquet sources). Every page a pass reads stays mapped into the process, so its resident set size grows by
the bytes read: a pass over a data set of 3 MB images adds 3 MB a row, up to the size of the files (tens of GB for
PMC-VQA's images). The kernel can drop those pages when memory runs short, but schedulers and watchdogs that
account resident memory (a Slurm job's RSS limit, a container's) see a run that grows with every row.

:func:`release_mapped_pages` tells the kernel the process no longer needs them (``madvise(MADV_DONTNEED)`` over
every read-only mapping of the data set's files: they stay in the page cache, and a later read faults them back
in from there). :func:`raw_rows` reads rows in small Arrow batches (no decoding, no copy of the table) and releases
the pages after each batch.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

MADV_DONTNEED = 4  # <sys/mman.h>
BATCH_ROWS = 16


def mapped_files(ds) -> set[str]:
    """The real paths of the Arrow files ``ds`` reads (empty for an in-memory data set)."""
    return {os.path.realpath(f["filename"]) for f in getattr(ds, "cache_files", None) or []}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def release_mapped_pages(files: set[str]) -> int:
    """Drop this process's resident pages of the read-only mappings of ``files``; return the bytes of mappings
    advised (0 where nothing is mapped, or off Linux)."""
    if not files or _LIBC is None:
        return 0
    advised = 0
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or "w" in parts[1] or parts[5].strip() not in files:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if _LIBC.madvise(start, end - start, MADV_DONTNEED) == 0:
                advised += end - start
    return advised


def raw_rows(ds, positions: Iterable[int] | None = None, *, batch_rows: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` (all, or those at ``positions``, in that order) as plain dicts, images as stored
    (``{"bytes", "path"}`` dicts, not decoded), read ``batch_rows`` at a time through Arrow; the data set's mapped
    pages are released after each batch."""
    table = ds.with_format("arrow")
    files = mapped_files(ds)
    if positions is None:
        batches: Iterable[Any] = (range(start, min(start + batch_rows, len(ds)))
                                  for start in range(0, len(ds), batch_rows))
    else:
        batches = _chunks(positions, batch_rows)
    for batch in batches:
        rows = table[batch.start:batch.stop] if isinstance(batch, range) else table[list(batch)]
        yield from rows.to_pylist()
        release_mapped_pages(files)


def _chunks(positions: Iterable[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for position in positions:
        chunk.append(int(position))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
