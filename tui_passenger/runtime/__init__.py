"""The code that runs inside preloaders and workers: standard library and httptools only."""
