"""The fixes of verl's GRPO path that every machine needs (not only the CPU profile), installed as one set.

==========================  ========================================================================================
module                      what it covers
==========================  ========================================================================================
``verl_position_ids``       the ragged dimension of Qwen2.5-VL's 3-D position ids through verl's batch indexing
``verl_text_only``          the actor's forward on a micro-batch without pictures (every m23k arm) on transformers 5
==========================  ========================================================================================

Each one probes the installed verl and installs itself only where the probe fails. :func:`worker_setup` is the
``runtime_env.worker_process_setup_hook`` of every RL config (``configs/rl/base/grpo.yaml``), so each Ray worker
process installs the set before running anything; the driver installs it in ``medvlthinker.train.rl``.
Each module declares itself as one :class:`~medvlthinker.compat.patch.Patch` (``PATCH``); docs/known-issues.md
describes each failure with a minimal reproduction.
"""

from __future__ import annotations

from medvlthinker.compat import verl_position_ids, verl_response_logits, verl_text_only

FIXES = (verl_position_ids, verl_text_only)
HOOK = "medvlthinker.compat.verl_fixes.worker_setup"
"""What ``ray_kwargs.ray_init.runtime_env.worker_process_setup_hook`` names in the RL configs."""


def name(fix) -> str:
    return fix.PATCH.name


def install_all() -> list[str]:
    """Install every fix the installed verl needs; the names of those active afterwards."""
    return [fix.PATCH.name for fix in FIXES if fix.PATCH.install()]


def status() -> dict[str, dict]:
    """Per fix: whether verl needs it, whether it is active here, and what fails without it."""
    return {name(fix): fix.status() for fix in FIXES}


def worker_setup() -> None:
    """Ray ``worker_process_setup_hook``: runs in every worker process of the job before any task. Also installs
    the opt-in speed-up of :mod:`medvlthinker.compat.verl_response_logits` where its variable asks for it."""
    install_all()
    verl_response_logits.install_if_requested()
