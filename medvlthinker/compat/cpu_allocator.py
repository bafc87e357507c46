"""glibc's allocator for a run that computes on the CPU: keep freed memory in the heap for the next step.

Each training step of a Qwen2.5-VL on a CPU allocates and frees blocks of hundreds of MB (logits over the
151,936-token vocabulary: 8 sequences of 112 tokens are 545 MB). glibc serves every block above 32 MB with its own
``mmap`` and unmaps it on ``free``, so the next step faults the same memory in again page by page and the kernel
zero-fills it: on 2 cores, about half of a tiny model's SFT step is system time. Two ``mallopt`` settings keep such
blocks in the heap instead (``M_MMAP_MAX=0``: no separate mappings; ``M_TRIM_THRESHOLD=-1``: never hand the heap's
top back), which is what ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`` does from
the start of a process, and what the ``tcmalloc`` that vLLM's CPU guide preloads does its own way.

The cost: the process keeps its peak heap until it exits, which the next step would take again anyway. On a GPU
the big blocks live in CUDA's caching allocator, so nothing calls this there. ``MEDVLTHINKER_KEEP_FREED_MEMORY=0``
turns it off (``benchmarks/benchmark_cpu_allocator.py`` measures both settings).
"""

from __future__ import annotations

import ctypes
import os
import sys

from medvlthinker.compat.patch import Patch

ENV = "MEDVLTHINKER_KEEP_FREED_MEMORY"

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# glibc's defaults (mallopt(3)): DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024

_kept = False


def _glibc():
    """The C library if it is glibc (it has ``gnu_get_libc_version``), else None (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """Set the two ``mallopt`` settings in this process; whether they are in force (idempotent).

    False where the C library is not glibc, where ``MEDVLTHINKER_KEEP_FREED_MEMORY=0``, or where glibc refuses.
    """
    global _kept
    if _kept:
        return True
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; -1 as the trim threshold is SIZE_MAX, "never trim" (mallopt(3))
    _kept = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    return _kept


def keep_freed_memory_on_cpu() -> bool:
    """:func:`keep_freed_memory` when this process has no CUDA device (the CPU computes the steps), else False."""
    import torch

    return False if torch.cuda.is_available() else keep_freed_memory()


def give_freed_memory_back() -> None:
    """Set glibc's default values back (what :func:`keep_freed_memory` changed); glibc's dynamic mmap threshold,
    which any ``mallopt`` turns off, stays off."""
    global _kept
    libc = _glibc()
    if _kept and libc is not None:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    _kept = False


PATCH = Patch(
    name="cpu_allocator", target="glibc malloc: mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, -1)",
    upstream="glibc: blocks above the mmap threshold (at most 32 MB) are mapped per allocation and unmapped on free",
    symptom="on 2 cores about half of a tiny model's training step is the kernel faulting in and zero-filling the "
            "same freed logits blocks again",
    library="", probe=lambda: _glibc() is not None, install=keep_freed_memory, uninstall=give_freed_memory_back,
    is_active=lambda: _kept,
    where="the CPU entry points: SFT, the eval runner, the RL benchmark, verl's workers under VERL_PLATFORM=cpu",
    switch=f"{ENV}=0", switched=lambda: os.environ.get(ENV, "1").strip() == "0",
)
