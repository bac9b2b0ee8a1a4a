"""Machine peak calibration: the ceiling is the faster of a GEMM and a 3x3 convolution, both recorded."""
from sciml_bench.measure.peak import calibrate, peak_for


def test_peak_is_the_faster_kernel_and_says_which():
    cal = calibrate("cpu", threads=1, min_run_time=0.02, size=256, dtypes=("fp32",))
    m = cal["metrics"]["fp32"]
    assert set(m["kernels"]) == {"gemm", "conv3x3"}, m.get("kernels")
    assert m["value"] == max(m["kernels"].values()) and m["kernel"] == max(m["kernels"], key=m["kernels"].get)
    assert m["value"] >= m["median_value"] > 0, "the ceiling is the fastest block, the median beside it"
    assert peak_for(cal, "bf16") == m["value"], "an uncalibrated dtype falls back to fp32's peak"
