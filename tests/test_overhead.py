"""Harness overhead: a step made of a few tiny ops is flagged as overhead-dominated, a real one is not."""
import statistics

import torch

from sciml_bench.measure.overhead import count_ops, harness_costs, overhead_verdict
from sciml_bench.measure.timing import time_block


def test_tiny_step_is_overhead_dominated_and_a_real_step_is_not():
    a, big = torch.ones(4), torch.randn(384, 384)

    def tiny() -> None:
        for _ in range(5):
            torch.add(a, a)

    def real() -> None:
        big @ big @ big

    costs = harness_costs(torch.get_num_threads(), min_run_time=0.02)
    assert 0 < costs["harness_s"] < costs["op_s"], f"an empty step must cost less than a dispatched op: {costs}"
    verdicts = {}
    for name, step in (("tiny", tiny), ("real", real)):
        ops = count_ops(step)
        assert ops == {"tiny": 5, "real": 2}[name], f"{name}: counted {ops} aten ops"
        step_s = statistics.median(time_block(step, 0.05, torch.get_num_threads())["times"])
        verdicts[name] = overhead_verdict(step_s, dict(costs, ops=ops))
    assert verdicts["tiny"]["dominated"] and "size the case up" in verdicts["tiny"]["reason"], verdicts["tiny"]
    assert not verdicts["real"]["dominated"], f"a {verdicts['real']['step_s'] * 1e3:.1f} ms matmul step is not overhead"
