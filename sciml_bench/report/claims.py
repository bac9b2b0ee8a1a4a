"""Claims checked: common performance folklore and training lore, each given a verdict from the runs' own numbers.

The claims live by topic: ``performance_claims`` (speed, memory, throughput) and ``convergence_claims`` (mode='fit'
records); what a claim is made of, and the verdict rules, in ``evidence``.
"""
from __future__ import annotations

from typing import Any

from sciml_bench.report.convergence_claims import convergence_claims
from sciml_bench.report.evidence import NOT_MEASURED, Claim, Evidence, verdict_of, within
from sciml_bench.report.performance_claims import performance_claims

__all__ = ["NOT_MEASURED", "Claim", "Evidence", "check_claims", "convergence_claims"]

_within, _verdict = within, verdict_of  # their names before the split (tests import them from here)


def check_claims(records: list[dict[str, Any]]) -> list[Claim]:
    """Every claim with its verdict; records carry ``_run`` so pairs never cross runs."""
    out = performance_claims(records)
    out += convergence_claims(records)  # what a choice buys: mode='fit' records
    if len({r.get("_run") for r in records}) < 2:  # one run: no need to say which
        for c in out:
            for ev in c.evidence:
                ev.run = None
    return out
