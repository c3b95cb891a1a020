"""benchmarks/gpu_matrix.sh, dry-run on the CPU (SMOKE=1): every step runs and writes what the GPU run will write.

The budget's arithmetic is tested with a fake clock in test_matrix.py; here the budget is either far beyond what any
machine takes (nothing may be skipped) or spent before the first step (everything must be).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from timm_mod.tools import report

ROOT = Path(__file__).resolve().parents[2]
MODELS = ['resnet50_mod', 'resnet75_mod', 'resnet86_mod', 'mobilenetv2_mod', 'mobilenetv2_mod_l']


def _run(out: Path, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, SMOKE='1', OUT=str(out), PYTHON=sys.executable, **env)
    proc = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu_matrix.sh')], env=env, capture_output=True,
                          text=True, timeout=1800)  # only against a hang
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_matrix')
    return out, _run(out, LIMIT_S='1000000').stdout


def test_steps_the_budget_cannot_fit_are_skipped_and_leave_no_results(tmp_path):
    stdout = _run(tmp_path, LIMIT_S='1', STEPS='eager blocks compile').stdout
    assert '[gpu_matrix] eager: SKIPPED' in stdout and '[gpu_matrix] compile: SKIPPED' in stdout
    assert '[gpu_matrix] blocks: SKIPPED' in stdout
    assert not list(tmp_path.glob('*.json'))


def _one(out: Path, pattern: str) -> Path:
    found = sorted(out.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.mark.slow
def test_smoke_run_measures_every_group_for_every_model_baseline_and_bound(smoke):
    out, _ = smoke
    eager = json.loads(_one(out, 'gpu-cpu-smoke-*-eager.json').read_text())
    bases, bounds = ['resnet50', 'mobilenetv2_100'], [f'{m}[bound]' for m in MODELS]
    by_group = {}
    for r in eager:
        by_group.setdefault((r['group'], r['batch_size']), set()).add(r['model'])
    # the smoke run's batch sizes stand for 1, 32, 64, 256
    assert set(by_group) == {('eager bs=4,2 train bound', 4), ('eager bs=4,2 train bound', 2),
                             ('eager bs=3 bound', 3), ('eager bs=1 bound', 1)}
    assert all(models == set(MODELS + bases + bounds) for models in by_group.values())
    assert all(r['train_img_s'] for r in eager if 'train' in r['group'])
    compiled = json.loads(_one(out, 'gpu-cpu-smoke-*-compile.json').read_text())
    assert {(r['group'], r['compile']) for r in compiled} == {
        ('compile bs=4', 'default'), ('compile:reduce-overhead bs=1', 'reduce-overhead'), ('compile bs=3', 'default')}
    assert {r['model'] for r in compiled} == set(MODELS + bases)  # no bounds compiled
    assert all(r['channels_last'] and r['img_size'] == 32 for r in eager + compiled)


@pytest.mark.slow
def test_smoke_run_writes_parity_blocks_and_log_beside_the_bench_rows(smoke):
    out, stdout = smoke
    extra = _one(out, 'gpu-matrix-cpu-smoke-*')
    parity = json.loads(_one(extra, '*-parity.json').read_text())
    assert parity and all(r['ok'] for r in parity)
    blocks = json.loads(_one(extra, '*-blocks.json').read_text())
    assert {(r['model'], r['batch_size'], r['mode']) for r in blocks} == {
        (m, bs, mode)
        for m in ('resnet50_mod', 'mobilenetv2_mod') for bs in (1, 2, 4) for mode in ('inference', 'train')}
    assert _one(extra, '*-blocks.md').read_text().startswith('#### resnet50_mod, inference')
    cudnn = json.loads(_one(extra, '*-blocks-cudnn-benchmark.json').read_text())
    assert {(r['model'], r['batch_size'], r['mode']) for r in cudnn} == {
        (m, bs, 'train') for m in ('resnet50_mod', 'mobilenetv2_mod') for bs in (2, 4)}
    log = _one(extra, '*.log').read_text()
    assert 'parity (passed)' in log and 'skipped for the budget' not in log
    assert log.rstrip().endswith(stdout.rstrip().splitlines()[-1])


@pytest.mark.slow
def test_smoke_run_rows_render_in_the_report(smoke):
    out, _ = smoke
    rows = report.load_rows([str(p) for p in sorted(out.glob('gpu-cpu-smoke-*.json'))])
    text = report.render_markdown(rows)
    assert text.count('### ') == 4 + 3  # eager: batch 4, 2, 3, 1; compiled: 4, 1 (CUDA graphs), 3
    assert '| resnet86_mod | resnet50 |' in text
