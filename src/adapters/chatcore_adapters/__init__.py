"""chatcore_adapters: the adapters that plug the core's ports into the world."""
