"""DDP cases: 2 gloo ranks through torchrun on CPU, timed together; a failing rank ends the case cleanly."""
import json
import statistics

import psutil
import pytest

from sciml_bench.cases import Case
from sciml_bench.errors import UsageError
from tests.conftest import marked, no_report, run_cli

SUITE = """
[suite]
name = "ddp-test"
rounds = 3
round_time = 0.05
timeout = 25  # what the hanging rank's case costs; a healthy 2-rank case sets up in ~5-12 s on 2 cores

[[study]]
name = "ddp"
question = "weak scaling over 1 and 2 gloo ranks"
base = { model = "mlp", mode = "train", batch_size = 16, width = 32, depth = 2 }
axes = { ddp_ranks = [1, 2] }
reference = { ddp_ranks = 1 }

[[study]]
name = "ddp-fault"
question = "rank 1 raises"
base = { model = "fault_rank1", mode = "train", batch_size = 4 }
axes = { ddp_ranks = [2] }
reference = { ddp_ranks = 2 }

[[study]]
name = "ddp-round-faults"
question = "rank 1 hangs, runs out of memory or is killed in a timed round (tests.fault_models)"
base = { mode = "train", batch_size = 4, ddp_ranks = 2 }
axes = { model = ["fault_rank1_hang", "fault_rank1_oom", "fault_rank1_sigkill"] }
"""


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Records of one real run of the suite above (one CLI process, three torchrun launches)."""
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "ddp.toml").write_text(SUITE)
    mark = str(tmp)
    proc = run_cli("run", "--suite", str(tmp / "ddp.toml"), "--device", "cpu", "--out", str(tmp / "results"),
                   "--plugin", "tests.fault_models", *no_report(), timeout=300, env={"SCIML_TEST_MARK": mark})
    assert proc.returncode == 0, proc.stderr[-2000:]
    [path] = (tmp / "results").glob("*.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return {r["case_id"]: r for r in records}, mark


def test_two_gloo_ranks_are_timed_together_with_an_efficiency_against_one(ddp_run):
    recs, _ = ddp_run
    one, two = recs["mlp,batch_size=16,width=32,depth=2,ddp_ranks=1"], recs["mlp,batch_size=16,width=32,depth=2,ddp_ranks=2"]
    assert one["status"] == "ok" and two["status"] == "ok", (one.get("reason"), two.get("reason"))
    m = two["metrics"]
    assert m["global_batch"]["value"] == 32 and m["global_batch"]["backend"] == "gloo"
    assert len(set(m["global_batch"]["pids"])) == 2, "two rank processes"
    ranks = m["rank_step_time"]["per_rank"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["median"] > 0 for r in ranks)
    for k, case_round in enumerate(m["step_time"]["samples"]):  # the slowest rank sets the step
        assert all(case_round >= r["samples"][k] * (1 - 1e-12) for r in ranks), "step time below a rank's own"
    assert m["throughput"]["value"] == pytest.approx(32 / m["step_time"]["value"])
    eff, ratio = m["scaling_efficiency"], m["time_ratio"]
    assert eff["reference"] == one["case_id"] and eff["value"] == pytest.approx(1 / ratio["value"])
    assert eff["ci_low"] == pytest.approx(1 / ratio["ci_high"]) and eff["ci_high"] == pytest.approx(1 / ratio["ci_low"])
    assert one["metrics"]["scaling_efficiency"]["value"] == pytest.approx(1.0)
    per_round = [(max(r["samples"][k] for r in ranks) - min(r["samples"][k] for r in ranks)) / min(
        r["samples"][k] for r in ranks) for k in range(len(ranks[0]["samples"]))]
    assert m["rank_spread"]["value"] == pytest.approx(statistics.median(per_round)), "(slowest - fastest) / fastest"
    if "comm_share" in m:  # the profiler's gloo:all_reduce events
        assert 0 < m["comm_share"]["value"] and len(m["comm_share"]["per_rank"]) == 2
    else:
        assert two["absent"]["comm_share"]
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in m["global_batch"]["pids"]), "a rank outlived its case"


def test_a_rank_that_raises_gives_error_and_leaves_no_process(ddp_run):
    recs, mark = ddp_run
    rec = recs["fault_rank1,batch_size=4,ddp_ranks=2"]
    assert rec["status"] == "error"
    assert rec["reason"].startswith("rank 1 of 2: RuntimeError: planted fault on rank 1"), rec["reason"]
    assert marked(mark) == [], "torchrun or a rank outlived the run"


def test_a_rank_that_hangs_ooms_or_is_killed_in_a_round_is_named_and_leaves_no_process(ddp_run):
    """Rank 1 hangs in a timed round (rank 0 then waits in the backward pass's all-reduce, which has no
    end of its own): the worker ends the case within its --timeout, before the runner's own timeout
    (whose reason would be "no answer within"), naming the rank; an OOM and a SIGKILL name it too."""
    recs, mark = ddp_run
    hang = recs["fault_rank1_hang,batch_size=4,ddp_ranks=2"]
    assert hang["status"] == "timeout", hang
    assert hang["reason"].startswith("no answer from the ranks within the case's --timeout of 25 s: rank 1 of 2 "
                                     "hung in forward (fault_models.py:"), hang["reason"]
    assert "rank 0 waited for it in a collective: rank 0 in _engine_run_backward" in hang["reason"], hang["reason"]
    oom = recs["fault_rank1_oom,batch_size=4,ddp_ranks=2"]
    assert oom["status"] == "oom" and oom["reason"].startswith("rank 1 of 2: RuntimeError: "), oom
    assert "can't allocate memory" in oom["reason"] or "not enough memory" in oom["reason"], oom["reason"]
    killed = recs["fault_rank1_sigkill,batch_size=4,ddp_ranks=2"]
    assert killed["status"] == "crashed", killed
    assert killed["reason"].startswith("rank 1 of 2 (pid ") and "died from SIGKILL" in killed["reason"], killed["reason"]
    assert "with no sign of the OOM killer" in killed["reason"], "a plain SIGKILL is not called out of memory"
    assert recs["mlp,batch_size=16,width=32,depth=2,ddp_ranks=2"]["status"] == "ok", "the other cases are untouched"
    assert marked(mark) == [], "torchrun or a rank outlived the run"


def test_hung_ranks_names_the_rank_not_waiting_in_a_collective():
    from sciml_bench.distributed import hung_ranks

    def dump(*frames):  # faulthandler's text: a helper thread, then the rank's main thread, innermost first
        return ('Thread 0x1 (most recent call first):\n  File "/x/threading.py", line 9 in _bootstrap\n\n'
                "Current thread 0x2 (most recent call first):\n"
                + "".join(f'  File "{f}", line {n} in {fn}\n' for f, n, fn in frames)
                + '  File "/x/sciml_bench/ranks.py", line 80 in _rank_main\n')

    c10d = ("/x/torch/distributed/distributed_c10d.py", 4000, "barrier")
    stuck = ("/x/data.py", 12, "__getitem__")
    why = hung_ranks({0: dump(c10d), 1: dump(stuck), 2: dump(c10d)}, 4, 60)
    assert why == ("no answer from the ranks within the case's --timeout of 60 s: rank 1 of 4 hung in __getitem__ "
                   "(data.py:12); ranks 0, 2 waited for it in a collective: rank 0 in barrier (distributed_c10d.py:4000); "
                   "rank 2 in barrier (distributed_c10d.py:4000); no stack from rank 3 (not started, or gone)"), why
    assert "waited in a collective that never completed" in hung_ranks({0: dump(c10d), 1: dump(c10d)}, 2, 60)


def test_ddp_fields_are_validated():
    with pytest.raises(UsageError, match="mode='train'"):
        Case(mode="infer", ddp_ranks=2)
    with pytest.raises(UsageError, match="multiple of ddp_ranks"):
        Case(batch_size=7, ddp_ranks=2, ddp_scaling="strong")
    with pytest.raises(UsageError, match="needs ddp_ranks > 0"):
        Case(ddp_scaling="strong")
    with pytest.raises(UsageError, match="expected one of: weak, strong"):
        Case(ddp_ranks=2, ddp_scaling="linear")
    assert Case(ddp_ranks=2, ddp_scaling="strong", batch_size=8).case_id == "mlp,batch_size=8,ddp_ranks=2,ddp_scaling=strong"


def test_ddp_workload_wraps_the_model_and_reshuffles_each_epoch(tmp_path):
    """In a (1-process) gloo group: DDP model, DistributedSampler, set_epoch at every new epoch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    from sciml_bench.errors import Unsupported
    from sciml_bench.workloads import EPOCH_BATCHES, build_workload

    import torch

    case = Case(model="lstm_forecaster", width=8, seq_len=16, batch_size=2, dataset="timeseries", ddp_ranks=1)
    with pytest.raises(Unsupported, match="torchrun"):
        build_workload(case)  # outside a rank (asv, pytest-benchmark): skipped, never single-process DDP
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a rank; spinning OpenMP threads crawl on a loaded 2-core machine
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wl = build_workload(case)
        assert isinstance(wl.model, DistributedDataParallel) and isinstance(wl.loader.sampler, DistributedSampler)
        for _ in range(EPOCH_BATCHES + 1):
            wl.step()
        assert wl.loader.sampler.epoch == 1, "set_epoch not called at the second epoch"
    finally:
        dist.destroy_process_group()
        torch.set_num_threads(threads)


def test_the_nccl_share_counts_the_gpu_kernels_once_not_their_cpu_launch_too():
    """key_averages lists the CPU op nccl:all_reduce (its device time: the kernel it launched) beside the
    kernel itself; summing both would double the all-reduce share. Synthetic averages, as on one GPU rank."""
    from types import SimpleNamespace as Avg

    from torch.autograd import DeviceType

    from sciml_bench.ranks import allreduce_events

    averages = [Avg(key="nccl:all_reduce", device_type=DeviceType.CPU, cpu_time_total=30.0,
                    self_device_time_total=800.0),
                Avg(key="ncclDevKernel_AllReduce_Sum_f32_RING_LL", device_type=DeviceType.CUDA, cpu_time_total=0.0,
                    self_device_time_total=800.0),
                Avg(key="aten::mm", device_type=DeviceType.CPU, cpu_time_total=50.0, self_device_time_total=0.0),
                Avg(key="gloo:all_reduce", device_type=DeviceType.CPU, cpu_time_total=400.0,
                    self_device_time_total=0.0)]
    assert allreduce_events(averages, cuda=True) == [("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 800.0)]
    assert allreduce_events(averages, cuda=False) == [("gloo:all_reduce", 400.0)]
