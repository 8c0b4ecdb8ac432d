"""Deliberately naive reference implementations: the oracle the tests and benchmarks compare the engine with."""
