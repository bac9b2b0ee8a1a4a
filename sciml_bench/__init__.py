"""sciml_bench: benchmark and profile PyTorch architectures for scientific machine learning."""
from sciml_bench.api import RunResult, compare, report, run
from sciml_bench.results import load_results

__all__ = ["RunResult", "compare", "load_results", "report", "run"]
__version__ = "0.1.0"
