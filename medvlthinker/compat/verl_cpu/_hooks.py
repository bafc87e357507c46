"""Run a function on a module right after it is first imported (or now, when it already is)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Callable

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
