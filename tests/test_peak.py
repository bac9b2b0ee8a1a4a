"""Machine peak calibration: the ceiling is the faster of a GEMM and a 3x3 convolution, both recorded."""
from sciml_bench.measure.peak import calibrate, peak_for


def test_peak_is_the_faster_kernel_and_says_which():
    cal = calibrate("cpu", threads=1, min_run_time=0.02, size=256, dtypes=("fp32",))
    m = cal["metrics"]["fp32"]
    assert set(m["kernels"]) == {"gemm", "conv3x3"}, m.get("kernels")
    assert m["value"] == max(m["kernels"].values()) and m["kernel"] == max(m["kernels"], key=m["kernels"].get)
    assert m["value"] >= m["median_value"] > 0, "the ceiling is the fastest block, the median beside it"
    assert peak_for(cal, "bf16") == m["value"], "an uncalibrated dtype falls back to fp32's peak"


def test_tf32_switches_matmuls_and_convolutions_together_and_restores_both():
    """The fp32 ceiling on a GPU: cuDNN allows TF32 by default, so an fp32 convolution left alone would
    run on TF32 tensor cores and lend the fp32 ceiling their speed."""
    import torch

    from sciml_bench.measure.peak import tf32

    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    for on in (False, True):
        with tf32(on):
            assert flags() == (on, on)
        assert flags() == before


def test_a_gpu_calibration_measures_fp32_with_tf32_off_and_tf32_with_it_on(monkeypatch):
    """calibrate('cuda') uses the switch for each dtype (the kernels are faked: no GPU here)."""
    import torch

    from sciml_bench.measure import peak

    seen = {}

    def ceiling(device, name, n, threads, min_run_time):
        seen[name] = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        return {"value": 1.0}

    monkeypatch.setattr(peak, "_ceiling", ceiling)
    peak.calibrate("cuda", dtypes=("fp32", "tf32"))
    assert seen == {"fp32": (False, False), "tf32": (True, True)}, seen
