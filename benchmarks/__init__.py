"""Front ends outside the library: asv benchmarks generated from the shipped studies
(``asv_benchmarks/``, asv's benchmark_dir) and pytest-benchmark micro-benchmarks (``micro/``, no
``__init__.py``: pytest-only code). Research scripts that measure sciml-bench itself live in ``evidence/``.
"""
