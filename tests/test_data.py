"""Generated datasets match the zoo's batches; DataLoader settings are really applied."""
import os

import numpy as np
import psutil
import pytest
import torch

from sciml_bench.cases import Case
from sciml_bench.data import MemmapDataset, make_dataset, make_loader
from sciml_bench.errors import UsageError
from sciml_bench.measure.probes import probe
from sciml_bench.models import get_model_spec
from sciml_bench.workloads import build_workload

PAIRS = [("images", "resnet18"), ("images", "simple_cnn"), ("memmap", "fno1d"), ("memmap", "deeponet"),
         ("timeseries", "lstm_forecaster"), ("timeseries", "cnn1d"), ("timeseries", "lorenz_gpt")]


def _shapes(x):
    return [(tuple(t.shape), t.dtype) for t in (x if isinstance(x, (tuple, list)) else [x])]


@pytest.mark.parametrize("kind,model", PAIRS, ids=[f"{k}-{m}" for k, m in PAIRS])
def test_dataset_batches_match_model_batches(kind, model):
    spec = get_model_spec(model)
    ds, _keep = make_dataset(kind, spec.sample_batch(16), 16)
    x, y = next(iter(make_loader(ds, 4)))
    ref_x, ref_y = spec.sample_batch(4)
    assert _shapes(x) == _shapes(ref_x), f"{kind} inputs for {model}"
    assert _shapes(y) == _shapes(ref_y), f"{kind} targets for {model}"


def test_pipeline_that_does_not_fit_the_model_is_a_usage_error():
    with pytest.raises(UsageError, match="images"):
        make_dataset("images", get_model_spec("mlp").sample_batch(8), 8)


def test_memmap_reads_lazily_from_disk_and_cleans_up():
    ds, tmp = make_dataset("memmap", get_model_spec("fno1d").sample_batch(8), 8)
    assert isinstance(ds, MemmapDataset)
    ds[0]
    assert all(isinstance(a, np.memmap) for a in ds._arrays), "arrays are not memory-mapped"
    root = ds.root
    assert root.exists() and any(root.glob("*.npy"))
    tmp.cleanup()
    assert not root.exists()


def test_num_workers_2_really_starts_worker_processes():
    wl = build_workload(Case(model="small_cnn", mode="data", dataset="images", batch_size=8, num_workers=2,
                             persistent_workers=True))
    wl.step()
    children = psutil.Process().children()
    assert len(children) >= 2, f"expected 2 DataLoader workers, found {children}"
    metrics, _ = probe(wl, 0.0)
    assert metrics["loader_worker_processes"]["value"] >= 2
    assert metrics["cpu_count"]["value"] == os.cpu_count()
    assert wl.inputs.shape == (8, 3, 32, 32)


def test_loaded_train_step_records_data_stall_fraction():
    wl = build_workload(Case(model="cnn1d", mode="train", dataset="timeseries", batch_size=8))
    wl.step()
    metrics, _ = probe(wl, 0.0)
    stall = metrics["data_stall_fraction"]
    assert 0 < stall["value"] < 1, stall
    assert stall["wait_s"] <= stall["total_s"]


def test_loader_field_validation():
    with pytest.raises(UsageError, match="needs a dataset"):
        Case(num_workers=2)
    with pytest.raises(UsageError, match="needs num_workers > 0"):
        Case(model="small_cnn", mode="data", dataset="images", prefetch_factor=4)
    with pytest.raises(UsageError, match="does not apply to mode='data'"):
        Case(model="small_cnn", mode="data", dataset="images", precision="bf16")
    with pytest.raises(UsageError, match="mode='data' needs a dataset"):
        Case(mode="data")


def test_data_mode_epochs_wrap():
    wl = build_workload(Case(model="cnn1d", mode="data", dataset="timeseries", batch_size=4))
    for _ in range(40):  # > one epoch of 16 batches
        wl.step()
    assert wl.inputs.shape == (4, 1, 100) and torch.isfinite(wl.inputs).all()


def test_loaded_batches_get_the_case_memory_format():
    wl = build_workload(Case(model="small_cnn", mode="train", dataset="images", batch_size=4, channels_last=True))
    wl.step()
    assert wl.inputs.is_contiguous(memory_format=torch.channels_last), "loaded batch is not channels_last"
