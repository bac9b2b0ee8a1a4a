#!/usr/bin/env bash
# Issue 30 Part 2 in device calls: run sciml-bench's CUDA paths for real on a lent GPU and bring everything
# back in two files under $OUT (the device tool returns at most 8): summary.txt (also printed) and
# gpu-check.tar.gz (logs, run files, reports, the profile trace), both written however the call ends.
#
#   bash evidence/gpu_check.sh core       (repository root; then, if device time is left:)
#   bash evidence/gpu_check.sh compile
#
# Each part stops its steps by a deadline of BUDGET seconds (default 520), so that the call ends inside the
# tool's 10-minute limit with its files written; a step cut short says so in the summary. core: the machine,
# the CUDA-relevant test modules, the smoke suite on CUDA, the quick suite's CUDA studies, a profile of one CNN
# on CUDA. compile: the quick compile studies (max-autotune may take minutes; a case past its limit is a
# `timeout` record, itself a finding). Test it on the CPU first with DEVICE=cpu: the same steps, CUDA-only
# cases skipped with their reasons. The device machine's python3 has torch but no sciml-bench: the checkout is
# imported from PYTHONPATH; a package it lacks (asv, HolisticTraceAnalysis) leaves its tests or figures
# skipped or absent with the reason.
set -u
PART=${1:-core}
case "$PART" in core|compile) ;; *) echo "gpu_check.sh: unknown part '$PART'; expected core or compile" >&2; exit 2;; esac
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
BUDGET=${BUDGET:-520}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
SUMMARY=$OUT/summary.txt
BENCH=("$PY" -m sciml_bench)
echo "gpu_check.sh $PART on $DEVICE, at most $BUDGET s" > "$SUMMARY"

finish() {  # each run's statuses and every non-ok case, then the archive: whatever stopped the script
    "$PY" - "$WORK" >> "$SUMMARY" 2>&1 <<'EOF'
import collections, pathlib, sys
from sciml_bench.results import read_run
for f in sorted(pathlib.Path(sys.argv[1]).glob("**/*.jsonl")):
    try:
        recs = read_run(f)[1]
    except Exception as e:  # noqa: BLE001  (one unreadable file must not hide the others)
        print(f"{f.relative_to(sys.argv[1])}: unreadable: {e}")
        continue
    print(f"{f.relative_to(sys.argv[1])}: {dict(collections.Counter(r.get('status') for r in recs))}")
    for r in recs:
        if r.get("status") != "ok":
            print(f"    {r.get('study')}/{r.get('case_id')}: {r.get('status')}: {str(r.get('reason'))[:160]}")
EOF
    tar -czf "$OUT/gpu-check.tar.gz" -C "$WORK" .
    cat "$SUMMARY"
}
trap finish EXIT

step() {  # step NAME SECONDS COMMAND...: at most SECONDS, and never past the deadline (30 s kept for finish)
    local name=$1 cap=$2 t0=$SECONDS rc limit
    shift 2
    limit=$(( BUDGET - 30 - SECONDS ))
    [ "$limit" -gt "$cap" ] && limit=$cap
    if [ "$limit" -lt 10 ]; then
        echo "$name: not run, the deadline is reached" | tee -a "$SUMMARY"
        return
    fi
    echo "== $name (at most $limit s)"
    timeout -k 5 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (stopped at its limit)')" | tee -a "$SUMMARY"
    tail -n 3 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
}

if [ "$PART" = core ]; then
    step machine 30 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'; $PY -m pip list 2>/dev/null | grep -i -E 'torch|nvidia-ml|pandas|rich|scipy|matplotlib|psutil|asv|pytest|HolisticTrace'"
    step tests 120 "$PY" -m pytest -q -rs -p no:cacheprovider --timeout 100 tests/test_cuda_paths.py tests/test_energy.py \
        tests/test_workloads.py tests/test_memory.py tests/test_peak.py tests/test_profiling.py tests/test_flops.py
    step smoke 100 "${BENCH[@]}" run --suite smoke --device "$DEVICE" --out "$WORK/smoke"
    step quick-cuda 180 "${BENCH[@]}" run --suite quick --device "$DEVICE" --out "$WORK/quick" --study precision \
        --study precision-fno --study checkpointing --study checkpointing-depth-mlp --study channels-last \
        --study cudnn-benchmark --study dataloader-pin-memory --study dataloader-train --study models
    step profile 60 "${BENCH[@]}" profile --suite smoke --study models --model small_cnn --device "$DEVICE" \
        --out "$WORK/profiles" --results "$WORK/profile-results" --profile-gzip
else
    step compile 480 "${BENCH[@]}" run --suite quick --device "$DEVICE" --out "$WORK/compile" --study compile \
        --study compile-recompile
fi
