"""asv benchmarks for sciml_bench: thin adapters generated from the shipped studies (see bench_studies.py).

The pytest-benchmark micro-benchmarks live in ``benchmarks/micro/`` (no ``__init__.py``, so asv's
discovery, which imports every package module, never imports pytest-only code).
"""
