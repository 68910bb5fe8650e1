"""chatcore_api: the bundled API, its CLI and the worker processes (the composition root)."""
