"""Front ends outside the library: asv benchmarks generated from the shipped studies
(``asv_benchmarks/``, asv's benchmark_dir), pytest-benchmark micro-benchmarks (``micro/``, no
``__init__.py``: pytest-only code), and measurement scripts such as ``detection_quality.py``.
"""
