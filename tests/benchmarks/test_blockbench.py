"""benchmarks/blockbench.py: which blocks it compares, at which shapes, how it counts their ops, what it reports."""
import json
from types import SimpleNamespace

import pytest
import timm
import torch
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.resnet import Bottleneck

from timm_mod import MoDBlock

import blockbench  # benchmarks/blockbench.py (conftest.py puts benchmarks/ on sys.path)
from blockbench import MOD_PHASES, OpCounter, count_block_ops, stage_pairs


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def _pairs(name, img_size=224):
    torch.manual_seed(0)
    model = timm.create_model(name)
    return {p.mod_name: p for p in stage_pairs(model, blockbench._input_shapes(name, img_size))}


def _input(pair, batch=2, channels_last=False):
    x = torch.randn(batch, *pair.shape)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def test_each_stage_compares_its_first_mod_block_with_the_standard_block_after_it():
    pairs = _pairs('resnet50_mod')
    assert {n: p.std_name for n, p in pairs.items()} == {
        'layer1.1': 'layer1.2', 'layer2.1': 'layer2.2', 'layer3.1': 'layer3.2', 'layer4.1': 'layer4.2'}
    assert {n: p.shape for n, p in pairs.items()} == {
        'layer1.1': (256, 56, 56), 'layer2.1': (512, 28, 28), 'layer3.1': (1024, 14, 14), 'layer4.1': (2048, 7, 7)}
    for p in pairs.values():
        assert isinstance(p.mod, MoDBlock) and type(p.std) is Bottleneck


def test_stage_shapes_follow_the_image_size():
    assert _pairs('resnet50_mod', 64)['layer3.1'].shape == (1024, 4, 4)


def test_a_stage_without_a_second_standard_block_gets_one_rebuilt_at_c_channels():
    pairs = _pairs('mobilenetv2_mod')  # blocks.1: one standard block, then the MoD block
    pair = pairs['blocks.1.1']
    assert pair.std_name == 'blocks.1.1 (rebuilt)'
    assert type(pair.std) is InvertedResidual and pair.std.conv_pw.in_channels == pair.shape[0] == 24
    assert pair.std.conv_pwl.out_channels == 24 and pair.std.has_skip
    with torch.no_grad():
        assert pair.std.eval()(_input(pair)).shape == (2, *pair.shape)
    assert pairs['blocks.2.1'].std_name == 'blocks.2.2'


def test_work_ops_exclude_views():
    x = torch.randn(4, 3)
    with OpCounter() as counter:
        x.reshape(12)  # view
        x.narrow(0, 0, 2)  # view
        x.clone()  # work: new storage
        x.relu_()  # work: mutates x
    assert counter.total('all') == 4
    assert counter.work('all') == 2
    assert sum(counter.views['all'].values()) == 2
    assert counter.ops['all']['aten.clone.default'] == counter.ops['all']['aten.relu_.default'] == 1


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('batch', [1, 2])  # batch 1 has its own gather
def test_mod_block_count_is_selector_plus_gather_plus_block_plus_fusion(channels_last, batch):
    pair = _pairs('resnet50_mod', 64)['layer3.1']
    x = _input(pair, batch, channels_last)
    split = count_block_ops(pair.mod, x)
    assert set(split.ops) == set(MOD_PHASES)
    whole = OpCounter()
    with whole, torch.inference_mode():
        pair.mod.eval()(x)
    assert sum(split.total(p) for p in MOD_PHASES) == whole.total('all')
    assert sum(split.work(p) for p in MOD_PHASES) == whole.work('all')
    # each op where it belongs: ranking in the selector, picking channels in the gather, convolutions in the block
    assert split.ops['selector']['aten.topk.default'] == 1 and split.ops['selector']['aten.sigmoid.default'] == 1
    gather = 'aten.gather.default' if channels_last else 'aten.index_select.default'
    assert split.ops['gather'][gather] == 1
    assert split.ops['block']['aten.conv2d.default'] == 3
    for phase in MOD_PHASES:
        assert split.work(phase) >= 1
        if phase != 'block':
            assert not any('conv' in op or 'batch_norm' in op for op in split.ops[phase]), phase
        if phase != 'gather':
            assert not split.ops[phase][gather], phase


@pytest.mark.parametrize('train', [False, True])
def test_the_k_channel_block_counts_as_the_same_block_standing_alone(train):
    pair = _pairs('resnet50_mod', 64)['layer2.1']
    x = _input(pair)
    split = count_block_ops(pair.mod, x, train=train)
    alone = count_block_ops(pair.mod.block, x[:, :pair.mod.k].contiguous(), train=train)
    assert split.ops['block'] == alone.ops['block']
    assert split.ops['block']['aten.conv2d.default' if not train else 'aten.convolution.default'] == 3


def test_standard_and_k_channel_blocks_of_a_stage_dispatch_the_same_ops():
    """The MoD block's own cost is everything but its k-channel block: a block of the standard one's ops."""
    pair = _pairs('resnet50_mod', 64)['layer1.1']
    x = _input(pair)
    std, mod = count_block_ops(pair.std, x), count_block_ops(pair.mod, x)
    assert std.ops['block'] == mod.ops['block']
    assert std.work('block') < sum(mod.work(p) for p in MOD_PHASES)


def test_training_counts_forward_phases_and_the_backward():
    pair = _pairs('mobilenetv2_mod', 64)['blocks.3.1']
    counter = count_block_ops(pair.mod, _input(pair), train=True)
    assert set(counter.ops) == set(MOD_PHASES) | {'backward'}
    assert counter.ops['backward']['aten.convolution_backward.default'] == 3
    std = count_block_ops(pair.std, _input(pair), train=True)
    assert std.ops['backward']['aten.convolution_backward.default'] == 3
    assert all(p.grad is None for p in pair.mod.parameters())  # counting leaves no gradients behind


# Medians and IQRs in seconds, as torch.utils.benchmark measures them: the standard block 3 ms, the MoD block 2 ms.
TIMES = {'standard': (3e-3, 3e-4), 'mod': (2e-3, 2e-4), 'k-block': (1e-3, 1e-4), 'selector': (5e-4, 5e-5)}


@pytest.fixture
def fixed_times(monkeypatch):
    """The timer replaced by one that returns `TIMES`: what the bench reports of them can be computed by hand."""
    calls = []

    def interleaved(fns, threads, label, description, rounds, min_run_time):
        calls.append(dict(blocks=set(fns), rounds=rounds, min_run_time=min_run_time))
        return {name: SimpleNamespace(median=TIMES[name][0], iqr=TIMES[name][1]) for name in fns}

    monkeypatch.setattr(blockbench, 'interleaved', interleaved)
    return calls


def test_rows_report_times_in_ms_and_the_speedup_of_the_mod_block(fixed_times):
    rows = blockbench.run_blockbench(['mobilenetv2_mod'], img_size=32, batch_sizes=[2], modes=('inference',),
                                     rounds=3, min_run_time=0.5, log=lambda s: None)
    assert len(rows) == 5  # one per stage with a MoD block
    assert fixed_times == [dict(blocks=set(TIMES), rounds=3, min_run_time=0.5)] * 5
    for row in rows:
        assert row['standard_ms'] == pytest.approx(3.0) and row['standard_iqr_ms'] == pytest.approx(0.3)
        assert row['mod_ms'] == pytest.approx(2.0) and row['selector_ms'] == pytest.approx(0.5)
        assert row['speedup'] == pytest.approx(1.5)  # 3 ms / 2 ms: the MoD block is 1.5x faster
    assert ('| blocks.2.1 | 32 | 2 | 4 x 4 | blocks.2.2 | 3.000 (0.300) | 2.000 (0.200) | 1.50 | 1.000 (0.100) | '
            '0.500 (0.050) |') in blockbench.markdown(rows)


def test_no_parts_times_only_the_two_blocks(fixed_times):
    blockbench.run_blockbench(['mobilenetv2_mod'], img_size=32, batch_sizes=[2], modes=('train',), parts=False,
                              log=lambda s: None)
    assert {frozenset(c['blocks']) for c in fixed_times} == {frozenset({'standard', 'mod'})}


def test_cli_writes_rows_and_tables_to_new_files_only(fixed_times, tmp_path, capsys):
    rows_path, table_path = tmp_path / 'blocks.json', tmp_path / 'blocks.md'
    args = ['--model', 'mobilenetv2_mod', '--img-size', '32', '--batch-size', '2', '--threads', '1', '--channels-last',
            '--json', str(rows_path), '--out', str(table_path)]
    blockbench.main(args)
    rows = json.loads(rows_path.read_text())
    assert [(r['mod_block'], r['mode']) for r in rows] == [
        (f'blocks.{i}.1', mode) for i in range(1, 6) for mode in ('inference', 'train')]
    assert all(r['channels_last'] and r['speedup'] == pytest.approx(1.5) for r in rows)
    assert table_path.read_text() == capsys.readouterr().out
    with pytest.raises(SystemExit) as info:  # results are never overwritten
        blockbench.main(args)
    assert info.value.code == 2
    assert json.loads(rows_path.read_text()) == rows


def test_cli_refuses_an_existing_out_before_any_work_and_leaves_no_json(monkeypatch, tmp_path):
    monkeypatch.setattr(blockbench, 'run_blockbench', lambda *args, **kwargs: pytest.fail('ran before refusing'))
    rows_path, table_path = tmp_path / 'blocks.json', tmp_path / 'blocks.md'
    table_path.write_text('earlier')
    with pytest.raises(SystemExit):
        blockbench.main(['--ops-only', '--json', str(rows_path), '--out', str(table_path)])
    assert not rows_path.exists() and table_path.read_text() == 'earlier'


def test_a_run_that_fails_removes_the_files_it_created(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError('broken')

    monkeypatch.setattr(blockbench, 'run_blockbench', broken)
    rows_path, table_path = tmp_path / 'blocks.json', tmp_path / 'blocks.md'
    with pytest.raises(RuntimeError):
        blockbench.main(['--ops-only', '--json', str(rows_path), '--out', str(table_path)])
    assert not rows_path.exists() and not table_path.exists()


@pytest.mark.parametrize('args, message', [
    (['--model', 'resnet50'], 'no MoD blocks in: resnet50'),
    (['--model', 'resnet50_modd'], "unknown model 'resnet50_modd'"),
    (['--mode', 'inference,eval'], '--mode'),
    (['--rounds', '0'], 'argument --rounds'),
    (['--batch-size', '1,0'], 'argument --batch-size'),
    (['--min-run-time', '-1'], 'argument --min-run-time'),
])
def test_cli_refuses_bad_arguments_before_any_work(monkeypatch, capsys, args, message):
    monkeypatch.setattr(blockbench, 'run_blockbench', lambda *a, **k: pytest.fail('ran with a bad argument'))
    with pytest.raises(SystemExit) as info:
        blockbench.main(['--ops-only', *args])
    assert info.value.code == 2 and message in capsys.readouterr().err
