#!/usr/bin/env bash
# Issue 30 Part 2 in one device call: run sciml-bench's CUDA paths for real on a lent GPU and bring
# everything back in two files under $OUT (the device tool returns at most 8): summary.txt (also printed)
# and gpu-check.tar.gz (logs, run files, reports, the profile trace).
#
#   bash evidence/gpu_check.sh [core|compile|all]      (repository root; default: core)
#
# core (~6-8 min on one GPU, each step capped so the call ends inside the tool's 10 minutes): the machine,
#   the CUDA-relevant test modules, the smoke suite on CUDA, the quick suite's CUDA studies, a profile of one
#   CNN on CUDA. compile: the quick compile studies (max-autotune can take minutes), a second call if time is
#   left. Test it on the CPU first with DEVICE=cpu (the same steps; CUDA-only cases are skipped with reasons).
# The device machine's python3 has torch but no sciml-bench: the checkout is imported from PYTHONPATH, and a
# package it lacks (asv, HolisticTraceAnalysis) leaves its tests or figures skipped/absent with the reason.
set -u
PART=${1:-core}
case "$PART" in core|compile|all) ;; *) echo "gpu_check.sh: unknown part '$PART'; expected core, compile or all" >&2; exit 2;; esac
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

step() {  # step NAME SECONDS COMMAND...: its output in WORK/NAME.log, its exit code and time in the summary
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "== $name (at most $limit s)"
    timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (stopped at its limit)')" | tee -a "$SUMMARY"
    tail -n 3 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
}

bench() { "$PY" -m sciml_bench "$@"; }

if [ "$PART" != compile ]; then
    step machine 60 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'; $PY -m pip list 2>/dev/null | grep -i -E 'torch|nvidia-ml|pandas|rich|scipy|matplotlib|psutil|asv|pytest|HolisticTrace'"
    step tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider --timeout 120 tests/test_cuda_paths.py tests/test_energy.py \
        tests/test_workloads.py tests/test_memory.py tests/test_peak.py tests/test_profiling.py tests/test_flops.py
    step smoke 120 bench run --suite smoke --device "$DEVICE" --out "$WORK/smoke"
    step quick-cuda 240 bench run --suite quick --device "$DEVICE" --out "$WORK/quick" --study precision \
        --study precision-fno --study checkpointing --study checkpointing-depth-mlp --study channels-last \
        --study cudnn-benchmark --study dataloader-pin-memory --study dataloader-train --study models
    step profile 90 bench profile --suite smoke --study models --model small_cnn --device "$DEVICE" \
        --out "$WORK/profiles" --results "$WORK/profile-results"
fi
if [ "$PART" != core ]; then
    step compile 420 bench run --suite quick --device "$DEVICE" --out "$WORK/compile" --study compile --study compile-recompile
fi
# what came out: each run's statuses, so the summary alone says which CUDA paths ran
"$PY" - "$WORK" >> "$SUMMARY" 2>&1 <<'EOF'
import collections, pathlib, sys
from sciml_bench.results import read_run
for f in sorted(pathlib.Path(sys.argv[1]).glob("**/*.jsonl")):
    recs = read_run(f)[1]
    print(f"{f.relative_to(sys.argv[1])}: {dict(collections.Counter(r.get('status') for r in recs))}")
    for r in recs:
        if r.get("status") != "ok":
            print(f"    {r.get('study')}/{r.get('case_id')}: {r.get('status')}: {str(r.get('reason'))[:160]}")
EOF
tar -czf "$OUT/gpu-check.tar.gz" -C "$WORK" .
cat "$SUMMARY"
