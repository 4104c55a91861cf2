"""Scripts that tests run in subprocesses (not test modules)."""
