"""CUDA branches executed on a CPU: where torch allows it (fp16 autocast + GradScaler, non_blocking
copies, the TF32 / cudnn flags) or where a fake stands in for the device (sync, allocator
statistics, CUDA events, capability queries). Branches that still need a GPU are listed in the
docs' limits page. Each fake replaces a ``torch.cuda`` function the code looks up at call time,
so a CPU run's own behaviour is untouched; a refactor that binds the real one earlier fails here
loudly (the real functions raise without a GPU)."""
import time
from types import SimpleNamespace

import pytest
import torch

from sciml_bench import workloads
from sciml_bench.cases import Case
from sciml_bench.errors import Unsupported
from sciml_bench.measure import environment, timing
from sciml_bench.measure.memory import step_memory
from sciml_bench.measure.probes import NUMERICS_STEPS, probe
from sciml_bench.profiling import measure_phases, memory_timeline, write_operator_tables
from sciml_bench.workloads import (
    Workload,
    build_workload,
    check_device,
    set_backend_flags,
)

CUDA = torch.device("cuda")  # a device object only: nothing is allocated on it


def fake_cuda(monkeypatch, **functions) -> None:
    """Replace ``torch.cuda.<name>`` for this test (restored after it)."""
    for name, fn in functions.items():
        monkeypatch.setattr(torch.cuda, name, fn)


@pytest.fixture
def cpu_builds_cuda_knobs(monkeypatch):
    """``build_workload`` without its device check, so the code of CUDA-only knobs runs on the CPU.

    Test only: a CPU run keeps refusing these knobs (asserted first)."""
    with pytest.raises(Unsupported, match="fp16 autocast with GradScaler needs CUDA"):
        check_device(Case(precision="fp16"))
    monkeypatch.setattr(workloads, "check_device", lambda case: torch.device("cpu"))


@pytest.fixture
def backend_flags():
    """Restore the process-wide TF32 / cudnn / matmul-precision flags a test sets."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.get_float32_matmul_precision())
    yield
    torch.set_float32_matmul_precision(saved[3])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[:3]


# ---------------------------------------------------------------- fp16 autocast + GradScaler

def _params(wl: Workload) -> list[torch.Tensor]:
    return [p.detach().clone() for p in wl.model.parameters()]


def test_gradscaler_skips_an_inf_step_and_takes_a_finite_one(cpu_builds_cuda_knobs):
    wl = build_workload(Case(model="mlp", batch_size=8, width=16, depth=2, precision="fp16"))
    assert wl.scaler is not None and wl.scaler.get_scale() == 2.0 ** 16, "fp16 trains with a GradScaler"
    first = next(wl.model.parameters())
    hook = first.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = _params(wl)
    wl.step()
    hook.remove()
    assert wl.scaler.get_scale() == 2.0 ** 15, "an inf gradient must halve the scale"
    assert all(torch.equal(a, b) for a, b in zip(before, _params(wl))), "a skipped step changed the parameters"
    assert not wl.optimizer.state, "a skipped step must not reach the optimizer (Adam state would exist)"
    wl.step()
    after = _params(wl)
    assert wl.scaler.get_scale() == 2.0 ** 15, "a finite step keeps the scale (growth comes after 2000)"
    assert all(torch.isfinite(p).all() for p in after), "a finite step left non-finite parameters"
    assert all(not torch.equal(a, b) for a, b in zip(before, after)), "a finite step left a parameter unchanged"


def test_fp16_autocast_runs_matmuls_in_fp16_in_train_and_infer(cpu_builds_cuda_knobs):
    for mode in ("train", "infer"):
        wl = build_workload(Case(model="mlp", mode=mode, batch_size=4, width=16, depth=2, precision="fp16"))
        seen = set()
        hooks = [m.register_forward_hook(lambda m, i, o, seen=seen: seen.add(o.dtype))
                 for m in wl.model.modules() if isinstance(m, torch.nn.Linear)]
        wl.step()
        for h in hooks:
            h.remove()
        assert seen == {torch.float16}, f"{mode}: fp16 autocast left a Linear output in {seen}"
        assert all(p.dtype == torch.float32 for p in wl.model.parameters()), "autocast keeps fp32 master weights"


def test_scaler_unscales_before_clipping(cpu_builds_cuda_knobs):
    """Clipping must see the true gradients: the optimizer then gets a norm of exactly ``clip``
    (clipping the scaled ones would leave clip / scale after the scaler's own unscale)."""
    clip = 0.1
    wl = build_workload(Case(model="mlp", mode="fit", batch_size=8, width=16, depth=2, precision="fp16", clip=clip))
    wl.step()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in wl.model.parameters()]))
    assert int(wl.clipped) == 1, "the true gradient norm is above 0.1: the step must count as clipped"
    assert float(norm) == pytest.approx(clip, rel=1e-3), f"optimizer saw gradient norm {float(norm)}, not {clip}"


def test_numerics_probe_counts_skipped_steps(cpu_builds_cuda_knobs, monkeypatch):
    """Started at 2**20, the scale overflows fp16 gradients for the first few steps and halves each
    time until they fit: the probe must count exactly the steps whose loss did not move the
    parameters (a step's loss is taken before its update, so skipped + 1 losses are equal)."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: real(device, init_scale=2.0 ** 20))
    case = Case(model="mlp", batch_size=8, width=16, depth=2, precision="fp16")
    metrics, absent = probe(build_workload(case), 0.0)
    assert "scaler_skipped_steps" not in absent, absent.get("scaler_skipped_steps")
    skipped, losses = metrics["scaler_skipped_steps"]["value"], metrics["loss_after_steps"]["samples"]
    assert 0 < skipped < NUMERICS_STEPS - 1, f"the fake scale should skip some steps, not all: {skipped}"
    assert len(set(losses[:skipped + 1])) == 1, f"{skipped} skipped steps, yet the loss moved: {losses}"
    assert losses[skipped + 1] < losses[skipped], f"the first finite step should lower the loss: {losses}"
    assert metrics["nonfinite_params"]["value"] == 0


# ---------------------------------------------------------------- non_blocking copies

@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")
@pytest.mark.parametrize("mode", ["data", "train"])
def test_non_blocking_copies_deliver_the_same_batch(cpu_builds_cuda_knobs, monkeypatch, mode):
    flags = []
    real = workloads.to_device

    def spy(*args, **kw):
        flags.append(kw.get("non_blocking", args[4] if len(args) > 4 else False))
        return real(*args, **kw)

    monkeypatch.setattr(workloads, "to_device", spy)
    got = {}
    for pin in (False, True):
        flags.clear()
        wl = build_workload(Case(model="small_cnn", mode=mode, dataset="images", batch_size=4, pin_memory=pin))
        wl.step()
        assert flags[-1] is pin, f"pin_memory={pin}: the batch copy ran with non_blocking={flags[-1]}"
        got[pin] = wl.inputs, wl.targets, wl.last_loss
    assert torch.equal(got[False][0], got[True][0]) and torch.equal(got[False][1], got[True][1]), \
        "a non_blocking copy changed the batch"
    if mode == "train":
        assert torch.equal(got[False][2], got[True][2]), "the same batch must give the same loss"


# ---------------------------------------------------------------- timing: sync and starvation

def test_warmup_syncs_after_the_first_step_and_at_the_end(monkeypatch):
    log = []

    def sync(device=None):
        log.append(f"sync {device}")
        time.sleep(0.02)  # the queued kernels of the step, finishing

    fake_cuda(monkeypatch, is_available=lambda: True, is_initialized=lambda: True, synchronize=sync)
    out = timing.warmup(lambda: log.append("step"), min_steps=3, device="cuda:1")
    assert log == ["step", "sync cuda:1", "step", "step", "sync cuda:1"], f"the case's GPU, at the edges: {log}"
    assert out["first_step_s"] >= 0.02, "the first step's time must include its sync"
    assert out["warmup_steps"] == 3
    log.clear()
    timing.warmup(lambda: log.append("step"), min_steps=2, device="cpu")
    assert log == ["step", "step"], "a CPU case waits for no GPU, even in a process where CUDA is initialized"


def test_timed_block_is_bracketed_by_syncs_and_not_starved_by_sleeping_in_them(monkeypatch):
    """torch's Timer syncs the accelerator on each clock read: every step call must fall between a
    pair of syncs. On CUDA a low CPU share is the host sleeping in a sync, not starvation."""
    log = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "synchronize", lambda *a: log.append("sync"))
    monkeypatch.setattr(timing, "run_queue_waits", lambda: None)  # the CPU-share fallback decides
    fake_cuda(monkeypatch, is_initialized=lambda: True)
    out = timing.time_block(lambda: (log.append("step"), time.sleep(0.002)), 0.05, 1, device="cuda")
    syncs = 0
    for event in log:
        syncs += event == "sync"
        assert event == "sync" or syncs % 2 == 1, "a step ran outside a sync pair"
    assert syncs % 2 == 0 and syncs >= 2 * len(out["times"]), f"{syncs} syncs for {len(out['times'])} blocks"
    assert out["cpu_share"] < timing.STARVED_SHARE and not out["starved"], out
    # the rule follows the case's device, not whether this process has touched CUDA
    cpu = timing.time_block(lambda: time.sleep(0.002), 0.05, 1, device="cpu")
    assert cpu["cpu_share"] < timing.STARVED_SHARE and cpu["starved"], cpu


def test_loader_probe_syncs_around_its_loaded_steps(monkeypatch):
    """The data-stall fraction's total time must hold the GPU's queued work: one sync before the
    loaded steps, one after, none between (each would stall the loader's overlap)."""
    log = []

    def sync(device=None):
        log.append("sync")
        time.sleep(0.02)

    fake_cuda(monkeypatch, synchronize=sync)
    wl = Workload(Case(model="small_cnn", mode="train", dataset="images", batch_size=4), None, lambda: None, CUDA,
                  None, None, data_wait_s=5.0)  # an earlier wait, to be reset

    def step():
        log.append("step")
        wl.data_wait_s += 0.001

    wl.step = step
    m = probe(wl, 0.0)[0]["data_stall_fraction"]
    assert log == ["sync"] + ["step"] * m["steps"] + ["sync"], log
    assert m["wait_s"] == pytest.approx(0.001 * m["steps"]), "the wait counts from the probe's first step"
    assert m["total_s"] >= 0.02, "the closing sync belongs to the measured total"


def test_cuda_starvation_rule_trusts_only_the_run_queue_wait():
    low = {"wall": 1.0, "cpu": 0.05, "threads": 2}
    assert timing.cpu_block(**low, waits0=None, waits1=None)["starved"], "CPU: a 2.5 % share is starved"
    assert not timing.cpu_block(**low, waits0=None, waits1=None, cuda=True)["starved"], \
        "CUDA: a low share is the host waiting on the GPU"
    waited = {"1": int((timing.STARVED_WAIT + 0.05) * 1e9)}
    assert timing.cpu_block(**low, waits0={"1": 0}, waits1=waited, cuda=True)["starved"], \
        "CUDA: a run-queue wait above the threshold is starvation"


# ---------------------------------------------------------------- allocator statistics

class FakeAllocator:
    """``torch.cuda``'s allocator statistics; allocations a step queues land at the next synchronize."""

    def __init__(self, allocated: int, peak: int, queued: list[int]):
        self.allocated, self.peak, self.queued = allocated, peak, list(queued)

    def synchronize(self, device=None):
        for n in self.queued:
            self.allocated += n
            self.peak = max(self.peak, self.allocated)
        self.queued.clear()

    def reset_peak_memory_stats(self, device=None):
        self.peak = self.allocated

    def memory_allocated(self, device=None):
        return self.allocated

    def max_memory_allocated(self, device=None):
        return self.peak


def test_cuda_step_memory_reads_the_allocator_peak_of_the_step_alone(monkeypatch):
    # 1000 B live, a stale 9000 B peak from earlier work, 200 B of the previous step still queued
    fake = FakeAllocator(1000, 9000, [200])
    fake_cuda(monkeypatch, **{n: getattr(fake, n) for n in ("synchronize", "reset_peak_memory_stats",
                                                             "memory_allocated", "max_memory_allocated")})
    mem = step_memory(lambda: fake.queued.extend([3000, 1000, -3500]), CUDA, state=[])  # activations, then freed
    assert mem == {"peak": 5200, "state": 1200, "step": 4000}, \
        f"peak must be the step's own (reset), over a synced start, read after a sync: {mem}"


# ---------------------------------------------------------------- profiling: CUDA events, device tables

def test_phases_on_cuda_are_timed_by_events(monkeypatch):
    """Phase seconds come from CUDA event pairs (ms -> s), one sync per step; here a fake clock
    that only the step advances, so perf_counter would read ~0."""
    now = [0.0]  # ms on the fake GPU

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing, "timing events need enable_timing=True"

        def record(self, stream=None):
            self.t = now[0]

        def elapsed_time(self, end):
            return end.t - self.t

    syncs = []
    fake_cuda(monkeypatch, Event=Event, synchronize=lambda *a: syncs.append(1))
    wl = Workload(Case(device="cuda"), None, lambda: None, CUDA, None, None)

    def step():
        for name, ms in (("optimizer", 1.0), ("forward", 4.0), ("backward", 3.0), ("optimizer", 2.0)):
            with wl.mark(name):
                now[0] += ms
        now[0] += 1.0  # outside every phase

    wl.step = step
    metrics, absent = measure_phases(wl, min_steps=3, min_time=0.0)
    assert len(syncs) == 3, "one sync per measured step"
    want = {"forward": 0.004, "backward": 0.003, "optimizer": 0.003}
    for phase, s in want.items():
        m = metrics[f"phase_{phase}_time"]
        assert m["value"] == pytest.approx(s) and m["clock"] == "CUDA events", (phase, m)
    assert metrics["phase_step_time"]["value"] == pytest.approx(0.011)
    assert metrics["phase_gap"]["value"] == pytest.approx(1 / 11)
    assert "phase_data_time" in absent


def test_operator_tables_rank_by_device_time_on_cuda(tmp_path):
    from sciml_bench.display import operator_table

    ops = [{"name": "host_heavy", "input_shapes": "", "calls": 1.0, "self_cpu_us": 90.0, "self_device_us": 5.0,
            "flops": None, "self_cpu_mem_bytes": 0},
           {"name": "kernel_heavy", "input_shapes": "", "calls": 1.0, "self_cpu_us": 10.0, "self_device_us": 70.0,
            "flops": None, "self_cpu_mem_bytes": 0}]
    write_operator_tables(ops, tmp_path, top=1, cuda=True, steps=3)
    md = (tmp_path / "operators.md").read_text()
    cpu_part, device_part = md.split("## By self device time")
    assert "host_heavy" in cpu_part and "kernel_heavy" not in cpu_part, cpu_part
    assert "kernel_heavy" in device_part and "host_heavy" not in device_part, device_part
    assert "not measured" not in md, "a CUDA profile has device times"
    rec = {"study": "s", "case_id": "c", "profile": {"activities": ["CPU", "CUDA"], "steps": 3, "top_ops": ops}}
    assert "self device" in [c.header for c in operator_table(rec).columns]
    rec["profile"]["activities"] = ["CPU"]
    assert "self device" not in [c.header for c in operator_table(rec).columns]


def test_memory_timeline_reads_the_cuda_events_only(tmp_path):
    import json

    mem = [(10, 0, 4096), (20, 1, 1000), (30, 1, 3000), (40, 1, 500), (50, 0, 8192)]  # (ts, device type, bytes)
    events = [{"name": "[memory]", "ph": "i", "ts": ts, "args": {"Device Type": dev, "Total Allocated": b}}
              for ts, dev, b in mem]
    events.append({"name": "backward", "ph": "X", "cat": "user_annotation", "ts": 25, "dur": 10})
    trace = tmp_path / "t.pt.trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    out = memory_timeline(trace, tmp_path, "cuda")
    assert (out["peak_bytes"], out["peak_phase"], out["events"]) == (3000, "backward", 3), out
    assert "caching allocator" in out["note"], "on CUDA the total is the allocator's, not relative to the start"
    assert "relative to the profiler's start" in memory_timeline(trace, tmp_path, "cpu")["note"]


# ---------------------------------------------------------------- TF32 / cudnn flags

def test_tf32_and_cudnn_benchmark_are_set_and_read_back(cpu_builds_cuda_knobs, backend_flags):
    build_workload(Case(model="small_cnn", mode="infer", batch_size=2, precision="tf32", cudnn_benchmark=True))
    on = environment.collect(hide_hostname=True)
    assert (on["tf32_matmul"], on["tf32_cudnn"], on["cudnn_benchmark"], on["float32_matmul_precision"]) == \
        (True, True, True, "high"), on
    set_backend_flags(Case())  # fp32 must mean true fp32 again, though cuDNN allows TF32 by default
    off = environment.collect(hide_hostname=True)
    assert (off["tf32_matmul"], off["tf32_cudnn"], off["cudnn_benchmark"], off["float32_matmul_precision"]) == \
        (False, False, False, "highest"), off


# ---------------------------------------------------------------- capability checks and GPU facts

def test_capability_checks_accept_and_refuse_with_reasons(monkeypatch):
    caps = {"bf16": True, "sm": (8, 0)}
    fake_cuda(monkeypatch, is_available=lambda: True, is_bf16_supported=lambda *a, **k: caps["bf16"],
              get_device_capability=lambda *a: caps["sm"])
    for fields in ({"precision": "bf16"}, {"precision": "tf32"}, {"precision": "fp16"},
                   {"model": "small_cnn", "cudnn_benchmark": True}, {"compile": "reduce-overhead"},
                   {"model": "small_cnn", "mode": "data", "dataset": "images", "pin_memory": True}):
        assert check_device(Case(device="cuda", **fields)) == CUDA, f"refused on a capable GPU: {fields}"
    caps.update(bf16=False, sm=(7, 5))
    with pytest.raises(Unsupported, match="bf16 is not supported by this GPU"):
        check_device(Case(device="cuda", precision="bf16"))
    with pytest.raises(Unsupported, match=r"TF32 needs an Ampere \(sm_80\) or newer GPU"):
        check_device(Case(device="cuda", precision="tf32"))
    assert check_device(Case(device="cuda", precision="fp16")) == CUDA, "fp16 needs no capability check"


def test_device_choice_and_ddp_gpu_count_with_a_fake_gpu(monkeypatch):
    from sciml_bench.distributed import RankGroup
    from sciml_bench.runner import resolve_device

    fake_cuda(monkeypatch, is_available=lambda: True, device_count=lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
    with pytest.raises(Unsupported, match="ddp_ranks=2 needs 2 GPUs; this machine has 1"):
        RankGroup(Case(device="cuda", ddp_ranks=2), opts=None)  # refused before any rank is launched


def test_environment_records_the_gpu_and_it_enters_the_fingerprint(monkeypatch):
    props = SimpleNamespace(name="Fake GPU 80GB", total_memory=80 * 2 ** 30, major=9, minor=0)
    fake_cuda(monkeypatch, is_available=lambda: True, current_device=lambda: 0,
              get_device_properties=lambda i: props, device_count=lambda: 2)
    env = environment.collect(hide_hostname=True)
    got = {k: env[k] for k in ("cuda_available", "gpu_name", "gpu_memory_bytes", "gpu_capability", "gpu_count")}
    assert got == {"cuda_available": True, "gpu_name": "Fake GPU 80GB", "gpu_memory_bytes": 80 * 2 ** 30,
                   "gpu_capability": "9.0", "gpu_count": 2}, got
    assert env["fingerprint"] != environment.fingerprint(dict(env, gpu_name=None)), "the GPU is part of the machine"
