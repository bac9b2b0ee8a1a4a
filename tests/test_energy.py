"""Energy through NVML, with a fake NVML module: exact J/step and W, absent with reasons, the Timer
window, energy to target, and how show and the report print it."""
import statistics
import sys

import pytest
import torch

from sciml_bench.measure.energy import EnergyMeter, Tally, energy_metrics, open_meter

CUDA = torch.device("cuda")  # a device object only: nothing here touches CUDA


class FakeNVML:
    """The slice of pynvml that measure.energy calls; the counter is whatever ``counter()`` says."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    def __init__(self, counter=lambda: 1000.0, supported=True, limit_mW=300_000, uuid="GPU-1", init_ok=True):
        self.counter, self.supported, self.limit_mW, self.uuid, self.init_ok = counter, supported, limit_mW, uuid, init_ok

    def nvmlInit(self):
        if not self.init_ok:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid != self.uuid:
            raise self.NVMLError("Not Found")
        return "handle"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise self.NVMLError_NotSupported("Not Supported")
        value = self.counter()
        if value is None:
            raise self.NVMLError("Unknown Error")
        return value

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self.limit_mW


def meter_of(counter, limit_mW=300_000):
    m = open_meter(CUDA, FakeNVML(counter, limit_mW=limit_mW), uuid="GPU-1")
    assert isinstance(m, EnergyMeter), m
    return m


def window(start, end, steps, seconds):
    return {"start_mJ": start, "end_mJ": end, "steps": steps, "seconds": seconds}


# ---------------------------------------------------------------- the arithmetic

def test_energy_per_step_and_power_are_exact_and_their_median_is_step_times_way():
    ws = [window(5_000.0, 5_000.0 + 1_200.0 * k, 100 * k, 0.5 * k) for k in (1, 2, 3, 4, 5, 6)]
    ws[3] = window(1e9, 1e9 + 3_000.0, 200, 1.0)  # 15 mJ/step, 3 W: an outlier the median shrugs off
    m, absent = energy_metrics(ws, power_limit_W=300.0)
    assert absent == {}, absent
    e, p = m["energy_per_step"], m["avg_power"]
    assert e["samples"][0] == pytest.approx(12e-3, rel=1e-12), "1200 mJ over 100 steps is 12 mJ a step"
    assert e["samples"][3] == pytest.approx(15e-3, rel=1e-12)
    assert p["samples"][0] == pytest.approx(2.4, rel=1e-12), "1200 mJ over 0.5 s is 2.4 W"
    assert p["samples"][3] == pytest.approx(3.0, rel=1e-12)
    assert e["value"] == pytest.approx(statistics.median(e["samples"])) == pytest.approx(12e-3)
    assert e["unit"] == "J" and p["unit"] == "W" and e["n"] == p["n"] == 6
    assert e["ci_low"] is not None and e["ci_low"] <= e["value"] <= e["ci_high"], "6 blocks give a 95% CI"
    assert e["window_s"] == [w["seconds"] for w in ws] and e["counter_mJ"][3] == [1e9, 1e9 + 3_000.0]
    assert p["power_limit_W"] == 300.0 and p["limit_fraction"] == pytest.approx(2.4 / 300.0)


@pytest.mark.parametrize("bad, needle", [
    (window(9_000.0, 8_000.0, 10, 0.2), "went backwards"),  # wrapped, or the driver reset it
    (window(9_000.0, 9_000.0, 10, 0.02), "did not advance"),  # shorter than the counter's update interval
    (window(None, 9_000.0, 10, 0.2), "unreadable"),
    (None, "unreadable"),
])
def test_a_block_the_counter_does_not_cover_makes_both_absent_never_negative_or_zero(bad, needle):
    ws = [window(0.0, 500.0, 10, 0.2), bad, window(1_000.0, 1_600.0, 10, 0.2)]
    m, absent = energy_metrics(ws, 300.0)
    assert m == {}, f"no figure may come from a block the counter did not cover: {m}"
    assert needle in absent["energy_per_step"] and "1 of 3" in absent["energy_per_step"], absent
    assert absent["avg_power"] == absent["energy_per_step"]


# ---------------------------------------------------------------- opening the counter

def test_open_meter_says_why_there_is_no_counter(monkeypatch):
    assert open_meter(torch.device("cpu"), FakeNVML()).startswith("case ran on CPU")
    assert "NotSupported" in open_meter(CUDA, FakeNVML(supported=False), uuid="GPU-1")
    assert "did not initialise" in open_meter(CUDA, FakeNVML(init_ok=False), uuid="GPU-1")
    assert "no NVML device" in open_meter(CUDA, FakeNVML(uuid="GPU-1"), uuid="MIG-2")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert "not installed" in open_meter(CUDA, uuid="GPU-1")
    m = meter_of(lambda: 42_000, limit_mW=350_000)
    assert m.read() == 42_000.0 and m.describe() == {"uuid": "GPU-1", "power_limit_W": 350.0}


def test_the_real_pynvml_without_a_gpu_gives_a_reason_not_a_crash():
    pytest.importorskip("pynvml")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: this checks the no-GPU path")
    why = open_meter(CUDA, uuid="GPU-0")  # no driver here: NVML cannot load or initialise
    assert isinstance(why, str) and "NVML" in why, why


def test_energy_meter_in_the_worker_names_ddp_duet_and_cpu():
    from sciml_bench.cases import Case
    from sciml_bench.worker import RunOptions, energy_meter

    for case, opts, device, needle in (
            (Case(), RunOptions(), torch.device("cpu"), "case ran on CPU"),
            (Case(device="cuda"), RunOptions(duet=True), CUDA, "--duet"),
            (Case(device="cuda", ddp_ranks=2), RunOptions(), CUDA, "DDP case")):
        info = {"absent": {}}
        assert energy_meter(case, opts, device, info) is None
        assert needle in info["absent"]["energy_per_step"] and "energy" not in info, (needle, info)


# ---------------------------------------------------------------- where the counter is read

def test_the_timers_window_brackets_exactly_the_measured_calls(monkeypatch):
    from sciml_bench.measure.timing import time_block

    calls, log = [0], []

    def step():
        calls[0] += 1
        log.append("step")

    def counter():  # 7 mJ per call, nothing between
        log.append("read")
        return 7.0 * calls[0]

    meter = meter_of(counter)
    log.clear()
    # torch's Timer syncs the accelerator at each clock read (as tests/test_cuda_paths.py fakes it)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "synchronize", lambda *a: log.append("sync"))
    block = time_block(step, 0.02, 1, meter=meter)
    syncs = 0
    for event in log:
        syncs += event == "sync"
        assert event != "read" or syncs % 2 == 0, "the counter was read inside a timed (synced) measurement"
    w = block["energy"]
    assert w["end_mJ"] - w["start_mJ"] == 7.0 * w["steps"], "the window must hold exactly the counted calls"
    assert 0 < w["steps"] < calls[0], "the Timer's calibration calls are left out"
    assert w["steps"] % len(block["times"]) == 0, "whole measurements of one block size"
    m, _ = energy_metrics([w])
    assert m["energy_per_step"]["value"] == pytest.approx(7e-3, rel=1e-12)
    assert "energy" not in time_block(step, 0.01, 1), "no meter: the block is timed as before"


def test_tally_sums_segments_and_breaks_rather_than_go_negative():
    values = iter([0.0, 100.0, 400.0, 1_000.0, 1_500.0, 2_000.0, 1_900.0])  # the first: open_meter's check
    t = Tally(meter_of(lambda: next(values)))
    t.begin(), t.begin(), t.end()  # a second begin while open is a no-op
    t.begin(), t.end()
    assert t.joules() == pytest.approx(0.8), "300 + 500 mJ; the gap between segments is left out"
    t.begin(), t.end()
    assert t.joules() is None and "backwards" in t.broken


def test_energy_to_target_is_power_times_time_to_target_with_evaluations_left_out(monkeypatch):
    import dataclasses

    from sciml_bench import training
    from sciml_bench.cases import Case
    from sciml_bench.models import get_model_spec
    from sciml_bench.tasks import DATA_SEED, VAL_SEED, get_task
    from sciml_bench.training import TRAIN_SIZE, VAL_SIZE, fit, fit_seed

    now, calls = [0.0], [0]

    def clock():  # the loop reads it in pairs around each step: each step takes 1 ms, nothing else any time
        calls[0] += 1
        now[0] += 1e-3 * (calls[0] % 2 == 0)
        return now[0]

    power = 250.0  # W: the fake counter is power x fake time, in mJ
    meter = meter_of(lambda: power * now[0] * 1e3)
    case = Case(model="mlp", mode="fit", depth=2, width=8, steps=30, seeds=1, eval_every=10)
    task = get_task(case.model)
    knobs = get_model_spec(case.model).merged(case.knobs)
    data = (task, task.make(TRAIN_SIZE, torch.Generator().manual_seed(DATA_SEED), knobs),  # as fit() makes them
            task.make(VAL_SIZE, torch.Generator().manual_seed(VAL_SEED), knobs))
    free = fit_seed(case, *data)
    target = free["val_curve"][2][1]  # the loss of the second evaluation: reached after two segments or more
    spec = training.get_model_spec(case.model)

    def slow_loss(*args):  # an evaluation (or gradient check) takes 1 s of fake time: it must not count
        now[0] += 1.0
        return spec.loss(*args)

    monkeypatch.setattr(training, "get_model_spec", lambda name: dataclasses.replace(spec, loss=slow_loss))
    out = fit_seed(case.replace(target=target), *data, clock=clock, meter=meter)
    step, t, joules = out["reached"]
    assert step >= 20, f"reached at step {step}: the test wants more than one training segment"
    assert joules == pytest.approx(power * t, rel=1e-9), "energy over training time only, as time to target"
    values = iter([9_000.0] + [5_000.0, 4_000.0] * 100)  # after the open check, every segment goes backwards
    broken = fit(case.replace(target=target), meter=meter_of(lambda: next(values)))
    assert "energy_to_target" not in broken["metrics"] and "backwards" in broken["absent"]["energy_to_target"]
    assert broken["metrics"]["time_to_target"]["value"] > 0, "the time to target stands"


def test_fit_reports_energy_to_target_or_why_not():
    from sciml_bench.cases import Case
    from sciml_bench.training import fit

    case = Case(model="mlp", mode="fit", depth=2, width=8, steps=10, seeds=2, target=10.0)
    got = fit(case, meter=meter_of(lambda: 1_000.0))
    assert got["metrics"]["energy_to_target"]["value"] == 0.0 and got["metrics"]["energy_to_target"]["n"] == 2, \
        "a loss below the target at step 0 took no training energy"
    far = fit(case.replace(target=1e-9, seeds=1), meter=meter_of(lambda: 1_000.0))
    assert "energy_to_target" not in far["metrics"] and "never reached" in far["absent"]["energy_to_target"]
    assert "energy_to_target" not in fit(case.replace(seeds=1))["metrics"], "no meter: nothing, no clutter"


def test_blocks_left_out_of_step_time_are_left_out_of_energy_too():
    from sciml_bench.cases import Case, Study
    from sciml_bench.records import record
    from sciml_bench.worker import RunOptions

    case = Case()
    info = {"metrics": {}, "absent": {}, "pid": 1, "threads": 1, "warmup_steps": 3,
            "energy": {"uuid": "GPU-1", "power_limit_W": 400.0}}
    blocks = [{"times": [0.01] * 4, "starved": k == 1, "energy": window(0.0, 600.0 if k == 1 else 100.0, 10, 1.0)}
              for k in range(6)]
    rec = record(Study("s", "", {}, {}), case, None, info, [b["times"] for b in blocks], RunOptions(), 0.0, blocks)
    e = rec["metrics"]["energy_per_step"]
    assert e["n"] == rec["metrics"]["step_time"]["n"] == 5 and 60e-3 not in e["samples"], e
    assert rec["metrics"]["avg_power"]["power_limit_W"] == 400.0 and e["nvml_uuid"] == "GPU-1"


# ---------------------------------------------------------------- show and the report

def test_show_and_report_print_energy_where_measured_and_nothing_on_cpu(tmp_path, capsys):
    import numpy as np

    from sciml_bench.cli import main
    from sciml_bench.report.build import collect
    from sciml_bench.report.render import render_html, render_markdown
    from tests._runs import record, samples, study_run, write_run

    rng = np.random.default_rng(0)
    rec = record("gpu", {"model": "mlp", "mode": "train", "batch_size": 8}, samples(0.01, rng))
    em, _ = energy_metrics([window(0.0, 1_234.0 * k, 100 * k, 0.5 * k) for k in (1, 2, 3, 4, 5, 6)], 300.0)
    rec["metrics"].update(em)  # 12.34 mJ a step, 2.468 W
    run = write_run(tmp_path / "gpu.jsonl", [rec], {"gpu": {"question": "q", "axes": {"batch_size": [8]}}})
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "energy/step 0.0123 J" in out and "power 2.47 W" in out, out
    rep, _ = collect([run])
    for text in (render_html(rep), render_markdown(rep)):
        assert "energy/step" in text and "0.0123 J" in text and "2.47 W" in text
    cpu = study_run(tmp_path / "cpu.jsonl")
    assert main(["show", str(cpu)]) == 0
    assert "energy" not in capsys.readouterr().out, "a run without energy gets no energy column"
