"""How quantities are written: one byte formatter for the terminal, the report and profile files."""
from sciml_bench.units import fmt_bytes


def test_bytes_in_binary_units_to_three_figures_never_in_exponent_notation():
    assert [fmt_bytes(b) for b in (None, 312, 1536, 196736, 1023 * 2 ** 10, 999.6 * 2 ** 10, 5 * 2 ** 30,
                                   3 * 2 ** 40)] == \
        ["-", "312 B", "1.5 KiB", "192 KiB", "1023 KiB", "1000 KiB", "5 GiB", "3072 GiB"]
