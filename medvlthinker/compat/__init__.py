"""Library-version work-arounds, each isolated in one module and applied only when the installed library needs it."""
