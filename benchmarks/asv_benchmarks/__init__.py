"""asv's benchmark_dir (asv.conf.json): only asv benchmark modules live here.

asv imports every module under its benchmark_dir and collects every public name starting with
``time_``, ``track_``, ``peakmem_``..., so the pytest-benchmark micro-benchmarks (``benchmarks/micro/``)
stay outside it, and the research scripts (``evidence/``) outside ``benchmarks/``.
"""
