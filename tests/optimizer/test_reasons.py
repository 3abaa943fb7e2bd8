"""Reasons read in plain units: never scientific notation, whatever the magnitude."""

from hypothesis import given
from hypothesis import strategies as st

from optimizer.reasons import ms, number, rps, usd_per_hour


def test_numbers_read_plainly() -> None:
    assert [number(v) for v in (0, 0.00123, 0.5, 12.5, 22.2222, 1234.5, 2.5e9)] == [
        "0", "0.00123", "0.5", "12.5", "22.22", "1,234", "2,500,000,000"]
    assert (ms(23_400.0), ms(4.25), rps(8.0), usd_per_hour(3.722)) == ("23,400 ms", "4.2 ms", "8 requests/s", "$3.72/h")


@given(st.floats(min_value=0, max_value=1e15, allow_nan=False))
def test_no_scientific_notation(value: float) -> None:
    for text in (number(value), ms(value), rps(value), usd_per_hour(value)):
        assert "e" not in text.replace("requests", "")
