"""asv benchmark classes generated from the shipped studies: one class per (study, mode).

Nothing here defines a case: each class is a study of the suite selected by
``SCIML_BENCH_ASV_SUITE`` (smoke | quick | full, or a TOML path; default smoke, CI-sized;
``SCIML_BENCH_ASV_STUDIES`` = comma-separated fnmatch patterns keeps only matching studies), its
``params`` / ``param_names`` are the study's axes (``mode`` becomes the class, so a train and an
infer table are never mixed), and ``setup`` builds the case with ``build_workload``. Cases the
device cannot run (e.g. fp16 on a CPU) raise ``NotImplementedError`` in ``setup``, which asv
records as skipped. ``SCIML_BENCH_ASV_DEVICE`` (auto | cpu | cuda, default auto) picks the device.

Per class::

    time_<mode>_step          one step, CUDA-synchronized inside the timed body (asv's timer)
    peakmem_<mode>_step       process peak RSS around one step (asv)
    track_time_per_sample     median step time / samples per step, from a torch.utils.benchmark block
    track_peak_memory         peak device tensor bytes of one step: CUDA allocator, or CPU tensors
    track_compile_time        first call of a compiled case (skipped when compile="none")
    track_loss_after_budget   train only: loss after LOSS_BUDGET steps from the seeded init
    track_instructions        instructions per step under Callgrind (``measure.instructions``), one thread;
                              only with SCIML_BENCH_ASV_COUNT=instructions (about 30-60 s a case), skipped
                              otherwise and where a case cannot be counted (the reason is the skip message)

asv reads every result as lower-is-better (its compare, continuous and Regressions page flag a
rise), so only such quantities are published: time per sample rather than throughput, and no
FLOP rate (``sciml-bench run`` records both).

Identity: asv keys a history line by benchmark name + params + ``version``. The name and params
come from the study; ``version`` hashes what else decides the measurement (suite, device, the
study's base case, round time, loss budget, the benchmark's code), so changing any of them starts
a new line, and regenerating unchanged keeps it.

Launch: asv.conf.json sets ``launch_method: forkserver`` (torch is imported once, not per sample).
CUDA is not initialised in the fork server (NVML-based availability check); if a CUDA case still
reports "Cannot re-initialize CUDA in forked subprocess", run it with ``--launch-method spawn``.
"""
from __future__ import annotations

import os

# torch.cuda.is_available() through NVML, without initialising CUDA in asv's fork server.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import fnmatch  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import types  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from sciml_bench.cases import Case, Study, load_suite  # noqa: E402
from sciml_bench.errors import Unsupported, UsageError  # noqa: E402
# Modules, not functions: asv would collect a module-level function named time_* or track_*.
from sciml_bench.measure import memory, timing  # noqa: E402
from sciml_bench.workloads import build_workload  # noqa: E402

try:  # raised in a benchmark body, asv records "skipped" rather than "failed"
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # pragma: no cover  (outside asv)
    class SkipNotImplemented(NotImplementedError):
        """Fallback when asv_runner is not importable."""

SUITE = os.environ.get("SCIML_BENCH_ASV_SUITE", "smoke")
STUDIES = os.environ.get("SCIML_BENCH_ASV_STUDIES", "*")
DEVICE_CHOICE = os.environ.get("SCIML_BENCH_ASV_DEVICE", "auto")
LOSS_BUDGET = {"smoke": 5, "quick": 20, "full": 100}  # train steps before the loss is read
COUNT = os.environ.get("SCIML_BENCH_ASV_COUNT", "time")  # "instructions": track_instructions counts (Callgrind)


def resolve_device(choice: str = DEVICE_CHOICE) -> str:
    """auto -> cuda when available, else cpu; cpu / cuda as given (a missing GPU skips in setup)."""
    if choice not in ("auto", "cpu", "cuda"):
        raise UsageError(f"SCIML_BENCH_ASV_DEVICE={choice!r}; expected one of: auto, cpu, cuda")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


class _StudyBenchmark:
    """Shared body of the generated classes (private name: asv does not collect it itself)."""

    study: Study
    mode: str
    device: str
    suite: str
    round_time: float = 0.05
    loss_budget: int = 5
    params: list = []
    param_names: list = []

    def case_for(self, params: tuple) -> Case:
        """The study's case for one asv parameter tuple (overriding every axis leaves one case)."""
        overrides = dict(zip(self.param_names, params), mode=self.mode, device=self.device)
        return self.study.cases(overrides)[0]

    def setup(self, *params: Any) -> None:
        self.case = self.case_for(params)
        try:
            self.wl = build_workload(self.case)
        except Unsupported as e:
            raise NotImplementedError(str(e)) from None
        self.sync = timing.device_sync(self.wl.device)
        self.first_step_s = timing.warmup(self.wl.step, device=self.wl.device)["first_step_s"]  # lazy init out of the timed calls

    def _step(self, *params: Any) -> None:
        self.wl.step()
        self.sync()

    def _median_step_s(self) -> float:
        times = timing.time_block(self.wl.step, self.round_time, torch.get_num_threads(), self.case.case_id,
                                  device=self.wl.device)["times"]
        return statistics.median(times)

    def _time_per_sample(self, *params: Any) -> float:
        return self._median_step_s() / self.wl.samples_per_step

    def _peak_memory(self, *params: Any) -> int:
        return memory.step_memory(self.wl.step, self.wl.device, self.wl.state_tensors())["peak"]

    def _compile_time(self, *params: Any) -> float:
        if self.case.compile == "none":
            raise SkipNotImplemented("case is not compiled (compile='none')")
        return self.first_step_s

    def _instructions(self, *params: Any) -> float:
        from sciml_bench.measure import instructions

        if COUNT != "instructions":
            raise SkipNotImplemented("instruction counts run only with SCIML_BENCH_ASV_COUNT=instructions "
                                     "(Callgrind: about 30-60 s a case)")
        out = instructions.measure(self.case, self.wl.step, instructions.count_options("instructions"))
        if instructions.METRIC not in out["metrics"]:
            raise SkipNotImplemented(out["absent"][instructions.METRIC])
        return out["metrics"][instructions.METRIC]["value"]

    def _loss_after_budget(self, *params: Any) -> float:
        fresh = build_workload(self.case)  # from the seeded init, not the warmed-up model
        for _ in range(self.loss_budget):
            fresh.step()
        return float(fresh.last_loss)


# benchmark name -> (private body, unit for track_*); "{mode}" is filled per class. Every quantity
# is lower-is-better, the only direction asv knows.
METHODS: dict[str, tuple[str, str | None]] = {
    "time_{mode}_step": ("_step", None),
    "peakmem_{mode}_step": ("_step", None),
    "track_time_per_sample": ("_time_per_sample", "seconds"),
    "track_peak_memory": ("_peak_memory", "bytes"),
    "track_compile_time": ("_compile_time", "seconds"),
    "track_loss_after_budget": ("_loss_after_budget", "loss"),
    "track_instructions": ("_instructions", "instructions"),
}
TRAIN_ONLY = {"track_loss_after_budget"}


def _class_name(study: str, mode: str) -> str:
    words = "".join(ch if ch.isalnum() else " " for ch in f"{study} {mode}").split()
    return "".join(w[:1].upper() + w[1:] for w in words)


def benchmark_version(identity: dict[str, Any], body: types.FunctionType) -> str:
    """asv ``version`` of one generated benchmark: a hash of what it measures besides name and params.

    ``identity`` holds the suite, device, study base case, round time and loss budget; the
    benchmark's body and the shared ``setup`` add the code, as asv's own default version would.
    """
    code = inspect.getsource(body) + inspect.getsource(_StudyBenchmark.setup)
    blob = json.dumps(identity, sort_keys=True, default=str) + code
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _bind(body: types.FunctionType, name: str, qualname: str, unit: str | None, meta: dict[str, Any],
          identity: dict[str, Any]):
    """A fresh function object for one benchmark, so per-class attributes (unit, metadata) never leak."""
    fn = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__, body.__closure__)
    fn.__qualname__ = qualname
    if unit is not None:
        fn.unit = unit
    fn.version = benchmark_version(identity, body)
    fn.sciml_bench = meta  # asv copies plain function attributes into benchmarks.json (for import-asv)
    return fn


def make_classes(suite_name: str = SUITE, device: str | None = None, studies: str = STUDIES
                 ) -> dict[str, type]:
    """One asv class per (study, mode) of ``suite_name``; see the module docstring.

    ``studies``: comma-separated fnmatch patterns of study names to keep (default all).
    """
    suite = load_suite(suite_name)
    device = device or resolve_device()
    patterns = [p.strip() for p in studies.split(",") if p.strip()] or ["*"]
    out: dict[str, type] = {}
    for study in suite.studies:
        if not any(fnmatch.fnmatchcase(study.name, p) for p in patterns):
            continue
        axes = {k: list(v) for k, v in study.axes.items() if k != "mode"}
        modes = list(dict.fromkeys(c.mode for c in study.cases()))
        for mode in modes:
            name = _class_name(study.name, mode)
            round_time = max(suite.round_time, 0.02)
            loss_budget = LOSS_BUDGET.get(suite.name, LOSS_BUDGET["quick"])
            # what decides the measurement besides name and params (the reference only picks ratios)
            identity = {"suite": suite.name, "study": study.name, "mode": mode, "device": device,
                        "base": dict(study.base), "round_time": round_time, "loss_budget": loss_budget}
            # for import-asv: the torch this benchmark list was generated under (asv records none
            # with --python=same)
            meta = dict(identity, reference=dict(study.reference), torch=torch.__version__)
            attrs: dict[str, Any] = {
                "__doc__": f"{study.name} ({mode}): {study.question}", "__module__": __name__,
                "study": study, "mode": mode, "device": device, "suite": suite.name,
                "params": list(axes.values()), "param_names": list(axes),
                "timeout": suite.timeout, "round_time": round_time, "loss_budget": loss_budget,
            }
            for pattern, (body, unit) in METHODS.items():
                if pattern in TRAIN_ONLY and mode != "train":
                    continue
                bench = pattern.format(mode=mode)
                attrs[bench] = _bind(getattr(_StudyBenchmark, body), bench, f"{name}.{bench}", unit, meta,
                                     identity)
            out[name] = type(name, (_StudyBenchmark,), attrs)
    return out


globals().update(make_classes())
