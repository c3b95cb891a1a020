"""The block micro-benchmark: which blocks it compares, at which shapes, and how it counts their aten ops."""
import json

import pytest
import timm
import torch
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.resnet import Bottleneck

from timm_mod import MoDBlock
from timm_mod.tools import blockbench
from timm_mod.tools.blockbench import MOD_PHASES, OpCounter, count_block_ops, stage_pairs


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


def test_cli_times_both_blocks_and_their_parts_and_writes_rows(tmp_path, capsys):
    path = tmp_path / 'blocks.json'
    args = ['--model', 'mobilenetv2_mod', '--img-size', '32', '--batch-size', '2', '--rounds', '1',
            '--min-run-time', '0', '--threads', '1', '--channels-last', '--json', str(path)]
    blockbench.main(args)
    rows = json.loads(path.read_text())
    assert len(rows) == 5 * 2  # five stages with a MoD block, inference and training
    for row in rows:
        assert row['standard_ms'] > 0 and row['mod_ms'] > 0 and row['k-block_ms'] > 0 and row['selector_ms'] > 0
        assert row['speedup'] == pytest.approx(row['standard_ms'] / row['mod_ms'])
        assert sum(row['ops_mod']['all'][p] for p in MOD_PHASES) > row['ops_std']['all']['block']
    assert '| blocks.2.1 | 32 | 2 | 4 x 4 | blocks.2.2 |' in capsys.readouterr().out
    with pytest.raises(SystemExit):  # results are never overwritten
        blockbench.main(args)


def test_cli_refuses_a_model_without_mod_blocks():
    with pytest.raises(SystemExit):
        blockbench.main(['--model', 'resnet50', '--ops-only'])
