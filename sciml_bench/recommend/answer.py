"""Recommend's answer, read from a stored run: speed-ups, the accuracy verdict, the fates table, the
chosen configuration as ``--set`` and as code for the user's own training loop.

Everything here reads stored records and the run header's ``recommend`` entry, so ``show``, the
report, the Python API and the search itself give the same answer from the same file; it imports
nothing of the measuring side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sciml_bench.results import peak_memory
from sciml_bench.stats import ratio_of_geomeans

# A candidate's fate, as the table says it. Ranked: the answer first, then what could be had, then what could not.
FATES = ("chosen", "baseline", "slower", "over memory", "outside tolerance", "failed", "not tried",
         "not available here", "not searched")


def speedup(rec: dict[str, Any], baseline_batch: int) -> dict[str, float | None] | None:
    """Throughput of ``rec`` over its study's baseline (samples/s; at equal batch sizes, the inverse step-time
    ratio), with the runner's CI of the time ratio carried over; None without a ratio."""
    tr = (rec.get("metrics") or {}).get("time_ratio")
    if rec.get("status") != "ok" or not tr or not tr.get("value"):
        return None
    k = rec["case"]["batch_size"] / baseline_batch
    lo, hi = tr.get("ci_low"), tr.get("ci_high")
    return {"value": k / tr["value"], "ci_low": k / hi if hi else None, "ci_high": k / lo if lo else None,
            "ci_method": tr.get("ci_method")}


def memory_of(rec: dict[str, Any]) -> float | None:
    """Peak tensor bytes of a record as the runner measured it (CUDA allocator peak, or CPU tensors)."""
    pm = peak_memory(rec)
    return pm[1] if pm else None


def fate_of(rec: dict[str, Any], limit: int, baseline_batch: int, stage: str) -> tuple[str, str]:
    """A timed candidate's fate so far, from its record: not available, failed, over the memory limit
    (its measured peak above ``limit``: never recommended), or, for now, 'slower' with its speed-up."""
    if rec["status"] == "skipped":
        return "not available here", rec.get("reason") or ""
    if rec["status"] != "ok":
        return "failed", f"{rec['status']} in {stage}: {rec.get('reason')}"
    mem = memory_of(rec)
    if mem is not None and mem > limit:
        from sciml_bench.units import fmt_bytes

        return "over memory", f"peak {fmt_bytes(mem)} > limit {fmt_bytes(limit)} ({stage})"
    s = speedup(rec, baseline_batch)
    return "slower", f"{stage}: {s['value']:.2f}x the baseline" if s else f"{stage}: no ratio"


def accuracy_verdict(cand: dict[str, Any], base: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Is ``cand``'s final validation loss within ``tolerance`` of ``base``'s (two fit records)?

    The ratio of geometric means over seeds, paired by seed (``stats.ratio_of_geomeans``), with its
    95% CI; accepted only when the whole CI lies below ``1 + tolerance`` (non-inferiority: a lower loss
    is never a reason to reject). A diverged seed, a failed fit or a CI that cannot be computed rejects."""
    def losses(rec: dict[str, Any]) -> list[float] | None:
        m = (rec.get("metrics") or {}).get("final_val_loss")
        div = ((rec.get("metrics") or {}).get("diverged_seeds") or {}).get("value")
        return None if rec.get("status") != "ok" or not m or div else m.get("samples")

    out: dict[str, Any] = {"tolerance": tolerance, "ratio": None, "ci_low": None, "ci_high": None,
                           "steps": cand["case"].get("steps"), "base_steps": base["case"].get("steps")}
    a, b = losses(cand), losses(base)
    if b is None:
        return dict(out, accepted=False, reason=f"the baseline's fit {base.get('status')}: "
                    f"{base.get('reason') or (base.get('absent') or {}).get('final_val_loss') or 'no final loss'}")
    if a is None:
        why = cand.get("reason") or (cand.get("absent") or {}).get("final_val_loss") or "diverged"
        return dict(out, accepted=False, reason=f"its fit did not finish with a finite loss ({why})")
    if min(a + b) <= 0:
        return dict(out, accepted=False, reason="a final loss of 0: a ratio cannot compare it")
    r = ratio_of_geomeans(a, b, paired=len(a) == len(b))
    if len(a) == len(b) > 1 and len({round(x / y, 12) for x, y in zip(a, b)}) == 1:
        r.update(ci_low=r["ratio"], ci_high=r["ratio"])  # every seed's ratio the same: the ratio is exact
    out.update(ratio=r["ratio"], ci_low=r["ci_low"], ci_high=r["ci_high"])
    samples = f"{cand['case'].get('steps')} steps x batch {cand['case']['batch_size']}"
    where = (f"final val loss {r['ratio']:.3g}x the baseline's"
             + (f" [95% CI {r['ci_low']:.3g}-{r['ci_high']:.3g}]" if r["ci_high"] is not None else "")
             + f" over {len(a)} seeds ({samples})")
    if r["ci_high"] is None:
        return dict(out, accepted=False, reason=where + "; no CI (too few seeds): cannot show it is within tolerance")
    ok = r["ci_high"] <= 1 + tolerance
    return dict(out, accepted=ok, reason=where + (f": within {tolerance:.0%}" if ok else
                                                  f": its CI reaches above 1 + {tolerance:.0%}"))


@dataclass
class Row:
    """One line of the fates table."""

    config: str  # the knobs that differ from the baseline ("baseline" for it)
    fate: str
    reason: str
    speedup: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    memory: float | None = None
    stage: str | None = None  # where its speed-up comes from
    case_id: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)


def describe(knobs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items()) or "baseline"


def table(header: dict[str, Any], records: list[dict[str, Any]]) -> list[Row]:
    """Every candidate of a recommend run with its fate and its latest measured speed-up and memory,
    ranked: the chosen one first, then by fate (``FATES``) and speed-up."""
    rec_info = header.get("recommend") or {}
    base_bs = rec_info["baseline"]["batch_size"]
    latest: dict[str, dict[str, Any]] = {}
    for r in records:  # the last stage a candidate ran in speaks for it (stages are written in order)
        if r["case"].get("mode") != "fit":
            latest[r["case_id"]] = r
    rows = []
    for cid, c in (rec_info.get("candidates") or {}).items():
        r = latest.get(cid)
        s = speedup(r, base_bs) if r else None
        rows.append(Row(describe(c["knobs"]), c["fate"], c.get("reason") or "", s and s["value"],
                        s and s["ci_low"], s and s["ci_high"], memory_of(r) if r else None,
                        r["study"] if r else None, cid, c["knobs"]))
    for x in (rec_info.get("space") or {}).get("excluded", []):
        label = f"{x['knob']}={x['value']}" if x["value"] is not None else x["knob"]
        rows.append(Row(label, x["fate"], x["reason"], knobs={x["knob"]: x["value"]}))
    order = {f: i for i, f in enumerate(FATES)}
    return sorted(rows, key=lambda r: (order.get(r.fate, len(FATES)), -(r.speedup or 0)))


def set_line(knobs: dict[str, Any]) -> str:
    """The chosen knobs as ``sciml-bench run`` options."""
    return " ".join(f"--set {k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in knobs.items()) \
        or "(no change: keep the baseline)"


def snippet(knobs: dict[str, Any], device: str = "cuda") -> str:
    """Python that applies ``knobs`` to the user's own training loop (model, optimizer, loader, loss_fn)."""
    prec, comp = knobs.get("precision", "fp32"), knobs.get("compile", "none")
    lines = ["import torch", ""]
    if prec == "tf32":
        lines += ["torch.backends.cuda.matmul.allow_tf32 = True", "torch.backends.cudnn.allow_tf32 = True"]
    if knobs.get("channels_last"):
        lines.append("model = model.to(memory_format=torch.channels_last)")
    if knobs.get("checkpoint"):
        lines += ["# gradient checkpointing: recompute each block's activations in backward",
                  "from torch.utils.checkpoint import checkpoint",
                  "# in forward(): x = checkpoint(block, x, use_reentrant=False) for each block"]
    if comp != "none":
        lines.append("model = torch.compile(model" + (f", mode={comp!r}" if comp != "default" else "") + ")")
    if "batch_size" in knobs:
        lines.append(f"loader = torch.utils.data.DataLoader(dataset, batch_size={knobs['batch_size']}, shuffle=True"
                     + (f", num_workers={knobs['num_workers']}" if knobs.get("num_workers") else "") + ")")
    elif knobs.get("num_workers"):
        lines.append(f"loader = torch.utils.data.DataLoader(dataset, ..., num_workers={knobs['num_workers']})")
    amp = {"bf16": "torch.bfloat16", "fp16": "torch.float16"}.get(prec)
    if prec == "fp16":
        lines.append(f"scaler = torch.amp.GradScaler({device!r})")
    if knobs.get("grad_mode") == "inference_mode":
        lines += ["", "model.eval()", "with torch.inference_mode()" + (f", torch.autocast({device!r}, dtype={amp})"
                                                                       if amp else "") + ":",
                  "    out = model(x" + (".to(memory_format=torch.channels_last)" if knobs.get("channels_last") else "")
                  + ")"]
        return "\n".join(lines)
    x = "x.to(memory_format=torch.channels_last)" if knobs.get("channels_last") else "x"
    lines += ["", "for x, y in loader:", "    optimizer.zero_grad(set_to_none=True)"]
    if amp:
        lines.append(f"    with torch.autocast({device!r}, dtype={amp}):")
        lines.append(f"        loss = loss_fn(model({x}), y)")
    else:
        lines.append(f"    loss = loss_fn(model({x}), y)")
    if prec == "fp16":
        lines += ["    scaler.scale(loss).backward()", "    scaler.step(optimizer)", "    scaler.update()"]
    else:
        lines += ["    loss.backward()", "    optimizer.step()"]
    return "\n".join(lines)


def summary(header: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer of a recommend run: the chosen knobs, its speed-up with CI and memory (from the final
    stage, against the baseline timed in the same rounds), the ``--set`` line and the snippet."""
    info = header.get("recommend") or {}
    chosen_id = info.get("chosen")
    chosen = (info.get("candidates") or {}).get(chosen_id) if chosen_id else None
    knobs = chosen["knobs"] if chosen else {}
    final = [r for r in records if r["study"] == info.get("final_study") and r["case_id"] == chosen_id]
    s = speedup(final[0], info["baseline"]["batch_size"]) if final else None
    return {"chosen": chosen_id, "knobs": knobs, "config": describe(knobs), "speedup": s,
            "memory": memory_of(final[0]) if final else None, "memory_limit": (info.get("space") or {}).get("memory_limit"),
            "set": set_line(knobs), "snippet": snippet(knobs, header.get("spec", {}).get("device", "cpu")),
            "why": info.get("chosen_reason"), "not_tried": info.get("not_tried") or [],
            "objective": info.get("objective")}
