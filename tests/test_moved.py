"""Modules that moved into timm_mod.tools and timm_mod.dense keep their old names for one release, with a warning."""
import importlib
import subprocess
import sys

import pytest

import timm_mod  # noqa: F401  (installs the finder for the old names)
from timm_mod._moved import MOVED


@pytest.mark.parametrize('old', ['timm_mod.bench', 'timm_mod.hub', 'timm_mod.paper', 'timm_mod.dense_data'])
def test_old_name_warns_and_is_the_moved_module(old):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f'{old} moved to {MOVED[old]}'):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_old_public_api_still_imports():
    with pytest.warns(FutureWarning):
        from timm_mod.segmentation import fcn
    from timm_mod.dense.segmentation import fcn as moved_fcn
    assert fcn is moved_fcn


def test_python_m_old_name_runs_the_tool():
    result = subprocess.run(
        [sys.executable, '-m', 'timm_mod.table', '--help'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'usage:' in result.stdout and '--update' in result.stdout
    assert 'timm_mod.table moved to timm_mod.tools.table' in result.stderr
