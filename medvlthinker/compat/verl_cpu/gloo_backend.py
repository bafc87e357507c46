"""The process-group backend string on a CPU platform.

``verl/utils/distributed.py`` (``initialize_global_process_group`` and ``..._ray``) asks torch for
``f"cpu:gloo,{device}:{backend}"``, which on a CPU platform is ``cpu:gloo,cpu:gloo``; torch refuses a device type
named twice ("Duplicate device type cpu"). The wrapper rewrites exactly a string torch refuses for that reason to
the single backend it names, and passes everything else through.
"""

from __future__ import annotations

from medvlthinker.compat.patch import Patch
from medvlthinker.compat.verl_cpu._hooks import WHERE, Wrap, disabled_by


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


def _distributed():
    import torch.distributed as dist

    return dist


def _collapsing(original):
    def init_process_group(*args, **kwargs):
        if args:
            args = (collapse(args[0]), *args[1:])
        elif "backend" in kwargs:
            kwargs["backend"] = collapse(kwargs["backend"])
        return original(*args, **kwargs)

    return init_process_group


_wrap = Wrap(_distributed, "init_process_group", _collapsing, needed)
is_active, install, uninstall = _wrap.is_active, _wrap.install, _wrap.uninstall

PATCH = Patch(
    name="gloo_backend", target="torch.distributed.init_process_group",
    upstream="verl 0.9.1 verl/utils/distributed.py:63 and :89 (backend f\"cpu:gloo,{device}:{backend}\")",
    symptom="on a CPU platform verl asks torch for 'cpu:gloo,cpu:gloo', which torch refuses: Duplicate device type cpu",
    library="torch", probe=lambda: refused("cpu:gloo,cpu:gloo"), install=install, uninstall=uninstall,
    is_active=is_active, where=WHERE, switch="MEDVLTHINKER_VERL_CPU_DISABLE=gloo_backend",
    switched=disabled_by("gloo_backend"),
)
