"""Measurement: timing (torch.utils.benchmark), memory, FLOPs, GPU energy (NVML), the environment fingerprint and the once-per-case probes."""
import logging


def _no_cuda_runtime_notice(record: logging.LogRecord) -> bool:
    """False for torch's "No CUDA runtime is found, using CUDA_HOME=..." only: ``torch.utils.benchmark``
    imports ``torch.utils.cpp_extension``, which logs it on every machine without CUDA. It is about
    building CUDA extensions, which nothing here does, and it was the first line of every CPU run."""
    return not record.getMessage().startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_no_cuda_runtime_notice)
