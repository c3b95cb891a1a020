"""timm_mod.init_from_baseline / load_baseline: a MoD model started from its pretrained baseline. Offline.

Baselines are random timm models with randomised batch-norm statistics, so every tensor tells its origin; the Hub is
served from a Hugging Face cache laid out as huggingface_hub leaves it.
"""
import argparse
import shutil
from pathlib import Path
from typing import Dict

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from timm.models import save_for_hf

import timm_mod
from timm_mod import init_from_baseline, load_baseline
from timm_mod.baseline import BaselineError
from timm_mod.checkpoint import CheckpointError

COMMIT = '0123456789abcdef0123456789abcdef01234567'


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test reaches the network: huggingface_hub offline (read at call time), with an empty cache."""
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-hub-cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')


def _baseline(name: str, seed: int = 1, **kwargs) -> torch.nn.Module:
    """A timm model whose every tensor (batch-norm statistics included) differs from a fresh model's."""
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)
            for p in m.parameters(recurse=False):
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    return model.eval()


def _snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _stage_blocks(model: torch.nn.Module):
    """(name, block) of every block of every stage, in timm's module names."""
    return [(f'{stage_name}.{n}', b) for stage_name, stage in timm_mod.convert.find_stages(model)
            for n, b in stage.named_children()]


# one model per block adapter and family: ResNet BasicBlock and Bottleneck, MobileNetV2's InvertedResidual (with
# its DepthwiseSeparableConv first block), RegNet, and a `timm_mod.mod(...)` conversion (ConvNeXt)
PAIRS = [
    ('resnet18_mod', 'resnet18'),
    ('resnet50_mod', 'resnet50'),
    ('mobilenetv2_mod', 'mobilenetv2_100'),
    ('regnety_016_mod', 'regnety_016'),
    ('mod:convnext_atto', 'convnext_atto'),
]


def _student(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith('mod:'):
        return timm_mod.mod(name[len('mod:'):], **kwargs)
    return timm.create_model(name, **kwargs)


@pytest.mark.parametrize('student_name, baseline_name', PAIRS)
def test_every_standard_block_stem_and_head_come_from_the_baseline_and_the_mod_blocks_stay_new(
        student_name, baseline_name):
    model, baseline = _student(student_name), _baseline(baseline_name)
    before, theirs = _snapshot(model), baseline.state_dict()
    report = init_from_baseline(model, baseline)
    after = model.state_dict()

    # what `mod` recorded as MoD blocks is new; every other block of every stage, and everything outside the stages
    # (stem, head), is the baseline's tensor of the same name
    mod_blocks = set(model.mod_settings['blocks'])
    standard = {name for name, _ in _stage_blocks(model)} - mod_blocks
    assert {u.name for u in report.units if u.block and u.copied} == standard
    assert {u.name for u in report.units if u.block and not u.copied} == mod_blocks
    assert set(report.copied) | set(report.new) == set(after) and not set(report.copied) & set(report.new)
    assert all(not k.startswith(tuple(f'{b}.' for b in mod_blocks)) for k in report.copied)
    for key in report.copied:
        assert not torch.equal(before[key], theirs[key]) and torch.equal(after[key], theirs[key]), key
    for key in report.new:
        assert torch.equal(after[key], before[key]), key
    stem = model.pretrained_cfg['first_conv'] + '.weight'
    head = model.pretrained_cfg['classifier'] + '.weight'
    assert stem in report.copied and head in report.copied
    assert set(report.unused) == set(theirs) - set(report.copied)
    summary = report.summary()
    assert f'copied {len(report.copied)} tensors' in summary and 'MoD blocks' in summary


def test_a_converted_pretrained_model_keeps_all_but_its_mod_blocks():
    """`timm_mod.mod(model)` of a baseline keeps its weights: starting it from that baseline copies all but the MoD
    blocks, and changes nothing."""
    baseline = _baseline('resnet18')
    model = timm_mod.mod(_baseline('resnet18'))
    before = _snapshot(model)
    report = init_from_baseline(model, baseline)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert {u.name for u in report.units if not u.copied} == set(model.mod_settings['blocks'])


def test_a_deeper_stage_keeps_its_extra_blocks_new_and_a_shallower_one_leaves_the_baselines_unused():
    model = _student('resnet75_mod')
    before = _snapshot(model)
    report = init_from_baseline(model, _baseline('resnet50'))  # layer3: 14 blocks here, 6 there
    deeper = {u.name for u in report.units if u.reason.startswith('deeper')}
    assert deeper == {'layer3.6', 'layer3.8', 'layer3.10', 'layer3.12'}
    assert all(torch.equal(model.state_dict()[k], before[k]) for u in report.units if u.name in deeper
               for k in u.tensors)
    assert {'layer3.0', 'layer3.2', 'layer3.4'} <= {u.name for u in report.units if u.copied}

    resnet101 = _baseline('resnet101')
    report = init_from_baseline(_student('resnet75_mod'), resnet101)  # layer3: 23 blocks there
    assert not [u for u in report.units if u.reason.startswith('deeper')]
    assert {f'layer3.{i}' for i in range(0, 14, 2)} <= {u.name for u in report.units if u.copied}
    assert {k.split('.')[1] for k in report.unused if k.startswith('layer3.')} == {
        str(i) for i in list(range(1, 14, 2)) + list(range(14, 23))}


def test_a_wider_stage_keeps_the_blocks_whose_shapes_differ_new():
    """mobilenetv2_mod_l's middle stages are wider than mobilenetv2_100's: those blocks cannot be copied."""
    model = _student('mobilenetv2_mod_l')
    report = init_from_baseline(model, _baseline('mobilenetv2_100'))
    copied = {u.name for u in report.units if u.copied}
    assert {'conv_stem', 'bn1', 'blocks.0.0', 'blocks.6.0', 'conv_head', 'classifier'} <= copied
    differ = {u.name: u.detail for u in report.units if u.reason.startswith('no counterpart')}
    assert 'blocks.1.0' in differ and 'shapes differ' in differ['blocks.1.0']


def test_a_head_for_other_classes_stays_new():
    model = _student('resnet18_mod', num_classes=10)
    report = init_from_baseline(model, _baseline('resnet18'))
    [fc] = [u for u in report.units if u.name == 'fc']
    assert not fc.copied and 'shapes differ' in fc.detail
    assert 'layer1.0.conv1.weight' in report.copied


def test_a_model_that_is_no_baseline_is_refused_and_nothing_is_changed():
    model = _student('resnet18_mod')
    before = _snapshot(model)
    with pytest.raises(BaselineError, match=r"none of its blocks fits \(layer1\.0: the baseline's is a Bottleneck"):
        init_from_baseline(model, _baseline('resnet50'))
    with pytest.raises(BaselineError, match='ConvNeXtBlock'):
        init_from_baseline(model, _baseline('convnext_atto'))
    with pytest.raises(BaselineError, match='cannot find its stages'):
        init_from_baseline(model, timm.create_model('vit_tiny_patch16_224'))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# --- where a baseline comes from

def _lay_out_hub_cache(cache: Path, repo_id: str, files: Dict[str, Path]) -> Path:
    """A Hugging Face cache holding `files` as the snapshot of `repo_id`, as huggingface_hub lays it out."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(COMMIT)
    (repo / 'snapshots' / COMMIT).mkdir(parents=True)
    for name, path in files.items():
        shutil.copy(path, repo / 'snapshots' / COMMIT / name)
    return cache


@pytest.fixture(scope='module')
def resnet18():
    return _baseline('resnet18', num_classes=10)


@pytest.fixture(scope='module')
def resnet18_in1k():
    return _baseline('resnet18', seed=2)


@pytest.fixture(scope='module')
def sources(resnet18, resnet18_in1k, tmp_path_factory) -> Dict[str, str]:
    """resnet18 (10 classes) as each kind of baseline source, resnet18 with 1000 classes as timm's
    resnet18.a1_in1k, and the Hugging Face cache that serves the Hub ones."""
    root = tmp_path_factory.mktemp('sources')
    folder, in1k = root / 'exported', root / 'in1k'
    save_for_hf(resnet18, folder, safe_serialization=True)
    save_for_hf(resnet18_in1k, in1k, safe_serialization=True)
    cache = root / 'hub-cache'
    _lay_out_hub_cache(cache, 'timm/resnet18.a1_in1k', {'model.safetensors': in1k / 'model.safetensors'})
    _lay_out_hub_cache(cache, 'someone/resnet18.digits', {n: folder / n for n in ('model.safetensors', 'config.json')})
    checkpoint = root / 'model_best.pth.tar'
    torch.save({'epoch': 3, 'arch': 'resnet18', 'state_dict': {f'module.{k}': v for k, v in
                                                                  resnet18.state_dict().items()},
                'args': argparse.Namespace(model='resnet18', model_kwargs={}, gp=None)}, checkpoint)
    weights = root / 'weights.safetensors'
    save_file(resnet18.state_dict(), str(weights))
    return dict(cache=str(cache), checkpoint=str(checkpoint), local_dir=f'local-dir:{folder}',
                hf_hub='hf-hub:someone/resnet18.digits', timm_name='resnet18.a1_in1k', safetensors=str(weights))


@pytest.mark.parametrize('kind', ['timm_name', 'hf_hub', 'local_dir', 'checkpoint'])
def test_every_kind_of_source_loads_the_baseline_offline(kind, sources, resnet18, resnet18_in1k, monkeypatch):
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', sources['cache'])
    expected = resnet18_in1k if kind == 'timm_name' else resnet18
    baseline = load_baseline(sources[kind])
    assert not baseline.training
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(baseline(x), expected(x))
    model = _student('resnet18_mod', num_classes=expected.num_classes)
    report = init_from_baseline(model, sources[kind])
    assert report.baseline == sources[kind]
    assert 'fc.weight' in report.copied and torch.equal(model.fc.weight, expected.fc.weight)


def test_a_timm_name_not_in_the_cache_offline_names_the_repo_and_the_fix():
    with pytest.raises(BaselineError, match=r"resnet18\.a1_in1k \(Hugging Face Hub repo 'timm/resnet18\.a1_in1k'\)"
                                            r".*HF_HUB_OFFLINE is set.*Download them once online"):
        load_baseline('resnet18.a1_in1k')


@pytest.mark.parametrize('source, error', [
    ('resnet18x', "unknown baseline 'resnet18x': timm has no model 'resnet18x'; nearest: resnet18"),
    ('resnet200', "'resnet200' has no pretrained weights in timm"),
    ('resnet18_mod', "'resnet18_mod' has no pretrained weights"),
    ('resnet18.no_such_tag',
     r"'resnet18\.no_such_tag' has no pretrained weights in timm \(with weights: resnet18\.a1_in1k"),
    ('local-dir:/nonexistent/folder', 'no config.json in /nonexistent/folder'),
    ('someone/model', "Use 'hf-hub:someone/model'"),
])
def test_unusable_baselines_are_refused_saying_why(source, error):
    with pytest.raises(BaselineError, match=error):
        load_baseline(source)


def test_checkpoints_that_cannot_say_what_they_hold_are_refused(sources, tmp_path):
    with pytest.raises(CheckpointError, match='does not say which model it holds'):
        load_baseline(sources['safetensors'])
    with pytest.raises(CheckpointError, match='checkpoint not found'):
        load_baseline(str(tmp_path / 'missing.pth.tar'))
    bad = tmp_path / 'nan.pth'
    state = _baseline('resnet18').state_dict()
    state['fc.bias'][0] = float('nan')
    torch.save(dict(state_dict=state, arch='resnet18'), bad)
    with pytest.raises(CheckpointError, match="'fc.bias' holds NaN"):
        load_baseline(str(bad))
