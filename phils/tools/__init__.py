"""Benchmarks, evals and test-model tools: not needed to serve completions."""
