"""What a claim is made of: the Claim and its Evidence, the verdict vocabulary and rules, and the pairs of
records (cases differing in one field) that evidence is drawn from."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sciml_bench.report.words import ratio_words
from sciml_bench.results import starved_unreliable
from sciml_bench.stats import ratio_of_medians

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


def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records whose case ran to the end (status ok)."""
    return [r for r in records if r["status"] == "ok"]


def key_without(r: dict[str, Any], field_name: str) -> tuple:
    """(run, study, every other case field): records sharing it differ only in ``field_name``."""
    return r.get("_run"), r["study"], tuple(sorted((k, str(v)) for k, v in r["case"].items() if k != field_name))


def groups_varying(records: list[dict[str, Any]], field_name: str) -> list[list[dict[str, Any]]]:
    """``records`` grouped by ``key_without(field_name)``: each group's cases differ only in ``field_name``."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(key_without(r, field_name), []).append(r)
    return list(out.values())


def pairs(records: list[dict[str, Any]], field_name: str, test: Callable[[Any], bool],
          base: Callable[[Any], bool]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(variant, baseline) records of one run and study whose cases differ only in ``field_name``."""
    out = []
    for group in groups_varying(ok_records(records), field_name):
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


def untrusted(*records: dict[str, Any]) -> str:
    """Why a pair's timing cannot carry a verdict ("" when it can): starved blocks, or overhead-dominated steps."""
    why = {"starved" for r in records if starved_unreliable(r)}
    why |= {"overhead-dominated" for r in records if (r.get("overhead") or {}).get("dominated")}
    return ", ".join(sorted(why))


def within(value: float, lo: float | None, hi: float | None, rng: tuple[float, float]) -> bool | None:
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


def verdict_of(evidence: list[Evidence]) -> str:
    """A claim's verdict from its evidence: holds, does not hold, inconclusive, a count of each, or not measured."""
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


def pair_label(v: dict[str, Any], b: dict[str, Any], field_name: str) -> str:
    """How a timed pair is named in the evidence: the two values of ``field_name``, then model, mode and batch."""
    c = v["case"]
    ctx = f"{c['model']} {c['mode']} bs{c['batch_size']}"
    return f"{field_name}={v['case'].get(field_name)} vs {b['case'].get(field_name)} ({ctx})"
