"""timm's own model test suite (tests/test_models.py from the installed timm's sdist), run on our models only."""
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import timm

import timm_mod

HERE = Path(__file__).parent


def _timm_tests() -> Path:
    """tests/test_models.py of the installed timm version, fetched once from the package index into a cache."""
    version = timm.__version__
    root = Path(os.environ.get('TIMM_MOD_CACHE', Path.home() / '.cache' / 'timm_mod')) / f'timm-{version}-sdist'
    suite = root / 'tests' / 'test_models.py'
    if suite.exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:', f'timm=={version}',
               '-d', tmp, '-q']
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob('timm-*.tar.gz'))
        if proc.returncode or not archives:
            pytest.skip(f'timm=={version} sdist (which holds its tests/) not downloadable here: {proc.stderr[-300:]}')
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if '/tests/' in m.name or m.name.endswith('/pyproject.toml')]
            tar.extractall(tmp, members=members, filter='data')
        extracted = Path(tmp) / f'timm-{version}'
        root.parent.mkdir(parents=True, exist_ok=True)
        extracted.rename(root)
    return root


@pytest.mark.slow
def test_timm_model_suite_passes_on_our_models():
    root = _timm_tests()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, '-m', 'pytest', 'tests/test_models.py', '-p', 'timm_suite_plugin', '-q',
           '-p', 'no:cacheprovider', '-p', 'no:warnings']
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stdout[-6000:]
    passed = int(summary.split(' passed')[0].split()[-1])
    # every model meets at least forward, backward, default cfgs, torchscript and forward_features
    assert passed >= 5 * len(timm_mod.list_models()), summary
