"""FSDP2's CPU-offload policy without an accelerator to pin memory for.

verl's FSDP engine (``verl/workers/engine/fsdp/transformer_impl.py``, the FSDP2 branch) builds the forward-only
reference model with ``CPUOffloadPolicy(pin_memory=True)``; pinning host memory needs an accelerator, so on a CPU the
reference's first forward raises "Cannot access accelerator device when none is available". Offloading to the CPU
on a CPU needs no pinned staging buffer: where pinning is impossible the policy is built with ``pin_memory=False``.
"""

from __future__ import annotations

from medvlthinker.compat.patch import Patch
from medvlthinker.compat.verl_cpu._hooks import WHERE, Wrap, disabled_by


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

PATCH = Patch(
    name="fsdp_offload", target="torch.distributed.fsdp.CPUOffloadPolicy.__init__",
    upstream="verl 0.9.1 verl/workers/engine/fsdp/transformer_impl.py:462 (CPUOffloadPolicy(pin_memory=True))",
    symptom="the reference model's first forward raises 'Cannot access accelerator device when none is available'",
    library="torch", probe=needed, install=install, uninstall=uninstall, is_active=is_active, where=WHERE,
    switch="MEDVLTHINKER_VERL_CPU_DISABLE=fsdp_offload", switched=disabled_by("fsdp_offload"),
)
