"""sciml_bench: benchmark and profile PyTorch architectures for scientific machine learning."""
from sciml_bench.results import load_results

__all__ = ["load_results"]
__version__ = "0.1.0"
