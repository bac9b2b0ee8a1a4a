"""Memory measurement: allocator-event peak against known allocations, and per-case isolation."""
import torch

from sciml_bench.measure.memory import cpu_step_peak_bytes, peak_rss_bytes, rss_bytes, tensor_bytes


def test_cpu_peak_matches_a_known_allocation_within_1_percent():
    n = 4_000_000  # 16 MB of float32

    def step():
        a = torch.empty(n, dtype=torch.float32)
        a.fill_(1.0)
        del a

    measured = cpu_step_peak_bytes(step)
    expected = 4 * n
    assert abs(measured - expected) / expected < 0.01, f"measured {measured} B, analytic {expected} B"


def test_cpu_peak_counts_overlapping_allocations_not_their_sum_after_free():
    n = 1_000_000

    def step():
        a = torch.ones(n)      # 4 MB live
        b = a * 2              # 8 MB live: the peak
        del a
        c = b + 1              # 8 MB live again (a freed)
        del b, c

    measured = cpu_step_peak_bytes(step)
    assert abs(measured - 8 * n) / (8 * n) < 0.01, f"peak should be two live 4 MB tensors, got {measured}"


def test_cpu_peak_tracks_frees_of_previous_step_allocations():
    state = {}

    def step():
        state.pop("grad", None)                 # frees the previous step's block
        state["grad"] = torch.zeros(1_000_000)  # 4 MB, lives until the next step

    # Net change within one step is zero (free 4 MB, allocate 4 MB): the peak increase must be ~0,
    # not 4 MB, which it would be if the free of a block from the previous step were not seen.
    measured = cpu_step_peak_bytes(step)
    assert measured < 0.01 * 4_000_000, f"free of last step's block was not tracked: {measured}"


def test_tensor_bytes_counts_shared_storage_once():
    a = torch.zeros(1000)
    assert tensor_bytes([a, a[:10], a.view(10, 100)]) == 4000


def test_rss_readings_are_positive_and_ordered():
    assert 0 < rss_bytes() <= peak_rss_bytes() * 1.05
