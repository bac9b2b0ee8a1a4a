"""Recommend's search space: what the user asked, and every knob value a model could try on this machine.

A ``Request`` is the validated question (model, mode, limits, budget). ``build_space`` turns it into
a ``Space``: the baseline Case (fp32, eager, the user's batch size) and, per knob, the values that can
run here; values that cannot (fp16 on a CPU, channels_last on an MLP) are kept with their reason, so
the answer lists them as 'not available here' and never silently drops them. ``find_batch_sizes``
adds the batch-size axis: powers of two up to the largest that fits the memory limit.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sciml_bench.cases import Case, make_case
from sciml_bench.errors import Unsupported, UsageError, unknown

# The knobs recommend searches, in the order the answer names them.
KNOBS = ("precision", "compile", "channels_last", "checkpoint", "grad_mode", "num_workers", "batch_size")
# Knobs whose values change what a training run computes: a candidate that moves one must pass the
# accuracy check (a short fit against the baseline's). channels_last and checkpointing do not.
NUMERIC_KNOBS = {"train": ("precision", "compile", "batch_size"), "infer": ("precision", "compile")}
MODES = ("train", "infer")
_TRIED = {"precision": ("fp32", "bf16", "fp16", "tf32"), "compile": ("none", "default", "reduce-overhead", "max-autotune"),
          "channels_last": (False, True), "checkpoint": (0, 1), "grad_mode": ("no_grad", "inference_mode")}


@dataclass(frozen=True)
class Request:
    """What the user asked: the fastest configuration of ``model`` in ``mode`` on ``device`` under
    ``memory_limit`` bytes (None: the device's memory), whose final validation loss stays within
    ``tolerance`` (relative) of the baseline's, found within ``budget`` seconds.

    ``base``: Case fields of the baseline (``--set``, e.g. width or resolution; batch_size sets the
    baseline's batch, still searched); ``batch_size``: pinned (not searched; the objective is then
    step time); ``knobs``: the knobs searched (default all of ``KNOBS``)."""

    model: str
    mode: str = "train"
    device: str = "cpu"
    base: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    memory_limit: int | None = None
    tolerance: float = 0.05
    budget: float = 600.0
    knobs: tuple[str, ...] = KNOBS
    max_batch_size: int = 1024
    fit_steps: int = 60
    seeds: int = 3
    plugins: tuple[str, ...] = ()

    def validate(self) -> None:
        """UsageError (one line) for anything the search cannot start from; nothing is built or written."""
        from sciml_bench.models import get_model_spec

        get_model_spec(self.model)  # unknown model: the zoo's error, with close matches
        if self.mode not in MODES:
            raise unknown("mode for recommend", self.mode, MODES)
        for name in ("tolerance", "budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise UsageError(f"--{name} must be a finite positive number, got {value!r}")
        for name in ("memory_limit", "batch_size", "max_batch_size", "fit_steps", "seeds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.seeds < 2:
            raise UsageError(f"--seeds must be at least 2: the accuracy check's CI is over seeds, got {self.seeds}")
        for k in self.knobs:
            if k not in KNOBS:
                raise unknown("knob to search", k, KNOBS)
        for k in self.base:
            if k in KNOBS and k != "batch_size" or k in ("model", "mode", "device"):
                raise UsageError(f"--set {k}: recommend {'searches this knob from its baseline' if k in KNOBS else 'takes it as its own option'}"
                                 f"{' (leave it out of --knobs to keep the default)' if k in KNOBS else ''}")
        self.baseline()  # a bad --set value fails here, naming the field

    def baseline(self) -> Case:
        """fp32, eager, the user's batch size and base fields: what every speed-up is measured against."""
        values = dict(self.base, model=self.model, mode=self.mode, device=self.device)
        if self.batch_size is not None:
            values["batch_size"] = self.batch_size
        return make_case(values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Space:
    """The searched values per knob (baseline value first) and the values left out, each with why."""

    baseline: Case
    values: dict[str, list[Any]]
    excluded: list[dict[str, Any]] = field(default_factory=list)  # {knob, value, fate, reason}
    memory_limit: int = 0
    memory_limit_source: str = ""
    batch_probes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reference(self) -> dict[str, Any]:
        """The baseline's value of every searched knob: a study's reference for ratios."""
        return {k: getattr(self.baseline, k) for k in self.values}

    def candidate(self, **values: Any) -> Case:
        return self.baseline.replace(**values)

    def knobs_of(self, case: Case) -> dict[str, Any]:
        """The searched knobs where ``case`` differs from the baseline."""
        return {k: getattr(case, k) for k in self.values if getattr(case, k) != getattr(self.baseline, k)}

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.to_dict(), "values": self.values, "excluded": self.excluded,
                "memory_limit": self.memory_limit, "memory_limit_source": self.memory_limit_source,
                "batch_probes": self.batch_probes}


def _why_not(case: Case) -> str | None:
    """Why this machine cannot run ``case`` (the workload's own refusal), or None."""
    from sciml_bench.workloads import check_device

    try:
        check_device(case)
    except Unsupported as e:
        return str(e)
    return None


def build_space(req: Request) -> Space:
    """Every knob value to try for ``req`` except batch size (``find_batch_sizes``), or why not."""
    from sciml_bench.models import get_model_spec

    base = req.baseline()
    spec = get_model_spec(req.model)
    values: dict[str, list[Any]] = {}
    excluded: list[dict[str, Any]] = []

    def out(knob: str, value: Any, reason: str, fate: str = "not available here") -> None:
        excluded.append({"knob": knob, "value": value, "fate": fate, "reason": reason})

    not_applicable = {
        "channels_last": None if "channels_last" in spec.knobs else f"{req.model} is not convolutional (its zoo entry "
                                                                    "does not accept channels_last)",
        "checkpoint": ("inference keeps no activations for a backward pass" if req.mode == "infer" else
                       None if "checkpoint" in spec.knobs else f"{req.model} does not support gradient checkpointing"),
        "grad_mode": "inference_mode applies to inference only" if req.mode == "train" else None,
        "num_workers": None if base.dataset else "the case has no data pipeline (set --set dataset=... to search "
                                                 "DataLoader workers)",
    }
    for knob in KNOBS:
        if knob == "batch_size":
            if req.batch_size is not None:
                out(knob, req.batch_size, f"pinned by --batch-size {req.batch_size}", "not searched")
            elif knob not in req.knobs:
                out(knob, None, "left out by --knobs", "not searched")
            continue
        if knob not in req.knobs:
            out(knob, None, "left out by --knobs", "not searched")
            continue
        if not_applicable.get(knob):
            out(knob, None, not_applicable[knob], "not searched")
            continue
        tried = _TRIED.get(knob) or tuple(sorted({0} | {2 ** i for i in range(int(math.log2(os.cpu_count() or 1)) + 1)}))
        ok = []
        for v in tried:
            try:
                why = _why_not(base.replace(**{knob: v}))
            except UsageError as e:  # a combination the Case itself refuses (e.g. workers without a dataset)
                why = str(e)
            if why:
                out(knob, v, why)
            else:
                ok.append(v)
        if len(ok) > 1:
            values[knob] = ok
    return Space(base, values, excluded)


def default_memory_limit(device: str) -> tuple[int, str]:
    """(bytes, where from) when no --memory-limit is given: 90 % of the GPU memory free now (other processes,
    and this one's CUDA context, hold the rest; the margin is for the allocator's fragmentation), or half the
    RAM available now."""
    if device == "cuda":
        import torch

        free = torch.cuda.mem_get_info()[0]
        return int(0.9 * free), f"90% of the GPU memory free at start ({free} B)"
    import psutil

    avail = psutil.virtual_memory().available
    return avail // 2, f"half the RAM available at start ({avail} B)"


def probe_peak(case: Case) -> int | None:
    """Peak tensor bytes of one step of ``case``, measured here as a worker's setup measures it
    (``measure.memory.step_memory``); None when the step runs out of memory."""
    from sciml_bench.errors import classify
    from sciml_bench.measure.memory import step_memory
    from sciml_bench.workloads import build_workload, release

    wl = None
    try:
        with _quiet():  # the profiler's C++ chatter would land on the user's terminal
            wl = build_workload(case)
            wl.step()  # the first step allocates optimizer state: measured from the second on
            return step_memory(wl.step, wl.device, wl.state_tensors())["peak"]
    except Exception as e:  # noqa: BLE001  (only out-of-memory is an answer; anything else is a bug)
        if classify(e)[0] != "oom":
            raise
        return None
    finally:
        wl = None
        release()  # a Workload's step closes over it: only a collection frees its memory


@contextlib.contextmanager
def _quiet():
    """File descriptors 1 and 2 to /dev/null for the duration (native libraries write there directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def find_batch_sizes(space: Space, limit: int, max_batch: int, pinned: bool,
                     probe: Callable[[Case], int | None] = probe_peak) -> list[int]:
    """The batch-size axis: powers of two from the baseline's batch up to the largest whose step fits
    ``limit`` (and ``max_batch``), like Lightning's batch-size finder; below the baseline's only when
    that does not fit. Peak memory is linear in the batch, so after two probes the next size is
    predicted and skipped when the prediction is over the limit (a probe never allocates far above
    it); a probed size over the limit or out of memory stops the search. The probes are logged in
    ``space.batch_probes``; the runner's own measurement of every candidate decides its fate.

    Raises UsageError when even the leanest configuration at batch 1 (checkpointing, where the model
    has it) is over ``limit``: the limit is below the smallest configuration."""
    base = space.baseline
    lean = {"checkpoint": 1} if 1 in space.values.get("checkpoint", []) else {}

    def measure(bs: int, knobs: dict[str, Any]) -> int | None:
        peak = probe(base.replace(batch_size=bs, **knobs))
        space.batch_probes.append({"batch_size": bs, "knobs": knobs, "peak_bytes": peak,
                                   "fits": peak is not None and peak <= limit})
        return peak

    b0 = base.batch_size
    peak0 = measure(b0, {})
    if pinned:
        return [b0]
    if peak0 is None or peak0 > limit:  # go down until it fits
        b = 1 << (b0.bit_length() - 1) if b0 & (b0 - 1) else b0 // 2
        while b >= 1:
            peak = measure(b, {})
            if peak is not None and peak <= limit:
                return [b]
            b //= 2
        smallest = measure(1, lean) if lean else space.batch_probes[-1]["peak_bytes"]
        if smallest is None or smallest > limit:
            from sciml_bench.units import fmt_bytes

            raise UsageError(f"--memory-limit {limit} B is below the smallest configuration of {base.model}: batch 1"
                             f"{' with checkpointing' if lean else ''} needs "
                             f"{'more than this device has' if smallest is None else fmt_bytes(smallest)}")
        return [1]
    sizes, points = [b0], [(b0, peak0)]
    b = b0 * 2
    while b <= max_batch:
        if len(points) >= 2:
            (x1, y1), (x2, y2) = points[-2:]
            predicted = y2 + (y2 - y1) / (x2 - x1) * (b - x2)
            if predicted > limit:
                space.batch_probes.append({"batch_size": b, "knobs": {}, "predicted_bytes": int(predicted),
                                           "fits": False})
                break
        peak = measure(b, {})
        if peak is None or peak > limit:
            break
        sizes.append(b)
        points.append((b, peak))
        b *= 2
    return sizes
