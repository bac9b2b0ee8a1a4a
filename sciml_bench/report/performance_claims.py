"""Performance claims: common folklore about speed, memory and throughput (AMP, checkpointing, workers,
activations, attention, grad modes, batch size, compile, the split of a step), each given a verdict
from the timed pairs of the runs' own cases."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sciml_bench.report.evidence import (Claim, Evidence, groups_varying, key_without, ok_records, pair_label, pairs,
                                         time_ratio, untrusted, verdict_of, within)
from sciml_bench.report.words import ratio_words
from sciml_bench.results import memory_ratio, peak_memory
from sciml_bench.stats import loglog_slope, median_ci, ratio_of_medians


def _time_claim(claim: Claim, records, field_name, test, base, rng, speedup=False,
                mem_rng: tuple[float, float] | None = None) -> Claim:
    """Evidence per (variant, baseline) pair; ``rng`` bounds the speedup (``speedup``) or the time ratio."""
    for v, b in pairs(records, field_name, test, base):
        r, lo, hi = time_ratio(v, b)
        if speedup:  # the claim's range is about baseline / variant
            holds = within(1 / r, (1 / hi if hi else None), (1 / lo if lo else None), rng)
        else:
            holds = within(r, lo, hi, rng)
        notes = []
        flag = untrusted(v, b)
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
        claim.evidence.append(Evidence(pair_label(v, b, field_name), r, lo, hi, holds, kind="time",
                                       note=", ".join(notes), run=v.get("_run")))
    claim.verdict = verdict_of(claim.evidence)
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
        c.evidence.append(Evidence(pair_label(v, b, "compile"), r, lo, hi,
                                   within(1 / r, (1 / hi if hi else None), (1 / lo if lo else None),
                                          (1.0, math.inf)), kind="time", note=", ".join(notes),
                                   run=v.get("_run")))
    c.verdict = verdict_of(c.evidence)
    return c


def _quality_metric(rec: dict[str, Any]) -> tuple[str, list[float]] | None:
    """A case's final loss: its per-seed samples where a fit recorded them, else its one value."""
    for name in ("final_loss", "final_val_loss", "val_loss", "test_loss", "loss"):
        if name in rec["metrics"]:
            return name, list(rec["metrics"][name].get("samples") or [rec["metrics"][name]["value"]])
    return None


def performance_claims(records: list[dict[str, Any]]) -> list[Claim]:
    """The performance claims in report order, from the timed (and, for BatchNorm, final-loss) records."""
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
    return out


def _workers_claim(records) -> Claim:
    c = Claim("4-8 DataLoader workers are optimal", "mode=data cases over num_workers: the fastest "
              "worker count is in [4, 8]")
    for g in groups_varying([r for r in ok_records(records) if r["case"].get("mode") == "data"], "num_workers"):
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
    c.verdict = verdict_of(c.evidence)
    return c


def _gru_claim(records) -> Claim:
    c = Claim("GRU is faster than LSTM", "model=gru* vs the same lstm* case: time ratio < 1")
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in ok_records(records):
        m = r["case"]["model"]
        if "lstm" in m:
            by_key[(m.replace("lstm", "gru"), key_without(r, "model"))] = r
    for r in ok_records(records):
        m = r["case"]["model"]
        b = by_key.get((m, key_without(r, "model"))) if "gru" in m else None
        if b is not None:
            ratio, lo, hi = time_ratio(r, b)
            flag = untrusted(r, b)
            c.evidence.append(Evidence(f"{m} vs {b['case']['model']} ({r['case']['mode']} "
                                       f"bs{r['case']['batch_size']})", ratio, lo, hi,
                                       None if flag else within(ratio, lo, hi, (0.0, 1.0)), kind="time",
                                       note=f"{flag}: no verdict" if flag else "", run=r.get("_run")))
    c.verdict = verdict_of(c.evidence)
    return c


def _batchnorm_claim(records) -> Claim:
    c = Claim("BatchNorm trains poorly below batch size 8",
              "norm=batch: final loss (over cases and seeds) at batch < 8 vs >= 8, under the same budget: the ratio "
              "of medians' 95% CI (bootstrap) wholly above 1.1")
    rows = [(r, _quality_metric(r)) for r in ok_records(records) if r["case"].get("norm") in ("batch", "batchnorm")]
    rows = [(r, q) for r, q in rows if q is not None]
    small = [x for r, q in rows if r["case"]["batch_size"] < 8 for x in q[1]]
    large = [x for r, q in rows if r["case"]["batch_size"] >= 8 for x in q[1]]
    if small and large:
        r = ratio_of_medians(small, large)  # over cases and their seeds; a CI from 3 values a side, else no verdict
        holds = within(r["ratio"], r["ci_low"], r["ci_high"], (1.1, float("inf"))) if r["ci_low"] is not None else None
        c.evidence.append(Evidence("median final loss, batch < 8 over batch >= 8", r["ratio"], r["ci_low"], r["ci_high"],
                                   holds=holds, note="" if r["ci_low"] is not None else "too few cases for a CI"))
        c.verdict = verdict_of(c.evidence)
    else:
        c.note = "needs convergence metrics (final loss) for norm=batch at batch sizes below and above 8"
    return c


def _attention_claim(records) -> Claim:
    c = Claim("Attention memory grows quadratically with sequence length",
              "cases varying seq_len with attention (manual or SDPA): fitted memory exponent in [1.7, 2.3]; "
              "a step's peak memory includes linear terms, so ~1 means they dominate at these sizes")
    attention = [r for r in ok_records(records) if r["case"].get("seq_len") and (r["case"].get("attention") or any(
                 k in r["case"]["model"] for k in ("gpt", "transformer", "attention")))]
    for g in groups_varying(attention, "seq_len"):
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
                                       within(k, lo, hi, (1.7, 2.3)), ""))
    c.verdict = verdict_of(c.evidence)
    return c


def _batch_claim(records) -> Claim:
    c = Claim("Larger batches raise throughput (samples/s)",
              "batch_size axis: throughput at the largest batch over the smallest > 1")
    for g in groups_varying(ok_records(records), "batch_size"):
        if len({r["case"]["batch_size"] for r in g}) < 2:
            continue
        g = sorted(g, key=lambda r: r["case"]["batch_size"])
        a, b = g[0], g[-1]
        ratio, lo, hi = time_ratio(b, a)
        k = b["case"]["batch_size"] / a["case"]["batch_size"]
        gain, glo, ghi = k / ratio, (k / hi if hi else None), (k / lo if lo else None)
        c.evidence.append(Evidence(f"bs{b['case']['batch_size']} vs bs{a['case']['batch_size']} "
                                   f"({a['case']['model']} {a['case']['mode']})", gain, glo, ghi,
                                   within(gain, glo, ghi, (1.0, math.inf)), kind="throughput",
                                   run=b.get("_run")))
    c.verdict = verdict_of(c.evidence)
    return c


# The course's example split of a training step, in percent.
SEED_SPLIT = {"data": 25.0, "h2d": 5.0, "forward": 34.0, "backward": 25.0, "optimizer": 10.0}


def _phase_split_claim(records) -> Claim:
    c = Claim("A training step splits about 25/5/34/25/10 % into data / h2d / forward / backward / optimizer",
              "train cases with a phases pass (run --phases or --profile): every phase share within 10 "
              "percentage points of the split; without a DataLoader the model phases are compared to the "
              "split renormalised without data and h2d (49/36/14 %); loss is inside forward")
    for r in ok_records(records):
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
        split = "/".join(f"{got[p]:.0f}" for p in seed)
        # the verdict rests on the profiled steps' spread: each step's largest deviation, their median and its CI
        per_step = np.array([m[f"phase_{p}_time"].get("samples") or [] for p in seed], dtype=object)
        lengths = {len(xs) for xs in per_step}
        if len(lengths) == 1 and lengths.pop() >= 3:
            shares = np.array(per_step.tolist(), dtype=float)
            shares = 100 * shares / shares.sum(axis=0)
            devs = np.abs(shares - np.array([want[p] for p in seed])[:, None]).max(axis=0)
            dev, (lo, hi) = float(np.median(devs)), median_ci(devs)
        else:  # no per-step samples to tell spread from effect: shown, not judged
            dev, lo, hi = max(abs(got[p] - want[p]) for p in seed), None, None
        holds = within(dev, lo, hi, (0.0, 10.0)) if lo is not None and hi is not None else None
        c.evidence.append(Evidence(f"{r['case_id']}: {'/'.join(seed)} = {split} % vs "
                                   f"{'/'.join(f'{want[p]:.0f}' for p in seed)} %; largest deviation (median step)",
                                   dev, lo, hi, holds=holds, unit=" pp"))
    if not c.evidence:
        c.note = "needs train cases profiled with run --phases or --profile"
    c.verdict = verdict_of(c.evidence)
    return c
