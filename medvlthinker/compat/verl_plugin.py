"""The project's verl plugin (entry point ``verl.plugins`` in pyproject.toml), imported by every ``import verl``.

It installs the CPU profile's work-arounds (:mod:`medvlthinker.compat.verl_cpu`) where ``VERL_PLATFORM=cpu``;
elsewhere it installs nothing.
"""

from medvlthinker.compat import verl_cpu

INSTALLED = verl_cpu.install_all()
