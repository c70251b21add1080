"""Benchmarks that other parts of the package reuse (the Q4 attention cost), and the timing helpers
shared with the scripts in ``benchmarks/``. Imports nothing heavy at package import."""
