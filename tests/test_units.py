"""How quantities are written: one byte formatter for the terminal, the report and profile files."""
import pytest

from sciml_bench.units import fmt_bytes, parse_bytes, parse_duration


def test_bytes_in_binary_units_to_three_figures_never_in_exponent_notation():
    assert [fmt_bytes(b) for b in (None, 312, 1536, 196736, 1023 * 2 ** 10, 999.6 * 2 ** 10, 5 * 2 ** 30,
                                   3 * 2 ** 40)] == \
        ["-", "312 B", "1.5 KiB", "192 KiB", "1023 KiB", "1000 KiB", "5 GiB", "3072 GiB"]


def test_sizes_and_durations_with_units_parse_and_nonsense_or_non_positive_is_refused():
    assert [parse_bytes(t) for t in ("2GiB", "512 MB", "1e9", "300")] == [2 ** 31, 512 * 10 ** 6, 10 ** 9, 300]
    assert [parse_duration(t) for t in ("10m", "90s", "1.5h", "45")] == [600, 90, 5400, 45]
    for bad in ("0", "-1GB", "lots", "5 parsecs", "1e999"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    for bad in ("0s", "-1m", "soon"):
        with pytest.raises(ValueError):
            parse_duration(bad)
