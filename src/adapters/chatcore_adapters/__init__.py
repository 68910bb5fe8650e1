"""chatcore's adapters: the ports of :mod:`chatcore.ports` implemented in memory, on Redis and
on language models. Imported as ``chatcore_adapters`` (``adapters`` is another PyPI package)."""
