"""One rule for what counts as a number, whether it comes from the environment, a URL or a JSON body."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fleetscope import numbers
from fleetscope.config import env_int
from fleetscope.errors import FleetscopeError


@pytest.mark.parametrize("text", ["1_000", "²", "١٢", "12a", "", "1.0", "9" * 101])
def test_text_that_is_not_ascii_digits_is_not_an_integer(text):
    problem = numbers.parse_int(text, lo=0, hi=10**200)
    assert isinstance(problem, numbers.Problem) and problem.not_a_number and problem.value == text


def test_text_integers_may_carry_a_sign_and_surrounding_spaces():
    assert numbers.parse_int(" +15 ", lo=0, hi=20) == 15
    assert numbers.parse_int("-3", lo=-5, hi=0) == -3


def test_a_number_outside_its_bounds_is_out_of_range_and_says_which_number():
    problem = numbers.parse_int("21", lo=0, hi=20)
    assert problem == numbers.Problem(numbers.OUT_OF_RANGE, 21, 0, 20)
    assert numbers.parse_float("nan", lo=0.0, hi=1.0).kind == numbers.OUT_OF_RANGE


@pytest.mark.parametrize("value", [True, False, Decimal("1.5"), 1.5, "15", None, [15], Decimal("Infinity")])
def test_json_values_that_are_not_integers_are_refused(value):
    assert numbers.json_int(value, lo=0, hi=100).kind == numbers.NOT_A_NUMBER


def test_json_integers_may_be_written_with_a_zero_fraction():
    assert numbers.json_int(Decimal("15.0"), lo=0, hi=100) == 15
    assert numbers.json_int(15.0, lo=0, hi=100) == 15
    assert numbers.json_int(15, lo=0, hi=100) == 15


def test_a_bad_setting_stops_the_program_with_a_message_that_names_it(monkeypatch):
    monkeypatch.setenv("FLEETSCOPE_X", "1_000")
    with pytest.raises(FleetscopeError, match=r"FLEETSCOPE_X='1_000' is not an integer"):
        env_int("FLEETSCOPE_X", 5, lo=0, hi=10)
    monkeypatch.setenv("FLEETSCOPE_X", "11")
    with pytest.raises(FleetscopeError, match=r"FLEETSCOPE_X=11 is out of range \[0, 10\]"):
        env_int("FLEETSCOPE_X", 5, lo=0, hi=10)
