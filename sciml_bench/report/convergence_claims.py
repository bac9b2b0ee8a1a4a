"""Convergence claims: what a training choice buys (initialization, activations, normalization, skips,
precision), from fixed-budget training records (mode='fit'), with 95% intervals over seeds."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sciml_bench.report.evidence import NOT_MEASURED, Claim, Evidence, ok_records, pairs, verdict_of, within
from sciml_bench.stats import ratio_of_geomeans


def _fits(records) -> list[dict[str, Any]]:
    return [r for r in ok_records(records) if r.get("fit")]


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
                                       within(r[0], r[1], r[2], rng), f"x {metric}"))


def _finish(claim: Claim, note: str) -> Claim:
    claim.evidence = [e for e in claim.evidence if math.isfinite(e.value)] + \
                     [e for e in claim.evidence if not math.isfinite(e.value)]
    claim.verdict = verdict_of([e for e in claim.evidence if math.isfinite(e.value)])
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
                                       within(r[0], r[1], r[2], (0.0, 1.0)), "x"))
    deep = max((r["case"]["depth"] for r in sig), default=None)
    _ratio_evidence(c, pairs([r for r in fits if r["case"].get("depth") == deep], "activation",
                             lambda x: x == "sigmoid", lambda x: x == "relu"), "activation", "final_val_loss",
                    (1.0, math.inf))
    return _finish(c, "needs mode='fit' sigmoid cases at two depths (the train suite's activations study)")


NO_HARM_MARGIN = 1.1  # "does not hurt": a loss ratio at most this much worse, by its whole 95% CI

def _bn_batch_claim(records) -> Claim:
    c = Claim("BatchNorm hurts at a tiny batch (2) but not at a large one (32-64)",
              "norm=batch vs none at the same batch size, per model: final validation loss ratio > 1 at the "
              f"smallest batch (< 8), and at most {NO_HARM_MARGIN}x at the largest (>= 32) (95% CI over seeds)")
    by_model: dict[tuple, dict[int, tuple]] = {}
    for v, b in pairs(_fits(records), "norm", lambda x: x == "batch", lambda x: x in (None, "none")):
        by_model.setdefault((v.get("_run"), v["study"], v["case"]["model"]), {})[v["case"]["batch_size"]] = (v, b)
    for (_, study, model), by_bs in by_model.items():
        small, large = min(by_bs), max(by_bs)
        if small >= 8 or large < 32:
            continue
        for bs, tail in ((small, "hurts"), (large, "does not hurt")):
            r = seed_ratio(*by_bs[bs], "final_val_loss")
            if r is None:
                continue
            if bs == small:
                holds = within(r[0], r[1], r[2], (1.0, math.inf))
            else:  # no harm, within a margin: the whole CI at or below it; wholly above it, harm; else inconclusive
                holds = within(r[0], r[1], r[2], (0.0, NO_HARM_MARGIN)) if r[1] is not None else None
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
    c.verdict = verdict_of([e for e in c.evidence if "context" not in e.unit and math.isfinite(e.value)])
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
                                       within(r[0], r[1], r[2], (1.0, math.inf)), "x final_val_loss"))
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
                                           within(r[0], r[1], r[2], (2.0, 10.0)), "x faster"))
        elif sv and not sb and b["fit"].get("target") is not None:
            bound = b["fit"]["steps"] / sv["value"]
            c.evidence.append(Evidence(f"none never reached the target in {b['fit']['steps']} steps, "
                                       f"{_fit_label(v, b, 'norm')}: speedup at least", bound, None, None,
                                       None if bound < 10 else False, "x"))
    return _finish(c, "needs mode='fit' norm vs none cases with a target loss (Case.target) that both reach")


def _lr_outcome(r: dict[str, Any]) -> bool | None:
    """Did this lr train? True: no seed diverged and the final validation loss's whole 95% CI lies below half the
    initial loss; False: a seed diverged or the whole CI lies at or above it; None: the CI straddles the line."""
    m = r["metrics"]
    init = [c["val"][0][1] for c in r.get("curves", []) if c["val"] and c["val"][0][1] is not None]
    diverged = (m.get("diverged_seeds") or {}).get("value")
    if diverged:
        return False
    if diverged is None or "final_val_loss" not in m or not init:
        return None
    loss, line = m["final_val_loss"], 0.5 * float(np.mean(init))
    return within(loss["value"], loss.get("ci_low"), loss.get("ci_high"), (-math.inf, line))


def _norm_lr_claim(records) -> Claim:
    c = Claim("Normalization allows a 10x higher learning rate",
              "per norm, the largest lr of a fit study whose seeds all finish without divergence and whose final "
              "validation loss's 95% CI lies below half the initial loss; holds when normalized / unnormalized is "
              ">= 10 and every larger lr of the unnormalized net fails by its CI, does not hold when it is < 10 and "
              "every larger lr of the normalized net fails; inconclusive when an lr that decides it straddles the line")
    fits = _fits(records)
    groups: dict[tuple, dict[str, list]] = {}
    for r in fits:
        key = (r.get("_run"), r["study"], r["case"]["model"], r["case"]["batch_size"])
        groups.setdefault(key, {}).setdefault(r["case"].get("norm") or "none", []).append(r)

    def best_lr(rs: list) -> tuple[float | None, bool]:
        """(largest lr that trained, whether every larger lr surely failed)."""
        outcome: dict[float, bool | None] = {}
        for r in rs:  # several records at one lr (another axis, a repeat): the worst of them decides
            o, lr = _lr_outcome(r), r["case"]["lr"]
            prev = outcome.get(lr, True)
            outcome[lr] = False if False in (o, prev) else None if None in (o, prev) else True
        best = max((lr for lr, ok in outcome.items() if ok), default=None)
        return best, all(ok is False for lr, ok in outcome.items() if best is not None and lr > best)

    for key, by_norm in groups.items():
        if "none" not in by_norm or len({r["case"]["lr"] for rs in by_norm.values() for r in rs}) < 2:
            continue
        base, base_sure = best_lr(by_norm["none"])
        for norm, rs in by_norm.items():
            if norm == "none":
                continue
            mine, mine_sure = best_lr(rs)
            if base and mine:
                ratio = mine / base
                # a larger lr that might still train can only raise its side's best: the verdict must survive that
                holds = (True if base_sure else None) if ratio >= 10 else (False if mine_sure else None)
                c.evidence.append(Evidence(f"largest converging lr, norm={norm} vs none ({key[2]}, lrs "
                                           f"{sorted({r['case']['lr'] for r in rs})})", ratio, None, None, holds, "x"))
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
