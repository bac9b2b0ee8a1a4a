"""Workload knobs change what they claim: autocast dtypes, checkpointing memory, compile counters,
channels_last, and CUDA-only values skipped with reasons on a CPU."""
import pytest
import torch
from torch import nn

from sciml_bench.cases import Case
from sciml_bench.errors import Unsupported, UsageError
from sciml_bench.measure.memory import cpu_step_peak_bytes
from sciml_bench.measure.probes import probe
from sciml_bench.models import create_model, get_model_spec
from sciml_bench.workloads import MAX_WORKERS_ENV, build_workload

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallbacks")


def _linear_output_dtypes(wl) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
             for m in wl.model.modules() if isinstance(m, nn.Linear)]
    wl.step()
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_bf16_autocast_makes_matmul_outputs_bf16(mode):
    wl = build_workload(Case(model="mlp", mode=mode, batch_size=8, precision="bf16"))
    assert _linear_output_dtypes(wl) == {torch.bfloat16}, "bf16 autocast left a Linear output in another dtype"
    assert all(p.dtype == torch.float32 for p in wl.model.parameters()), "autocast must keep fp32 master weights"


def test_fp32_and_fp64_matmul_outputs():
    assert _linear_output_dtypes(build_workload(Case(model="mlp", batch_size=8))) == {torch.float32}
    assert _linear_output_dtypes(build_workload(Case(model="mlp", batch_size=8, precision="fp64"))) == {torch.float64}


def test_checkpointing_lowers_peak_cpu_tensor_memory_of_deep_mlp():
    # Batch much larger than the width: activations dominate the step's live memory.
    base = dict(model="mlp", mode="train", batch_size=4096, width=64, depth=16)
    peaks = {}
    for segments in (0, 4):
        wl = build_workload(Case(checkpoint=segments, **base))
        wl.step()  # optimizer state exists before the measured step
        peaks[segments] = cpu_step_peak_bytes(wl.step)
    assert peaks[4] < 0.6 * peaks[0], f"checkpointing did not lower the step peak enough: {peaks}"


def test_checkpointing_model_without_blocks_is_a_clear_error():
    with pytest.raises(UsageError, match=r"does not accept knob\(s\) checkpoint"):
        Case(model="deeponet", checkpoint=2)


def test_checkpointing_gives_same_loss():
    losses = []
    for segments in (0, 2):
        wl = build_workload(Case(model="mlp", batch_size=16, depth=4, checkpoint=segments))
        wl.step()
        losses.append(float(wl.last_loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6), "checkpointing changed the loss"


def test_channels_last_applies_to_model_and_input():
    wl = build_workload(Case(model="small_cnn", mode="infer", batch_size=4, channels_last=True))
    conv = next(m for m in wl.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last), "conv weight is not channels_last"
    assert wl.inputs.is_contiguous(memory_format=torch.channels_last), "input is not channels_last"


@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode", "grad"])
def test_inference_modes_run_in_eval(grad_mode):
    wl = build_workload(Case(model="mlp", mode="infer", batch_size=4, grad_mode=grad_mode))
    wl.step()
    assert not wl.model.training, "inference must run the model in eval mode"


def test_compile_reports_compile_time_and_graph_count():
    wl = build_workload(Case(model="mlp", batch_size=8, depth=2, width=16, compile="default"))
    import time

    t0 = time.perf_counter()
    wl.step()
    first = time.perf_counter() - t0
    wl.step()
    metrics, _ = probe(wl, first)
    assert metrics["compile_time"]["value"] > 0
    assert metrics["compiled_graphs"]["value"] >= 1, "no graph was compiled"
    assert metrics["graph_breaks"]["value"] == 0, metrics["graph_breaks"]


def test_bf16_numerics_drift_is_measured():
    wl = build_workload(Case(model="mlp", batch_size=16, precision="bf16"))
    wl.step()
    metrics, absent = probe(wl, 0.0)
    # bf16 rounds: its loss after the numerics steps differs from fp32's at the same seed, by little
    assert 0 < metrics["loss_drift"]["value"] < 0.1, metrics["loss_drift"]
    assert len(metrics["loss_after_steps"]["samples"]) == metrics["loss_after_steps"]["steps"]
    assert metrics["nonfinite_loss_steps"]["value"] == 0
    assert "GradScaler" in absent["scaler_skipped_steps"]


def test_fno_under_fp16_autocast_at_non_power_of_two_size():
    """Half-precision FFTs only take power-of-two sizes (and none at all on CPU): the spectral
    layer must run its FFT in fp32 so fp16 autocast works at any resolution."""
    model = create_model("fno1d")
    x, _ = get_model_spec("fno1d").sample_batch(2, resolution=100)
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(x)
    assert torch.isfinite(out).all(), "fno1d fp16 output has non-finite values"


CUDA_ONLY = [
    (dict(precision="fp16"), "GradScaler needs CUDA"),
    (dict(precision="tf32"), "TF32"),
    (dict(model="small_cnn", cudnn_benchmark=True), "cudnn.benchmark"),
    (dict(compile="reduce-overhead"), "CUDA graphs"),
    (dict(compile="max-autotune"), "needs CUDA"),
    (dict(model="small_cnn", mode="data", dataset="images", pin_memory=True), "pin_memory"),
    (dict(device="cuda"), "CUDA is not available"),
]


@cpu_only
@pytest.mark.parametrize("fields,reason", CUDA_ONLY, ids=[r for _, r in CUDA_ONLY])
def test_cuda_only_values_skip_with_reasons_on_cpu(fields, reason):
    with pytest.raises(Unsupported, match=reason):
        build_workload(Case(batch_size=4, **fields))


def test_worker_cap_skips_cases_above_it(monkeypatch):
    monkeypatch.setenv(MAX_WORKERS_ENV, "1")
    with pytest.raises(Unsupported, match="above the cap"):
        build_workload(Case(model="small_cnn", mode="data", dataset="images", batch_size=4, num_workers=2))


def test_shape_sweep_needs_a_size_knob():
    wl = build_workload(Case(model="mlp", mode="infer", batch_size=4, shape_sweep=1))
    with pytest.raises(Unsupported, match="resolution or seq_len"):
        probe(wl, 0.0)


def test_eager_shape_sweep_times_each_size():
    wl = build_workload(Case(model="fno1d", mode="infer", batch_size=2, width=8, depth=1, resolution=64,
                             shape_sweep=2))
    metrics, absent = probe(wl, 0.0)
    assert metrics["sweep_first_call_time"]["sizes"] == [96, 128]
    assert len(metrics["sweep_first_call_time"]["samples"]) == 2
    assert "recompiles" in absent
    assert wl.inputs.shape[-1] == 64, "the sweep must restore the case's own batch"


def test_one_checkpoint_segment_still_checkpoints():
    """checkpoint=1 checkpoints (and so recomputes) the whole stack; checkpoint_sequential would
    have run its single segment plainly. The recomputation shows in the counted FLOPs."""
    from sciml_bench.measure.flops import count_flops

    flops = {}
    for ck in (0, 1):
        wl = build_workload(Case(model="mlp", width=64, depth=4, batch_size=32, checkpoint=ck))
        flops[ck] = count_flops(wl.step)
    assert flops[1] > 1.2 * flops[0], f"checkpoint=1 should recompute the forward: {flops}"


def test_segment_counts_that_would_be_ignored_are_refused():
    with pytest.raises(ValueError, match="exceeds"):
        build_workload(Case(model="mlp", depth=2, width=16, checkpoint=4))
    with pytest.raises(ValueError, match="use checkpoint=1"):
        build_workload(Case(model="fno1d", resolution=32, width=8, checkpoint=2))


def test_the_numerics_probe_keeps_the_compiled_code_of_the_case_it_probes(monkeypatch):
    """A compiled case resets dynamo when it is built (its counters are its own); the numerics probe then
    builds a fresh copy beside it, and a second reset there would throw the case's compiled code away, to be
    recompiled inside its timed rounds. Dynamo and torch.compile are faked: only the resets are counted."""
    from types import SimpleNamespace

    from sciml_bench import workloads
    from sciml_bench.measure.probes import _numerics

    resets = []
    fake = SimpleNamespace(reset=lambda: resets.append("reset"), utils=SimpleNamespace(counters={}))
    monkeypatch.setattr(workloads, "torch_dynamo", lambda: fake)
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    case = Case(model="mlp", mode="train", batch_size=4, precision="bf16", compile="default")
    build_workload(case)
    assert resets == ["reset"], "the case's own build resets"
    metrics, absent = {}, {}
    _numerics(case, metrics, absent)
    assert resets == ["reset"] and "loss_drift" in metrics, "the probe's copy must not reset: " + str(absent)


def test_the_data_wait_is_the_loaders_alone_not_the_copy_to_the_device(monkeypatch):
    """On a GPU a copy from pageable memory also waits for the last step's queued kernels: compute, not a
    stall. The copy is made slow here (300 ms); the data wait of three loaded steps must not hold it."""
    import time

    from sciml_bench import workloads

    copy = workloads.to_device

    def slow_copy(*args, **kwargs):
        time.sleep(0.3)
        return copy(*args, **kwargs)

    monkeypatch.setattr(workloads, "to_device", slow_copy)
    wl = build_workload(Case(model="small_cnn", mode="train", dataset="images", batch_size=4))
    wl.step()  # the loader's first batch (its iterator starts)
    wl.data_wait_s = 0.0
    for _ in range(3):
        wl.step()
    assert wl.data_wait_s < 0.9, f"the copies' 900 ms are not the loader's wait: {wl.data_wait_s:.3f} s"


@pytest.mark.parametrize("mode, knobs", [("infer", {"grad_mode": "grad"}), ("infer", {}), ("train", {})])
def test_cuda_graph_modes_mark_each_step_and_other_modes_do_not(monkeypatch, mode, knobs):
    """torch ends a CUDA-graph step by itself only when a backward consumes the forward's outputs: an
    inference step with grad enabled must mark each step, or it never replays its graph. The CUDA-only
    refusal, torch.compile and the marker are faked: this checks that every call of each mode marks once."""
    from sciml_bench import workloads

    marks = []
    monkeypatch.setattr(workloads, "check_device", lambda case: torch.device("cpu"))
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for compile_mode, per_call in (("reduce-overhead", 1), ("max-autotune", 1), ("default", 0)):
        marks.clear()
        wl = build_workload(Case(model="mlp", mode=mode, batch_size=4, compile=compile_mode, **knobs))
        for _ in range(3):
            wl.step()
        assert len(marks) == 3 * per_call, (compile_mode, len(marks))


def test_a_numerics_probe_without_room_leaves_the_drift_absent_not_the_case_failed(monkeypatch):
    from sciml_bench.measure import probes

    wl = build_workload(Case(model="mlp", mode="train", batch_size=4, precision="bf16"))

    def no_room(case, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    flags = []
    monkeypatch.setattr(probes, "build_workload", no_room)
    monkeypatch.setattr(probes, "set_backend_flags", lambda case: flags.append(case))
    metrics, absent = probe(wl, 0.0)
    assert "loss_drift" not in metrics and "did not fit beside it" in absent["loss_drift"], absent
    assert flags == [wl.case], "the case's own TF32 / cudnn flags are set again, however the probe ended"
