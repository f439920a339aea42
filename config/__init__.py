"""Control plane: resource models and validation, loaders, the compiler and the watcher."""
