"""Work-arounds of other libraries, one module each, each declared once as a :class:`~medvlthinker.compat.patch.Patch`
and applied only where the installed library needs it; ``python -m medvlthinker.compat`` lists them with their
verdict on this machine (:mod:`medvlthinker.compat.inventory`)."""
