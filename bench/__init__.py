"""Floe's benchmark harness (issue 8): ``python -m bench.run --quick|--full``."""
