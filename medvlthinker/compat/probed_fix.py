"""A fix of an installed library that applies itself only where a behavioural probe fails without it.

This is how the fixes of :mod:`medvlthinker.compat.verl_fixes` install; each module declares its fix as a
:class:`~medvlthinker.compat.patch.Patch` whose probe, install and uninstall are those of its :class:`ProbedFix`.
The probe (a list of failures, empty when the library behaves) runs once against the library as installed; the fix
goes in only when it failed, and is checked by running the probe again, so it steps aside by itself once the library
is fixed, whatever its version string, and refuses to run on a library it does not know.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)


class ProbedFix:
    def __init__(self, name: str, what: str, env_disable: str, probe: Callable[[], list[str]],
                 apply: Callable[[], None], remove: Callable[[], None]):
        self.name, self.what, self.env_disable = name, what, env_disable
        self._probe, self._apply, self._remove = probe, apply, remove
        self._installed = False
        self._failures: list[str] | None = None

    def needed(self) -> bool:
        """Whether the library as installed (without this fix) fails the probe; computed once."""
        if self._failures is None:
            with self.state(installed=False):
                self._failures = self._probe()
        return bool(self._failures)

    def is_active(self) -> bool:
        """Whether the fix is installed in this process."""
        return self._installed

    def uninstall(self) -> None:
        """Take the fix back (tests use it to show the failure the fix prevents)."""
        if self._installed:
            self._remove()
            self._installed = False

    def install(self, force: bool = False) -> bool:
        """Install the fix where the library needs it (or with ``force``); True when it is active afterwards.

        Raises RuntimeError when the fix is installed and the probe still fails.
        """
        if os.environ.get(self.env_disable, "1") == "0":
            logger.warning("%s=0: %s disabled", self.env_disable, self.what)
            return False
        if self._installed:
            return True
        if not (force or self.needed()):
            logger.info("%s not needed by the installed library", self.what)
            return False
        self._apply()
        self._installed = True
        still = self._probe()
        if still:
            self.uninstall()
            raise RuntimeError(
                f"the {self.what} is installed but its probe still fails: " + "; ".join(still)
                + f". The installed library differs from what medvlthinker/compat/{self.name}.py knows; set "
                f"{self.env_disable}=0 to run without it and see docs/known-issues.md"
            )
        logger.info("%s installed (%s)", self.what, "; ".join(self._failures or ["forced"]))
        from medvlthinker.compat.verl_cpu import log

        log(f"installed {self.name}")
        return True

    def status(self) -> dict:
        """What preflight reports: whether the library needs the fix, whether it is active, what fails without it."""
        need = self.needed()
        return {"needed": need, "active": self.is_active(), "failures_without_fix": list(self._failures or [])}

    @contextlib.contextmanager
    def state(self, installed: bool):
        """The fix installed (forced) or not for the duration of the block, then as it was before."""
        was = self._installed
        if installed and not was:
            self._apply()
            self._installed = True
        elif not installed:
            self.uninstall()
        try:
            yield self
        finally:
            if was and not self._installed:
                self._apply()
                self._installed = True
            elif not was and self._installed:
                self.uninstall()
