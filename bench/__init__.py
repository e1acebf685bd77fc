"""Benchmarks and measured rows: thin clients of the library, run from the repository root as
``python -m bench.<name>`` (bench/README.md)."""
