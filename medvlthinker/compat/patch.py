"""The one way a work-around of another library is declared: a :class:`Patch`.

Each patch module of :mod:`medvlthinker.compat` ends with one ``PATCH = Patch(...)``: what it patches (the upstream
qualified name), the upstream file, line or version range it works around, the symptom in one sentence, the
distribution that must be installed for it to mean anything, a probe of the *installed* library without the patch,
and its install / uninstall / is_active. How a patch installs is its own business (a probe-checked fix,
:class:`~medvlthinker.compat.probed_fix.ProbedFix`; a wrapped attribute or a post-import patch,
:mod:`medvlthinker.compat.verl_cpu._hooks`; a setting of the C library); the declaration is what every caller reads:
``python -m medvlthinker.compat`` (the inventory), docs/known-issues.md (its table is generated from the
declarations) and the tests.

Where each patch is installed stays where it was: ``import verl`` (the plugin, :mod:`medvlthinker.compat.verl_plugin`),
the Ray worker hook (:mod:`medvlthinker.compat.verl_fixes`), the ``.pth`` file (torchvision) and the CPU entry points
(the allocator). A declaration only answers for its patch.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

NEEDED = "needed"
NOT_NEEDED = "not needed (upstream fixed)"
INSTALLED = "installed"
STEPPED_ASIDE = "stepped aside"
OPT_IN = "opt-in, off"
OPT_IN_ON = "opt-in, on (installed where its run starts)"
ABSENT = "library absent"
PROBE_ERROR = "probe error"
VERDICTS = (NEEDED, NOT_NEEDED, INSTALLED, STEPPED_ASIDE, OPT_IN, OPT_IN_ON, ABSENT, PROBE_ERROR)


def _never() -> bool:
    return False


@dataclass(frozen=True, eq=False)
class Patch:
    name: str
    """The module's name, also the name its switches use (``MEDVLTHINKER_VERL_CPU_DISABLE=gloo_backend``)."""
    target: str
    """The upstream qualified name(s) the patch replaces or defines."""
    upstream: str
    """The upstream file and line, or the version range, it works around."""
    symptom: str
    """What goes wrong without it, in one sentence."""
    library: str
    """The import name of the library patched (empty for the C library); the verdict is ``library absent`` where
    it is not installed."""
    probe: Callable[[], bool]
    """Whether the installed library, without the patch, still needs it (may import that library)."""
    install: Callable[[], bool]
    uninstall: Callable[[], None]
    is_active: Callable[[], bool]
    where: str
    """When and by what the project installs it."""
    switch: str = ""
    """The environment variable that turns it off (or, for an opt-in, on), as the user writes it."""
    switched: Callable[[], bool] = _never
    """Whether that switch is set in this process: a fix stays out, an opt-in goes in."""
    opt_in: bool = False
    """An optimisation the user asks for, not a fix."""

    def library_installed(self) -> bool:
        return not self.library or importlib.util.find_spec(self.library) is not None

    def verdict(self) -> str:
        """One of :data:`VERDICTS` for this process and the libraries installed here."""
        if not self.library_installed():
            return ABSENT
        if self.opt_in:
            return INSTALLED if self.is_active() else OPT_IN_ON if self.switched() else OPT_IN
        try:
            needed = self.probe()
        except Exception as exc:  # a library that changed shape under the probe: say so rather than guess
            return f"{PROBE_ERROR} ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        # asked after the probe: importing the library may be what installs the patch (verl's plugin entry point)
        if self.is_active():
            return INSTALLED
        if not needed:
            return NOT_NEEDED
        return STEPPED_ASIDE if self.switched() else NEEDED

    def describe(self) -> dict:
        """The declaration and this machine's verdict, as ``python -m medvlthinker.compat --json`` prints it."""
        return {"name": self.name, "target": self.target, "upstream": self.upstream, "symptom": self.symptom,
                "library": self.library, "where": self.where, "switch": self.switch, "opt_in": self.opt_in,
                "verdict": self.verdict()}


def env_is(name: str, value: str) -> Callable[[], bool]:
    """A ``switched`` test: the variable ``name`` is set to ``value``."""
    return lambda: os.environ.get(name, "").strip() == value
