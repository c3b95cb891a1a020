"""`python -m timm_mod.dense bench`: latency rows against the first backbone, and a --json that is never overwritten."""
import json

import pytest

from timm_mod import dense
from timm_mod.dense import bench
from timm_mod.tools.paper import DENSE_PAPER


@pytest.fixture
def no_timing(monkeypatch):
    """Fails the test if the command gets as far as timing."""
    def timing(*args, **kwargs):
        raise AssertionError('bad input was not refused before the timing started')
    monkeypatch.setattr(bench, 'bench_systems', timing)


@pytest.mark.usefixtures('one_thread')
def test_bench_writes_rows_with_speedups_against_the_first_backbone(tmp_path):
    path = tmp_path / 'dense.json'
    dense.main(['bench', '--backbones', 'resnet50,resnet50_mod', '--threads', '1', '--fcn-size', '32', '64',
                '--det-size', '64', '96', '--rounds', '2', '--json', str(path)])
    rows = json.loads(path.read_text())
    assert [r['model'] for r in rows] == ['fcn_resnet50', 'fcn_resnet50_mod', 'faster_rcnn_resnet50',
                                          'faster_rcnn_resnet50_mod']
    for base, mod in (rows[:2], rows[2:]):
        assert mod['baseline'] == base['model'] and mod['speedup'] == pytest.approx(
            base['latency_ms'] / mod['latency_ms'])
        assert mod['paper_speedup'] == DENSE_PAPER[mod['model']].speedup_cpu
        assert mod['params_m'] < base['params_m'] and mod['img_size'] == base['img_size'] and mod['runs'] == 2


def test_an_existing_json_is_refused_before_timing_and_left_unchanged(tmp_path, refused, no_timing):
    path = tmp_path / 'dense.json'
    path.write_bytes(b'[{"model": "earlier run"}]\n')
    error = refused(['bench', '--json', str(path)])
    assert error.endswith(f'error: --json {path} exists: results are never overwritten; name a new file')
    assert path.read_bytes() == b'[{"model": "earlier run"}]\n'


@pytest.mark.parametrize('failure', [RuntimeError('out of memory'), KeyboardInterrupt()], ids=['error', 'interrupt'])
def test_a_failed_bench_removes_only_its_own_empty_json(failure, tmp_path, monkeypatch):
    path, other = tmp_path / 'dense.json', tmp_path / 'other.json'
    other.write_text('[]')

    def fails(*args, **kwargs):
        assert path.read_bytes() == b''  # created before the timing: a concurrent run cannot take the name
        raise failure
    monkeypatch.setattr(bench, 'bench_systems', fails)
    with pytest.raises(type(failure)):
        dense.main(['bench', '--json', str(path)])
    assert not path.exists() and other.read_text() == '[]'


BAD_ARGS = [
    (['--systems', 'fcn,mask_rcnn'], '--systems: unknown system(s) mask_rcnn, expected some of fcn, faster_rcnn'),
    (['--backbones', 'resnet50,resnet86mod'], "--backbones: unknown backbone 'resnet86mod'; did you mean resnet86_mod"),
    (['--threads', '0,1'], "argument --threads: '0,1': expected comma-separated whole numbers of at least 1"),
    (['--rounds', '0'], 'argument --rounds: 0: must be a whole number of at least 1'),
    (['--min-run-time', '-1'], 'argument --min-run-time: -1: must be a number of at least 0'),
    (['--fcn-size', '512', 'x'], "argument --fcn-size: invalid positive_int value: 'x'"),
    (['--det-size', '0', '1000'], 'argument --det-size: 0: must be a whole number of at least 1'),
]


@pytest.mark.parametrize('argv,expected', BAD_ARGS, ids=[argv[0] for argv, _ in BAD_ARGS])
def test_bad_bench_input_is_refused_naming_the_flag(argv, expected, tmp_path, refused, no_timing):
    error = refused(['bench', *argv, '--json', str(tmp_path / 'dense.json')])
    assert expected in error
    assert not (tmp_path / 'dense.json').exists()
