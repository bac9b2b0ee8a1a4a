"""Measurement: timing (torch.utils.benchmark), memory, FLOPs and the environment fingerprint."""
