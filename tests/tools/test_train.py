"""./train.sh and its launcher: the command each preset builds, the digits data, bad input, and real train.py runs.

The real runs use timm's own train.py wherever one is found without a download ($TIMM_TRAIN_PY, or the cached
checkout in ~/.cache/timm_mod/pytorch-image-models) and are skipped, saying so, elsewhere.
"""
import csv
import math
import os
import shlex
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml
from PIL import Image

import timm_mod.tools.run as tm_run
import timm_mod.tools.train as tm_train
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
    cmd = build_command(name, 'resnet18_mod_cifar', dry_run=True)
    assert _flag(cmd, '--dataset') == f'torch/{name}' and '--dataset-download' in cmd
    assert _flag(cmd, '--data-dir') == str(launch_env / 'cache' / 'data')
    assert (_flag(cmd, '--num-classes'), _flag(cmd, '--img-size'), _flag(cmd, '--crop-pct')) == (classes, '32', '1.0')
    assert (_flag(cmd, '--epochs'), _flag(cmd, '--sched'), _flag(cmd, '--weight-decay')) == ('200', 'cosine', '5e-4')
    assert (_flag(cmd, '--batch-size'), _flag(cmd, '--lr-base'), _flag(cmd, '--lr-base-size')) == ('128', '0.1', '128')
    assert _flag(cmd, '--mean', 3) == [str(v) for v in tm_train.CIFAR_MEAN_STD[name][0]]


def test_folder_dry_run_counts_classes_and_finds_validation(launch_env):
    data = _image_folder(launch_env / 'flowers', splits=('train', 'validation'), per_class={
        'train': 1, 'validation': 1})
    cmd = build_command(str(data), 'resnet18_mod', dry_run=True)
    assert (_flag(cmd, '--data-dir'), _flag(cmd, '--val-split'), _flag(cmd, '--num-classes')) == (
        str(data), 'validation', '2')
    assert _flag(cmd, '--experiment').startswith('flowers-resnet18_mod-')


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
    assert 'set DATA_DIR (or pass --data-dir)' in _fails(['imagenet', 'resnet86_mod'], capsys)


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
    first = tm_train._new_run_dir(tmp_path, 'digits-resnet18_mod', reserve=True)
    second = tm_train._new_run_dir(tmp_path, 'digits-resnet18_mod', reserve=True)
    assert first != second and first.is_dir() and second.is_dir()


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
    out = subprocess.run([sys.executable, '-m', 'timm_mod.tools.run', 'validate.py', '--model', 'x'], capture_output=True,
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


def test_train_sh_help_explains_every_preset_and_variable():
    out = subprocess.run([str(TRAIN_SH), '--help'], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHON=sys.executable)).stdout
    for word in ('imagenet', 'cifar10', 'cifar100', 'digits', 'NPROC', 'NNODES', 'MASTER_ADDR', 'RESUME', 'DRY_RUN',
                 'TIMM_TRAIN_PY', '--resume', '--dry-run'):
        assert word in out


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
