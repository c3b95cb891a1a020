"""Fixtures shared by the test modules, and the two tiers of the suite.

``pytest -q`` runs the fast tier: every public behaviour at least once (one model per block adapter and family,
each fusion and routing, one export per runtime, the launcher's commands, a Hub round trip), in a few minutes.
``pytest -q --full`` adds the full sweep: every registered model in every mode, real train.py runs, timm's own
model suite, every export path, the wheel. A test joins the full sweep only with ``@pytest.mark.slow``; a
parametrized sweep marks the cases beyond its fast representatives with ``tiers.slow_cases``.
"""
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption('--full', action='store_true', help='run the full sweep as well as the fast tier')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--full'):
        return
    slow = [item for item in items if item.get_closest_marker('slow')]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker('slow')]


def pytest_report_header(config):
    return 'tier: ' + ('full sweep (--full)' if config.getoption('--full') else
                       'fast (pytest --full runs the full sweep too)')


@pytest.fixture
def one_thread():
    """Two threads on a busy two-core machine spin against each other (100x slower); one is plenty for op timing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
