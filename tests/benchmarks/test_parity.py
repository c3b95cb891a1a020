"""benchmarks/parity.py: every fast path of the MoD block against the plain mechanism, here on the CPU.

It must pass on correct code and fail on a planted bug in each place a fast path could go wrong.
"""
import json

import pytest

from timm_mod import layers

import parity  # benchmarks/parity.py (conftest.py puts benchmarks/ on sys.path)
from parity import BLOCKS, Case, check_parity, default_cases

RESNET_FIRST = BLOCKS[:1]  # resnet50_mod layer1.1, fusion first


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def _failed(rows):
    return [(r['block'], r['fusion'], r['mode'], r['batch_size'], r['channels_last'], r['amp'], r['quantity'])
            for r in rows if not r['ok']]


def test_every_eager_path_of_every_checked_block_matches_the_reference():
    cases = default_cases('cpu', compile_paths=False)
    assert {(c.mode, c.batch_size, c.channels_last, c.amp) for c in cases} == {
        (m, b, cl, amp)
        for m in ('inference', 'train') for b in (1, 3) for cl in (False, True) for amp in (False, True)}
    rows = check_parity('cpu', cases)
    assert not _failed(rows)
    assert {r['fusion'] for r in rows} == {'first', 'last', 'original'}
    quantities = {r['quantity'].split(' ')[0] for r in rows}
    assert quantities == {'out', 'grad_input', 'grad_params', 'indices'}


def test_float32_gradients_are_checked_for_every_parameter_of_a_resnet_block():
    rows = check_parity('cpu', [Case('eager', 'train', 3, True, False)], blocks=RESNET_FIRST)
    assert [r['quantity'] for r in rows if r['quantity'].startswith('grad_params')] == ['grad_params (11 of 11)']
    assert all(r['rel_err'] < 1e-5 for r in rows)


def test_a_wrong_channel_gather_fails_the_output_check(monkeypatch):
    monkeypatch.setattr(layers, 'select_channels', lambda x, idx: x[:, :idx.shape[1]])  # first k, not the selected
    rows = check_parity('cpu', [Case('eager', 'inference', 3, False, False)], blocks=RESNET_FIRST)
    assert ('resnet50_mod layer1.1', 'first', 'inference', 3, False, False, 'out') in _failed(rows)


def test_a_wrong_score_gradient_fails_the_parameter_gradient_check(monkeypatch):
    backward = layers._FuseAdd.backward

    def doubled(ctx, grad):
        grad_x, grad_y, grad_scores, none = backward(ctx, grad)
        return grad_x, grad_y, 2 * grad_scores, none

    monkeypatch.setattr(layers._FuseAdd, 'backward', staticmethod(doubled))
    rows = check_parity('cpu', [Case('eager', 'train', 3, True, False)], blocks=RESNET_FIRST)
    failed = _failed(rows)
    # the selector's weights and, through the pooling, the input get it wrong; the output is right
    assert [f[-1] for f in failed] == ['grad_input', 'grad_params (11 of 11)']


def test_a_wrong_selection_fails_the_index_check(monkeypatch):
    forward = layers.ChannelSelector.forward

    def lowest(self, x):
        scores, idx = forward(self, x)
        return scores, idx.flip(1)  # the right channels, paired with the wrong scores

    monkeypatch.setattr(layers.ChannelSelector, 'forward', lowest)
    rows = check_parity('cpu', [Case('eager', 'inference', 3, False, False)], blocks=RESNET_FIRST)
    assert {f[-1] for f in _failed(rows)} == {'out', 'indices'}


def test_cli_exits_nonzero_when_a_path_fails_and_writes_every_row(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(layers, 'select_channels', lambda x, idx: x[:, :idx.shape[1]])
    monkeypatch.setattr(parity, 'BLOCKS', RESNET_FIRST)
    monkeypatch.setattr(parity, 'default_cases', lambda device, compile_paths: [Case('eager', 'inference', 3, False,
                                                                                     False)])
    path = tmp_path / 'parity.json'
    with pytest.raises(SystemExit) as info:
        parity.main(['--no-compile', '--json', str(path)])
    assert info.value.code == 1
    assert '**NO**' in capsys.readouterr().out
    assert [r['ok'] for r in json.loads(path.read_text())] == [False, True]  # out wrong; the selection itself right


def test_cli_refuses_an_existing_json_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(parity, 'check_parity', lambda *args, **kwargs: pytest.fail('checked before refusing'))
    path = tmp_path / 'parity.json'
    path.write_text('[]')
    with pytest.raises(SystemExit) as info:
        parity.main(['--no-compile', '--json', str(path)])
    assert info.value.code == 2 and 'exists' in capsys.readouterr().err
    assert path.read_text() == '[]'


def test_a_run_that_fails_removes_the_json_it_created(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError('broken')

    monkeypatch.setattr(parity, 'check_parity', broken)
    path = tmp_path / 'parity.json'
    with pytest.raises(RuntimeError):
        parity.main(['--no-compile', '--json', str(path)])
    assert not path.exists()


@pytest.mark.parametrize('size', ['0', 'eight'])
def test_cli_refuses_a_feature_map_size_that_is_not_a_positive_number(size, capsys):
    with pytest.raises(SystemExit) as info:
        parity.main(['--no-compile', '--size', size])
    assert info.value.code == 2 and 'argument --size' in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_paths_match_the_reference():
    """torch.compile (inductor) inference and training, AMP + channels_last, as the GPU benchmark runs them."""
    cases = [c for c in default_cases('cpu') if c.path != 'eager']
    assert [(c.mode, c.amp, c.channels_last) for c in cases] == [('inference', True, True), ('train', True, True)]
    rows = check_parity('cpu', cases, blocks=RESNET_FIRST)
    assert not _failed(rows)
    assert len(rows) == 1 + 3
