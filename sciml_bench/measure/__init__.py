"""Measurement: timing (torch.utils.benchmark), memory, FLOPs, the environment fingerprint and the once-per-case probes."""
