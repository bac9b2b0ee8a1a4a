"""Reports: runs become reports/<name>/ with index.html, report.md and figures/*.png."""
from sciml_bench.report.build import build_report, collect
from sciml_bench.report.claims import check_claims

__all__ = ["build_report", "check_claims", "collect"]
