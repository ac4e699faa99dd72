"""Benchmarks that print ratios against a baseline measured in the same run.

Run from the repository root: ``python -m benchmarks pergrad|privacy|evaluation [--tiny]``.
"""
