"""Resident memory of a run over its rows: sample a process tree while it runs, then fit the growth.

:func:`trace` starts a command and, every ``interval`` seconds until it exits, reads the resident memory of each
process of its tree (``/proc/PID/status``: ``VmRSS`` and its anonymous and file-backed parts) and the rows done so
far (newlines in the files a glob matches: the runner's shard files). :func:`summarize` gives the peak, the
resident memory at fractions of the rows, the peak up to a quarter of the rows against the peak of the whole run,
and the least-squares slope in MB a row over the last half (warm-up left behind).
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MB = 2**20


@dataclass(frozen=True)
class Sample:
    seconds: float
    rows: int
    rss: int  # bytes, the largest process of the tree (the engine)
    anon: int
    file: int
    tree_rss: int  # bytes, summed over the tree (counts shared pages once per process)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _memory(pid: int) -> tuple[int, int, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return 0, 0, 0
    return fields.get("VmRSS", 0), fields.get("RssAnon", 0), fields.get("RssFile", 0)


def _rows_done(pattern: str) -> int:
    done = 0
    for path in glob.glob(pattern):
        try:
            with open(path, "rb") as fh:
                done += fh.read().count(b"\n")
        except OSError:
            pass
    return done


def trace(cmd: Sequence[str], rows_glob: str, *, interval: float = 0.5, env: dict | None = None,
          log: str | os.PathLike | None = None) -> tuple[int, list[Sample]]:
    """Run ``cmd`` and sample it until it exits; return its exit code and the samples."""
    err = open(log, "w") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(list(cmd), stdout=err, stderr=err, env=env)
        start = time.perf_counter()
        samples: list[Sample] = []
        while proc.poll() is None:
            memory = [_memory(pid) for pid in _tree(proc.pid)]
            top = max(memory, default=(0, 0, 0))
            samples.append(Sample(time.perf_counter() - start, _rows_done(rows_glob), *top,
                                  sum(m[0] for m in memory)))
            time.sleep(interval)
    finally:
        if log:
            err.close()
    return proc.returncode, samples


def slope_mb_per_row(samples: Sequence[Sample], field: str = "rss") -> float | None:
    """Least-squares slope of ``field`` (MB) against rows done; None with fewer than 3 distinct row counts."""
    points = [(s.rows, getattr(s, field) / MB) for s in samples]
    if len({x for x, _ in points}) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def summarize(samples: Sequence[Sample], rows: int) -> dict:
    """Peak and slopes of one traced run of ``rows`` rows (memory in MB).

    >>> s = [Sample(t, r, (1000 + r) * MB, 900 * MB, (100 + r) * MB, 0) for t, r in enumerate(range(0, 101, 10))]
    >>> out = summarize(s, 100)
    >>> out["peak_rss_mb"], out["peak_quarter_rss_mb"], round(out["slope_rss_mb_per_row"], 3), out["slope_anon_mb_per_row"]
    (1100.0, 1020.0, 1.0, 0.0)
    """
    during = [s for s in samples if s.rows < rows] or list(samples)
    last_half = [s for s in during if s.rows >= rows // 2]

    def peak(field: str, upto: int | None = None) -> float:
        kept = [getattr(s, field) for s in samples if upto is None or s.rows <= upto]
        return max(kept, default=0) / MB

    def at(fraction: float) -> float | None:
        later = [s.rss for s in samples if s.rows >= fraction * rows]
        return later[0] / MB if later else None

    return {
        "rows": rows,
        "seconds": samples[-1].seconds if samples else 0.0,
        "peak_rss_mb": peak("rss"),
        "peak_anon_mb": peak("anon"),
        "peak_tree_rss_mb": peak("tree_rss"),
        "peak_quarter_rss_mb": peak("rss", rows // 4),
        "rss_mb_at": {f"{q}/4": at(q / 4) for q in (1, 2, 3)},
        "slope_rss_mb_per_row": slope_mb_per_row(last_half, "rss"),
        "slope_anon_mb_per_row": slope_mb_per_row(last_half, "anon"),
        "slope_file_mb_per_row": slope_mb_per_row(last_half, "file"),
    }
