"""Environment fingerprint: the machine and software a run measured, recorded in every run header."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import torch

from sciml_bench.cpus import affinity_count

# Fields that identify "the same machine and software" for history and compare warnings.
FINGERPRINT_KEYS = ("cpu_model", "cpu_cores_logical", "gpu_name", "torch", "cuda", "cudnn", "python", "os",
                    "hostname")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``path`` (the benchmarked code), if any."""
    cwd = str(path or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def collect(hide_hostname: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Fingerprint of this process's machine and software.

    GPU fields are present only when CUDA is available; absent values are None, never guessed.
    """
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "hostname": None if hide_hostname else socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_affinity": affinity_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "git": git_commit(),
        "argv": sys.argv[1:],
    }
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(i)
        env.update({"gpu_name": props.name, "gpu_memory_bytes": props.total_memory,
                    "gpu_capability": f"{props.major}.{props.minor}", "gpu_count": torch.cuda.device_count(),
                    "gpu_driver": _nvidia_driver()})
    else:
        env.update({"gpu_name": None, "gpu_memory_bytes": None, "gpu_capability": None, "gpu_count": 0,
                    "gpu_driver": None})
    env["fingerprint"] = fingerprint(env)
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint(env: dict[str, Any]) -> str:
    """Short stable hash of the machine/software identity fields."""
    key = json.dumps({k: env.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Identity fields that differ between two fingerprints, as {field: (a, b)}."""
    return {k: (a.get(k), b.get(k)) for k in FINGERPRINT_KEYS if a.get(k) != b.get(k)}
