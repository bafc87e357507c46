"""FSDP2's CPU-offload policy without an accelerator to pin memory for.

verl's FSDP engine (``verl/workers/engine/fsdp/transformer_impl.py``, the FSDP2 branch) builds the forward-only
reference model with ``CPUOffloadPolicy(pin_memory=True)``; pinning host memory needs an accelerator, so on a CPU the
reference's first forward raises "Cannot access accelerator device when none is available". Offloading to the CPU
on a CPU needs no pinned staging buffer: where pinning is impossible the policy is built with ``pin_memory=False``.
"""

from __future__ import annotations

from medvlthinker.compat.verl_cpu._hooks import Wrap


def pinning_works() -> bool:
    import torch

    try:
        torch.empty(1).pin_memory()
    except RuntimeError:
        return False
    return True


def needed() -> bool:
    return not pinning_works()


def _policy():
    from torch.distributed.fsdp import CPUOffloadPolicy

    return CPUOffloadPolicy


def _unpinned(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.pin_memory = False

    return __init__


_wrap = Wrap(_policy, "__init__", _unpinned, needed)
is_active, install, uninstall = _wrap.is_active, _wrap.install, _wrap.uninstall
