"""FSDP2's CPU-offload policy without an accelerator to pin memory for.

verl's FSDP engine (``verl/workers/engine/fsdp/transformer_impl.py``, the FSDP2 branch) builds the forward-only
reference model with ``CPUOffloadPolicy(pin_memory=True)``; pinning host memory needs an accelerator, so on a CPU the
reference's first forward raises "Cannot access accelerator device when none is available". Offloading to the CPU
on a CPU needs no pinned staging buffer: where pinning is impossible the policy is built with ``pin_memory=False``.
"""

from __future__ import annotations

_state: dict = {"original": None}


def pinning_works() -> bool:
    import torch

    try:
        torch.empty(1).pin_memory()
    except RuntimeError:
        return False
    return True


def needed() -> bool:
    return not pinning_works()


def is_active() -> bool:
    return _state["original"] is not None


def install() -> bool:
    if is_active():
        return True
    if not needed():
        return False
    from torch.distributed.fsdp import CPUOffloadPolicy

    original = CPUOffloadPolicy.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.pin_memory = False

    CPUOffloadPolicy.__init__ = __init__
    _state["original"] = original
    return True


def uninstall() -> None:
    if _state["original"] is not None:
        from torch.distributed.fsdp import CPUOffloadPolicy

        CPUOffloadPolicy.__init__ = _state["original"]
        _state["original"] = None
