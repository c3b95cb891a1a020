"""./train.sh and its launcher: the command each preset builds, the digits data, timm's dataset sources, bad input,
and real train.py runs.

The real runs use timm's own train.py wherever one is found without a download ($TIMM_TRAIN_PY, or the cached
checkout in ~/.cache/timm_mod/pytorch-image-models) and are skipped, saying so, elsewhere. Nothing reaches the
network: the Hugging Face datasets are read offline from a datasets cache the tests write as a download leaves it.
"""
import csv
import io
import json
import math
import os
import tarfile
import shlex
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import datasets
import pytest
import timm
import torch
import yaml
from huggingface_hub import constants as hub_constants
from PIL import Image

import timm_mod.tools.run as tm_run
import timm_mod.tools.train as tm_train
from timm_mod.tools._cli import new_run_dir
from timm_mod.tools.train import DIGITS_SIZE, build_command, main, write_digits

REPO = Path(__file__).resolve().parents[2]
TRAIN_SH = REPO / 'train.sh'
LAUNCH_ENV = ('NPROC', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'DATA_DIR', 'RESUME', 'DRY_RUN',
              'SLURM_JOB_ID', 'SLURM_JOB_NUM_NODES', 'SLURM_NODEID', 'SLURM_JOB_NODELIST', 'WORLD_SIZE')


def _flag(cmd: List[str], flag: str, n: int = 1):
    """The value(s) of the last `flag` in a command (argparse semantics: the last one wins)."""
    i = len(cmd) - 1 - cmd[::-1].index(flag)
    return cmd[i + 1] if n == 1 else cmd[i + 1:i + 1 + n]


def _image_folder(root: Path, splits=('train', 'val'), per_class: Dict[str, int] = None) -> Path:
    """A tiny two-class ImageFolder: dark noisy images versus bright ones, 32 px."""
    per_class = per_class or {'train': 16, 'val': 8, 'validation': 8}
    gen = torch.Generator().manual_seed(0)
    for split in splits:
        for cls, base in (('dark', 40), ('bright', 200)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class[split]):
                pixels = (base + torch.randint(-30, 30, (32, 32, 3), generator=gen)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f'{i}.png')
    return root


def _dark_and_bright(n: int, seed: int = 0) -> List[Tuple[bytes, int]]:
    """n 32 px PNG images alternating dark (class 0) and bright (class 1), as (bytes, class)."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        base = 40 if i % 2 == 0 else 200
        pixels = (base + torch.randint(-30, 30, (32, 32, 3), generator=gen)).clamp(0, 255).to(torch.uint8)
        png = io.BytesIO()
        Image.fromarray(pixels.numpy()).save(png, format='PNG')
        samples.append((png.getvalue(), i % 2))
    return samples


def _hf_dataset(root: Path, repo_id: str, image: str = 'image', label: str = 'label',
                sizes: Dict[str, int] = None) -> Tuple[Path, Path]:
    """A small Hugging Face dataset, as a local folder of parquet files and in a datasets cache.

    The cache holds it as downloading `repo_id` from the Hub leaves it (ORG___NAME/default/0.0.0/HASH/, Arrow files
    and dataset_info.json), which is where datasets reads a Hub dataset from offline. A column named 'label' is a
    ClassLabel (dark, bright); any other label column holds plain integers, as the 'cls' of webdataset-style
    datasets such as timm/imagenet-1k-wds.

    Returns:
        The datasets cache and the local folder.
    """
    name = repo_id.split('/')[-1]
    folder = root / 'local' / name  # its name names the cached Arrow files, which the Hub id must match
    label_feature = datasets.ClassLabel(names=['dark', 'bright']) if label == 'label' else datasets.Value('int64')
    features = datasets.Features({image: datasets.Image(), label: label_feature})
    for split, n in (sizes or {'train': 32, 'validation': 16}).items():
        samples = _dark_and_bright(n)
        rows = {image: [{'bytes': png, 'path': None} for png, _ in samples], label: [c for _, c in samples]}
        (folder / 'data').mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / 'data' / f'{split}-00000.parquet')
    cache = root / 'datasets-cache'
    datasets.load_dataset(str(folder), cache_dir=str(cache))  # prepared into the cache, as a download would be
    (cache / name).rename(cache / repo_id.replace('/', '___'))
    return cache, folder


def _wds_shards(root: Path, splits: Dict[str, Tuple[int, int]] = None, info: bool = True) -> Path:
    """WebDataset shards of dark and bright images (NAME.png, NAME.cls) and, with `info`, the _info.json of timm's
    wds reader; `splits` maps a split to its number of shards and samples per shard."""
    root.mkdir(parents=True)
    listed = {}
    for split, (shards, per_shard) in (splits or {'train': (2, 16), 'validation': (1, 16)}).items():
        names = [f'tiny-{split}-{i:04d}.tar' for i in range(shards)]
        for i, shard in enumerate(names):
            with tarfile.open(root / shard, 'w') as tar:
                for j, (png, cls) in enumerate(_dark_and_bright(per_shard, seed=i)):
                    for ext, data in (('png', png), ('cls', str(cls).encode())):
                        member = tarfile.TarInfo(f'{split}-{i:04d}-{j:04d}.{ext}')
                        member.size = len(data)
                        tar.addfile(member, io.BytesIO(data))
        listed[split] = dict(name=split, num_samples=shards * per_shard, filenames=names,
                             shard_lengths=[per_shard] * shards)
    if info:
        (root / '_info.json').write_text(json.dumps(dict(name='tiny', splits=listed)))
    return root


@pytest.fixture(scope='module')
def imagenet_hf_cache(tmp_path_factory) -> Path:
    """A datasets cache holding a tiny stand-in for timm/imagenet-1k-wds, with its columns (jpg, cls) and splits."""
    return _hf_dataset(tmp_path_factory.mktemp('in1k'), 'timm/imagenet-1k-wds', image='jpg', label='cls',
                       sizes={'train': 4, 'validation': 2})[0]


@pytest.fixture(scope='module')
def tiny_hf(tmp_path_factory) -> Tuple[Path, Path]:
    """The datasets cache and local folder of someone/tiny: image, label (ClassLabel of 2), train and validation."""
    return _hf_dataset(tmp_path_factory.mktemp('tiny'), 'someone/tiny', sizes={'train': 4, 'validation': 2})


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    """huggingface_hub and datasets offline (as HF_HUB_OFFLINE=1 sets them), with an empty default datasets cache."""
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', tmp_path / 'empty-datasets-cache')


@pytest.fixture
def launch_env(monkeypatch, tmp_path):
    """A clean launch environment on a CPU machine, a stand-in train.py, a private cache and output folder."""
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    fake = tmp_path / 'timm-checkout' / 'train.py'
    fake.parent.mkdir()
    fake.write_text('raise SystemExit("not to be run")\n')
    monkeypatch.setenv('TIMM_TRAIN_PY', str(fake))
    monkeypatch.setenv('TIMM_MOD_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fails(argv: List[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def _refused(argv: List[str], capsys) -> str:
    """`_fails` as a dry run: a launcher that wrongly accepts `argv` prints its command instead of starting train.py."""
    return _fails(argv + ['--dry-run'], capsys)


# --- the command of each preset ---------------------------------------------------------------------------------

def test_digits_dry_run_is_the_quick_start_recipe_and_writes_nothing(launch_env):
    cmd = build_command('digits', 'resnet18_mod', dry_run=True)
    assert cmd[:4] == [sys.executable, '-m', 'timm_mod.tools.run', str(launch_env / 'timm-checkout' / 'train.py')]
    assert _flag(cmd, '--model') == 'resnet18_mod'
    assert _flag(cmd, '--data-dir') == str(launch_env / 'cache' / 'digits')
    assert [_flag(cmd, f) for f in ('--train-split', '--val-split', '--num-classes')] == ['train', 'val', '10']
    assert (_flag(cmd, '--epochs'), _flag(cmd, '--img-size'), _flag(cmd, '--batch-size')) == ('10', '32', '64')
    assert (_flag(cmd, '--lr-base'), _flag(cmd, '--lr-base-size'), _flag(cmd, '--sched')) == ('0.1', '64', 'cosine')
    assert (_flag(cmd, '--device'), _flag(cmd, '--workers'), _flag(cmd, '--device-modules')) == ('cpu', '1', 'timm_mod')
    assert '--amp' not in cmd
    assert _flag(cmd, '--output') == 'output/train'
    assert _flag(cmd, '--experiment').startswith('digits-resnet18_mod-')
    assert not (launch_env / 'cache' / 'digits').exists() and not (launch_env / 'output').exists()


def test_imagenet_dry_run_is_the_papers_recipe(launch_env, monkeypatch):
    data = _image_folder(launch_env / 'imagenet', per_class={'train': 1, 'val': 1})
    monkeypatch.setenv('DATA_DIR', str(data))
    cmd = build_command('imagenet', 'resnet86_mod', dry_run=True)
    expected = {
        '--epochs': '100', '--opt': 'momentum', '--momentum': '0.9', '--sched': 'step', '--decay-epochs': '30',
        '--decay-rate': '0.1', '--weight-decay': '1e-4', '--warmup-epochs': '0', '--smoothing': '0',
        '--img-size': '224', '--batch-size': '256', '--lr-base': '0.1', '--lr-base-size': '256',
        '--lr-base-scale': 'linear', '--color-jitter': '0', '--data-dir': str(data), '--num-classes': '2',
    }
    assert {k: _flag(cmd, k) for k in expected} == expected
    assert not any('ema' in arg for arg in cmd)
    assert _flag(cmd, '--experiment').startswith('imagenet-resnet86_mod-')


@pytest.mark.parametrize('name,classes', [('cifar10', '10'), ('cifar100', '100')])
def test_cifar_dry_run_uses_timms_torchvision_dataset(launch_env, name, classes):
    (launch_env / 'cache' / 'data' / tm_train.CIFAR_FOLDERS[name]).mkdir(parents=True)  # downloaded before
    cmd = build_command(name, 'resnet18_mod_cifar', dry_run=True)
    assert _flag(cmd, '--dataset') == f'torch/{name}' and '--dataset-download' in cmd
    assert _flag(cmd, '--data-dir') == str(launch_env / 'cache' / 'data')
    assert (_flag(cmd, '--num-classes'), _flag(cmd, '--img-size'), _flag(cmd, '--crop-pct')) == (classes, '32', '1.0')
    assert (_flag(cmd, '--epochs'), _flag(cmd, '--sched'), _flag(cmd, '--weight-decay')) == ('200', 'cosine', '5e-4')
    assert (_flag(cmd, '--batch-size'), _flag(cmd, '--lr-base'), _flag(cmd, '--lr-base-size')) == ('128', '0.1', '128')
    assert _flag(cmd, '--mean', 3) == [str(v) for v in tm_train.CIFAR_MEAN_STD[name][0]]


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_not_downloaded_and_offline_is_refused_at_once_leaving_no_folder(launch_env, name, monkeypatch, capsys):
    monkeypatch.setattr(tm_train, 'reachable', lambda url, timeout=3.0: False)
    err = _fails([name, 'resnet18_mod_cifar'], capsys)
    assert f'no {tm_train.CIFAR_FOLDERS[name]}/' in err and 'cannot be reached' in err and 'DATA_DIR' in err
    assert not (launch_env / 'output').exists()


def test_folder_dry_run_counts_classes_and_finds_validation(launch_env):
    data = _image_folder(launch_env / 'flowers', splits=('train', 'validation'), per_class={
        'train': 1, 'validation': 1})
    cmd = build_command(str(data), 'resnet18_mod', dry_run=True)
    assert (_flag(cmd, '--data-dir'), _flag(cmd, '--val-split'), _flag(cmd, '--num-classes')) == (
        str(data), 'validation', '2')
    assert _flag(cmd, '--experiment').startswith('flowers-resnet18_mod-')


# --- timm's dataset sources ---------------------------------------------------------------------------------------

PAPERS_RECIPE = {'--epochs': '100', '--sched': 'step', '--decay-epochs': '30', '--weight-decay': '1e-4',
                 '--img-size': '224', '--batch-size': '256', '--lr-base': '0.1', '--opt': 'momentum'}


@pytest.mark.parametrize('scheme', ['hfds', 'hfids'])
def test_imagenet_from_the_hub_takes_the_papers_recipe_imagenets_splits_and_the_datasets_columns(
        launch_env, hf_offline, imagenet_hf_cache, scheme):
    source = f'{scheme}/timm/imagenet-1k-wds'
    cmd = build_command('imagenet', 'resnet86_mod', ['--dataset', source, '--data-dir', str(imagenet_hf_cache)],
                        dry_run=True)
    assert {k: _flag(cmd, k) for k in PAPERS_RECIPE} == PAPERS_RECIPE
    data = ('--dataset', '--data-dir', '--train-split', '--val-split', '--input-key', '--target-key', '--num-classes')
    assert [_flag(cmd, k) for k in data] == [
        source, str(imagenet_hf_cache), 'train', 'validation', 'jpg', 'cls', '1000']
    assert _flag(cmd, '--experiment').startswith('imagenet-resnet86_mod-')


def test_imagenet_from_webdataset_shards_in_data_dir(launch_env, monkeypatch):
    shards = _wds_shards(launch_env / 'imagenet-1k-wds')
    monkeypatch.setenv('DATA_DIR', str(shards))
    cmd = build_command('imagenet', 'resnet86_mod', ['--dataset', 'wds/imagenet-1k'], dry_run=True)
    assert {k: _flag(cmd, k) for k in PAPERS_RECIPE} == PAPERS_RECIPE
    assert [_flag(cmd, k) for k in ('--dataset', '--data-dir', '--train-split', '--val-split', '--num-classes')] == [
        'wds/imagenet-1k', str(shards), 'train', 'validation', '1000']
    assert '--input-key' not in cmd  # timm's wds reader finds the image by extension and the label in .cls


def test_folder_preset_reads_a_hugging_face_dataset_and_its_classes_from_the_cache(launch_env, hf_offline, tiny_hf):
    cache, _ = tiny_hf
    cmd = build_command(str(cache), 'resnet18_mod', ['--dataset', 'hfds/someone/tiny'], dry_run=True)
    data = ('--data-dir', '--train-split', '--val-split', '--input-key', '--target-key', '--num-classes')
    assert [_flag(cmd, k) for k in data] == [str(cache), 'train', 'validation', 'image', 'label', '2']
    assert _flag(cmd, '--epochs') == '100'  # the imagenet recipe
    assert _flag(cmd, '--experiment').startswith(f'{cache.name}-resnet18_mod-')


def test_folder_preset_validates_on_the_split_webdataset_shards_have(launch_env):
    shards = _wds_shards(launch_env / 'flowers', splits={'train': (1, 4), 'val': (1, 2)})
    cmd = build_command(str(shards), 'resnet18_mod', ['--dataset', 'wds/flowers', '--num-classes', '2'], dry_run=True)
    assert (_flag(cmd, '--data-dir'), _flag(cmd, '--val-split'), _flag(cmd, '--num-classes')) == (
        str(shards), 'val', '2')


def test_a_local_hugging_face_folder_is_read_by_path(launch_env, tiny_hf):
    _, folder = tiny_hf
    cmd = build_command('imagenet', 'resnet18_mod', ['--dataset', f'hfds/{folder}'], dry_run=True)
    assert (_flag(cmd, '--train-split'), _flag(cmd, '--val-split')) == ('train', 'validation')


def test_extra_arguments_come_last_and_override_the_preset(launch_env):
    cmd = build_command('digits', 'resnet18_mod', ['--epochs', '3', '--output=runs'], dry_run=True)
    assert cmd[-3:] == ['--epochs', '3', '--output=runs'] and _flag(cmd, '--epochs') == '3'
    assert _flag(cmd, '--output') == 'runs'  # our --output follows the user's, so the run folder lands there too


def test_dry_run_prints_the_command_from_flag_or_environment(launch_env, monkeypatch, capsys):
    assert main(['digits', 'resnet18_mod', '--dry-run', '--epochs', '2']) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed[1:3] == ['-m', 'timm_mod.tools.run'] and printed[-2:] == ['--epochs', '2']
    assert '--dry-run' not in printed  # ours, never passed on to train.py
    monkeypatch.setenv('DRY_RUN', '1')
    assert main(['digits', 'resnet18_mod']) == 0
    assert shlex.split(capsys.readouterr().out)[:3] == printed[:3]
    assert not (launch_env / 'output').exists()


# --- scaling out --------------------------------------------------------------------------------------------------

def test_nproc_runs_torchrun_and_splits_the_global_batch(launch_env, monkeypatch):
    monkeypatch.setenv('NPROC', '2')
    cmd = build_command('digits', 'resnet18_mod', dry_run=True)
    assert cmd[:7] == [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--standalone',
                       '-m', 'timm_mod.tools.run']
    assert _flag(cmd, '--batch-size') == '32' and _flag(cmd, '--lr-base-size') == '64'


def test_nodes_from_environment_or_slurm(launch_env, monkeypatch):
    monkeypatch.setenv('NNODES', '2')
    monkeypatch.setenv('NODE_RANK', '1')
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.1')
    monkeypatch.setenv('NPROC', '2')
    cmd = build_command('imagenet', 'resnet18_mod', ['--data-dir', str(_image_folder(launch_env / 'in1k', per_class={
        'train': 1, 'val': 1}))], dry_run=True)
    assert cmd[3:8] == ['--nproc_per_node=2', '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1',
                        '--master_port=29500']
    assert _flag(cmd, '--batch-size') == '64'  # 256 over 2 nodes x 2 processes
    for name in ('NNODES', 'NODE_RANK'):
        monkeypatch.delenv(name)
    monkeypatch.setenv('SLURM_JOB_ID', '7')
    monkeypatch.setenv('SLURM_JOB_NUM_NODES', '4')
    monkeypatch.setenv('SLURM_NODEID', '3')
    topology = tm_train.topology_from_env(os.environ, gpus=0)
    assert (topology.nnodes, topology.node_rank, topology.master_addr, topology.world_size) == (4, 3, '10.0.0.1', 8)


def test_gpu_defaults_and_one_process_per_gpu(launch_env, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    cmd = build_command('digits', 'resnet18_mod', dry_run=True)
    assert '--nproc_per_node=2' in cmd and {'--amp', '--channels-last', '--pin-mem'} <= set(cmd)
    assert '--device' not in cmd and _flag(cmd, '--batch-size') == '32'
    monkeypatch.setenv('NPROC', '3')
    assert 'NPROC=3 processes, but 2 GPU(s)' in _fails(['digits', 'resnet18_mod', '--dry-run'], capsys)
    assert '--amp' not in build_command('digits', 'resnet18_mod', ['--device', 'cpu'], dry_run=True)


# --- bad input fails fast -----------------------------------------------------------------------------------------

def test_unknown_dataset_says_what_was_looked_for(launch_env, capsys):
    err = _fails(['digitz', 'resnet18_mod'], capsys)
    assert "unknown dataset 'digitz'" in err and 'imagenet, cifar10, cifar100, digits' in err
    assert str(launch_env / 'digitz') in err


def test_folder_without_train_or_validation_is_refused(launch_env, capsys):
    (launch_env / 'empty').mkdir()
    assert f'looked for {launch_env / "empty" / "train"}' in _fails([str(launch_env / 'empty'), 'resnet18_mod'], capsys)
    data = _image_folder(launch_env / 'noval', splits=('train',))
    err = _fails([str(data), 'resnet18_mod'], capsys)
    assert f'looked for {data / "val"} and {data / "validation"}' in err


def test_imagenet_without_data_dir_is_refused(launch_env, capsys):
    err = _refused(['imagenet', 'resnet86_mod'], capsys)
    assert 'set DATA_DIR (or pass --data-dir)' in err and '--dataset hfids/timm/imagenet-1k-wds' in err


@pytest.mark.parametrize('scheme,module,fix', [
    ('hfds', 'datasets', 'pip install datasets'),
    ('hfids', 'datasets', 'pip install datasets'),
    ('wds', 'webdataset', 'pip install webdataset'),
    ('tfds', 'tensorflow_datasets', 'pip install tensorflow tensorflow-datasets'),
])
def test_source_without_its_package_names_the_install(launch_env, monkeypatch, capsys, scheme, module, fix):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, 'tensorflow', None)
    (launch_env / 'shards').mkdir()
    err = _refused(['imagenet', 'resnet86_mod', '--dataset', f'{scheme}/imagenet', '--data-dir', 'shards'], capsys)
    assert fix in err
    assert not (launch_env / 'output').exists()


def test_hub_dataset_offline_and_not_cached_is_refused_saying_what_to_do(launch_env, hf_offline, capsys):
    err = _refused(['imagenet', 'resnet86_mod', '--dataset', 'hfds/timm/imagenet-1k-wds'], capsys)
    assert 'HF_HUB_OFFLINE is set and timm/imagenet-1k-wds is not in the datasets cache' in err
    assert str(datasets.config.HF_DATASETS_CACHE) in err and '--data-dir' in err


def test_source_split_or_column_it_does_not_have_is_refused(launch_env, hf_offline, tiny_hf, capsys):
    base = [str(tiny_hf[0]), 'resnet18_mod', '--dataset', 'hfds/someone/tiny']
    assert "has no split 'test' (it has train, validation)" in _refused(base + ['--val-split', 'test'], capsys)
    assert "has no column 'labels' for --target-key (it has image, label)" in _refused(
        base + ['--target-key', 'labels'], capsys)


def test_streamed_source_without_split_sizes_needs_them_given(launch_env, tiny_hf, capsys):
    source = f'hfids/{tiny_hf[1]}'  # a local folder: its files are known, their sizes are not
    assert 'pass --train-num-samples N' in _refused(['imagenet', 'resnet18_mod', '--dataset', source], capsys)
    cmd = build_command('imagenet', 'resnet18_mod', ['--dataset', source, '--train-num-samples', '4',
                                                     '--val-num-samples', '2'], dry_run=True)
    assert _flag(cmd, '--train-num-samples') == '4'


def test_webdataset_folder_problems_are_refused_before_any_work(launch_env, capsys):
    run = ['imagenet', 'resnet86_mod', '--dataset', 'wds/imagenet-1k']
    assert 'wds/imagenet-1k reads its shards from --data-dir' in _refused(run, capsys)
    (launch_env / 'empty').mkdir()
    assert f'no .tar shards in {launch_env / "empty"}' in _refused(run + ['--data-dir', 'empty'], capsys)
    no_info = _wds_shards(launch_env / 'no-info', info=False)
    assert 'no _info.json or info.json in' in _refused(run + ['--data-dir', str(no_info)], capsys)
    shards = _wds_shards(launch_env / 'shards')
    (shards / 'tiny-train-0001.tar').unlink()
    err = _refused(run + ['--data-dir', str(shards)], capsys)
    assert f"1 of the 2 shards of split 'train' are not in {shards} (first: tiny-train-0001.tar)" in err
    assert not (launch_env / 'output').exists()


def test_folder_source_without_a_class_count_needs_num_classes(launch_env, capsys):
    shards = _wds_shards(launch_env / 'flowers')
    err = _refused([str(shards), 'resnet18_mod', '--dataset', 'wds/flowers'], capsys)
    assert 'wds/flowers does not say how many classes it has: pass --num-classes N' in err


def test_source_for_a_preset_with_its_own_data_or_an_unknown_scheme_is_refused(launch_env, capsys):
    assert 'the cifar10 preset reads its own data' in _refused(
        ['cifar10', 'resnet18_mod_cifar', '--dataset', 'hfds/cifar10'], capsys)
    assert "not one of timm's dataset sources" in _refused(['imagenet', 'resnet86_mod', '--dataset', 'foo/bar'], capsys)


def test_unknown_model_names_the_nearest(launch_env, capsys):
    err = _fails(['digits', 'resnet18_md'], capsys)
    assert "unknown model 'resnet18_md'" in err and 'resnet18_mod' in err


def test_bad_nproc_is_refused(launch_env, monkeypatch, capsys):
    monkeypatch.setenv('NPROC', 'two')
    assert 'NPROC=two is not a whole number' in _fails(['digits', 'resnet18_mod'], capsys)
    monkeypatch.setenv('NPROC', '0')
    assert 'NPROC=0 must be at least 1' in _fails(['digits', 'resnet18_mod'], capsys)


def test_nodes_without_master_addr_are_refused(launch_env, monkeypatch, capsys):
    monkeypatch.setenv('NNODES', '2')
    assert 'needs MASTER_ADDR' in _fails(['digits', 'resnet18_mod'], capsys)


def test_resume_with_nothing_to_resume_is_refused(launch_env, monkeypatch, capsys):
    monkeypatch.setenv('RESUME', '1')
    assert 'nothing to resume: no output/train/digits-resnet18_mod-*/last.pth.tar' in _fails(
        ['digits', 'resnet18_mod'], capsys)
    assert 'no checkpoint to resume at nope.pth.tar' in _fails(['digits', 'resnet18_mod', '--resume', 'nope.pth.tar'],
                                                               capsys)


def test_missing_train_py_says_how_to_set_timm_train_py(launch_env, monkeypatch, capsys):
    monkeypatch.setenv('TIMM_TRAIN_PY', str(launch_env / 'nowhere' / 'train.py'))
    assert 'TIMM_TRAIN_PY=' in _fails(['digits', 'resnet18_mod'], capsys)
    # no checkout and no way to clone one (a repository URL that cannot answer, as offline): stop, say what to do
    monkeypatch.delenv('TIMM_TRAIN_PY')
    monkeypatch.setattr(tm_run, 'TIMM_REPO_URL', str(launch_env / 'no-such-repo'))
    err = _fails(['digits', 'resnet18_mod'], capsys)
    assert 'cloning' in err and 'export TIMM_TRAIN_PY=' in err
    assert not (launch_env / 'output').exists() and not (launch_env / 'cache' / 'pytorch-image-models').exists()


# --- starting from a pretrained baseline (--init-from) --------------------------------------------------------------

def _baseline_checkpoint(path: Path, arch: str = 'resnet18', num_classes: int = 10, seed: int = 1) -> Path:
    """A train.py checkpoint of a random timm model, its BN statistics randomised so every tensor tells its origin."""
    import argparse
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'epoch': 9, 'arch': arch, 'state_dict': model.state_dict(),
                'args': argparse.Namespace(model=arch, model_kwargs={}, gp=None)}, path)
    return path


def test_init_from_dry_run_is_the_finetuning_recipe_distilled_from_the_baseline_and_writes_nothing(launch_env):
    baseline = _baseline_checkpoint(launch_env / 'base' / 'model_best.pth.tar')
    cmd = build_command('digits', 'resnet18_mod', dry_run=True, init_from=str(baseline))
    run_dir = launch_env / 'output' / 'train' / _flag(cmd, '--experiment')
    expected = {
        '--epochs': '3', '--sched': 'cosine', '--lr-base': '0.01', '--warmup-epochs': '0',
        '--kd-distill-type': 'logit', '--kd-temperature': '4.0', '--distill-loss-weight': '1.0',
        '--task-loss-weight': '1.0', '--initial-checkpoint': str(run_dir / 'init.safetensors'),
        '--kd-model-name': f'local-dir:{run_dir / "teacher"}'}
    assert {k: _flag(cmd, k) for k in expected} == expected
    assert not (launch_env / 'output').exists() and not (launch_env / 'cache' / 'digits').exists()


def test_init_from_writes_the_copied_weights_and_the_teacher_into_the_new_run_folder(launch_env):
    from safetensors import safe_open
    from timm_mod import init_from_baseline
    baseline = _baseline_checkpoint(launch_env / 'base' / 'model_best.pth.tar')
    cmd = build_command('digits', 'resnet18_mod', init_from=str(baseline))
    run_dir = Path(_flag(cmd, '--initial-checkpoint')).parent
    assert run_dir.parent == (launch_env / 'output' / 'train').resolve()
    theirs = torch.load(baseline, weights_only=False)['state_dict']
    report = init_from_baseline(timm.create_model('resnet18_mod', num_classes=10), str(baseline))
    with safe_open(str(run_dir / 'init.safetensors'), 'pt') as f:
        assert f.metadata()['init_from'] == str(baseline) and f.metadata()['teacher'] == str(baseline)
        assert set(f.keys()) == set(report.copied) | set(report.new)
        assert all(torch.equal(f.get_tensor(k), theirs[k]) for k in report.copied)
    teacher = timm.create_model(_flag(cmd, '--kd-model-name'), pretrained=True, num_classes=10)
    assert all(torch.equal(v, theirs[k]) for k, v in teacher.state_dict().items())


def test_a_timm_name_as_baseline_is_the_teacher_by_name(launch_env, monkeypatch):
    monkeypatch.setattr(tm_train, 'load_baseline', lambda source: timm.create_model('resnet18', num_classes=10))
    cmd = build_command('digits', 'resnet18_mod', dry_run=True, init_from='resnet18.a1_in1k',
                        extras=['--num-classes', '10'])
    assert _flag(cmd, '--kd-model-name') == 'resnet18.a1_in1k' and cmd.count('--kd-model-name') == 1


def test_another_teacher_and_no_teacher(launch_env):
    baseline = _baseline_checkpoint(launch_env / 'base' / 'model_best.pth.tar')
    other = _baseline_checkpoint(launch_env / 'other' / 'model_best.pth.tar', seed=2)
    cmd = build_command('digits', 'resnet18_mod', dry_run=True, init_from=str(baseline),
                        extras=['--kd-model-name', str(other)])
    assert cmd.count('--kd-model-name') == 1 and _flag(cmd, '--kd-model-name').endswith('/teacher')
    cmd = build_command('digits', 'resnet18_mod', dry_run=True, init_from=str(baseline), distill=False)
    assert '--kd-model-name' not in cmd and '--kd-temperature' not in cmd and _flag(cmd, '--epochs') == '3'


def test_init_from_builds_the_model_for_the_presets_classes(launch_env):
    """cifar100's 100 classes come from the preset's own arguments: the copied head and the teacher are 100-class."""
    from safetensors import safe_open
    (launch_env / 'cache' / 'data' / tm_train.CIFAR_FOLDERS['cifar100']).mkdir(parents=True)
    baseline = _baseline_checkpoint(launch_env / 'base' / 'c100.pth', 'resnet18_cifar', num_classes=100)
    cmd = build_command('cifar100', 'resnet18_mod_cifar', init_from=str(baseline))
    with safe_open(_flag(cmd, '--initial-checkpoint'), 'pt') as f:
        assert f.get_slice('fc.weight').get_shape() == [100, 512]


def test_a_node_other_than_node_0_neither_refuses_nor_removes_the_shared_folder(launch_env, monkeypatch):
    for name, value in dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='node0').items():
        monkeypatch.setenv(name, value)
    shared = launch_env / 'output' / 'train' / 'shared'
    shared.mkdir(parents=True)
    (shared / 'init.safetensors').write_bytes(b'node 0 wrote this')
    cmd = build_command('digits', 'resnet18_mod', extras=['--experiment', 'shared'])
    assert cmd.reserved is None and _flag(cmd, '--experiment') == 'shared'
    # train.py failing on this node (the command stands in for torchrun, which would wait for node 0)
    failing = tm_train.Command([sys.executable, '-c', 'raise SystemExit(1)', '--output', str(shared.parent),
                                '--experiment', 'shared'], cmd.reserved)
    assert tm_train.run(failing) == 1
    assert (shared / 'init.safetensors').read_bytes() == b'node 0 wrote this'


def test_init_from_that_cannot_serve_is_refused_before_any_run_folder(launch_env, capsys):
    base = launch_env / 'base'
    err = _refused(['digits', 'resnet18_mod', '--init-from', str(_baseline_checkpoint(base / 'r50.pth', 'resnet50'))],
                   capsys)
    assert 'is no baseline of resnet18_mod: none of its blocks fits' in err
    in1k = _baseline_checkpoint(base / 'in1k.pth', num_classes=1000)
    err = _fails(['digits', 'resnet18_mod', '--init-from', str(in1k)], capsys)
    assert 'predicts 1000 classes and this run trains 10' in err and '--no-distill' in err
    assert 'nope.pth.tar' in _fails(['digits', 'resnet18_mod', '--init-from', str(base / 'nope.pth.tar')], capsys)
    assert "unknown baseline 'resnet18x'" in _fails(['digits', 'resnet18_mod', '--init-from', 'resnet18x'], capsys)
    assert '--no-distill goes with --init-from' in _fails(['digits', 'resnet18_mod', '--no-distill'], capsys)
    assert not (launch_env / 'output').exists()


# --- data, run folders, the launcher ------------------------------------------------------------------------------

def test_digits_are_written_once_as_a_stratified_32px_image_folder(tmp_path):
    from sklearn.datasets import load_digits
    root = write_digits(tmp_path / 'digits')
    counts = {split: Counter(p.parent.name for p in (root / split).glob('*/*.png')) for split in ('train', 'val')}
    per_digit = Counter(load_digits().target.tolist())
    assert sum(counts['train'].values()) == 1433 and sum(counts['val'].values()) == 364
    for digit, n in per_digit.items():
        assert counts['val'][str(digit)] == math.ceil(n / 5) and counts['train'][str(digit)] == n - math.ceil(n / 5)
    assert (root / 'val' / '0' / '0000.png').is_file()  # the first image of each digit is validation
    with Image.open(root / 'train' / '1' / '0011.png') as image:
        assert image.size == (DIGITS_SIZE, DIGITS_SIZE) and image.mode == 'L'
    stamp = (root / 'val' / '0' / '0000.png').stat().st_mtime_ns
    write_digits(root)
    assert (root / 'val' / '0' / '0000.png').stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ['digits']  # no half-written leftovers


def test_each_run_gets_a_new_folder(tmp_path):
    first = new_run_dir(tmp_path, 'digits-resnet18_mod', reserve=True)
    second = new_run_dir(tmp_path, 'digits-resnet18_mod', reserve=True)
    assert first != second and first.is_dir() and second.is_dir()


@pytest.mark.parametrize('flag', ['--experiment', '--exp', '--experim'])
def test_a_named_run_never_overwrites_another(launch_env, flag, capsys):
    """train.py's argparse takes any unique prefix of --experiment: each gets the never-overwrite folder."""
    cmd = build_command('digits', 'resnet18_mod', extras=[flag, 'mine'], dry_run=False)
    run_dir = launch_env / 'output' / 'train' / 'mine'
    assert run_dir.is_dir() and _flag(cmd, '--experiment') == 'mine'
    (run_dir / 'last.pth.tar').write_bytes(b'epoch 9')
    err = _fails(['digits', 'resnet18_mod', f'{flag}=mine'], capsys)
    assert 'exists, and a run never overwrites another' in err and '--resume output/train/mine/last.pth.tar' in err
    assert [p.name for p in run_dir.iterdir()] == ['last.pth.tar'] and (run_dir / 'last.pth.tar').read_bytes() == (
        b'epoch 9')


def _fake_train_py(launch_env: Path, body: str) -> None:
    (launch_env / 'timm-checkout' / 'train.py').write_text(body)


def test_a_launch_that_fails_before_train_py_writes_leaves_no_folder(launch_env, capsys):
    _fake_train_py(launch_env, 'raise SystemExit(3)\n')  # e.g. a dataset download that fails
    assert main(['digits', 'resnet18_mod']) == 3
    assert list((launch_env / 'output' / 'train').iterdir()) == []
    assert 'failed before writing anything: removed' in capsys.readouterr().err
    # a run that wrote something keeps its folder, whatever its end
    _fake_train_py(launch_env, 'import sys, pathlib\n'
                               'i = sys.argv.index("--experiment")\n'
                               'run = pathlib.Path(sys.argv[sys.argv.index("--output") + 1]) / sys.argv[i + 1]\n'
                               '(run / "args.yaml").write_text("model: resnet18_mod")\n'
                               'raise SystemExit(1)\n')
    assert main(['digits', 'resnet18_mod']) == 1
    [run] = (launch_env / 'output' / 'train').iterdir()
    assert [p.name for p in run.iterdir()] == ['args.yaml']


def test_without_the_hub_train_py_reads_the_caches_at_once(launch_env, monkeypatch, capsys):
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(tm_train, 'hub_reachable', lambda timeout=3.0: False)
    seen = launch_env / 'seen'
    _fake_train_py(launch_env, f'import os, pathlib\npathlib.Path({str(seen)!r}).write_text('
                               f'os.environ.get("HF_HUB_OFFLINE", ""))\n')
    assert main(['digits', 'resnet18_mod']) == 0
    assert seen.read_text() == '1' and 'HF_HUB_OFFLINE=1' in capsys.readouterr().err


def test_resume_takes_the_interrupted_runs_arguments(launch_env, capsys):
    run = launch_env / 'output' / 'train' / 'digits-resnet18_mod-20260101-000000'
    run.mkdir(parents=True)
    (run / 'last.pth.tar').write_bytes(b'checkpoint')
    (run / 'args.yaml').write_text('model: resnet18_mod\nepochs: 20\nlr_base: 0.05\n')
    cmd = build_command('digits', 'resnet18_mod', resume='last', dry_run=True)
    rel = run.relative_to(launch_env)
    assert _flag(cmd, '-c') == str(rel / 'args.yaml') and _flag(cmd, '--resume') == str(rel / 'last.pth.tar')
    assert '--epochs' not in cmd and '--lr-base' not in cmd  # the recorded 20 epochs and lr 0.05 stand
    assert _flag(cmd, '--experiment') != run.name
    (run / 'args.yaml').write_text('model: resnet50_mod\n')
    assert 'was trained as resnet50_mod' in _fails(['digits', 'resnet18_mod', '--resume', str(run / 'last.pth.tar'),
                                                    '--dry-run'], capsys)
    assert 'continues from its checkpoint' in _fails(['digits', 'resnet18_mod', '--resume', str(run / 'last.pth.tar'),
                                                      '--init-from', 'resnet18.a1_in1k', '--dry-run'], capsys)


def test_cached_checkout_of_another_version_is_noted_not_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv('TIMM_TRAIN_PY', raising=False)
    monkeypatch.setenv('TIMM_MOD_CACHE', str(tmp_path))
    checkout = tmp_path / 'pytorch-image-models'
    (checkout / 'timm').mkdir(parents=True)
    (checkout / 'train.py').write_text('')
    (checkout / 'timm' / 'version.py').write_text("__version__ = '0.0.1'\n")
    assert tm_run.find_timm_repo() == checkout
    assert 'is version 0.0.1, the installed timm is' in capsys.readouterr().err


def test_launcher_runs_a_script_as_main_with_our_models(tmp_path, monkeypatch):
    script = tmp_path / 'validate.py'
    script.write_text('import sys, timm\nassert __name__ == "__main__"\n'
                      'print(timm.is_model("resnet18_mod"), sys.argv[0].endswith("validate.py"), sys.argv[1:])\n')
    monkeypatch.setenv('TIMM_TRAIN_PY', str(tmp_path / 'validate.py'))  # its folder stands in for timm's checkout
    out = subprocess.run([sys.executable, '-m', 'timm_mod.tools.run', 'validate.py', '--model', 'x'],
                         capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True True ['--model', 'x']"


def test_cpu_ddp_fix_drops_cpu_device_ids_only(tmp_path, monkeypatch):
    ddp = torch.nn.parallel.DistributedDataParallel
    monkeypatch.setattr(ddp, '__init__', ddp.__init__)  # restored after the test
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match='device_ids'):
            ddp(torch.nn.Linear(2, 2), device_ids=[torch.device('cpu')])
        tm_run.fix_cpu_ddp()
        assert ddp(torch.nn.Linear(2, 2), device_ids=[torch.device('cpu')]).device_ids is None
    finally:
        torch.distributed.destroy_process_group()


def test_train_sh_help_names_every_preset_source_variable_and_flag_the_launcher_takes():
    """What --help must explain is read from the launcher itself: its presets, the dataset sources it checks, the
    environment variables it reads (LAUNCH_ENV) and its own flags."""
    out = subprocess.run([str(TRAIN_SH), '--help'], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHON=sys.executable)).stdout
    assert out.startswith(f'usage: {TRAIN_SH}')  # named as it was started
    flags = [a for action in tm_train._parser()._actions for a in action.option_strings if a.startswith('--')]
    variables = [v for v in LAUNCH_ENV if not v.startswith(('SLURM', 'WORLD'))]
    missing = [w for w in [*tm_train.PRESETS, *(f'{s}/NAME' for s in tm_train.SCHEMES), *variables, *flags]
               if w not in out]
    assert not missing


# --- real runs of timm's train.py ---------------------------------------------------------------------------------

def _real_train_py() -> Path:
    env_path = os.environ.get('TIMM_TRAIN_PY')
    repo = Path(env_path).parent if env_path and Path(env_path).is_file() else tm_run.timm_repo_cache()
    if not (repo / 'train.py').is_file():
        pytest.skip(f'timm\'s train.py not found (TIMM_TRAIN_PY unset, no {repo}/train.py): clone '
                    f'{tm_run.TIMM_REPO_URL} there or point TIMM_TRAIN_PY at its train.py to run this test')
    return repo / 'train.py'


@pytest.fixture
def real_run(tmp_path):
    """Runs ./train.sh on a tiny ImageFolder with timm's real train.py, in a clean launch environment."""
    train_py = _real_train_py()
    data = _image_folder(tmp_path / 'tiny')
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(PYTHON=sys.executable, TIMM_TRAIN_PY=str(train_py))
    base = [str(TRAIN_SH), str(data), 'resnet18_mod', '--img-size', '32', '-b', '8', '--log-interval', '1',
            '--output', str(tmp_path / 'out')]
    return base, env, tmp_path / 'out'


def _summary(run_dir: Path) -> List[Dict[str, str]]:
    with (run_dir / 'summary.csv').open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_real_single_process_run(real_run):
    base, env, out = real_run
    proc = subprocess.run(base + ['--epochs', '1'], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = out.iterdir()
    assert run_dir.name.startswith('tiny-resnet18_mod-') and (run_dir / 'last.pth.tar').is_file()
    args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    assert (args['model'], args['device'], args['device_modules'], args['num_classes']) == (
        'resnet18_mod', 'cpu', ['timm_mod'], 2)
    # lr 0.1 per 256 images, scaled linearly to the real global batch of 8
    [row] = _summary(run_dir)
    assert row['epoch'] == '0' and float(row['lr']) == pytest.approx(0.1 * 8 / 256)


@pytest.mark.slow
def test_real_two_process_cpu_run(real_run):
    base, env, out = real_run
    proc = subprocess.run(base + ['--epochs', '1'], env=dict(env, NPROC='2'), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '--nproc_per_node=2' in proc.stdout
    # the global batch is 2 processes x 8 images: twice the single-process learning rate
    [run_dir] = out.iterdir()
    [row] = _summary(run_dir)
    assert row['epoch'] == '0' and float(row['lr']) == pytest.approx(0.1 * 16 / 256)


@pytest.mark.slow
def test_real_run_killed_after_first_epoch_resumes_to_the_end(real_run):
    base, env, out = real_run
    # lr x0.1 after each epoch: the resumed epoch's lr shows the schedule picked up where it stopped
    cmd = base + ['--epochs', '2', '--sched', 'step', '--decay-epochs', '1', '--decay-rate', '0.1']
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = []
    for line in proc.stdout:
        log.append(line)
        if line.startswith('Train: 1 ['):  # epoch 0 is checkpointed, epoch 1 under way: kill it
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, ''.join(log[-30:])
    [killed] = out.iterdir()
    assert [row['epoch'] for row in _summary(killed)] == ['0']

    resumed = subprocess.run(cmd, env=dict(env, RESUME='1'), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'--resume {killed / "last.pth.tar"}' in resumed.stdout
    [new] = [p for p in out.iterdir() if p != killed]
    rows = _summary(new)
    assert [row['epoch'] for row in rows] == ['1']
    assert float(rows[0]['lr']) == pytest.approx(float(_summary(killed)[0]['lr']) * 0.1)
    assert (killed / 'last.pth.tar').is_file()  # the interrupted run's folder is left as it was


def _run_train_sh(args: List[str], tmp_path: Path, **env) -> Tuple[Path, Dict]:
    """Run ./train.sh with timm's real train.py, offline, for one epoch of batch 8 at 32 px; return its run folder
    and train.py's recorded arguments."""
    env = dict({k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}, PYTHON=sys.executable,
               TIMM_TRAIN_PY=str(_real_train_py()), HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf-home'), **env)
    out = tmp_path / 'out'
    cmd = [str(TRAIN_SH), *args, '--img-size', '32', '-b', '8', '--epochs', '1', '--log-interval', '1',
           '--output', str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = out.iterdir()
    return run_dir, yaml.safe_load((run_dir / 'args.yaml').read_text())


@pytest.mark.slow
@pytest.mark.parametrize('scheme', ['hfds', 'hfids'])
def test_real_run_on_a_hugging_face_dataset_offline(tmp_path, scheme):
    cache, _ = _hf_dataset(tmp_path, 'someone/tiny')
    run_dir, args = _run_train_sh([str(cache), 'resnet18_mod', '--dataset', f'{scheme}/someone/tiny'], tmp_path)
    assert (args['dataset'], args['data_dir'], args['train_split'], args['val_split'], args['num_classes']) == (
        f'{scheme}/someone/tiny', str(cache), 'train', 'validation', 2)
    [row] = _summary(run_dir)
    assert row['epoch'] == '0' and 0 <= float(row['eval_top1']) <= 100 and (run_dir / 'last.pth.tar').is_file()


@pytest.mark.slow
def test_real_run_on_webdataset_shards(tmp_path):
    shards = _wds_shards(tmp_path / 'tiny-wds')
    run_dir, args = _run_train_sh([str(shards), 'resnet18_mod', '--dataset', 'wds/tiny', '--num-classes', '2'],
                                  tmp_path)
    assert (args['dataset'], args['data_dir'], args['val_split'], args['num_classes']) == (
        'wds/tiny', str(shards), 'validation', 2)
    [row] = _summary(run_dir)
    assert row['epoch'] == '0' and 0 <= float(row['eval_top1']) <= 100 and (run_dir / 'last.pth.tar').is_file()


@pytest.mark.slow
def test_real_run_started_from_a_baseline_and_distilled_from_it_exports_saying_so(real_run, tmp_path):
    from timm_mod.tools.hub import export
    base, env, out = real_run
    baseline = _baseline_checkpoint(tmp_path / 'base' / 'model_best.pth.tar', num_classes=2)
    proc = subprocess.run(base + ['--init-from', str(baseline), '--epochs', '1'], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'resnet18_mod from ' in proc.stderr and 'MoD blocks' in proc.stderr  # the transfer report
    [run_dir] = out.iterdir()
    args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    assert args['kd_model_name'] == f'local-dir:{run_dir.resolve() / "teacher"}'
    assert args['initial_checkpoint'] == str(run_dir.resolve() / 'init.safetensors')
    assert 'LogitDistillationTask' in proc.stdout + proc.stderr
    [row] = _summary(run_dir)
    assert row['epoch'] == '0' and 0 <= float(row['eval_top1']) <= 100

    folder = export('resnet18_mod', run_dir / 'last.pth.tar', tmp_path / 'hub', repo_id='someone/resnet18_mod.tiny')
    training = json.loads((folder / 'config.json').read_text())['training']
    assert training['init_from'] == training['teacher'] == 'a train.py checkpoint (model_best.pth.tar)'
    assert training['recipe']['epochs'] == 1 and training['distillation']['kd_temperature'] == 4.0
