"""asv's benchmark_dir (asv.conf.json): only asv benchmark modules live here.

asv imports every module under its benchmark_dir and collects every public name starting with
``time_``, ``track_``, ``peakmem_``..., so scripts (``benchmarks/detection_quality.py``) and the
pytest-benchmark micro-benchmarks (``benchmarks/micro/``) stay outside it.
"""
