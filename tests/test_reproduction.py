import math

import pytest

from vqbench.reproduction import diff, fmt, three_way, verdict


def test_difference_of_means_and_its_standard_error():
    d, se = diff([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert d == 2.0 and se == pytest.approx(1.0 / math.sqrt(3))
    assert fmt([1.0, 2.0, 3.0]) == "2.00 ± 1.00"


def test_two_standard_errors_decide_the_direction_or_nothing():
    assert three_way([10.0, 10.1, 9.9], [5.0, 5.1, 4.9]) is True
    assert three_way([5.0, 5.1, 4.9], [10.0, 10.1, 9.9]) is False
    assert three_way([1.0, 2.0, 3.0], [1.5, 2.5, 1.8]) is None
    assert verdict(None) == "**inconclusive**" and verdict(False) == "**not reproduced**"
