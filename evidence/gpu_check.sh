#!/usr/bin/env bash
# Issue 30 Part 2 in one device call: run sciml-bench's CUDA paths for real on a lent GPU and bring everything
# back in two files under $OUT (the device tool returns at most 8): summary.txt (also printed) and
# gpu-check.tar.gz (logs and run files), both rewritten after every step, so a call cut short keeps what ran.
#
#   BUDGET=<seconds the call may take> bash evidence/gpu_check.sh      (repository root)
#
# BUDGET (default 500) should be what is left of the device time, less the machine's start (1-2 min) and a
# margin; the tool's own limit is 600 s a call. Steps, most telling first, each cut at the deadline:
#   machine   nvidia-smi, torch's CUDA build and the GPU's name
#   canary    a worker forked from a fork server's preload uses the GPU (else every CUDA case would fail)
#   tests     the CUDA-path test modules, with a GPU present
#   smoke     the smoke suite on CUDA, compile studies left out
#   quick     the quick suite's CUDA studies, one pass (a cut run keeps every finished chunk)
#   profile   one CNN traced on CUDA
#   compile   the quick compile studies, one pass (max-autotune can take minutes: a case past its limit is a
#             `timeout` record, itself a finding)
# Runs write no report here (build them from the run files afterwards: `sciml-bench report RUN`).
# Test on the CPU first with DEVICE=cpu: the same steps, CUDA-only cases skipped with their reasons. The device
# machine's python3 has torch but no sciml-bench: the checkout is imported from PYTHONPATH; a package it lacks
# (asv, HolisticTraceAnalysis) leaves its tests or figures skipped or absent with the reason.
set -u
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
BUDGET=${BUDGET:-500}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
STEPS=$WORK/steps.txt
BENCH=("$PY" -m sciml_bench)
RUN=(--device "$DEVICE" --passes 1 --no-report)
echo "gpu_check.sh on $DEVICE, at most $BUDGET s" > "$STEPS"

pack() {  # summary.txt: the steps so far, every run's statuses and non-ok cases, warnings worth a look; the archive
    cp "$STEPS" "$WORK/summary.txt"
    "$PY" - "$WORK" >> "$WORK/summary.txt" 2>&1 <<'EOF'
import collections, pathlib, sys
from sciml_bench.results import read_run
work = pathlib.Path(sys.argv[1])
for f in sorted(work.glob("**/*.jsonl")):
    try:
        recs = read_run(f)[1]
    except Exception as e:  # noqa: BLE001  (one unreadable file must not hide the others)
        print(f"{f.relative_to(work)}: unreadable: {e}")
        continue
    print(f"{f.relative_to(work)}: {dict(collections.Counter(r.get('status') for r in recs))}")
    for r in recs:
        if r.get("status") != "ok":
            print(f"    {r.get('study')}/{r.get('case_id')}: {r.get('status')}: {str(r.get('reason'))[:160]}")
signs = ("initialization error", "re-initialize CUDA", "skipping cudagraphs", "Unable to hit fast path",
         "out of memory", "Traceback")
for log in sorted(work.glob("**/*.log")):
    hits = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if any(s in ln for s in signs)]
    if hits:
        print(f"{log.relative_to(work)}: {len(hits)} line(s) like: {hits[0][:200]}")
EOF
    cp "$WORK/summary.txt" "$OUT/summary.txt.tmp" && mv "$OUT/summary.txt.tmp" "$OUT/summary.txt"
    tar -czf "$OUT/gpu-check.tar.gz.tmp" -C "$WORK" . && mv "$OUT/gpu-check.tar.gz.tmp" "$OUT/gpu-check.tar.gz"
}

step() {  # step NAME SECONDS COMMAND...: at most SECONDS, never past the deadline (20 s kept for packing)
    local name=$1 cap=$2 t0=$SECONDS rc limit
    shift 2
    limit=$(( BUDGET - 20 - SECONDS ))
    [ "$limit" -gt "$cap" ] && limit=$cap
    if [ "$limit" -lt 10 ]; then
        echo "$name: not run, the deadline is reached" >> "$STEPS"
        return
    fi
    echo "== $name (at most $limit s)"
    timeout -k 5 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s$( { [ $rc = 124 ] || [ $rc = 137 ]; } && echo ' (stopped at its limit)')" >> "$STEPS"
    tail -n 3 "$WORK/$name.log" | sed 's/^/    /' >> "$STEPS"
    pack
}

step machine 20 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'"
step canary 40 "$PY" - "$DEVICE" <<'EOF'
# The fork server's preload, then a forked worker's first CUDA op (forkserver.py's promise: the server never
# initialises the CUDA driver its workers fork from).
import importlib, os, sys
from sciml_bench.forkserver import FORKSERVER_PRELOAD
for name in FORKSERVER_PRELOAD:
    importlib.import_module(name)
import torch
pid = os.fork()
if pid == 0:
    try:
        x = torch.ones(4, device=sys.argv[1]).add_(1)
        torch.cuda.synchronize() if sys.argv[1] == "cuda" else None
        os._exit(0 if float(x.sum()) == 8.0 else 3)
    except BaseException as e:  # noqa: BLE001
        print(f"forked worker: {type(e).__name__}: {e}", flush=True)
        os._exit(2)
_, status = os.waitpid(pid, 0)
print(f"forked worker exit status {os.waitstatus_to_exitcode(status)} (0: it used the {sys.argv[1]} device)")
sys.exit(os.waitstatus_to_exitcode(status))
EOF
step tests 90 "$PY" -m pytest -v -rs -p no:cacheprovider --timeout 60 tests/test_cuda_paths.py tests/test_workloads.py \
    tests/test_energy.py tests/test_peak.py
step smoke 100 "${BENCH[@]}" run --suite smoke "${RUN[@]}" --out "$WORK/smoke" --study models --study batch-size \
    --study precision --study checkpointing --study dataloader --study dataloader-train --study channels-last \
    --study cudnn-benchmark --study inference-modes --study fit
step quick 150 "${BENCH[@]}" run --suite quick "${RUN[@]}" --out "$WORK/quick" --study precision \
    --study precision-fno --study checkpointing --study checkpointing-depth-mlp --study channels-last \
    --study cudnn-benchmark --study dataloader-pin-memory --study dataloader-train --study models
step profile 60 "${BENCH[@]}" profile --suite smoke --study models --model small_cnn --device "$DEVICE" --passes 1 \
    --no-report --out "$WORK/profiles" --results "$WORK/profile-results" --profile-gzip
step compile 240 "${BENCH[@]}" run --suite quick "${RUN[@]}" --out "$WORK/compile" --study compile \
    --study compile-recompile
pack
cat "$OUT/summary.txt"
