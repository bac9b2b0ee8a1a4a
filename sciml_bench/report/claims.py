"""Claims checked: common performance folklore, each given a verdict from the runs' own numbers."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sciml_bench.report.words import ratio_words
from sciml_bench.results import memory_ratio
from sciml_bench.stats import loglog_slope, ratio_of_geomeans, ratio_of_medians

NOT_MEASURED = "not measured"


@dataclass
class Evidence:
    """One measured pair (or fit) bearing on a claim: what was compared, the number and its CI."""

    what: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    holds: bool | None = None  # None: inconclusive (the CI straddles the claim's boundary)
    unit: str = "x"
    kind: str = ""  # "time" | "memory" | "throughput": value is a ratio said in words; "": a plain number
    note: str = ""  # said after the number (e.g. "1.02x less memory", "break-even 2,200 steps")
    run: str | None = None  # the run the pair came from, shown when a report combines several runs

    def text(self) -> str:
        if self.kind:
            shown = ratio_words(self.value, self.ci_low, self.ci_high, kind=self.kind)
        else:
            ci = f" [{self.ci_low:.3g}-{self.ci_high:.3g}]" if self.ci_low is not None and self.ci_high is not None \
                else ""
            shown = f"{self.value:.3g}{self.unit}{ci}"
        return (f"[{self.run}] " if self.run else "") + f"{self.what}: {shown}" + (f", {self.note}" if self.note else "")


def _num(v: float) -> str:
    """Two decimals in the usual range; significant digits for vanishing or exploding ratios."""
    return f"{v:.2f}" if v == 0 or 0.01 <= abs(v) < 1e4 else f"{v:.3g}"


@dataclass
class Claim:
    """A claim, its verdict on this hardware and the evidence behind it."""

    claim: str
    test: str  # how it is checked, in words
    verdict: str = NOT_MEASURED  # holds | does not hold | inconclusive | "k hold / m do not / j inconclusive" | not measured
    evidence: list[Evidence] = field(default_factory=list)
    note: str = ""

    def summary(self) -> str:
        if not self.evidence:
            return self.note or "no case in these runs varies this"
        shown = "; ".join(e.text() for e in self.evidence[:6])
        more = f"; and {len(self.evidence) - 6} more" if len(self.evidence) > 6 else ""
        return shown + more


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == "ok"]


def _key_without(r: dict[str, Any], field_name: str) -> tuple:
    """(run, study, every other case field): records sharing it differ only in ``field_name``."""
    return r.get("_run"), r["study"], tuple(sorted((k, str(v)) for k, v in r["case"].items() if k != field_name))


def _groups(records: list[dict[str, Any]], field_name: str) -> list[list[dict[str, Any]]]:
    """Ok records grouped by ``_key_without(field_name)``."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(_key_without(r, field_name), []).append(r)
    return list(out.values())


def pairs(records: list[dict[str, Any]], field_name: str, test: Callable[[Any], bool],
          base: Callable[[Any], bool]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(variant, baseline) records of one run and study whose cases differ only in ``field_name``."""
    out = []
    for group in _groups(_ok(records), field_name):
        for v in group:
            if not test(v["case"].get(field_name)):
                continue
            for b in group:
                if b is not v and base(b["case"].get(field_name)):
                    out.append((v, b))
    return out


def time_ratio(v: dict[str, Any], b: dict[str, Any]) -> tuple[float, float | None, float | None]:
    """variant/baseline step time: the paired-round ratio when b is v's reference, else unpaired."""
    tr = v["metrics"].get("time_ratio")
    if tr and tr.get("reference") == b["case_id"]:
        return tr["value"], tr.get("ci_low"), tr.get("ci_high")
    tb = b["metrics"].get("time_ratio")
    if tb and tb.get("reference") == v["case_id"] and tb["value"]:  # v is b's reference: invert the paired ratio
        lo, hi = tb.get("ci_low"), tb.get("ci_high")
        return 1 / tb["value"], (1 / hi if hi else None), (1 / lo if lo else None)
    r = ratio_of_medians(v["metrics"]["step_time"].get("samples") or [v["metrics"]["step_time"]["value"]],
                         b["metrics"]["step_time"].get("samples") or [b["metrics"]["step_time"]["value"]])
    return v["metrics"]["step_time"]["value"] / b["metrics"]["step_time"]["value"], r["ci_low"], r["ci_high"]


def _untrusted(*records: dict[str, Any]) -> str:
    """Why a pair's timing cannot carry a verdict ("" when it can): starved blocks, or overhead-dominated steps."""
    from sciml_bench.results import starved_unreliable

    why = {"starved" for r in records if starved_unreliable(r)}
    why |= {"overhead-dominated" for r in records if (r.get("overhead") or {}).get("dominated")}
    return ", ".join(sorted(why))


def _within(value: float, lo: float | None, hi: float | None, rng: tuple[float, float]) -> bool | None:
    """Whether a measured value supports a claimed range ``rng``.

    With a CI: True only when the whole CI lies inside ``rng``, False only when it lies wholly
    outside, otherwise None (inconclusive). Without a CI (single deterministic measurements such
    as allocator peaks) the value itself decides.
    """
    a, b = rng
    if lo is None or hi is None:
        return a <= value <= b
    if a <= lo and hi <= b:
        return True
    if hi < a or lo > b:
        return False
    return None


def _verdict(evidence: list[Evidence]) -> str:
    if not evidence:
        return NOT_MEASURED
    h = [e.holds for e in evidence]
    if all(x is True for x in h):
        return "holds"
    if all(x is False for x in h):
        return "does not hold"
    if all(x is None for x in h):
        return "inconclusive"
    return (f"{sum(x is True for x in h)} hold / {sum(x is False for x in h)} do not / "
            f"{sum(x is None for x in h)} inconclusive")


def _label(v: dict[str, Any], b: dict[str, Any], field_name: str) -> str:
    c = v["case"]
    ctx = f"{c['model']} {c['mode']} bs{c['batch_size']}"
    return f"{field_name}={v['case'].get(field_name)} vs {b['case'].get(field_name)} ({ctx})"


def _time_claim(claim: Claim, records, field_name, test, base, rng, speedup=False,
                mem_rng: tuple[float, float] | None = None) -> Claim:
    """Evidence per (variant, baseline) pair; ``rng`` bounds the speedup (``speedup``) or the time ratio."""
    for v, b in pairs(records, field_name, test, base):
        r, lo, hi = time_ratio(v, b)
        if speedup:  # the claim's range is about baseline / variant
            holds = _within(1 / r, (1 / hi if hi else None), (1 / lo if lo else None), rng)
        else:
            holds = _within(r, lo, hi, rng)
        notes = []
        flag = _untrusted(v, b)
        if flag:  # shown, but no verdict from a case the machine or the harness dominated
            holds = None
            notes.append(f"{flag}: no verdict")
        if mem_rng is not None:
            m = memory_ratio(v, b)
            if m is None:
                holds = None
            else:
                holds = holds if flag or mem_rng[0] <= m <= mem_rng[1] else False
                notes.insert(0, ratio_words(m, kind="memory"))
        claim.evidence.append(Evidence(_label(v, b, field_name), r, lo, hi, holds, kind="time",
                                       note=", ".join(notes), run=v.get("_run")))
    claim.verdict = _verdict(claim.evidence)
    return claim


def _compile_claim(records) -> Claim:
    """torch.compile: steady-state speedup, with its compile time and break-even steps beside it."""
    c = Claim('torch.compile is "one line": it speeds up a training step and pays back its compile time',
              "compile=default/... vs none, same case: speedup > 1; compile time and break-even steps shown")
    for v, b in pairs(records, "compile", lambda x: x not in (None, "none"), lambda x: x == "none"):
        r, lo, hi = time_ratio(v, b)
        m = v["metrics"]
        notes = []
        if "compile_time" in m:
            notes.append(f"compile {m['compile_time']['value']:.3g} s")
        if "break_even_steps" in m:
            notes.append(f"break-even ~{m['break_even_steps']['value']:,.0f} steps")
        elif "break_even_steps" in (v.get("absent") or {}):
            notes.append("never breaks even")
        c.evidence.append(Evidence(_label(v, b, "compile"), r, lo, hi,
                                   _within(1 / r, (1 / hi if hi else None), (1 / lo if lo else None),
                                           (1.0, math.inf)), kind="time", note=", ".join(notes),
                                   run=v.get("_run")))
    c.verdict = _verdict(c.evidence)
    return c


def _quality_metric(rec: dict[str, Any]) -> tuple[str, float] | None:
    for name in ("final_loss", "final_val_loss", "val_loss", "test_loss", "loss"):
        if name in rec["metrics"]:
            return name, rec["metrics"][name]["value"]
    return None


def check_claims(records: list[dict[str, Any]]) -> list[Claim]:
    """Every claim with its verdict; records carry ``_run`` so pairs never cross runs."""
    out = []
    out.append(_time_claim(Claim("AMP (bf16/fp16 autocast) is 2-3x faster and needs 2x less memory",
                                 "precision=bf16/fp16 vs fp32, same case: speedup in [2, 3] and memory ratio "
                                 "<= 0.6"), records, "precision", lambda x: x in ("bf16", "fp16"),
                           lambda x: x == "fp32", (2.0, 3.0), speedup=True, mem_rng=(0.0, 0.6)))
    out.append(_time_claim(Claim("Gradient checkpointing is 20-30% slower for 2x less memory",
                                 "checkpoint>0 vs 0: time ratio in [1.2, 1.3] and memory ratio <= 0.6"),
                           records, "checkpoint", lambda x: bool(x), lambda x: not x, (1.2, 1.3),
                           mem_rng=(0.0, 0.6)))
    out.append(_workers_claim(records))
    out.append(_gru_claim(records))
    out.append(_batchnorm_claim(records))
    out.append(_time_claim(Claim("ELU / GELU / Swish (SiLU) are slower than ReLU",
                                 "activation=elu/gelu/silu/swish vs relu, same case: time ratio > 1"),
                           records, "activation", lambda x: x in ("elu", "gelu", "silu", "swish", "mish"),
                           lambda x: x == "relu", (1.0, math.inf)))
    out.append(_attention_claim(records))
    out.append(_time_claim(Claim("no_grad inference is faster (and smaller) than inference with autograd on",
                                 "grad_mode=no_grad vs grad, same infer case: speedup > 1"),
                           records, "grad_mode", lambda x: x == "no_grad", lambda x: x == "grad",
                           (1.0, math.inf), speedup=True, mem_rng=(0.0, 1.0)))
    out.append(_time_claim(Claim("inference_mode is at least as fast as no_grad",
                                 "grad_mode=inference_mode vs no_grad: speedup >= 1 (within 2%)"),
                           records, "grad_mode", lambda x: x == "inference_mode", lambda x: x == "no_grad",
                           (0.98, math.inf), speedup=True))
    out.append(_time_claim(Claim("A training step costs about 3x an inference step (forward + ~2x backward)",
                                 "mode=train vs infer, same model and batch: time ratio in [2, 4]"),
                           records, "mode", lambda x: x == "train", lambda x: x == "infer", (2.0, 4.0)))
    out.append(_time_claim(Claim("channels_last speeds up convolutional networks",
                                 "channels_last=true vs false: speedup > 1"), records, "channels_last",
                           lambda x: x is True, lambda x: x is False, (1.0, math.inf), speedup=True))
    out.append(_time_claim(Claim("SDPA attention is faster than manual attention",
                                 "attention=sdpa vs manual: speedup > 1"), records, "attention",
                           lambda x: x == "sdpa", lambda x: x == "manual", (1.0, math.inf), speedup=True))
    out.append(_batch_claim(records))
    out.append(_compile_claim(records))
    out.append(_phase_split_claim(records))
    out += convergence_claims(records)  # what a choice buys: mode='fit' records
    if len({r.get("_run") for r in records}) < 2:  # one run: no need to say which
        for c in out:
            for ev in c.evidence:
                ev.run = None
    return out


def _workers_claim(records) -> Claim:
    c = Claim("4-8 DataLoader workers are optimal", "mode=data cases over num_workers: the fastest "
              "worker count is in [4, 8]")
    for g in _groups([r for r in _ok(records) if r["case"].get("mode") == "data"], "num_workers"):
        inside = [r for r in g if 4 <= r["case"]["num_workers"] <= 8]
        outside = [r for r in g if not 4 <= r["case"]["num_workers"] <= 8]
        if not inside or not outside:
            continue  # the claim compares 4-8 with other counts: both must have been measured
        best_in, best_out = (min(rs, key=lambda r: r["metrics"]["step_time"]["value"]) for rs in (inside, outside))
        (i_lo, i_hi), (o_lo, o_hi) = ((r["metrics"]["step_time"].get("ci_low"), r["metrics"]["step_time"].get("ci_high"))
                                      for r in (best_in, best_out))
        if None in (i_lo, i_hi, o_lo, o_hi):
            holds = None  # too few rounds to tell the two apart
        else:
            holds = True if i_hi < o_lo else False if o_hi < i_lo else None
        best = min((best_in, best_out), key=lambda r: r["metrics"]["step_time"]["value"])
        c.evidence.append(Evidence(f"fastest of num_workers={sorted(r['case']['num_workers'] for r in g)} "
                                   f"({best['case'].get('dataset') or best['case']['model']}); 4-8 vs others by "
                                   f"step-time CI", best["case"]["num_workers"], holds=holds, unit=" workers"))
    c.verdict = _verdict(c.evidence)
    return c


def _gru_claim(records) -> Claim:
    c = Claim("GRU is faster than LSTM", "model=gru* vs the same lstm* case: time ratio < 1")
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in _ok(records):
        m = r["case"]["model"]
        if "lstm" in m:
            by_key[(m.replace("lstm", "gru"), _key_without(r, "model"))] = r
    for r in _ok(records):
        m = r["case"]["model"]
        b = by_key.get((m, _key_without(r, "model"))) if "gru" in m else None
        if b is not None:
            ratio, lo, hi = time_ratio(r, b)
            flag = _untrusted(r, b)
            c.evidence.append(Evidence(f"{m} vs {b['case']['model']} ({r['case']['mode']} "
                                       f"bs{r['case']['batch_size']})", ratio, lo, hi,
                                       None if flag else _within(ratio, lo, hi, (0.0, 1.0)), kind="time",
                                       note=f"{flag}: no verdict" if flag else "", run=r.get("_run")))
    c.verdict = _verdict(c.evidence)
    return c


def _batchnorm_claim(records) -> Claim:
    c = Claim("BatchNorm trains poorly below batch size 8",
              "norm=batch: final loss at batch < 8 vs >= 8 on the same model, under the same budget")
    rows = [(r, _quality_metric(r)) for r in _ok(records) if r["case"].get("norm") in ("batch", "batchnorm")]
    rows = [(r, q) for r, q in rows if q is not None]
    small = [q[1] for r, q in rows if r["case"]["batch_size"] < 8]
    large = [q[1] for r, q in rows if r["case"]["batch_size"] >= 8]
    if small and large:
        ratio = float(np.median(small) / np.median(large))
        c.evidence.append(Evidence("median final loss, batch < 8 over batch >= 8", ratio, holds=ratio > 1.1))
        c.verdict = _verdict(c.evidence)
    else:
        c.note = "needs convergence metrics (final loss) for norm=batch at batch sizes below and above 8"
    return c


def _attention_claim(records) -> Claim:
    c = Claim("Attention memory grows quadratically with sequence length",
              "cases varying seq_len with attention (manual or SDPA): fitted memory exponent in [1.7, 2.3]; "
              "a step's peak memory includes linear terms, so ~1 means they dominate at these sizes")
    attention = [r for r in _ok(records) if r["case"].get("seq_len") and (r["case"].get("attention") or any(
                 k in r["case"]["model"] for k in ("gpt", "transformer", "attention")))]
    from sciml_bench.results import peak_memory

    for g in _groups(attention, "seq_len"):
        pts = [(r["case"]["seq_len"], (peak_memory(r) or (None, None))[1]) for r in g]
        pts = sorted((x, y) for x, y in pts if y)
        if len({x for x, _ in pts}) < 2:
            continue
        fit = loglog_slope([x for x, _ in pts], [y for _, y in pts])
        if fit:
            k, lo, hi = fit
            c0 = g[0]["case"]
            c.evidence.append(Evidence(f"memory exponent, {c0['model']} attention={c0.get('attention')} "
                                       f"seq_len {pts[0][0]}-{pts[-1][0]}", k, lo, hi,
                                       _within(k, lo, hi, (1.7, 2.3)), ""))
    c.verdict = _verdict(c.evidence)
    return c


def _batch_claim(records) -> Claim:
    c = Claim("Larger batches raise throughput (samples/s)",
              "batch_size axis: throughput at the largest batch over the smallest > 1")
    for g in _groups(_ok(records), "batch_size"):
        if len({r["case"]["batch_size"] for r in g}) < 2:
            continue
        g = sorted(g, key=lambda r: r["case"]["batch_size"])
        a, b = g[0], g[-1]
        ratio, lo, hi = time_ratio(b, a)
        k = b["case"]["batch_size"] / a["case"]["batch_size"]
        gain, glo, ghi = k / ratio, (k / hi if hi else None), (k / lo if lo else None)
        c.evidence.append(Evidence(f"bs{b['case']['batch_size']} vs bs{a['case']['batch_size']} "
                                   f"({a['case']['model']} {a['case']['mode']})", gain, glo, ghi,
                                   _within(gain, glo, ghi, (1.0, math.inf)), kind="throughput",
                                   run=b.get("_run")))
    c.verdict = _verdict(c.evidence)
    return c


# The course's example split of a training step, in percent.
SEED_SPLIT = {"data": 25.0, "h2d": 5.0, "forward": 34.0, "backward": 25.0, "optimizer": 10.0}


def _phase_split_claim(records) -> Claim:
    c = Claim("A training step splits about 25/5/34/25/10 % into data / h2d / forward / backward / optimizer",
              "train cases with a phases pass (run --phases or --profile): every phase share within 10 "
              "percentage points of the split; without a DataLoader the model phases are compared to the "
              "split renormalised without data and h2d (49/36/14 %); loss is inside forward")
    for r in _ok(records):
        m = r["metrics"]
        if r["case"].get("mode") != "train" or "phase_step_time" not in m:
            continue
        seed = {p: v for p, v in SEED_SPLIT.items() if f"phase_{p}_time" in m}
        if not seed:
            continue
        total = sum(m[f"phase_{p}_time"]["value"] for p in seed)
        if total <= 0:
            continue
        norm = sum(seed.values())
        got = {p: 100 * m[f"phase_{p}_time"]["value"] / total for p in seed}
        want = {p: 100 * v / norm for p, v in seed.items()}
        dev = max(abs(got[p] - want[p]) for p in seed)
        split = "/".join(f"{got[p]:.0f}" for p in seed)
        c.evidence.append(Evidence(f"{r['case_id']}: {'/'.join(seed)} = {split} % vs "
                                   f"{'/'.join(f'{want[p]:.0f}' for p in seed)} %; largest deviation", dev,
                                   holds=dev <= 10, unit=" pp"))
    if not c.evidence:
        c.note = "needs train cases profiled with run --phases or --profile"
    c.verdict = _verdict(c.evidence)
    return c


# ---------------------------------------------------------------- convergence claims (mode='fit' records)

def _fits(records) -> list[dict[str, Any]]:
    return [r for r in _ok(records) if r.get("fit")]


def seed_ratio(v: dict[str, Any], b: dict[str, Any], metric: str) -> tuple[float, float | None, float | None] | None:
    """Ratio of ``metric`` between two fit cases (geometric means over their seeds) with a 95% t-interval
    on the log values; None when either side lacks the metric.

    Paired by seed (``stats.ratio_of_geomeans``) when both cases ran the same seeds to the end: a seed
    fixes the minibatch order (and, for one architecture, the random draws of the init), so per-seed
    ratios cancel that shared variation. Otherwise Welch's unpaired interval."""
    a = [x for x in v["metrics"].get(metric, {}).get("samples", []) if x and x > 0]
    c = [x for x in b["metrics"].get(metric, {}).get("samples", []) if x and x > 0]
    if not a or not c:
        return None
    paired = (len(a) == len(c) == len(v["metrics"][metric]["samples"]) == len(b["metrics"][metric]["samples"])
              and (v.get("fit") or {}).get("seeds") == (b.get("fit") or {}).get("seeds") is not None)
    r = ratio_of_geomeans(a, c, paired=paired)
    return r["ratio"], r["ci_low"], r["ci_high"]


def _fit_label(v: dict[str, Any], b: dict[str, Any], field_name: str) -> str:
    c = v["case"]
    ctx = ", ".join(f"{k}={c.get(k)}" for k in ("activation", "depth", "batch_size", "lr") if c.get(k) is not None)
    return f"{field_name}={c.get(field_name)} vs {b['case'].get(field_name)} ({c['model']} {ctx})"


def _ratio_evidence(claim: Claim, pairs_: list, field_name: str, metric: str, rng: tuple[float, float],
                    what: str = "") -> None:
    for v, b in pairs_:
        r = seed_ratio(v, b, metric)
        if r is None:
            why = v["absent"].get(metric) or b["absent"].get(metric) or "metric missing"
            claim.evidence.append(Evidence(f"{_fit_label(v, b, field_name)}: {why}", math.nan, holds=None, unit=""))
            continue
        claim.evidence.append(Evidence(f"{what}{_fit_label(v, b, field_name)}", r[0], r[1], r[2],
                                       _within(r[0], r[1], r[2], rng), f"x {metric}"))


def _finish(claim: Claim, note: str) -> Claim:
    claim.evidence = [e for e in claim.evidence if math.isfinite(e.value)] + \
                     [e for e in claim.evidence if not math.isfinite(e.value)]
    claim.verdict = _verdict([e for e in claim.evidence if math.isfinite(e.value)])
    if claim.verdict == NOT_MEASURED:
        claim.note = note
    return claim


def _init_claims(records) -> list[Claim]:
    fits = _fits(records)
    he = Claim("Xavier / He (Kaiming) initialization converges better than PyTorch's default",
               "init=xavier_*/kaiming_* vs default, same fit case: final validation loss ratio < 1 (95% CI over seeds)")
    _ratio_evidence(he, pairs(fits, "init", lambda x: str(x).startswith(("xavier", "kaiming")),
                              lambda x: x == "default"), "init", "final_val_loss", (0.0, 1.0))
    best = Claim("He (Kaiming) initialization is best for ReLU networks",
                 "activation=relu: init=kaiming_* vs xavier_*: final validation loss ratio < 1")
    relu = [r for r in fits if r["case"].get("activation") == "relu"]
    _ratio_evidence(best, pairs(relu, "init", lambda x: str(x).startswith("kaiming"),
                                lambda x: str(x).startswith("xavier")), "init", "final_val_loss", (0.0, 1.0))
    zero = Claim("Zero / constant initialization fails to train (symmetric units never differentiate)",
                 "init=zeros/constant vs default: final validation loss > 2x the default's (95% CI over seeds)")
    _ratio_evidence(zero, pairs(fits, "init", lambda x: x in ("zeros", "constant"), lambda x: x == "default"),
                    "init", "final_val_loss", (2.0, math.inf))
    why = "needs mode='fit' cases varying init against init=default (the train suite's initializations study)"
    return [_finish(he, why), _finish(best, why), _finish(zero, why)]


def _sigmoid_claim(records) -> Claim:
    c = Claim("Sigmoid gradients vanish with depth",
              "activation=sigmoid, deepest vs shallowest depth of a fit study: first/last layer gradient-norm "
              "ratio at init falls (ratio < 1), and the deep sigmoid net's final loss exceeds the deep ReLU net's")
    fits = [r for r in _fits(records)]
    sig = [r for r in fits if r["case"].get("activation") == "sigmoid" and r["case"].get("depth")]
    for v, b in pairs(sig, "depth", lambda x: True, lambda x: True):
        if v["case"]["depth"] <= b["case"]["depth"]:
            continue
        r = seed_ratio(v, b, "grad_ratio_init")
        if r:
            c.evidence.append(Evidence(f"grad ratio first/last at init, sigmoid depth {v['case']['depth']} vs "
                                       f"{b['case']['depth']} ({v['case']['model']})", r[0], r[1], r[2],
                                       _within(r[0], r[1], r[2], (0.0, 1.0)), "x"))
    deep = max((r["case"]["depth"] for r in sig), default=None)
    _ratio_evidence(c, pairs([r for r in fits if r["case"].get("depth") == deep], "activation",
                             lambda x: x == "sigmoid", lambda x: x == "relu"), "activation", "final_val_loss",
                    (1.0, math.inf))
    return _finish(c, "needs mode='fit' sigmoid cases at two depths (the train suite's activations study)")


def _bn_batch_claim(records) -> Claim:
    c = Claim("BatchNorm hurts at a tiny batch (2) but not at a large one (32-64)",
              "norm=batch vs none at the same batch size, per model: final validation loss ratio > 1 at the "
              "smallest batch (< 8), and not > 1 at the largest (>= 32) (95% CI over seeds)")
    by_model: dict[tuple, dict[int, tuple]] = {}
    for v, b in pairs(_fits(records), "norm", lambda x: x == "batch", lambda x: x in (None, "none")):
        by_model.setdefault((v.get("_run"), v["study"], v["case"]["model"]), {})[v["case"]["batch_size"]] = (v, b)
    for (_, study, model), by_bs in by_model.items():
        small, large = min(by_bs), max(by_bs)
        if small >= 8 or large < 32:
            continue
        for bs, rng, tail in ((small, (1.0, math.inf), "hurts"), (large, (0.0, 1.0), "does not hurt")):
            r = seed_ratio(*by_bs[bs], "final_val_loss")
            if r is None:
                continue
            holds = _within(r[0], r[1], r[2], (1.0, math.inf))
            if bs == large:  # "does not hurt": holds unless the whole CI lies above 1
                holds = not holds if holds is not None else True
            c.evidence.append(Evidence(f"batch vs none at batch {bs} ({model}, {study}): {tail}?", r[0], r[1], r[2],
                                       holds, "x final_val_loss"))
    return _finish(c, "needs mode='fit' norm=batch and norm=none cases at a batch size below 8 and one of 32 or more")


def _residual_claim(records) -> Claim:
    c = Claim("Residual (skip) connections keep deep networks trainable where plain ones degrade",
              "model *_residual vs *_plain at each depth beyond the shallowest: final validation loss ratio < 1 "
              "(95% CI), with the first/last gradient ratio at init shown")
    fits = _fits(records)
    res = pairs(fits, "model", lambda x: "residual" in str(x), lambda x: "plain" in str(x))
    shallow = min((v["case"].get("depth") or 0 for v, _ in res), default=None)
    deep = [(v, b) for v, b in res if (v["case"].get("depth") or 0) > shallow]
    _ratio_evidence(c, deep, "model", "final_val_loss", (0.0, 1.0))
    for v, b in deep:
        r = seed_ratio(v, b, "grad_ratio_init")
        if r:
            c.evidence.append(Evidence(f"grad ratio first/last at init, residual vs plain (depth "
                                       f"{v['case'].get('depth')})", r[0], r[1], r[2], None, "x (context)"))
    c.evidence = [e for e in c.evidence if e.holds is not None or "context" not in e.unit] + \
                 [e for e in c.evidence if e.holds is None and "context" in e.unit]
    c.verdict = _verdict([e for e in c.evidence if "context" not in e.unit and math.isfinite(e.value)])
    if c.verdict == NOT_MEASURED:
        c.note = "needs mode='fit' plain and residual models at equal depth (the train suite's depth-skips study)"
    return c


def _dead_relu_claim(records) -> Claim:
    c = Claim("More than 50% dead ReLU units is a warning sign (the net trains worse)",
              "fit cases with > 50% dead units at the end vs their study's reference (or nearest healthy) case: "
              "final validation loss ratio > 1 (95% CI)")
    fits = _fits(records)
    by_id = {(r.get("_run"), r["study"], r["case_id"]): r for r in fits}
    def dead(r: dict[str, Any]) -> bool:
        return r["metrics"].get("dead_fraction_end", {}).get("value", 0) > 0.5

    def nearest(v: dict[str, Any]) -> dict[str, Any] | None:
        """The study's reference case, or else the healthy case of the study differing in fewest fields."""
        ref = by_id.get((v.get("_run"), v["study"], (v["metrics"].get("time_ratio") or {}).get("reference")))
        if ref is not None and ref is not v and not dead(ref):
            return ref
        peers = [r for r in fits if r.get("_run") == v.get("_run") and r["study"] == v["study"] and not dead(r)
                 and r["case"]["model"] == v["case"]["model"]]
        return min(peers, key=lambda r: sum(r["case"][k] != v["case"][k] for k in v["case"]), default=None)

    for v in [r for r in fits if dead(r)]:
        ref = nearest(v)
        if ref is None:
            continue
        r = seed_ratio(v, ref, "final_val_loss")
        if r:
            c.evidence.append(Evidence(f"{v['case_id']} ({v['metrics']['dead_fraction_end']['value']:.0%} dead) vs "
                                       f"{ref['case_id']}", r[0], r[1], r[2],
                                       _within(r[0], r[1], r[2], (1.0, math.inf)), "x final_val_loss"))
    most = max((r["metrics"].get("dead_fraction_end", {}).get("value", 0) for r in fits), default=None)
    return _finish(c, "no fit case ended with more than 50% dead ReLU units" +
                   (f" (most: {most:.0%})" if most is not None else " (no mode='fit' records)"))


def _norm_speed_claim(records) -> Claim:
    c = Claim("Normalization gives 2-10x faster convergence",
              "norm=batch/layer/group vs none, same fit case with a target loss: steps-to-target speedup in "
              "[2, 10] (95% CI over seeds)")
    for v, b in pairs(_fits(records), "norm", lambda x: x not in (None, "none"), lambda x: x in (None, "none")):
        sv, sb = v["metrics"].get("steps_to_target"), b["metrics"].get("steps_to_target")
        if sv and sb:
            r = seed_ratio(b, v, "steps_to_target")  # speedup = none's steps / norm's steps
            if r:
                c.evidence.append(Evidence(f"speedup {_fit_label(v, b, 'norm')}", r[0], r[1], r[2],
                                           _within(r[0], r[1], r[2], (2.0, 10.0)), "x faster"))
        elif sv and not sb and b["fit"].get("target") is not None:
            bound = b["fit"]["steps"] / sv["value"]
            c.evidence.append(Evidence(f"none never reached the target in {b['fit']['steps']} steps, "
                                       f"{_fit_label(v, b, 'norm')}: speedup at least", bound, None, None,
                                       None if bound < 10 else False, "x"))
    return _finish(c, "needs mode='fit' norm vs none cases with a target loss (Case.target) that both reach")


def _norm_lr_claim(records) -> Claim:
    c = Claim("Normalization allows a 10x higher learning rate",
              "per norm, the largest lr of a fit study whose seeds all finish without divergence and end below "
              "half their initial validation loss; ratio of normalized to unnormalized")
    fits = _fits(records)
    groups: dict[tuple, dict[str, list]] = {}
    for r in fits:
        key = (r.get("_run"), r["study"], r["case"]["model"], r["case"]["batch_size"])
        groups.setdefault(key, {}).setdefault(r["case"].get("norm") or "none", []).append(r)

    def best_lr(rs: list) -> float | None:
        ok = []
        for r in rs:
            m = r["metrics"]
            init = [c["val"][0][1] for c in r.get("curves", []) if c["val"] and c["val"][0][1] is not None]
            if m.get("diverged_seeds", {}).get("value") == 0 and "final_val_loss" in m and init and \
                    (m["final_val_loss"].get("ci_high") or m["final_val_loss"]["value"]) < 0.5 * float(np.mean(init)):
                ok.append(r["case"]["lr"])
        return max(ok) if ok else None

    for key, by_norm in groups.items():
        if "none" not in by_norm or len({r["case"]["lr"] for rs in by_norm.values() for r in rs}) < 2:
            continue
        base = best_lr(by_norm["none"])
        for norm, rs in by_norm.items():
            if norm == "none":
                continue
            mine = best_lr(rs)
            if base and mine:
                c.evidence.append(Evidence(f"largest converging lr, norm={norm} vs none ({key[2]}, lrs "
                                           f"{sorted({r['case']['lr'] for r in rs})})", mine / base, None, None,
                                           mine / base >= 10, "x"))
    return _finish(c, "needs mode='fit' norm vs none cases over an lr sweep (the train suite's normalization-lr study)")


def _precision_fit_claim(records) -> Claim:
    c = Claim("bf16 / fp16 autocast reaches the fp32 loss after the same step budget (drift within 25%)",
              "precision=bf16/fp16 vs fp32, same fit case: final validation loss ratio with its 95% CI inside "
              "[0.8, 1.25]")
    _ratio_evidence(c, pairs(_fits(records), "precision", lambda x: x in ("bf16", "fp16"), lambda x: x == "fp32"),
                    "precision", "final_val_loss", (0.8, 1.25))
    skipped = [r for r in records if r.get("status") == "skipped" and (r.get("case") or {}).get("mode") == "fit"
               and (r.get("case") or {}).get("precision") == "fp16"]
    note = "needs mode='fit' cases at bf16/fp16 and fp32"
    if skipped:
        note += f"; fp16 skipped here: {skipped[0].get('reason')}"
        c.note = note
    return _finish(c, note)


def _prenorm_claim(records) -> Claim:
    c = Claim("Pre-norm Transformers train better than post-norm ones",
              "post-norm vs pre-norm encoder, same fit case: final validation loss ratio > 1 (95% CI)")
    _ratio_evidence(c, pairs(_fits(records), "model", lambda x: str(x).endswith("postnorm"),
                             lambda x: str(x) == "transformer_encoder"), "model", "final_val_loss", (1.0, math.inf))
    return _finish(c, "needs mode='fit' transformer_encoder and transformer_encoder_postnorm cases")


def convergence_claims(records: list[dict[str, Any]]) -> list[Claim]:
    """The convergence claims of the course material, from fixed-budget training records (mode='fit')."""
    return [*_init_claims(records), _sigmoid_claim(records), _bn_batch_claim(records), _residual_claim(records),
            _dead_relu_claim(records), _norm_speed_claim(records), _norm_lr_claim(records),
            _precision_fit_claim(records), _prenorm_claim(records)]
