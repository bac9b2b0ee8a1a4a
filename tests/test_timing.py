"""Per-block CPU accounting: a block that waited for a CPU is flagged starved; the rule's fallback."""
from sciml_bench.measure.timing import STARVED_SHARE, STARVED_WAIT, cpu_block


def test_starved_rule_prefers_run_queue_wait_and_falls_back_to_cpu_share():
    # a step using 1 of 2 threads on a quiet machine: half the asked CPU, but no waiting -> not starved
    quiet = cpu_block(1.0, 1.0, 2, {"1": 0, "2": 0}, {"1": int(0.01e9), "2": 0})
    assert quiet["cpu_share"] == 0.5 and not quiet["starved"], quiet
    busy = cpu_block(1.0, 0.4, 2, {"1": 0}, {"1": int((STARVED_WAIT + 0.1) * 1e9)})
    assert busy["starved"] and busy["run_queue_wait"] > STARVED_WAIT, busy
    # without schedstat, the CPU share decides
    assert cpu_block(1.0, 2 * STARVED_SHARE * 0.5, 2, None, None)["starved"]
    assert not cpu_block(1.0, 1.9, 2, None, None)["starved"]
