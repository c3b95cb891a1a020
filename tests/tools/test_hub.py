"""timm_mod.tools.hub: from a train.py checkpoint to a Hub model folder, and every way timm loads it back. Offline.

The Hub is never contacted: huggingface_hub runs in offline mode, and a Hub download is served from a cache laid out
as huggingface_hub lays it (models--ORG--NAME/refs/main holding a commit hash, snapshots/HASH/ holding the files).
"""
import argparse
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub import constants as hub_constants
import timm_mod
from timm_mod.models import _common
from timm_mod.models._common import hub_repo_id
from timm_mod.tools import hub
from timm_mod.checkpoint import CheckpointError, read_checkpoint
from timm_mod.tools import cards
from timm_mod.tools.cards import CARD_TEMPLATES, CARDS_DIR, read_results, render_card
from timm_mod.tools.hub import HubError, export

NAME = 'resnet18_mod_cifar'  # small and fast at 32 x 32; its default tag c10 has 10 classes
REPO_ID = hub_repo_id(NAME, 'c10')  # where its weights go, published or not
COMMIT = '0123456789abcdef0123456789abcdef01234567'
# The start of a script run in a fresh interpreter as a release that publishes NAME.c10 would run: PUBLISHED names it
# and its family registers again, as importing the released package does. This process's registry stays untouched.
AS_PUBLISHED = f'''
import importlib, warnings
import timm, torch, timm_mod
from timm_mod.models import _common, mod_cifar
_common.PUBLISHED = frozenset({{'{NAME}.c10'}})
with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # timm warns that each name is registered again
    importlib.reload(mod_cifar)
'''


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test reaches the network: huggingface_hub offline (read at call time), with an empty cache."""
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-hub-cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')


def _randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Eval-mode model with non-trivial BN statistics, so outputs tell weights apart."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _train_checkpoint(path: Path, model: torch.nn.Module, arch: str, **args) -> Path:
    """A checkpoint as timm's train.py saves it under DDP with --model-ema: the EMA weights are `model`'s."""
    ema = model.state_dict()
    raw = {k: v + 1 if v.is_floating_point() else v for k, v in ema.items()}
    train_args = dict(
        model=arch, num_classes=None, in_chans=None, gp=None, model_kwargs={}, input_size=None, img_size=None,
        mean=None, std=None, crop_pct=None, interpolation='')
    train_args.update(args)
    torch.save({
        'epoch': 9,
        'arch': arch,
        'state_dict': {f'module.{k}': v for k, v in raw.items()},
        'state_dict_ema': {f'module.{k}': v for k, v in ema.items()},
        'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1}]},
        'args': argparse.Namespace(**train_args),
        'metric': 12.5,
    }, path)
    return path


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    return _randomized(timm.create_model(NAME, num_classes=10))


@pytest.fixture(scope='module')
def checkpoint(source, tmp_path_factory):
    return _train_checkpoint(tmp_path_factory.mktemp('train') / 'model_best.pth.tar', source, NAME)


@pytest.fixture(scope='module')
def results_file(checkpoint):
    """validate.py --results-file output (csv) for the checkpoint."""
    path = checkpoint.with_name('results.csv')
    path.write_text(
        'model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation\n'
        f'{NAME},91.25,8.75,99.5,0.5,4.95,32,1.0,bilinear\n')
    return path


@pytest.fixture(scope='module')
def exported(checkpoint, results_file, tmp_path_factory):
    return export(NAME, checkpoint, tmp_path_factory.mktemp('export') / 'out', ema=True, results=results_file)


def _lay_out_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """A Hugging Face cache holding `folder` as the snapshot of `repo_id`, as huggingface_hub lays it out."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(COMMIT)
    shutil.copytree(folder, repo / 'snapshots' / COMMIT)
    return cache


@pytest.fixture(scope='module')
def hub_cache(exported, tmp_path_factory):
    """A Hugging Face cache holding the exported folder as the snapshot of REPO_ID."""
    return _lay_out_hub_cache(tmp_path_factory.mktemp('hub-cache'), REPO_ID, exported)


def _run_as_published(script: str, hub_cache: Path, *args, **env) -> subprocess.CompletedProcess:
    """Run AS_PUBLISHED + `script` offline, in a fresh interpreter, with `hub_cache` as the Hugging Face cache."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(hub_cache), **env)
    return subprocess.run([sys.executable, '-c', AS_PUBLISHED + script, *map(str, args)], env=env,
                          capture_output=True, text=True)


def _inputs() -> torch.Tensor:
    # 16 x 16 rather than 32: the models are fully convolutional and this CPU is slow
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope='module')
def expected(source):
    return _outputs(source, _inputs())


# --- the exported folder


def test_export_writes_safetensors_config_and_card_only(exported):
    assert sorted(p.name for p in exported.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert not [p for p in exported.parent.iterdir() if p != exported], 'temporary folders left behind'


def test_config_is_timm_save_for_hf_format_with_the_mod_settings(exported):
    config = json.loads((exported / 'config.json').read_text())
    assert config['architecture'] == NAME
    assert config['num_classes'] == 10
    assert config['pretrained_cfg']['input_size'] == [3, 32, 32]
    assert config['pretrained_cfg']['license'] == 'apache-2.0'
    assert {k: config['model_args'][k] for k in ('mod_c', 'mod_reduction', 'mod_fusion', 'mod_routing')} == dict(
        mod_c=64, mod_reduction=16, mod_fusion='first', mod_routing='topk')
    # once, at the top: transformers' TimmWrapper passes num_classes itself, beside model_args
    assert 'num_classes' not in config['model_args']
    assert config['training'] == dict(
        init_from=None, teacher=None, recipe={k: None for k in cards.RECIPE_ARGS if not k.startswith(
            ('kd_', 'distill', 'task'))}, epoch=10, base_model=None)


def test_read_checkpoint_strips_ddp_prefixes_and_picks_ema_on_request(checkpoint, source):
    ema, meta = read_checkpoint(checkpoint, ema=True)
    raw, _ = read_checkpoint(checkpoint)
    assert set(ema) == set(source.state_dict())
    assert all(torch.equal(ema[k], v) for k, v in source.state_dict().items())
    assert not torch.equal(raw['conv1.weight'], ema['conv1.weight'])
    assert meta['arch'] == NAME and meta['args']['model_kwargs'] == {}


def test_ema_of_a_bare_state_dict_is_refused(source, tmp_path):
    torch.save(source.state_dict(), tmp_path / 'bare.pth')
    assert set(read_checkpoint(tmp_path / 'bare.pth')[0]) == set(source.state_dict())
    with pytest.raises(CheckpointError, match='bare state dict'):
        read_checkpoint(tmp_path / 'bare.pth', ema=True)


# --- loading: every route gives the checkpoint's weights


@pytest.mark.parametrize('route', ['hf-hub', 'local-dir', 'pretrained_cfg_overlay'])
def test_every_loading_route_reproduces_the_checkpoint(route, expected, exported, hub_cache, monkeypatch):
    """Weights load by these routes whether or not they are published (pretrained=True: the tests below)."""
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(hub_cache))
    model = {
        'hf-hub': lambda: timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True),
        'local-dir': lambda: timm.create_model(f'local-dir:{exported}', pretrained=True),
        'pretrained_cfg_overlay': lambda: timm.create_model(
            NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(exported / 'model.safetensors'))),
    }[route]()
    assert torch.equal(_outputs(model, _inputs()), expected)


def test_published_tag_is_listed_and_loads_with_pretrained_true_offline(expected, hub_cache, tmp_path):
    """The user's setting, HF_HUB_OFFLINE=1 and HF_HUB_CACHE in the environment: a published tag is listed as
    pretrained, its cfg names its repo, and pretrained=True (tagged or not) loads the weights without unpickling."""
    torch.save(_inputs(), tmp_path / 'x.pt')
    script = '''
import json, sys
x = torch.load(sys.argv[1])
torch.load = None  # safetensors only from here on: any unpickling fails
print(json.dumps([timm.list_pretrained('resnet18_mod_cifar*'), timm.is_model_pretrained('resnet18_mod_cifar'),
                  timm.get_pretrained_cfg('resnet18_mod_cifar').hf_hub_id]))
with torch.no_grad():
    ys = [timm.create_model(n, pretrained=True).eval()(x) for n in ('resnet18_mod_cifar', 'resnet18_mod_cifar.c10')]
torch.save(ys, sys.argv[2])
'''
    proc = _run_as_published(script, hub_cache, tmp_path / 'x.pt', tmp_path / 'y.pt')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == [[f'{NAME}.c10'], True, REPO_ID]
    assert all(torch.equal(y, expected) for y in torch.load(tmp_path / 'y.pt'))


def test_card_usage_feature_maps_and_embeddings_load(source, hub_cache, monkeypatch):
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(hub_cache))
    x = _inputs()
    features = timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True, features_only=True).eval()
    with torch.no_grad():
        maps = features(x)
        expected = source.forward_intermediates(x, intermediates_only=True)
    assert len(maps) == len(expected) and all(torch.equal(a, b) for a, b in zip(maps, expected))
    embedder = timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True, num_classes=0)
    with torch.no_grad():
        pooled = source.forward_head(source.forward_features(x), pre_logits=True)
    assert torch.equal(_outputs(embedder, x), pooled)


def test_published_tag_missing_from_the_cache_offline_names_the_repo_and_what_to_do(tmp_path):
    script = '''
try:
    timm.create_model('resnet18_mod_cifar', pretrained=True)
except RuntimeError as e:
    print(e)
'''
    proc = _run_as_published(script, tmp_path / 'empty-hub-cache')
    assert proc.returncode == 0, proc.stderr[-3000:]
    message = proc.stdout
    assert f"No pretrained weights for {NAME}.c10" in message and REPO_ID in message and 'HF_HUB_OFFLINE' in message
    assert 'pretrained=False' in message and 'local-dir:' in message and 'TIMM_MOD_HUB_ORG' in message


def test_hub_org_override_moves_the_published_repo_and_the_default_export_repo(tmp_path):
    script = '''
from timm_mod.models._common import hub_repo_id
print(timm.get_pretrained_cfg('resnet18_mod_cifar').hf_hub_id, hub_repo_id('resnet75_mod', 'in1k'))
'''
    proc = _run_as_published(script, tmp_path, TIMM_MOD_HUB_ORG='mirror-org')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [f'mirror-org/{NAME}.c10', 'mirror-org/resnet75_mod.in1k']


def test_unpublished_tag_with_pretrained_true_fails_at_once_saying_what_to_do(monkeypatch):
    assert f'{NAME}.c10' not in _common.PUBLISHED

    def build(*args, **kwargs):
        raise AssertionError('a model was built, or weights looked up, for weights that are not published')
    monkeypatch.setattr(_common, 'build_model_with_cfg', build)
    with pytest.raises(RuntimeError) as info:
        timm.create_model(NAME, pretrained=True)
    message = str(info.value)
    assert f'No pretrained weights are published for {NAME}.c10' in message
    for way_out in ('pretrained=False', "'local-dir:DIR'", "'hf-hub:ORG/REPO'", "pretrained_cfg_overlay=dict(file="):
        assert way_out in message


def test_loading_never_unpickles(exported, hub_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('torch.load called')
    monkeypatch.setattr(torch, 'load', refuse)
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(hub_cache))
    timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True)
    timm.create_model(f'local-dir:{exported}', pretrained=True)
    timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(exported / 'model.safetensors')))


def test_corrupt_weights_fail_to_load(exported, tmp_path):
    folder = shutil.copytree(exported, tmp_path / 'corrupt')
    weights = folder / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(Exception, match='(?i)deserializ|header|incomplete|invalid'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)


def test_weights_of_another_architecture_fail_to_load(exported, tmp_path):
    folder = shutil.copytree(exported, tmp_path / 'mismatched')
    timm.models.save_for_hf(timm.create_model('resnet34_mod_cifar'), tmp_path / 'other', safe_serialization=True)
    shutil.copy(tmp_path / 'other' / 'model.safetensors', folder / 'model.safetensors')
    with pytest.raises(RuntimeError, match='Unexpected key|size mismatch'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)


# --- export: what it infers and what it refuses


def test_num_classes_comes_from_the_classifier(tmp_path):
    """A 10-class ImageNet-architecture checkpoint (e.g. digits) exports as a 10-class model under its own repo."""
    model = _randomized(timm.create_model('resnet18_mod', num_classes=10))
    ckpt = _train_checkpoint(tmp_path / 'digits.pth.tar', model, 'resnet18_mod')
    out = export('resnet18_mod', ckpt, tmp_path / 'out', ema=True, repo_id='someone/resnet18_mod.digits')
    assert json.loads((out / 'config.json').read_text())['num_classes'] == 10
    assert "'hf-hub:someone/resnet18_mod.digits'" in (out / 'README.md').read_text()


def test_export_under_the_registered_repo_needs_the_registered_model(tmp_path):
    """pretrained=True builds the registered model, here 10 classes and MoD fusion 'first': other weights are refused
    (with nothing written) rather than published where it looks."""
    seven = _train_checkpoint(tmp_path / 'seven.pth.tar', _randomized(timm.create_model(NAME, num_classes=7)), NAME)
    with pytest.raises(HubError, match=rf"create_model\('{NAME}.c10', pretrained=True\).*'num_classes': 7"):
        export(NAME, seven, tmp_path / 'exports' / 'out')
    last = _randomized(timm.create_model(NAME, num_classes=10, mod_fusion='last'))
    last = _train_checkpoint(tmp_path / 'last.pth.tar', last, NAME, model_kwargs=dict(mod_fusion='last'))
    with pytest.raises(HubError, match=rf"create_model\('{NAME}.c10', pretrained=True\).*another --repo-id"):
        export(NAME, last, tmp_path / 'exports' / 'out')
    assert not list((tmp_path / 'exports').iterdir())


def test_preprocessing_other_than_the_registered_cfg_needs_its_own_repo(tmp_path):
    model = _randomized(timm.create_model(NAME, num_classes=10, in_chans=1))
    ckpt = _train_checkpoint(tmp_path / 'digits.pth.tar', model, NAME, mean=[0.5], std=[0.25], in_chans=1)
    with pytest.raises(HubError, match=r"differ from its registered cfg in .*'input_size': \(1, 32, 32\)"):
        export(NAME, ckpt, tmp_path / 'out')
    out = export(NAME, ckpt, tmp_path / 'out', ema=True, repo_id='someone/digits')
    config = json.loads((out / 'config.json').read_text())
    assert config['pretrained_cfg']['input_size'] == [1, 32, 32] and config['pretrained_cfg']['mean'] == [0.5]
    assert config['model_args']['in_chans'] == 1


def test_checkpoint_of_another_arch_is_refused(checkpoint, tmp_path):
    with pytest.raises(HubError, match=f"trained as '{NAME}'"):
        export('resnet34_mod_cifar', checkpoint, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_state_dict_that_does_not_fit_names_keys_and_shapes(source, tmp_path):
    torch.save(source.state_dict(), tmp_path / 'bare.pth')
    with pytest.raises(HubError, match=r'missing keys \(\d+\): layer1\.2\.'):
        export('resnet34_mod_cifar', tmp_path / 'bare.pth', tmp_path / 'out')
    with pytest.raises(HubError, match=r'shape mismatches.*conv1\.weight \(64, 3, 3, 3\) vs \(64, 3, 7, 7\)'):
        export('resnet18_mod', tmp_path / 'bare.pth', tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('content, error', [
    (None, 'checkpoint not found'),
    (b'not a checkpoint at all', 'cannot read checkpoint'),
    ('truncated', 'cannot read checkpoint'),
])
def test_unreadable_checkpoints_are_refused(content, error, checkpoint, tmp_path):
    path = tmp_path / 'ckpt.pth.tar'
    if content == 'truncated':
        path.write_bytes(checkpoint.read_bytes()[:4096])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(HubError, match=error):
        export(NAME, path, tmp_path / 'out')


def test_unknown_model_and_tag_are_refused(checkpoint, tmp_path):
    with pytest.raises(HubError, match="unknown model 'resnet18'"):
        export('resnet18', checkpoint, tmp_path / 'out')
    with pytest.raises(HubError, match="unknown tag 'in1k'.*c10"):
        export(f'{NAME}.in1k', checkpoint, tmp_path / 'out')


def _contents(folder: Path) -> dict:
    """Every file below `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_a_folder_export_did_not_write_is_never_replaced_even_with_force(checkpoint, tmp_path):
    out = tmp_path / 'exports' / 'out'
    out.mkdir(parents=True)
    (out / 'keep.txt').write_text('mine')
    for force in (False, True):
        with pytest.raises(HubError, match="holds keep.txt, which export does not write: it is never replaced"):
            export(NAME, checkpoint, out, force=force)
    assert _contents(out) == {'keep.txt': b'mine'} and [p.name for p in out.parent.iterdir()] == ['out']


def test_a_previous_export_is_replaced_only_with_force(checkpoint, tmp_path):
    out = export(NAME, checkpoint, tmp_path / 'out')
    before = _contents(out)
    with pytest.raises(HubError, match='not empty: pass --force'):
        export(NAME, checkpoint, out)
    assert _contents(out) == before
    export(NAME, checkpoint, out, force=True, ema=True)
    assert sorted(_contents(out)) == sorted(before) and _contents(out) != before
    assert [p.name for p in tmp_path.iterdir()] == ['out']  # no lock, partial or old folder left


@pytest.mark.parametrize('where', ['run folder', 'runs root', '.', '..'])
def test_the_checkpoints_own_folders_are_never_replaced(where, checkpoint, tmp_path, monkeypatch):
    run = tmp_path / 'output' / 'train' / 'RUN'
    run.mkdir(parents=True)
    shutil.copy(checkpoint, run / 'model_best.pth.tar')
    (run / 'last.pth.tar').write_bytes(b'the last epoch')
    before = _contents(tmp_path)
    monkeypatch.chdir(run)
    out = {'run folder': run, 'runs root': run.parent, '.': '.', '..': '..'}[where]
    with pytest.raises(HubError, match=r'holds .*model_best\.pth\.tar, which this run reads'):
        export(NAME, run / 'model_best.pth.tar', out, force=True)
    assert _contents(tmp_path) == before


@pytest.mark.skipif(os.name == 'nt', reason='the lock is taken with fcntl here')
def test_concurrent_exports_to_one_folder_cannot_both_succeed(checkpoint, tmp_path):
    import fcntl
    out = tmp_path / 'out'
    with open(tmp_path / '.out.lock', 'w') as held:  # a run writing `out` holds this lock
        held.write('4242 on elsewhere')
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(HubError, match='another run .*4242 on elsewhere.* is writing it'):
            export(NAME, checkpoint, out)
    assert not out.exists()
    assert export(NAME, checkpoint, out) == out  # once it ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_a_replacement_that_cannot_be_put_in_place_keeps_the_previous_export(checkpoint, tmp_path, monkeypatch):
    out = export(NAME, checkpoint, tmp_path / 'out')
    previous = _contents(out)
    rename = Path.rename

    def refuse_the_new_folder(self, target):
        if self.name.endswith('.partial'):
            raise OSError(errno.EXDEV, 'Invalid cross-device link')
        return rename(self, target)

    monkeypatch.setattr(Path, 'rename', refuse_the_new_folder)
    with pytest.raises(HubError, match='could not put the new folder in place .*previous one is unchanged'):
        export(NAME, checkpoint, out, force=True)
    assert _contents(out) == previous and sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_a_folder_filled_meanwhile_is_kept(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    check = hub._check_round_trip

    def someone_else_writes(folder, model, registry_name):
        out.mkdir()
        (out / 'theirs.txt').write_text('theirs')
        return check(folder, model, registry_name)

    monkeypatch.setattr(hub, '_check_round_trip', someone_else_writes)
    with pytest.raises(HubError, match='filled by someone else meanwhile'):
        export(NAME, checkpoint, out)
    assert _contents(out) == {'theirs.txt': b'theirs'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_what_an_interrupted_export_left_is_cleaned_or_put_back(checkpoint, tmp_path):
    out = export(NAME, checkpoint, tmp_path / 'out')
    previous = _contents(out)
    # killed after moving the previous export aside and before moving the new one in: the lock of a process that is
    # gone, the previous folder aside, the new one half-written
    out.rename(tmp_path / '.out.0123abcd.old')
    (tmp_path / '.out.4567cdef.partial').mkdir()
    (tmp_path / '.out.4567cdef.partial' / 'model.safetensors').write_bytes(b'half')
    (tmp_path / '.out.lock').write_text(f'999999999 {__import__("socket").gethostname()}')
    with pytest.raises(HubError, match='not empty: pass --force.*moved the previous .* aside: put back.*removed'):
        export(NAME, checkpoint, out)
    assert _contents(out) == previous and sorted(p.name for p in tmp_path.iterdir()) == ['out']


# --- validate.py results


def test_results_from_csv(results_file):
    assert read_results(results_file, NAME) == dict(
        top1=91.25, top5=99.5, img_size='32', crop_pct='1.0', interpolation='bilinear')


def test_results_from_json_pick_the_checkpoint_row(tmp_path):
    path = tmp_path / 'results.json'
    path.write_text(json.dumps([
        dict(model=NAME, top1=80.0, top5=95.0, checkpoint='run/checkpoint-1.pth.tar'),
        dict(model=NAME, top1=81.0, top5=96.0, checkpoint='run/model_best.pth.tar'),
    ]))
    assert read_results(path, NAME, 'elsewhere/model_best.pth.tar')['top1'] == 81.0
    path.write_text(json.dumps(dict(model=f'{NAME}.c10', top1=70.0, top5=90.0)))
    assert read_results(path, NAME)['top5'] == 90.0


def test_results_of_another_model_are_refused(tmp_path):
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(dict(model='resnet50', top1=80.0, top5=95.0)))
    with pytest.raises(HubError, match="results of 'resnet50'"):
        read_results(path, NAME)
    path.write_text(json.dumps(dict(model=NAME, top1_err=20.0)))
    with pytest.raises(HubError, match='top1 and top5'):
        read_results(path, NAME)


# --- model cards


def _context(**overrides):
    """The variables `export` passes to a card template, with small made-up values."""
    context = dict(
        card_data=ModelCardData(
            library_name='timm', license='apache-2.0', pipeline_tag='image-classification',
            tags=['image-classification', 'timm', 'mixture-of-depths'], datasets=['imagenet-1k']),
        model_name='x.in1k', repo_id='org/x.in1k', registry_name=None, architecture='x', baseline='y',
        num_classes=1000, image_size='224 x 224', in_chans=3, params_m=1.0, gmacs=0.1,
        dataset=dict(id='imagenet-1k', name='ImageNet-1k'),
        mod=dict(mod_c=64, mod_reduction=16, mod_fusion='last', mod_routing='random'), results=None,
        training=dict(init_from=None, teacher=None, recipe=dict(epochs=10, opt='momentum', lr=0.1), epoch=10),
        paper=dict(
            table='1', dataset='ImageNet-1k', classes=1000, rows=[dict(name='x', top1=70.0, params_m=1.0, gmacs=0.1)]))
    context.update(overrides)
    return context


def test_every_family_has_a_card_template():
    families = {p.name for p in CARDS_DIR.glob('*.md') if not p.name.startswith('_')}
    assert families == set(CARD_TEMPLATES.values())
    assert {m.rsplit('.', 1)[-1] for m in timm_mod.MODEL_MODULES} == set(CARD_TEMPLATES)


@pytest.mark.parametrize('template', sorted(CARD_TEMPLATES.values()))
@pytest.mark.parametrize('with_mod', [True, False])
def test_every_card_renders_with_hub_metadata(template, with_mod):
    card = ModelCard(render_card(template, **_context(mod=_context()['mod'] if with_mod else {})))
    assert card.data.library_name == 'timm' and card.data.license == 'apache-2.0'
    assert 'transformers' not in card.data.tags and 'image-classification' in card.data.tags
    assert card.data.eval_results is None  # no measured results: no model-index
    blocks = re.findall(r'```python\n(.*?)```', card.text, re.S)
    assert len(blocks) == 3 and all(b.startswith('import timm_mod') for b in blocks)
    assert "'hf-hub:org/x.in1k'" in card.text and 'features_only=True' in card.text and 'num_classes=0' in card.text
    assert 'No measured accuracy' in card.text and 'not from these weights' in card.text
    assert 'CNN Mixture-of-Depths' in card.text and '2409.17016' in card.text
    assert ('MoD-lk' in card.text) == with_mod


def test_card_with_results_has_model_index_and_keeps_the_paper_apart(exported):
    card = ModelCard.load(exported / 'README.md')
    assert card.data.datasets == ['cifar10'] and 'mixture-of-depths' in card.data.tags
    assert {(r.metric_name, r.metric_value) for r in card.data.eval_results} == {
        ('Top-1 accuracy', 91.25), ('Top-5 accuracy', 99.5)}
    measured, paper = card.text.split('### Reported in the paper')
    assert '| 91.25 | 99.50 |' in measured and 'validate.py' in measured
    assert '| 92.37 |' in paper and 'resnet18_cifar (baseline)' in paper  # Table 9, the paper's
    assert f"timm.create_model('{NAME}.c10', pretrained=True)" in card.text


def test_card_of_weights_trained_on_a_local_folder_declares_no_dataset(source, tmp_path):
    """A digits checkpoint (train.py's ImageFolder) under its own repo: neither the checkpoint nor the tag names the
    data, so the card does not claim the registered tag's CIFAR-10 (or ImageNet-1k)."""
    digits = _train_checkpoint(
        tmp_path / 'digits.pth.tar', source, NAME, dataset='', data_dir=str(tmp_path / 'cache' / 'digits'))
    out = export(NAME, digits, tmp_path / 'out', ema=True, repo_id=f'someone/{NAME}.digits')
    card = ModelCard.load(out / 'README.md')
    assert card.data.datasets is None and 'Dataset:' not in card.text
    with pytest.raises(HubError, match='--results needs --dataset'):
        export(NAME, digits, tmp_path / 'out2', ema=True, repo_id=f'someone/{NAME}.digits',
               results=tmp_path / 'results.csv')


def test_card_dataset_follows_the_dataset_flag_or_the_checkpoint(source, tmp_path):
    hub_data = _train_checkpoint(tmp_path / 'hub.pth.tar', source, NAME, dataset='hfids/someone/tiny-digits')
    out = export(NAME, hub_data, tmp_path / 'out', ema=True, repo_id='someone/model')
    assert ModelCard.load(out / 'README.md').data.datasets == ['someone/tiny-digits']
    out = export(NAME, hub_data, tmp_path / 'out', ema=True, repo_id='someone/model', dataset='mnist', force=True)
    assert ModelCard.load(out / 'README.md').data.datasets == ['mnist']


@pytest.mark.parametrize('dataset, train_dataset, tag, expected', [
    ('mnist', 'torch/cifar10', 'in1k', ('mnist', 'mnist')),  # --dataset first
    ('cifar100', '', None, ('cifar100', 'CIFAR-100')),
    (None, 'torch/cifar10', 'in1k', ('cifar10', 'CIFAR-10')),  # then the checkpoint's train.py --dataset
    (None, 'hfds/timm/imagenet-1k-wds', None, ('timm/imagenet-1k-wds', 'timm/imagenet-1k-wds')),
    (None, 'hfids/imagenet-1k', None, ('imagenet-1k', 'ImageNet-1k')),
    (None, 'hfds//data/my-arrow-folder', 'c10', ('cifar10', 'CIFAR-10')),  # a local folder: then the tag
    (None, '', 'c100', ('cifar100', 'CIFAR-100')),  # an ImageFolder
    (None, 'wds/imagenet-1k', None, None),  # shards on disk name no Hub dataset
    (None, '', 'digits', None),
    (None, '', None, None),
])
def test_training_dataset_is_declared_only_when_known(dataset, train_dataset, tag, expected):
    assert cards.training_dataset(dataset, dict(dataset=train_dataset, data_dir='/data/x'), tag) == expected


@pytest.mark.parametrize('model_name, repo_id, tag', [
    (NAME, REPO_ID, 'c10'),  # the tag's own repo
    (NAME, f'someone/{NAME}.c100', 'c100'),
    (f'{NAME}.c100', 'someone/model', 'c100'),  # a tag written in --model
    (NAME, f'someone/{NAME}.digits', 'digits'),
    (NAME, 'someone/model', None),  # --model without a tag falls back to c10's cfg, which says nothing of the data
])
def test_the_exported_tag_is_the_one_the_user_names(model_name, repo_id, tag):
    assert hub._exported_tag(model_name, repo_id, NAME) == tag


# --- command line


class _FakeHfApi:
    calls = []

    def __init__(self, **kwargs):
        self.calls.append(('init', kwargs))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs))
        return type('RepoUrl', (str,), {'repo_id': repo_id})(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, **kwargs):
        self.calls.append(('upload_folder', kwargs))


@pytest.fixture
def fake_export(exported, monkeypatch):
    """`export` copying the module's exported folder: the publish tests are about what happens after it."""
    calls = []

    def copy(model_name, checkpoint, out, **kwargs):
        calls.append(dict(kwargs, model_name=model_name, checkpoint=checkpoint, out=out))
        return Path(shutil.copytree(exported, out))
    monkeypatch.setattr(hub, 'export', copy)
    return calls


def test_publish_dry_run_exports_and_uploads_nothing(fake_export, tmp_path, monkeypatch):
    monkeypatch.setattr(hub, 'HfApi', None)  # any use fails
    hub.main(['publish', '--model', NAME, '--checkpoint', 'ckpt.pth', '--out', str(tmp_path / 'out'),
              '--repo-id', 'someone/x.c10', '--dry-run'])
    assert fake_export[0]['repo_id'] == 'someone/x.c10' and (tmp_path / 'out' / 'model.safetensors').is_file()


def test_publish_creates_the_repo_and_uploads_the_folder(fake_export, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub, 'HfApi', _FakeHfApi)
    monkeypatch.setattr(hub, 'get_token', lambda: 'hf_test')
    _FakeHfApi.calls.clear()
    hub.main(['publish', '--model', NAME, '--checkpoint', 'ckpt.pth', '--out', str(tmp_path / 'out'), '--ema'])
    assert fake_export[0]['repo_id'] == REPO_ID and fake_export[0]['ema']
    (_, init), (_, repo_id, create), (_, upload) = _FakeHfApi.calls
    assert init['library_name'] == 'timm'
    assert repo_id == REPO_ID and create == dict(private=False, exist_ok=True)
    assert upload['repo_id'] == REPO_ID and Path(upload['folder_path']) == tmp_path / 'out'
    assert capsys.readouterr().out.strip() == f'https://huggingface.co/{REPO_ID}'


def test_publish_without_token_stops_before_exporting(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub, 'get_token', lambda: None)
    with pytest.raises(SystemExit) as info:
        hub.main(['publish', '--model', NAME, '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'out')])
    assert info.value.code == 2 and 'HF_TOKEN' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        hub.main(['export', '--model', NAME, '--checkpoint', str(tmp_path / 'no.pth'), '--out', str(tmp_path / 'out')])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f'python -m timm_mod.tools.hub export: error: checkpoint not found: {tmp_path / "no.pth"}')


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        hub.main(['publish', '--help'])
    text = capsys.readouterr().out
    for flag in ('--model', '--checkpoint', '--out', '--ema', '--results', '--repo-id', '--dataset', '--model-kwargs',
                 '--force', '--private', '--commit-message', '--dry-run'):
        assert flag in text


# --- how the weights were made, and loading in transformers

def _distilled_checkpoint(folder: Path, source: torch.nn.Module, init_from: str, teacher: str) -> Path:
    """A run folder as `./train.sh --init-from INIT_FROM` leaves it: the initial weights, with where they came from in
    their metadata, and a train.py checkpoint whose args name them and the teacher the launcher wrote."""
    from safetensors.torch import save_file
    folder.mkdir()
    init = folder / 'init.safetensors'
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(init),
              metadata=dict(format='pt', init_from=init_from, teacher=teacher))
    return _train_checkpoint(
        folder / 'model_best.pth.tar', source, NAME, initial_checkpoint=str(init),
        kd_model_name=f'local-dir:{folder / "teacher"}', kd_distill_type='logit', kd_temperature=4.0,
        distill_loss_weight=1.0, task_loss_weight=1.0, epochs=3, lr=0.01, opt='momentum')


def test_export_records_the_baseline_the_teacher_and_the_recipe(source, tmp_path):
    ckpt = _distilled_checkpoint(tmp_path / 'run', source, 'resnet18.a1_in1k', 'resnet18.a1_in1k')
    out = export(NAME, ckpt, tmp_path / 'out', ema=True, repo_id='someone/x.digits')
    training = json.loads((out / 'config.json').read_text())['training']
    assert (training['init_from'], training['teacher'], training['base_model']) == (
        'resnet18.a1_in1k', 'resnet18.a1_in1k', 'timm/resnet18.a1_in1k')
    assert training['distillation']['kd_temperature'] == 4.0 and training['recipe']['epochs'] == 3
    card = ModelCard.load(out / 'README.md')
    assert card.data.base_model == 'timm/resnet18.a1_in1k'
    assert '**Started from:** resnet18.a1_in1k' in card.text
    assert '**Distilled from:** resnet18.a1_in1k, logit distillation at temperature 4.0' in card.text
    assert 'epochs 3' in card.text and 'after epoch 10' in card.text


@pytest.mark.parametrize('where, label', [
    ('/home/me/out/base/model_best.pth.tar', 'a train.py checkpoint (model_best.pth.tar)'),
    ('local-dir:/home/me/exports/base', 'a local Hub folder (base)'),
])
def test_a_local_baseline_is_named_without_its_path(where, label, source, tmp_path):
    ckpt = _distilled_checkpoint(tmp_path / 'run', source, where, where)
    out = export(NAME, ckpt, tmp_path / 'out', ema=True, repo_id='someone/x.digits')
    training = json.loads((out / 'config.json').read_text())['training']
    assert training['init_from'] == training['teacher'] == label
    assert training['base_model'] is None
    assert '/home/me' not in (out / 'README.md').read_text() + (out / 'config.json').read_text()


def test_a_named_baseline_replaces_the_recorded_one_but_not_the_teacher(source, tmp_path):
    ckpt = _distilled_checkpoint(tmp_path / 'run', source, 'resnet18.a1_in1k', 'resnet18.tv_in1k')
    out = export(NAME, ckpt, tmp_path / 'out', ema=True, repo_id='someone/x.digits', init_from='resnet18.a2_in1k')
    training = json.loads((out / 'config.json').read_text())['training']
    assert (training['init_from'], training['teacher']) == ('resnet18.a2_in1k', 'resnet18.tv_in1k')


def test_initial_weights_that_are_gone_must_be_named(source, tmp_path):
    ckpt = _distilled_checkpoint(tmp_path / 'run', source, 'resnet18.a1_in1k', '')
    (tmp_path / 'run' / 'init.safetensors').unlink()
    with pytest.raises(HubError, match='pass --init-from BASELINE'):
        export(NAME, ckpt, tmp_path / 'out', ema=True, repo_id='someone/x.digits')
    assert not (tmp_path / 'out').exists()
    out = export(NAME, ckpt, tmp_path / 'out', ema=True, repo_id='someone/x.digits', init_from='resnet18.a1_in1k')
    assert json.loads((out / 'config.json').read_text())['training']['init_from'] == 'resnet18.a1_in1k'


def test_an_exported_folder_loads_in_transformers_with_timms_outputs(exported, expected):
    """AutoModelForImageClassification and the image-classification pipeline, after `import timm_mod`."""
    transformers = pytest.importorskip('transformers', reason='transformers (the hf extra) is not installed')
    model = transformers.AutoModelForImageClassification.from_pretrained(str(exported)).eval()
    with torch.no_grad():
        logits = model(pixel_values=_inputs()).logits
    assert torch.equal(logits, expected)
    classify = transformers.pipeline('image-classification', model=str(exported), top_k=3)
    image = __import__('PIL.Image').Image.new('RGB', (40, 40), (120, 30, 200))
    predictions = classify(image)
    assert len(predictions) == 3 and all(0 <= p['score'] <= 1 for p in predictions)


def test_a_bare_state_dict_exports_without_a_training_history(source, tmp_path):
    torch.save(source.state_dict(), tmp_path / 'bare.pth')
    out = export(NAME, tmp_path / 'bare.pth', tmp_path / 'out', repo_id='someone/x.digits')
    training = json.loads((out / 'config.json').read_text())['training']
    assert training['init_from'] is None and training['teacher'] is None and training['epoch'] is None
    assert '## Training' in (out / 'README.md').read_text() and 'after epoch' not in (out / 'README.md').read_text()


# --- a folder cannot make loading lenient or drop the head

def _edited(folder: Path, tmp_path: Path, **changes) -> Path:
    """A copy of an exported folder with config.json fields (dotted paths) set, None deleting one."""
    copy = tmp_path / 'edited'
    shutil.copytree(folder, copy)
    config = json.loads((copy / 'config.json').read_text())
    for key, value in changes.items():
        *path, last = key.split('.')
        node = config
        for part in path:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    (copy / 'config.json').write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize('changes, error', [
    ({'model_args.pretrained_strict': False}, 'model_args sets pretrained_strict, which decide how weights are loaded'),
    ({'model_args.pretrained_cfg_overlay': {}}, 'pretrained_cfg_overlay'),
    ({'num_classes': 1000}, r'disagrees with itself: num_classes 1000, pretrained_cfg\.num_classes 10'),
    ({'pretrained_cfg.num_classes': 7}, r'num_classes 10, pretrained_cfg\.num_classes 7'),
    ({'model_args.num_classes': 1000}, r'model_args\.num_classes 1000'),
    ({'num_classes': '10'}, 'num_classes must be a whole number of classes'),
    ({'model_args.mod_c': 'x'}, 'model_args.mod_c must be a whole number'),
])
def test_a_config_that_would_load_weights_wrongly_is_refused(changes, error, exported, tmp_path):
    folder = _edited(exported, tmp_path, **changes)
    with pytest.raises((RuntimeError, TypeError), match=error):  # timm itself rejects a few before our check
        timm.create_model(f'local-dir:{folder}', pretrained=True)


def test_a_folder_missing_tensors_never_loads(exported, tmp_path):
    from safetensors.torch import load_file, save_file
    folder = _edited(exported, tmp_path)
    weights = {k: v for k, v in load_file(folder / 'model.safetensors').items() if not k.startswith('layer4.')}
    save_file(weights, folder / 'model.safetensors')
    with pytest.raises(RuntimeError, match='layer4'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)


def test_export_publishes_only_the_model_arguments_it_knows(source, tmp_path):
    ckpt = _train_checkpoint(tmp_path / 'ckpt.pth.tar', source, NAME, model_kwargs={'pretrained_strict': False})
    with pytest.raises(HubError, match='model arguments pretrained_strict .* are not published'):
        export(NAME, ckpt, tmp_path / 'out', repo_id='someone/x.digits')
    ckpt = _train_checkpoint(tmp_path / 'ckpt2.pth.tar', source, NAME)
    with pytest.raises(HubError, match='model arguments zero_init_last'):
        export(NAME, ckpt, tmp_path / 'out', repo_id='someone/x.digits', model_kwargs={'zero_init_last': False})
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('repo_id, tag', [(f'someone/{NAME}.digits', 'digits'), ('someone/x', None)])
def test_weights_exported_under_their_own_repo_are_not_tagged_as_the_registered_data(source, checkpoint, tmp_path,
                                                                                     repo_id, tag):
    out = export(NAME, checkpoint, tmp_path / 'out', repo_id=repo_id)
    assert json.loads((out / 'config.json').read_text())['pretrained_cfg'].get('tag') == tag
