"""Case, Study and Suite: what to measure, the questions asked, and the TOML files listing them."""
from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError, unknown

MODES = ("train", "infer", "data", "fit")  # fit: a fixed-budget training run (sciml_bench.training)
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp64", "bf16", "fp16", "tf32")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
OPTIMIZERS = ("sgd", "adam", "adamw")
GRAD_MODES = ("no_grad", "inference_mode", "grad")
ATTENTIONS = ("manual", "sdpa")
DDP_SCALINGS = ("weak", "strong")  # batch_size per rank (weak) or global, split over the ranks (strong)

DATASETS = ("images", "memmap", "timeseries")  # see sciml_bench.data

# Fields passed to the model zoo as knobs (None / False / 0 = the model's own default).
MODEL_KNOBS = ("activation", "init", "norm", "attention", "width", "depth", "resolution", "seq_len",
               "checkpoint", "channels_last")

# DataLoader fields: they only mean something when the case loads data through a DataLoader.
LOADER_FIELDS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")

# What a study's ``metrics`` may name: the metric families its report answers with.
METRIC_FAMILIES = ("time", "memory", "flops")
# Fixed-budget training fields: they only mean something for mode='fit'.
FIT_FIELDS = ("steps", "seeds", "eval_every", "target", "clip", "time_budget")

INT64_MAX = 2 ** 63 - 1  # torch's sizes, counts and seeds are int64: an integer field beyond it cannot exist
# width, resolution and seq_len are each the side of a square tensor (a width x width weight, a resolution x
# resolution field, a seq_len x seq_len attention map): beyond this side its element count overflows int64
SIDE_MAX = math.isqrt(INT64_MAX)



@dataclass(frozen=True)
class Case:
    """One fully specified benchmark configuration. Hashable; validated at construction.

    ``None`` for a model knob means "the model's own default". ``case_id`` names the case by
    the fields that differ from the defaults, so it is stable and readable.
    """

    model: str = "mlp"
    mode: str = "train"
    batch_size: int = 32
    device: str = "cpu"
    precision: str = "fp32"
    compile: str = "none"
    dynamic: bool | None = None  # torch.compile(dynamic=...): None = automatic dynamic shapes on recompile
    shape_sweep: int = 0  # after warmup, call the step at this many other input sizes (recompilation sweep)
    cudnn_benchmark: bool = False  # torch.backends.cudnn.benchmark (CUDA convolutions)
    checkpoint: int = 0  # gradient-checkpointing segments; 0 = off
    channels_last: bool = False
    activation: str | None = None
    init: str = "default"
    norm: str | None = None
    attention: str | None = None
    width: int | None = None
    depth: int | None = None
    resolution: int | None = None
    seq_len: int | None = None
    grad_mode: str = "no_grad"  # infer mode only
    dataset: str | None = None  # mode='data', or a train step that loads its batch through a DataLoader
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    seed: int = 0
    ddp_ranks: int = 0  # DistributedDataParallel over this many torchrun ranks; 0 = no DDP
    ddp_scaling: str = "weak"
    steps: int = 300  # fit: optimizer steps (the budget; results do not depend on machine load)
    seeds: int = 3  # fit: seeds seed, seed+1, ... trained one after another; mean and CI across them
    eval_every: int = 0  # fit: steps between validation points (0: steps / 10)
    target: float | None = None  # fit: validation loss whose first crossing gives steps/time-to-target
    clip: float | None = None  # fit: clip the gradient norm to this (fraction of steps clipped is recorded)
    time_budget: float | None = None  # fit: also stop after this many seconds of training (per seed)

    def __post_init__(self) -> None:
        from sciml_bench.models import get_model_spec
        from sciml_bench.models.layers import ACTIVATIONS, INITS, NORMS

        for f in fields(self):  # types first, so later checks can trust them
            _check_type(f.name, getattr(self, f.name), _FIELD_TYPES[f.name])
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN; no measurement means it
                raise UsageError(f"{f.name} must be a finite number, got {value!r}")
            if isinstance(value, int) and not isinstance(value, bool) and f.name not in _COUNTS and \
                    not -INT64_MAX - 1 <= value <= INT64_MAX:  # sizes and counts: their own range, below
                raise UsageError(f"{f.name} must be an integer from {-INT64_MAX - 1} to {INT64_MAX} (int64), "
                                 f"got {value}")
        choices = {"mode": MODES, "device": DEVICES, "precision": PRECISIONS, "compile": COMPILE_MODES,
                   "optimizer": OPTIMIZERS, "grad_mode": GRAD_MODES, "activation": ACTIVATIONS,
                   "init": INITS, "norm": NORMS, "attention": ATTENTIONS, "dataset": DATASETS,
                   "ddp_scaling": DDP_SCALINGS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise unknown(f"value for {name}", value, allowed)
        for name in _SIZES:
            value, side = getattr(self, name), name in ("width", "resolution", "seq_len")
            if value is not None and not 0 < value <= (SIDE_MAX if side else INT64_MAX):
                raise UsageError(f"{name} must be a positive integer, from 1 to {SIDE_MAX if side else INT64_MAX}"
                                 + (" (the side of a square tensor whose elements must fit in int64)" if side else "")
                                 + f", got {value}")
        for name in _COUNTS[len(_SIZES):]:
            if not 0 <= getattr(self, name) <= INT64_MAX:
                raise UsageError(f"{name} must be >= 0 (up to {INT64_MAX}), got {getattr(self, name)}")
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        self._check_loader()
        self._check_ddp()
        self._check_fit()
        if self.compile == "none" and self.dynamic is not None:
            raise UsageError(f"dynamic={self.dynamic} needs compile != 'none'")
        if self.mode == "train" and self.grad_mode != "no_grad":
            raise UsageError(f"grad_mode={self.grad_mode!r} applies to mode='infer' only")
        get_model_spec(self.model).check_knobs(self.knobs)

    def _check_loader(self) -> None:
        """DataLoader fields need a dataset; the combinations torch.utils.data rejects are refused here."""
        if self.mode == "data" and self.dataset is None:
            raise UsageError(f"mode='data' needs a dataset; allowed: {', '.join(DATASETS)}")
        if self.dataset is not None and self.mode == "infer":
            raise UsageError("dataset applies to mode='data' or mode='train' (train step with loading), not 'infer'")
        if self.dataset is None:
            for name in LOADER_FIELDS:
                if getattr(self, name) != _DEFAULTS[name]:
                    raise UsageError(f"{name}={getattr(self, name)!r} needs a dataset (a DataLoader); "
                                     f"set dataset to one of: {', '.join(DATASETS)}")
        if self.num_workers == 0:
            for name in ("persistent_workers", "prefetch_factor"):
                if getattr(self, name) != _DEFAULTS[name]:
                    raise UsageError(f"{name}={getattr(self, name)!r} needs num_workers > 0")
        if self.mode == "data":
            for name in ("precision", "compile", "checkpoint", "channels_last", "shape_sweep", "cudnn_benchmark"):
                if getattr(self, name) != _DEFAULTS[name]:
                    raise UsageError(f"{name}={getattr(self, name)!r} does not apply to mode='data' (no model runs)")

    def _check_ddp(self) -> None:
        """DDP trains: it needs mode='train', and strong scaling a global batch the ranks can split."""
        if not self.ddp_ranks:
            if self.ddp_scaling != _DEFAULTS["ddp_scaling"]:
                raise UsageError(f"ddp_scaling={self.ddp_scaling!r} needs ddp_ranks > 0")
            return
        if self.mode != "train":
            raise UsageError(f"ddp_ranks={self.ddp_ranks} applies to mode='train' only, not {self.mode!r}")
        if self.ddp_scaling == "strong" and self.batch_size % self.ddp_ranks:
            raise UsageError(f"ddp_scaling='strong' splits batch_size={self.batch_size} over ddp_ranks="
                             f"{self.ddp_ranks}: it must be a multiple of ddp_ranks")

    def _check_fit(self) -> None:
        """Fit fields belong to mode='fit'; a fit case trains on its task's generated data."""
        if self.mode != "fit":
            for name in FIT_FIELDS:
                if getattr(self, name) != _DEFAULTS[name]:
                    raise UsageError(f"{name}={getattr(self, name)!r} applies to mode='fit' only")
            return
        for name in ("steps", "seeds", "eval_every"):
            if getattr(self, name) < (0 if name == "eval_every" else 1):
                raise UsageError(f"{name} must be {'>= 0' if name == 'eval_every' else 'a positive integer'}, "
                                 f"got {getattr(self, name)}")
        for name in ("clip", "time_budget", "target"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a finite positive number, got {value}")
        if self.dataset is not None:
            raise UsageError("mode='fit' trains on its task's generated data; dataset does not apply")
        if self.grad_mode != "no_grad":
            raise UsageError(f"grad_mode={self.grad_mode!r} applies to mode='infer' only")

    @property
    def knobs(self) -> dict[str, Any]:
        """The model knobs of this case (None = model default)."""
        return {k: getattr(self, k) for k in MODEL_KNOBS}

    @property
    def case_id(self) -> str:
        """Readable, stable id: the model, then ``field=value`` for each non-default field."""
        parts = [self.model] + [f"{k}={v}" for k, v in self.to_dict().items()
                                if k != "model" and v != _DEFAULTS[k]]
        return ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Case":
        """A new validated Case with ``changes`` applied (unknown fields are a UsageError)."""
        return make_case(self.to_dict() | changes)


_SIZES = ("batch_size", "width", "depth", "resolution", "seq_len", "prefetch_factor")  # positive
_COUNTS = _SIZES + ("checkpoint", "num_workers", "shape_sweep", "ddp_ranks")  # these and >= 0
_FIELD_TYPES = typing.get_type_hints(Case)
_DEFAULTS = {f.name: f.default for f in fields(Case)}
CASE_FIELDS = tuple(_DEFAULTS)


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = tuple(a for a in typing.get_args(hint)) or (hint,)
    ok = any(value is None if a is type(None) else
             (isinstance(value, a) and not (a in (int, float) and isinstance(value, bool)))
             or (a is float and isinstance(value, int) and not isinstance(value, bool))
             for a in allowed)
    if not ok:
        names = " or ".join("None" if a is type(None) else a.__name__ for a in allowed)
        raise UsageError(f"{name} must be {names}, got {value!r}")


def make_case(values: dict[str, Any]) -> Case:
    """Build a Case from a dict, naming unknown fields with close matches."""
    for k in values:
        if k not in _DEFAULTS:
            raise unknown("case field", k, CASE_FIELDS)
    return Case(**values)


def parse_value(name: str, text: str) -> Any:
    """Parse a ``--set`` string into the type of Case field ``name``."""
    if name not in _DEFAULTS:
        raise unknown("case field", name, CASE_FIELDS)
    allowed = typing.get_args(_FIELD_TYPES[name]) or (_FIELD_TYPES[name],)
    if text.lower() in ("none", "null") and type(None) in allowed:
        return None
    if bool in allowed:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"--set {name}={text}: expected true or false")
    for typ in (int, float):
        if typ in allowed:
            try:
                value = typ(text)
            except ValueError:
                raise UsageError(f"--set {name}={text}: expected {typ.__name__}") from None
            if typ is float and not math.isfinite(value):
                raise UsageError(f"--set {name}={text}: expected a finite number")
            return value
    return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` into (field, typed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"malformed --set {text!r}; expected key=value with key one of: {', '.join(CASE_FIELDS)}")
    return key.strip(), parse_value(key.strip(), value.strip())


@dataclass(frozen=True)
class Study:
    """A named question: a base case, axes to vary, and the reference value for ratios.

    Cases are the product of the axes applied to the base. A case's reference case is the one
    with the ``reference`` fields substituted (e.g. ``precision=fp32``); cases sharing a reference
    are timed side by side in interleaved rounds so their ratios come from paired rounds.
    """

    name: str
    question: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    reference: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("time", "memory", "flops")
    fail_on_nonfinite: bool = False  # a case whose loss goes NaN/inf is recorded as failed, not ok

    def cases(self, overrides: dict[str, Any] | None = None, models: Iterable[str] = ()) -> list[Case]:
        """The study's cases, with ``overrides`` (e.g. ``--set``, ``--device``) applied last.

        ``models`` (globs) selects first, by each case's model after overrides, so an override is
        only checked against the models it will run with. An override of an axis field collapses
        that axis to the override's value."""
        overrides, models = overrides or {}, list(models)
        axes = {k: ([overrides[k]] if k in overrides else v) for k, v in self.axes.items()}
        out, seen = [], set()
        for combo in itertools.product(*axes.values()):
            values = dict(self.base) | dict(zip(axes, combo)) | overrides
            if models and not any(fnmatch(str(values.get("model", _DEFAULTS["model"])), p) for p in models):
                continue
            try:
                case = make_case(values)
            except UsageError as e:
                raise UsageError(f"study {self.name!r}: {e}") from None
            if case not in seen:
                seen.add(case)
                out.append(case)
        return out

    def reference_of(self, case: Case) -> Case | None:
        """The reference case paired with ``case`` (itself when it is the reference)."""
        if not self.reference:
            return None
        try:
            return case.replace(**self.reference)
        except UsageError:
            return None


@dataclass(frozen=True)
class Suite:
    """A budgeted list of studies loaded from TOML, with timing defaults (rounds, round time, timeout)."""

    name: str
    description: str
    studies: tuple[Study, ...]
    rounds: int = 5
    round_time: float = 0.2
    timeout: float = 300.0
    path: str = ""
    warnings: tuple[tuple[str, str], ...] = ()  # (study, text): legal but surprising choices, printed by `run`
    passes: int = 1  # timed passes per study, separated in time, each in fresh workers (rounds are per pass)
    threads: int | None = None  # torch intra-op threads per worker (None: torch's default)
    # "instructions": also count every case's instructions per step under Callgrind (measure.instructions)
    count: str = "time"
    instruction_calls: int | None = None  # calls per Callgrind measurement (None: measure.instructions' default)

    def study(self, name: str) -> Study:
        for s in self.studies:
            if s.name == name:
                return s
        raise unknown(f"study in suite {self.name!r}", name, [s.name for s in self.studies])


SUITE_KEYS = {"name", "description", "rounds", "round_time", "timeout", "passes", "threads", "count",
              "instruction_calls"}
COUNTS = ("time", "instructions")  # what a run counts: time only, or instructions per step as well
STUDY_KEYS = {"name", "question", "base", "axes", "reference", "metrics", "fail_on_nonfinite"}


def builtin_suites() -> list[str]:
    """Names of the suites shipped in the package."""
    return sorted(p.name[:-5] for p in resources.files("sciml_bench.suites").iterdir() if p.name.endswith(".toml"))


def load_suite(name_or_path: str) -> Suite:
    """Load a shipped suite by name, or a user TOML file by path. Validates every study's cases."""
    path = Path(name_or_path)
    if name_or_path in builtin_suites():
        text = resources.files("sciml_bench.suites").joinpath(f"{name_or_path}.toml").read_text()
        source = f"{name_or_path}.toml"
    elif path.suffix == ".toml" or path.exists():
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as e:
            raise UsageError(f"cannot read suite file {path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise UsageError(f"suite file {path} is not UTF-8 text (byte {e.start}); TOML files must be UTF-8") \
                from None
    else:
        raise unknown("suite", name_or_path, builtin_suites() + ["<path/to/file.toml>"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"bad TOML in {source}: {e}") from None
    return _parse_suite(data, source)


def _expect(value: Any, typ: type | tuple[type, ...], what: str, source: str) -> Any:
    if not isinstance(value, typ):
        names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise UsageError(f"{what} in {source} must be a {names.replace('dict', 'table').replace('list', 'array')}, "
                         f"got {value!r}")
    return value


def positive_number(value: Any, what: str) -> float:
    """``value`` as a finite positive number, or UsageError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what} must be a finite positive number, got {value!r}")
    return value


def _parse_suite(data: dict[str, Any], source: str) -> Suite:
    head = _expect(data.get("suite", {}), dict, "[suite]", source)
    for key in set(data) - {"suite", "study"}:
        raise unknown(f"top-level table in {source}", key, ["suite", "study"])
    for key in set(head) - SUITE_KEYS:
        raise unknown(f"[suite] key in {source}", key, sorted(SUITE_KEYS))
    studies, warnings = [], []
    for i, s in enumerate(_expect(data.get("study", []), list, "[[study]]", source)):
        where = f"study #{i + 1}"
        _expect(s, dict, where, source)
        for key in set(s) - STUDY_KEYS:
            raise unknown(f"key in {where} of {source}", key, sorted(STUDY_KEYS))
        if "name" not in s:
            raise UsageError(f"{where} of {source} has no name")
        for key, typ in (("name", str), ("question", str), ("base", dict), ("axes", dict), ("reference", dict),
                         ("metrics", list), ("fail_on_nonfinite", bool)):
            if key in s:
                _expect(s[key], typ, f"{key} of {where}", source)
        if not s["name"].strip() or not s["name"].isprintable():
            raise UsageError(f"name of {where} in {source} must be non-empty printable text, got {s['name']!r}")
        for m in s.get("metrics", []):
            if m not in METRIC_FAMILIES:
                raise UsageError(f"study {s['name']!r} in {source}: {unknown('metric', m, METRIC_FAMILIES)}")
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in s.get("axes", {}).items()}
        for k, v in axes.items():
            if not v:
                raise UsageError(f"study {s['name']!r}: axis {k!r} has no values")
        study = Study(s["name"], s.get("question", ""), dict(s.get("base", {})), axes,
                      dict(s.get("reference", {})), tuple(s.get("metrics", ("time", "memory", "flops"))),
                      s.get("fail_on_nonfinite", False))
        study.cases()  # validate now: a bad value fails at load time, naming the study
        for k, v in study.reference.items():
            if k not in axes:
                raise UsageError(f"study {study.name!r}: reference field {k!r} is not one of its axes {list(axes)}")
            if v not in axes[k]:  # legal (a cheap suite may leave its reference out), but never silent
                warnings.append((study.name, f"study {study.name!r}: reference {k}={v!r} is not among its axis values "
                                             f"{axes[k]}, so its ratios will be absent"))
        studies.append(study)
    if not studies:
        raise UsageError(f"suite {source} has no [[study]] tables")
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise UsageError(f"suite {source} defines a study name twice: {names}")
    rounds = positive_number(head.get("rounds", 5), f"[suite] rounds in {source}")
    passes = positive_number(head.get("passes", 1), f"[suite] passes in {source}")
    for key, v in (("rounds", rounds), ("passes", passes)):
        if not isinstance(v, int):
            raise UsageError(f"[suite] {key} in {source} must be an integer, got {v!r}")
    name = _expect(head.get("name", Path(source).stem), str, "[suite] name", source)
    if not name.strip() or not name.isprintable():
        raise UsageError(f"[suite] name in {source} must be non-empty printable text, got {name!r}")
    return Suite(name,
                 _expect(head.get("description", ""), str, "[suite] description", source), tuple(studies), rounds,
                 float(positive_number(head.get("round_time", 0.2), f"[suite] round_time in {source}")),
                 float(positive_number(head.get("timeout", 300.0), f"[suite] timeout in {source}")), source,
                 tuple(warnings), passes, _threads(head.get("threads"), source), *_count(head, source))


def _count(head: dict[str, Any], source: str) -> tuple[str, int | None]:
    """The [suite] table's ``count`` and ``instruction_calls``, checked."""
    count = head.get("count", "time")
    if count not in COUNTS:
        raise unknown(f"[suite] count in {source}", count, list(COUNTS))
    calls = head.get("instruction_calls")
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
        raise UsageError(f"[suite] instruction_calls in {source} must be a positive integer, got {calls!r}")
    return count, calls


def _threads(value: Any, source: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"[suite] threads in {source} must be a positive integer, got {value!r}")
    return value


def iter_cases(suite: Suite, studies: Iterable[str] = (), overrides: dict[str, Any] | None = None,
               models: Iterable[str] = ()) -> Iterator[tuple[Study, list[Case]]]:
    """(study, cases) for the selected studies of ``suite`` (all when ``studies`` is empty),
    selected by ``models`` globs before ``overrides`` apply."""
    for s in ([suite.study(n) for n in studies] if studies else suite.studies):
        yield s, s.cases(overrides, models)
