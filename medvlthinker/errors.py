"""The one base of the project's errors: a mistake the user can fix, which a stage script prints as one line.

Every error class of the package derives from :class:`UserError`, so :func:`medvlthinker.cli.command` (and
:func:`medvlthinker.cli.entry_point` for a script without click) prints any of them as ``error: <message>`` with
exit code 1. This module imports nothing, so the lowest modules of the package (schema, images) can use it.

>>> str(UserError("data/x.jsonl", "the file is empty", fix="point --results at the run's eval_results.jsonl"))
"data/x.jsonl: the file is empty; fix: point --results at the run's eval_results.jsonl"
>>> class ExampleError(UserError):
...     pass
>>> str(ExampleError("run.yaml: key lr is not a number; fix: write it as 1e-5"))
'run.yaml: key lr is not a number; fix: write it as 1e-5'
"""

from __future__ import annotations


class UserError(ValueError):
    """An error the user can fix: ``where`` (a file, a row, a key), the ``problem`` and the ``fix``.

    A subclass may also be raised with one ready-made message (``SomeError("<where>: <problem>; fix: <fix>")``);
    its ``where``/``problem``/``fix`` then stay as the subclass set them (None by default).
    """

    where: str | None = None
    problem: str | None = None
    fix: str | None = None

    def __init__(self, where: str | None = None, problem: str | None = None, *, fix: str | None = None) -> None:
        if problem is None and fix is None:
            super().__init__(where)
            return
        self.where, self.problem, self.fix = where, problem, fix
        head = f"{where}: " if where else ""
        super().__init__(f"{head}{problem}" + (f"; fix: {fix}" if fix else ""))

    def __reduce__(self):
        # multiprocessing workers send exceptions back pickled; subclasses with their own __init__ arguments
        # cannot be rebuilt from their message, so the class, message and attributes travel as they are
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[UserError], args: tuple, state: dict) -> UserError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc
