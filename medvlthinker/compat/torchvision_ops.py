"""Let PyPI's torchvision import beside a CPU-only torch build.

torchvision's wheel for torch 2.13 links CUDA; beside the ``+cpu`` torch its compiled extension fails to load, so
the ``torchvision::nms`` / ``torchvision::qnms`` operator schemas are never defined and ``import torchvision``
dies in its meta registrations ("operator torchvision::nms does not exist"). transformers' Qwen2-VL video
processor and qwen-vl-utils import torchvision, so the whole VL stack depends on it.

The fix defines the two schemas (no kernels) just before torchvision first runs, and only when its extension really
cannot be loaded: the check is the behaviour, not a version string. The pure-Python transforms then work;
``torchvision.ops.nms`` does not (nothing in this project uses it).

It is installed as an import hook from a ``.pth`` file (``make setup`` writes it into the virtual environment), so
it reaches every Python process of the environment: pytest, vLLM, Ray workers, accelerate ranks.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

from medvlthinker.compat.patch import Patch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library.Library alive


def extension_loads(origin: str | None) -> bool:
    """Whether torchvision's compiled extension next to ``origin`` (torchvision/__init__.py) loads."""
    import glob
    import os

    import torch

    if origin is None:
        return True
    candidates = glob.glob(os.path.join(os.path.dirname(origin), "_C*.so"))
    if not candidates:
        return True
    try:
        torch.ops.load_library(candidates[0])
    except (OSError, RuntimeError):
        return False
    return True


def define_missing_schemas() -> bool:
    """Define the operator schemas torchvision's meta registrations need; True when any was missing."""
    global _library
    import torch

    missing = [name for name in _SCHEMAS if not _schema_exists(name)]
    if not missing:
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for name in missing:
        _library.define(_SCHEMAS[name])
    return True


def _schema_exists(name: str) -> bool:
    import torch

    try:
        torch._C._get_schema(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


class _Hook(importlib.abc.MetaPathFinder):
    """Runs the check once, the first time ``torchvision`` is imported, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and not extension_loads(spec.origin):
            define_missing_schemas()
        return spec


def install() -> bool:
    """Wait for torchvision's first import (nothing to do once it is imported); whether the hook is in place."""
    if "torchvision" in sys.modules or any(isinstance(f, _Hook) for f in sys.meta_path):
        return is_active()
    sys.meta_path.insert(0, _Hook())
    return True


def uninstall() -> None:
    """Take the import hook back while it waits; schemas it defined stay (torchvision's registrations use them)."""
    for finder in [f for f in sys.meta_path if isinstance(f, _Hook)]:
        sys.meta_path.remove(finder)


def is_active() -> bool:
    """The hook waits for torchvision's first import, or it has defined the missing schemas."""
    return _library is not None or any(isinstance(f, _Hook) for f in sys.meta_path)


def needed() -> bool:
    """torchvision's compiled extension does not load beside the installed torch (loads it when it does)."""
    spec = importlib.util.find_spec("torchvision")
    return spec is not None and not extension_loads(spec.origin)


PTH_NAME = "zz_medvlthinker_torchvision.pth"  # sorts after the editable-install .pth that puts the package on the path


def write_pth(site_packages: str | None = None) -> str:
    """Install the import hook into an environment's site-packages (``make setup`` calls this)."""
    import os
    import sysconfig

    site_packages = site_packages or sysconfig.get_paths()["purelib"]
    path = os.path.join(site_packages, PTH_NAME)
    with open(path, "w") as f:
        f.write("import medvlthinker.compat.torchvision_ops as _m; _m.install()\n")
    return path


PATCH = Patch(
    name="torchvision_ops", target="torch.library: torchvision::nms, torchvision::qnms schemas",
    upstream="torchvision 0.28.0 torchvision/_meta_registrations.py:163 (the PyPI wheel links CUDA, torch is +cpu)",
    symptom="import torchvision (hence transformers' Qwen2-VL video processor and qwen-vl-utils) dies with "
            "'operator torchvision::nms does not exist'",
    library="torchvision", probe=needed, install=install, uninstall=uninstall, is_active=is_active,
    where="every Python process of the environment, from the .pth file make setup writes",
)


if __name__ == "__main__":
    print(write_pth())
