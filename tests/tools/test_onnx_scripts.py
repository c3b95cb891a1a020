"""timm's own onnx_export.py and onnx_validate.py, unchanged, run through `python -m timm_mod.tools.run`.

They come from timm's repository (a cached checkout in ~/.cache/timm_mod/pytorch-image-models, or $TIMM_TRAIN_PY's
folder), as train.py does; without one the tests skip, saying so. The export is made from a batch-1 example with
timm's default dynamic batch axis and validated at an odd batch size (3), in ONNX Runtime.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_mod.tools.run as tm_run

pytest.importorskip('onnxruntime', reason='pip install -e ".[deploy]"')


def _timm_repo() -> Path:
    env_path = os.environ.get('TIMM_TRAIN_PY')
    repo = Path(env_path).parent if env_path else tm_run.timm_repo_cache()
    if not (repo / 'onnx_export.py').is_file():
        pytest.skip(f'timm\'s onnx_export.py not found in {repo}: clone {tm_run.TIMM_REPO_URL} there or point '
                    f'TIMM_TRAIN_PY at a checkout\'s train.py to run this test')
    return repo


def _run(script: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, '-m', 'timm_mod.tools.run', str(script), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A random-init resnet18_mod_cifar checkpoint for 2 classes (no weights are published to export instead)."""
    path = tmp_path_factory.mktemp('ckpt') / 'model.pth'
    torch.manual_seed(0)
    torch.save(timm.create_model('resnet18_mod_cifar', num_classes=2).state_dict(), path)
    return path


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp('val')
    gen = np.random.default_rng(0)
    for cls in ('a', 'b'):
        (root / cls).mkdir()
        for i in range(4):
            Image.fromarray(gen.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / cls / f'{i}.png')
    return root


@pytest.mark.slow
@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
def test_timm_onnx_export_and_onnx_validate_run_a_mod_model(dynamo, checkpoint, images, tmp_path):
    repo = _timm_repo()
    onnx_file = tmp_path / 'model.onnx'
    out = _run(repo / 'onnx_export.py', str(onnx_file), '--model', 'resnet18_mod_cifar', '--num-classes', '2',
               '--img-size', '32', '--checkpoint', str(checkpoint), '-b', '1', '--check-forward',
               *(['--dynamo'] if dynamo else []))
    assert onnx_file.is_file(), out
    out = _run(repo / 'onnx_validate.py', str(images), '--onnx-input', str(onnx_file), '-b', '3', '--img-size', '32',
               '--crop-pct', '1', '-j', '0')
    assert re.search(r'Prec@1 [\d.]+', out), out  # its summary line: ' * Prec@1 ... Prec@5 ...'
