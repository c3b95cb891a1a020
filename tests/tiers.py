"""The fast tier's representatives of a parametrized sweep (see conftest.py)."""
import pytest

__all__ = ['slow_cases']


def slow_cases(values, fast):
    """Each of `values` as a parametrize case, marked slow (full sweep only) unless it is one of `fast`; a tuple is the
    arguments of a case with several."""
    def param(v, marks=()):
        return pytest.param(*v, marks=marks) if isinstance(v, tuple) else pytest.param(v, marks=marks)
    return [param(v) if v in fast else param(v, pytest.mark.slow) for v in values]
