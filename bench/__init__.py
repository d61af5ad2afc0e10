"""Benchmarks: each section measures the project and, in the same run, a baseline."""
