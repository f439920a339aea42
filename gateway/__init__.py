"""Data plane: the RSGI app, proxying and streaming, admin, metrics, the CLI and supervisor."""
