"""The process-group backend string on a CPU platform.

``verl/utils/distributed.py`` (``initialize_global_process_group`` and ``..._ray``) asks torch for
``f"cpu:gloo,{device}:{backend}"``, which on a CPU platform is ``cpu:gloo,cpu:gloo``; torch refuses a device type
named twice ("Duplicate device type cpu"). The wrapper rewrites exactly a string torch refuses for that reason to
the single backend it names, and passes everything else through.
"""

from __future__ import annotations

_state: dict = {"original": None}


def collapse(backend):
    """``"cpu:gloo,cpu:gloo"`` -> ``"gloo"``; any other value unchanged.

    >>> collapse("cpu:gloo,cpu:gloo"), collapse("cpu:gloo,cuda:nccl"), collapse("nccl")
    ('gloo', 'cpu:gloo,cuda:nccl', 'nccl')
    """
    if not isinstance(backend, str) or "," not in backend:
        return backend
    pairs = [part.strip().split(":", 1) for part in backend.split(",")]
    if all(len(p) == 2 for p in pairs) and len({d for d, _ in pairs}) < len(pairs) and len({b for _, b in pairs}) == 1:
        return pairs[0][1]
    return backend


def refused(backend: str) -> bool:
    """Whether torch refuses ``backend`` as a process-group backend string."""
    from torch.distributed.distributed_c10d import BackendConfig

    try:
        BackendConfig(backend)
    except ValueError:
        return True
    return False


def needed() -> bool:
    from medvlthinker.compat.verl_cpu import cpu_profile

    return cpu_profile() and refused("cpu:gloo,cpu:gloo")


def is_active() -> bool:
    return _state["original"] is not None


def install() -> bool:
    if is_active():
        return True
    if not needed():
        return False
    import torch.distributed as dist

    original = dist.init_process_group

    def init_process_group(*args, **kwargs):
        if args:
            args = (collapse(args[0]), *args[1:])
        elif "backend" in kwargs:
            kwargs["backend"] = collapse(kwargs["backend"])
        return original(*args, **kwargs)

    init_process_group.__wrapped__ = original
    dist.init_process_group = init_process_group
    _state["original"] = original
    return True


def uninstall() -> None:
    if _state["original"] is not None:
        import torch.distributed as dist

        dist.init_process_group = _state["original"]
        _state["original"] = None
