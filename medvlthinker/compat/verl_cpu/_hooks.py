"""The two shapes every work-around of the CPU profile takes, written once.

* :class:`Wrap`: one attribute (a function, a method) replaced by a wrapper of itself while a probe says the
  work-around is needed, and put back by ``uninstall``;
* :func:`after_import` / :func:`install_after_import`: a patch applied to a heavy module right after it is first
  imported (or now, when it already is), so nothing imports vLLM or verl before they are used.

Each module of the profile still declares itself as one :class:`~medvlthinker.compat.patch.Patch`; :func:`disabled_by`
and :data:`WHERE` are what those declarations share.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

_pending: dict[str, list[Callable]] = {}


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        hooks = _pending.get(fullname)
        if not hooks:
            return None
        # Let the other finders locate the real module, then wrap its loader.
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        inner = spec.loader
        todo = _pending.pop(fullname)

        class _Loader(importlib.abc.Loader):
            def create_module(self, s):
                return inner.create_module(s)

            def exec_module(self, module):
                inner.exec_module(module)
                for hook in todo:
                    hook(module)

        spec.loader = _Loader()
        return spec


_finder = _AfterImport()


def after_import(name: str, hook: Callable) -> None:
    """Call ``hook(module)`` once ``name`` is imported; at once if it already is."""
    if name in sys.modules:
        hook(sys.modules[name])
        return
    _pending.setdefault(name, []).append(hook)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def install_after_import(target: str, patch: Callable, is_active: Callable[[], bool]) -> bool:
    """Under the CPU profile, ``patch(module)`` once ``target`` is imported; whether the patch is in place now
    (False while the target is not imported yet: the patch logs itself when it lands)."""
    from medvlthinker.compat.verl_cpu import cpu_profile

    if not cpu_profile():
        return False
    after_import(target, patch)
    return is_active()


class Wrap:
    """``owner().<attr>`` replaced by ``wrap(original)`` when ``needed()``; the original is kept to restore it.

    ``owner`` imports what holds the attribute only when the work-around installs or uninstalls, so a module of
    the profile stays cheap to import. The wrapper's ``__wrapped__`` is the original, as ``functools.wraps`` does.
    """

    def __init__(self, owner: Callable[[], Any], attr: str, wrap: Callable[[Callable], Callable],
                 needed: Callable[[], bool]) -> None:
        self.owner, self.attr, self.wrap, self.needed = owner, attr, wrap, needed
        self.original: Callable | None = None

    def is_active(self) -> bool:
        return self.original is not None

    def install(self) -> bool:
        """Wrap the attribute when the probe says so; whether the work-around is active."""
        if self.is_active():
            return True
        if not self.needed():
            return False
        owner = self.owner()
        original = getattr(owner, self.attr)
        wrapper = self.wrap(original)
        wrapper.__wrapped__ = original
        setattr(owner, self.attr, wrapper)
        self.original = original
        return True

    def uninstall(self) -> None:
        if self.original is not None:
            setattr(self.owner(), self.attr, self.original)
            self.original = None


WHERE = "import verl under VERL_PLATFORM=cpu (the verl plugin), in the driver and every Ray worker"


def disabled_by(name: str) -> Callable[[], bool]:
    """A declaration's ``switched``: ``name`` is listed in ``MEDVLTHINKER_VERL_CPU_DISABLE``."""

    def switched() -> bool:
        from medvlthinker.compat.verl_cpu import disabled

        return name in disabled()

    return switched
