"""The fast tier's representatives of a parametrized sweep (see conftest.py)."""
import pytest

__all__ = ['slow_cases']


def slow_cases(values, fast):
    """pytest.param for each of `values`, marked slow (full sweep only) unless it is one of `fast`."""
    return [v if v in fast else pytest.param(v, marks=pytest.mark.slow) for v in values]
