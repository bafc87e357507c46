"""The project's verl plugin (entry point ``verl.plugins`` in pyproject.toml), imported by every ``import verl``.

It installs the CPU profile's work-arounds (:mod:`medvlthinker.compat.verl_cpu`) where ``VERL_PLATFORM=cpu``, and
there keeps freed memory in the heap (:mod:`medvlthinker.compat.cpu_allocator`: the actor's and the reference's
log-probabilities over the whole vocabulary are the big blocks); elsewhere it installs nothing.
"""

from medvlthinker.compat import cpu_allocator, verl_cpu

INSTALLED = verl_cpu.install_all()
KEEPS_FREED_MEMORY = verl_cpu.cpu_profile() and cpu_allocator.keep_freed_memory()
