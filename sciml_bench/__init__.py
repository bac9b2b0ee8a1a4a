"""sciml_bench: benchmark and profile PyTorch architectures for scientific machine learning."""
import sys
import types

from sciml_bench.api import RunResult, compare, report, run
from sciml_bench.recommend import Recommendation, recommend
from sciml_bench.results import load_results

__all__ = ["Recommendation", "RunResult", "compare", "load_results", "recommend", "report", "run"]
__version__ = "0.1.0"


class _Package(types.ModuleType):
    """Keeps ``sciml_bench.compare`` / ``sciml_bench.report`` / ``sciml_bench.recommend`` the API functions.

    Importing a submodule binds it as an attribute of its package, so the first
    ``from sciml_bench.compare import ...`` anywhere would replace the function ``compare`` by the
    module of the same name. The submodules stay importable by their dotted names.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("compare", "report", "recommend") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
