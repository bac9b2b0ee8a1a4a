"""FLOP counts: a count FlopCounterMode cannot make is absent with the ops it missed, never 0; a partial
count is marked as a lower bound, for every model of the zoo."""
from __future__ import annotations

import pytest
import torch

from sciml_bench.cases import make_case
from sciml_bench.measure.flops import flop_count, flop_metrics, flop_rate
from sciml_bench.workloads import build_workload


def _fwd_bwd(module, x):
    def step():
        y = module(x)
        y = y[0] if isinstance(y, tuple) else y
        y.sum().backward()
    return step


def test_uncountable_steps_are_absent_not_zero():
    x = torch.randn(16, 10, 8, requires_grad=True)  # (B, T, F)
    for module in (torch.nn.ReLU(), torch.nn.GELU(), torch.nn.SiLU(), torch.nn.ELU(),
                   torch.nn.LSTM(8, 16, batch_first=True)):
        metrics, absent = flop_metrics(_fwd_bwd(module, x))
        assert not metrics and "no FLOP formula" in absent["flops"], f"{module}: {metrics or absent}"
    _, absent = flop_metrics(_fwd_bwd(torch.nn.GELU(), x))
    assert "gelu" in absent["flops"] and "(elementwise)" in absent["flops"], absent


def test_complete_and_partial_counts():
    lin = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(16, 8)
    fc = flop_count(lambda: lin(x))
    assert fc.value == 2 * 16 * 8 * 4 and fc.coverage == "complete", fc
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())
    metrics, absent = flop_metrics(_fwd_bwd(mlp, x))
    f = metrics["flops"]
    assert not absent and f["value"] > 0 and f["coverage"] == "partial" and "tanh" in f["uncounted_ops"], f
    assert f["uncounted_elements"] >= 16 * 8, "tanh's outputs are counted as uncounted work"
    rate = flop_rate(f, 0.5)
    assert rate["lower_bound"] and rate["value"] == f["value"] / 0.5, "a rate from a partial count says so"


# recurrent models (fused and packed RNN paths) and small elementwise-heavy ones
MODELS = ["lstm", "lstm_packed", "gru", "rnn", "mlp", "pinn_oscillator", "fno1d", "deeponet"]


@pytest.mark.parametrize("model", MODELS)
def test_model_counts_are_explained(model):
    """The runner's FLOPs (train step): absent with a reason, or > 0 with its coverage; never 0."""
    wl = build_workload(make_case({"model": model, "mode": "train", "batch_size": 2, "device": "cpu"}))
    wl.step()
    metrics, absent = flop_metrics(wl.step)
    if "flops" in absent:
        assert "no FLOP formula" in absent["flops"], absent
        return
    f = metrics["flops"]
    assert f["value"] > 0, f"{model}: a FLOP count of 0 must be absent instead"
    # every train step runs elementwise work (activations, loss, optimizer) the counter skips
    assert f["coverage"] == "partial" and "(elementwise)" in f["uncounted_ops"], f
    if "lstm" in model or "gru" in model:  # a fused RNN op (oneDNN on CPU), or cells whose gates are uncounted
        assert "rnn" in f["uncounted_ops"] or "sigmoid" in f["uncounted_ops"], f"{model}: {f}"


def test_a_compiled_case_counts_its_flops_on_its_eager_twin(monkeypatch):
    """Compiled code runs Inductor's kernels (on a GPU, CUDA-graph replays) that FlopCounterMode cannot see.
    torch.compile is faked by a wrapper whose forward hides its ops from the counter, as compiled code does:
    counted on the step itself, the forward would be missing; counted on the eager twin, the count is whole."""
    from torch import nn
    from torch.utils._python_dispatch import _disable_current_modes

    from sciml_bench.cases import Case
    from sciml_bench.worker import RunOptions, setup

    class Hidden(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            with _disable_current_modes():
                return self.model(*args)

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Hidden(model))
    case = Case(model="mlp", mode="train", batch_size=4)
    eager = setup(case, RunOptions())[0]["metrics"]["flops"]
    compiled = setup(case.replace(compile="default"), RunOptions())[0]["metrics"]["flops"]
    assert compiled["value"] == eager["value"] > 0 and "counted_on" not in eager, (compiled, eager)
    assert compiled["counted_on"].startswith("the eager model"), compiled


def test_the_eager_twin_is_plain_and_freed_before_the_case_is_measured(monkeypatch):
    """Its step closes over it (a cycle): without a collection it would stay allocated through the case's
    memory figures and timed rounds. It loads no DataLoader and joins no DDP group: the same FLOPs per step."""
    import weakref

    from sciml_bench import workloads
    from sciml_bench.cases import Case
    from sciml_bench.worker import _eager_flops

    built, build = [], workloads.build_workload

    def remember(case, **kw):
        wl = build(case, **kw)
        built.append((case, weakref.ref(wl)))
        return wl

    monkeypatch.setattr(workloads, "build_workload", remember)
    metrics, _ = _eager_flops(Case(model="small_cnn", mode="train", batch_size=4, dataset="images", num_workers=1,
                                   compile="default"))
    [(twin, ref)] = built
    assert metrics["flops"]["value"] > 0 and ref() is None, "the twin outlived the count"
    assert (twin.compile, twin.dataset, twin.num_workers, twin.ddp_ranks) == ("none", None, 0, 0), twin


def test_an_eager_twin_that_does_not_fit_leaves_the_flops_absent_not_the_case_failed(monkeypatch):
    from sciml_bench import workloads
    from sciml_bench.cases import Case
    from sciml_bench.worker import _eager_flops

    def no_room(case, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(workloads, "build_workload", no_room)
    metrics, absent = _eager_flops(Case(model="mlp", mode="train", batch_size=4, compile="default"))
    assert metrics == {} and "did not fit beside it" in absent["flops"] and "out of memory" in absent["flops"]
    monkeypatch.setattr(workloads, "build_workload", lambda case, **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # anything else is a bug, not an answer
        _eager_flops(Case(model="mlp", mode="train", batch_size=4, compile="default"))
