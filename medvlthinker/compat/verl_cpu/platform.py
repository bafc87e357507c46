"""A ``cpu`` platform for verl (``VERL_PLATFORM=cpu``).

verl 0.9 reaches the accelerator only through ``verl.plugin.platform`` (device module, communication backend, Ray
resource, IPC); it registers CUDA, NPU and ROCm platforms and falls back to CUDA. This one answers for a machine
without an accelerator:

- gloo for collectives; Ray's logical ``GPU`` resource (declared with ``ray_init.num_gpus``) for worker slots, so
  verl's placement code runs unchanged;
- ``current_device()`` is ``torch.device("cpu")``: verl passes it straight to ``.to()`` and ``device=``
  (``verl/utils/fsdp_utils.py``, ``verl/protocol.py``), where an int 0 would mean accelerator 0;
- no CUDA IPC: verl's weight transfer to the rollout engine takes its shared-memory path;
- a device module with the ``torch.cuda``-shaped functions verl calls (memory statistics are zeros, cache and
  synchronisation calls do nothing, the RNG is the CPU generator).

Registering is harmless on any machine: verl selects a platform by ``VERL_PLATFORM`` or by probing, and this one
reports itself available only when selected by name.
"""

from __future__ import annotations

import types
from contextlib import contextmanager, nullcontext

from medvlthinker.compat.patch import Patch
from medvlthinker.compat.verl_cpu._hooks import disabled_by

NAME = "cpu"
_state = {"registered": False}


def _device_module():
    import torch

    def _noop(*args, **kwargs):
        return None

    def _zero(*args, **kwargs):
        return 0

    def mem_get_info(*args, **kwargs):
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    module = types.ModuleType("medvlthinker_cpu_device")
    for name in ("current_stream", "stream", "Stream", "Event", "StreamContext", "synchronize", "is_available"):
        setattr(module, name, getattr(torch.cpu, name))
    module.device_count = lambda: 1
    module.current_device = lambda: 0
    module.set_device = _noop
    module.is_initialized = lambda: True
    module.get_device_name = lambda *a, **k: "cpu"
    for name in ("empty_cache", "ipc_collect", "reset_peak_memory_stats", "set_per_process_memory_fraction"):
        setattr(module, name, _noop)
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(module, name, _zero)
    module.memory_stats = lambda *a, **k: {}
    module.mem_get_info = mem_get_info
    module.manual_seed = module.manual_seed_all = lambda seed: torch.manual_seed(seed)
    module.get_rng_state = lambda *a, **k: torch.get_rng_state()
    module.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    module.get_rng_state_all = lambda: [torch.get_rng_state()]
    module.set_rng_state_all = lambda states: torch.set_rng_state(states[0])
    module.initial_seed = torch.initial_seed
    module.memory = types.SimpleNamespace(_set_allocator_settings=_noop)
    module.nvtx = types.SimpleNamespace(range=lambda msg: nullcontext(), range_push=_noop, range_pop=_noop)
    return module


def _platform_class():
    import torch
    from verl.plugin.platform import PlatformBase

    device = _device_module()

    class PlatformCPU(PlatformBase):
        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: device)

        def is_available(self):
            return True

        def is_platform_available(self, use_smi_check=False):
            from medvlthinker.compat.verl_cpu import cpu_profile

            return cpu_profile()

        def current_device(self):
            return torch.device("cpu")

        def device_count(self):
            return 1

        def set_device(self, device_index):
            return None

        def synchronize(self, device_index=None):
            return None

        def manual_seed(self, seed):
            torch.manual_seed(seed)

        def manual_seed_all(self, seed):
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings):
            return None

        def empty_cache(self):
            return None

        def get_device_capability(self, device_index=0):
            return None, None

        def communication_backend_name(self):
            return "gloo"

        def visible_devices_envvar(self):
            # Ray hands out its logical GPU slots through this variable; nothing reads it as hardware here
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg):
            yield

        def profiler_start(self):
            return None

        def profiler_stop(self):
            return None

        def ray_resource_name(self):
            return "GPU"

        def ray_noset_envvars(self):
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self):
            return False

        def cudart(self):
            return None

    return PlatformCPU


def needed() -> bool:
    """verl knows no ``cpu`` platform of its own."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    registered = PlatformRegistry.get(NAME)
    return registered is None or getattr(registered, "__medvlthinker__", False)


def is_active() -> bool:
    return _state["registered"]


def uninstall() -> None:
    """Take the ``cpu`` platform out of verl's registry again (only the one registered here)."""
    if not _state["registered"]:
        return
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if getattr(PlatformRegistry.get(NAME), "__medvlthinker__", False):
        PlatformRegistry._platforms.pop(NAME, None)  # verl has no unregister; its registry is this dict
    _state["registered"] = False


def install() -> bool:
    if _state["registered"]:
        return True
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get(NAME) is not None:  # verl (or another plugin) brings its own
        return False
    cls = _platform_class()
    cls.__medvlthinker__ = True
    PlatformRegistry.register(platform=NAME)(cls)
    _state["registered"] = True
    return True

PATCH = Patch(
    name="platform", target="verl.plugin.platform.platform_manager.PlatformRegistry['cpu']",
    upstream="verl 0.9.1 verl/plugin/platform/ (CUDA, NPU and ROCm platforms only, CUDA the fallback)",
    symptom="without an accelerator verl has no platform to select and falls back to CUDA",
    library="verl", probe=needed, install=install, uninstall=uninstall, is_active=is_active,
    where="import verl, on every machine (selected only by VERL_PLATFORM=cpu)",
    switch="MEDVLTHINKER_VERL_CPU_DISABLE=platform", switched=disabled_by("platform"),
)
