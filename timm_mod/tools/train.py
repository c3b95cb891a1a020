"""Train any model with timm's own, unmodified train.py: one command, recipes for the paper's data, CPU to many GPUs.

    ./train.sh DATASET MODEL [train.py arguments ...]
    python -m timm_mod.tools.train DATASET MODEL [train.py arguments ...]

DATASET is a preset (below) or the path of an ImageFolder root holding train/ and val/ (or validation/); imagenet
and PATH also read timm's dataset sources (below): the Hugging Face Hub, WebDataset shards, TFDS. The arguments
after MODEL go to train.py last, so they override the preset (--epochs 30, --lr 0.2, ...). A preset's batch is
global, split over the processes; -b/--batch-size keeps train.py's meaning, the batch of one process. The learning
rate follows the real global batch linearly (train.py's --lr-base rule) unless --lr is given.

presets:
  imagenet   the paper's recipe (Appendix A.1): 100 epochs, SGD momentum 0.9, lr 0.1 per 256 images of global
             batch, x0.1 every 30 epochs, weight decay 1e-4, random-resized-crop + flip at 224 px, no warm-up,
             no label smoothing, no EMA. Data: $DATA_DIR or --data-dir, an ImageFolder with train/ and val/, or
             a source: --dataset hfids/timm/imagenet-1k-wds streams it from the Hugging Face Hub.
  cifar10    the standard CIFAR ResNet recipe (the paper gives none): 200 epochs, SGD momentum 0.9, lr 0.1 per
  cifar100   128 images, cosine, weight decay 5e-4, crop + flip at 32 px. Data: timm's torchvision datasets,
             downloaded on first use into $DATA_DIR (default: <cache>/data).
  digits     the quick start: scikit-learn's 1,797 handwritten digits, written once as a 32 px ImageFolder into
             <cache>/digits; 10 epochs, batch 64, SGD lr 0.1 cosine. A 2-core CPU trains resnet18_mod to ~99 %
             in under a minute.
  PATH       your ImageFolder, with the imagenet recipe (override what does not fit, e.g. --epochs, --img-size);
             with --dataset SCHEME/NAME, the folder that source reads from (its --data-dir).

dataset sources (train.py's own --dataset, read by timm's readers; for imagenet and PATH):
  --dataset hfds/NAME   a Hugging Face dataset (a Hub id such as timm/imagenet-1k-wds, or a local folder),
                        downloaded and prepared once into the datasets cache (--data-dir; default HF's), then read
                        by index. Needs: pip install datasets
  --dataset hfids/NAME  the same datasets streamed from the Hub shard by shard, stored nowhere; the split sizes come
                        from the dataset card (else --train-num-samples, --val-num-samples). Needs: datasets
  --dataset wds/NAME    WebDataset .tar shards in --data-dir (or PATH) and their _info.json, which lists each
                        split's shards and size, as timm's Hub datasets ship it. Needs: pip install webdataset
  --dataset tfds/NAME   a TensorFlow Datasets dataset in --data-dir; --dataset-download prepares it.
                        Needs: pip install tensorflow tensorflow-datasets
  Splits: imagenet uses train and validation, ImageNet's names in timm/imagenet-1k-wds, ILSVRC/imagenet-1k and
  TFDS imagenet2012; PATH uses train and the first of validation, val, valid, test the source has. The image and
  label columns (--input-key, --target-key; jpg and cls for timm/imagenet-1k-wds) and, for PATH, the number of
  classes come from the dataset's features where it has them (else pass --num-classes). Every part is checked
  before anything runs, dry runs included: the package, the Hub (offline, HF_HUB_OFFLINE=1: the datasets cache),
  the split names and sizes, the shards. --train-split, --val-split, --input-key, --target-key override.

environment:
  NPROC        processes per node (default: the GPUs present, else 1); more than one runs torchrun
  NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
               span nodes: run the same command on every node. In a SLURM allocation (one ./train.sh per node,
               srun --ntasks-per-node=1) they default to SLURM_JOB_NUM_NODES, SLURM_NODEID and the first host
               of SLURM_JOB_NODELIST
  DATA_DIR     data root of the imagenet and cifar presets (with --dataset, the source's --data-dir)
  RESUME=1     same as --resume
  DRY_RUN=1    same as --dry-run
  TIMM_TRAIN_PY, TIMM_MOD_CACHE
               where timm's train.py is (see python -m timm_mod.tools.run --help); the cache root (~/.cache/timm_mod)

Every run writes a new folder, OUTPUT/DATASET-MODEL-TIMESTAMP (OUTPUT: --output, default output/train): a run never
overwrites another. A resumed run continues from the checkpoint in a new folder and ends at the epoch the
uninterrupted run would have. On a GPU the defaults add --amp --channels-last --pin-mem and data workers sized to
the cores; on a CPU, --device cpu and one worker per process.
"""
import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import timm
import torch
from timm.models import safe_model_name, save_for_hf
from timm.utils import ParseKwargs

from .._offline import hub_reachable, reachable
from ..baseline import BaselineError, BaselineTransfer, init_from_baseline, is_checkpoint_path, load_baseline
from ..checkpoint import CheckpointError
from ..models.mod_cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from ._cli import new_run_dir, unknown_models
from .cards import mod_model_args
from .run import TimmScriptError, cache_root, find_timm_repo, timm_repo_cache
from .sources import SCHEMES, SourceError, check_keys, check_split, inspect_source

__all__ = ['Preset', 'PRESETS', 'Topology', 'UsageError', 'Command', 'build_command', 'run', 'write_digits', 'main']

CIFAR_MEAN_STD = {'cifar10': (CIFAR10_MEAN, CIFAR10_STD), 'cifar100': (CIFAR100_MEAN, CIFAR100_STD)}
VAL_FOLDERS = ('val', 'validation')
# ImageNet-1k's split names in every source timm reads: timm/imagenet-1k-wds (hfds, hfids, and its shards with wds),
# ILSVRC/imagenet-1k, TFDS imagenet2012
IMAGENET_SPLITS = ('train', 'validation')
DIGITS_SIZE = 32
DIGITS_VAL_EVERY = 5  # the 1st, 6th, 11th, ... image of each class (in scikit-learn's order) is validation


class UsageError(ValueError):
    """Bad input, reported before any long work starts."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """A training recipe in train.py's own arguments, plus the batch and learning rate that scale with processes.

    Attributes:
        args: train.py arguments of the recipe, batch size and learning rate excepted.
        global_batch: Images per optimizer step over all processes.
        lr: Learning rate at a global batch of `lr_batch`; train.py scales it linearly to the real global batch.
        lr_batch: The global batch `lr` is given for.
    """
    args: Tuple[str, ...]
    global_batch: int
    lr: float
    lr_batch: int


# SGD with plain (not Nesterov) momentum and weight decay on every parameter, as the classic recipes; timm's
# defaults (Nesterov, no decay on biases and norm weights, colour jitter, random interpolation) are not the paper's.
_SGD = ('--opt', 'momentum', '--momentum', '0.9', '--opt-kwargs', 'filter_bias_and_bn=False')
_PLAIN_AUG = ('--color-jitter', '0', '--train-interpolation', 'bilinear')

IMAGENET = Preset(
    args=_SGD + _PLAIN_AUG + (
        '--weight-decay', '1e-4', '--epochs', '100', '--sched', 'step', '--decay-epochs', '30', '--decay-rate', '0.1',
        '--warmup-epochs', '0', '--smoothing', '0', '--img-size', '224'),
    global_batch=256, lr=0.1, lr_batch=256)


def _cifar(name: str) -> Preset:
    mean, std = CIFAR_MEAN_STD[name]
    return Preset(
        args=_SGD + _PLAIN_AUG + (
            '--weight-decay', '5e-4', '--epochs', '200', '--sched', 'cosine', '--warmup-epochs', '0',
            '--smoothing', '0', '--img-size', '32', '--crop-pct', '1.0', '--scale', '0.6', '1.0',
            '--num-classes', '100' if name == 'cifar100' else '10',
            '--mean', *map(str, mean), '--std', *map(str, std)),
        global_batch=128, lr=0.1, lr_batch=128)


# No flip (digits are not mirror images of each other), a milder crop than ImageNet's, and one ranked checkpoint
# kept: each is 40 MB, and the quick start should not leave half a gigabyte behind.
DIGITS = Preset(
    args=_SGD + (
        '--weight-decay', '5e-4', '--epochs', '10', '--sched', 'cosine', '--warmup-epochs', '0',
        '--img-size', str(DIGITS_SIZE), '--crop-pct', '1.0', '--scale', '0.5', '1.0', '--hflip', '0',
        '--checkpoint-hist', '1'),
    global_batch=64, lr=0.1, lr_batch=64)

PRESETS: Dict[str, Preset] = {
    'imagenet': IMAGENET,
    'cifar10': _cifar('cifar10'),
    'cifar100': _cifar('cifar100'),
    'digits': DIGITS,
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """Processes per node and the nodes they span; more than one process in all means torchrun."""
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    value = env.get(name, '')
    if value == '':
        return default
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f'{name}={value} is not a whole number') from None
    if number < minimum:
        raise UsageError(f'{name}={value} must be at least {minimum}')
    return number


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, '').lower() in ('1', 'true', 'yes', 'on')


def _slurm_first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04]`` style), expanded by SLURM's own scontrol."""
    try:
        proc = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True, text=True)
    except FileNotFoundError:
        proc = None
    if proc is None or proc.returncode or not proc.stdout.split():
        raise UsageError(f'cannot expand SLURM_JOB_NODELIST={nodelist} without scontrol: set MASTER_ADDR')
    return proc.stdout.split()[0]


def topology_from_env(env: Mapping[str, str], gpus: int) -> Topology:
    """Processes and nodes from NPROC, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, or a SLURM allocation."""
    slurm = 'SLURM_JOB_ID' in env and 'NNODES' not in env
    nnodes = _env_int(env, 'SLURM_JOB_NUM_NODES' if slurm else 'NNODES', 1, minimum=1)
    node_rank = _env_int(env, 'SLURM_NODEID' if slurm else 'NODE_RANK', 0)
    if node_rank >= nnodes:
        raise UsageError(f'NODE_RANK={node_rank} must be below NNODES={nnodes}')
    master_addr = env.get('MASTER_ADDR') or None
    if nnodes > 1 and master_addr is None:
        if not slurm:
            raise UsageError(f'NNODES={nnodes} needs MASTER_ADDR, the address of the node with NODE_RANK=0')
        master_addr = _slurm_first_host(env['SLURM_JOB_NODELIST'])
    master_port = _env_int(env, 'MASTER_PORT', 29500 if master_addr else 0) or None
    return Topology(
        nproc=_env_int(env, 'NPROC', max(gpus, 1), minimum=1), nnodes=nnodes, node_rank=node_rank,
        master_addr=master_addr, master_port=master_port)


def _last_value(args: Sequence[str], *flags: str) -> Optional[str]:
    """The value the last of ``--flag VALUE`` / ``--flag=VALUE`` gives in train.py arguments (argparse: last wins)."""
    value = None
    for i, arg in enumerate(args):
        name, eq, inline = arg.partition('=')
        if name in flags:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
    return value


# train.py's options that the launcher reads from the arguments it passes on. train.py's argparse takes any unique
# prefix of an option (--exp for --experiment), so the launcher reads such prefixes as the option they stand for.
READ_OPTIONS = (
    '--experiment', '--output', '--data-dir', '--dataset', '--dataset-download', '--num-classes', '--in-chans',
    '--gp', '--model-kwargs', '--kd-model-name', '--initial-checkpoint', '--seed', '--device', '--epochs',
    '--train-split', '--val-split', '--input-key', '--target-key', '--train-num-samples', '--val-num-samples')


def _spelled_out(args: Sequence[str]) -> List[str]:
    """train.py arguments with every unique prefix of a READ_OPTIONS option written out in full."""
    spelled = []
    for arg in args:
        name, eq, value = arg.partition('=')
        if name.startswith('--') and len(name) > 2 and name not in READ_OPTIONS:
            matches = [o for o in READ_OPTIONS if o.startswith(name)]
            if len(matches) == 1:
                arg = matches[0] + eq + value
        spelled.append(arg)
    return spelled


def _without(args: Sequence[str], flag: str) -> List[str]:
    """train.py arguments without any ``flag VALUE`` / ``flag=VALUE``."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(f'{flag}='):
            kept.append(arg)
    return kept


def _check_model(name: str) -> None:
    """A model name timm knows (hf-hub: and local-dir: models are resolved by train.py itself)."""
    problem = unknown_models([name])
    if problem:
        raise UsageError(problem)


def _image_folder_args(root: Path, what: str) -> List[str]:
    """train.py data arguments of an ImageFolder root, checked: train/ with class folders, and val/ or validation/."""
    train = root / 'train'
    if not train.is_dir():
        raise UsageError(f'{what}: no train/ folder (looked for {train})')
    classes = [p for p in train.iterdir() if p.is_dir()]
    if not classes:
        raise UsageError(f'{what}: {train} has no class folders (an ImageFolder has train/<class>/<image>)')
    val = next((name for name in VAL_FOLDERS if (root / name).is_dir()), None)
    if val is None:
        raise UsageError(f'{what}: no validation folder (looked for {root / "val"} and {root / "validation"})')
    return ['--data-dir', str(root), '--train-split', 'train', '--val-split', val, '--num-classes', str(len(classes))]


def digits_root() -> Path:
    """Where the digits ImageFolder is written: ``<cache root>/digits``."""
    return cache_root() / 'digits'


def write_digits(root: Path) -> Path:
    """Write scikit-learn's handwritten digits as an ImageFolder (once; an existing complete folder is kept).

    The 1,797 8x8 images (17 gray levels) become 32x32 8-bit grayscale PNGs, upscaled bicubically, in
    ``train/<digit>/`` and ``val/<digit>/``, named by their index in scikit-learn's dataset. The split is fixed and
    stratified: the 1st, 6th, 11th, ... image of each digit is validation (364 images), the rest train (1,433).

    Args:
        root: Folder to write; created atomically (written beside it, then renamed), so an interrupted conversion
            is never mistaken for a complete one.

    Returns:
        root.
    """
    if (root / 'train').is_dir() and (root / 'val').is_dir():
        return root
    try:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise UsageError(f'the digits preset needs scikit-learn ({e}): pip install "timm-mod[train]"') from None
    print(f'timm_mod: writing scikit-learn\'s digits as an ImageFolder into {root} (once)', file=sys.stderr)
    digits = load_digits()
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix='.digits-') as tmp:
        seen: Dict[int, int] = {}
        for index, (image, label) in enumerate(zip(digits.images, digits.target)):
            rank = seen[label] = seen.get(label, -1) + 1
            folder = Path(tmp) / 'digits' / ('val' if rank % DIGITS_VAL_EVERY == 0 else 'train') / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(image * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((DIGITS_SIZE, DIGITS_SIZE), Image.BICUBIC).save(folder / f'{index:04d}.png')
        try:
            os.replace(Path(tmp) / 'digits', root)
        except OSError:
            if not (root / 'val').is_dir():  # not a concurrent conversion that finished first
                raise
    return root


def _source_args(source: str, data_dir: Optional[str], extras: Sequence[str], imagenet: bool) -> List[str]:
    """train.py data arguments of a timm dataset source (hfds/, hfids/, wds/, tfds/), checked before the run.

    The splits are ImageNet's (train, validation) for `imagenet`, else train and the source's validation split; the
    image and label columns, and the number of classes of a dataset that is not ImageNet, are the source's own where
    it says. --train-split, --val-split, --input-key, --target-key and --num-classes in `extras` win.
    """
    try:
        info = inspect_source(source, data_dir, download='--dataset-download' in extras)
        train = _last_value(extras, '--train-split') or 'train'
        val = _last_value(extras, '--val-split') or (IMAGENET_SPLITS[1] if imagenet else info.eval_split())
        check_split(info, train, training=True, size_given=_last_value(extras, '--train-num-samples') is not None)
        check_split(info, val, training=False, size_given=_last_value(extras, '--val-num-samples') is not None)
        input_key = _last_value(extras, '--input-key') or info.input_key
        target_key = _last_value(extras, '--target-key') or info.target_key
        check_keys(info, input_key, target_key)
    except SourceError as e:
        raise UsageError(str(e)) from None
    if source.partition('/')[0].lower() in ('hfds', 'hfids') and not info.columns and not (input_key and target_key):
        print(f'timm_mod: note: {source} does not list its columns before its data is read; train.py takes images '
              f'from \'image\' and labels from \'label\' unless --input-key / --target-key say otherwise',
              file=sys.stderr)
    num_classes = 1000 if imagenet else info.num_classes
    if num_classes is None and _last_value(extras, '--num-classes') is None:
        raise UsageError(f'{source} does not say how many classes it has: pass --num-classes N')
    args = ['--dataset', source, *(['--data-dir', data_dir] if data_dir else []), '--train-split', train,
            '--val-split', val]
    args += ['--input-key', input_key] if input_key else []
    args += ['--target-key', target_key] if target_key else []
    return args + (['--num-classes', str(num_classes)] if num_classes else [])


def _dataset(dataset: str, extras: Sequence[str], env: Mapping[str, str]) -> Tuple[str, Preset, List[str]]:
    """The run name of the data, its recipe and train.py's data arguments; checks the data, writes nothing."""
    data_dir = _last_value(extras, '--data-dir') or env.get('DATA_DIR') or None
    source = _last_value(extras, '--dataset') or None
    if source and dataset in PRESETS and dataset != 'imagenet':
        raise UsageError(f'--dataset {source}: the {dataset} preset reads its own data; timm\'s dataset sources go '
                         f'with the imagenet preset or a PATH')
    if dataset == 'imagenet':
        if source:
            return dataset, IMAGENET, _source_args(source, data_dir, extras, imagenet=True)
        if data_dir is None:
            raise UsageError(
                f'imagenet: set DATA_DIR (or pass --data-dir) to an ImageFolder with train/ and val/, or read it '
                f'with one of timm\'s dataset sources, --dataset {", ".join(s + "/NAME" for s in SCHEMES)} (e.g. '
                f'--dataset hfids/timm/imagenet-1k-wds)')
        return dataset, IMAGENET, _image_folder_args(Path(data_dir), f'imagenet in {data_dir}')
    if dataset in CIFAR_MEAN_STD:
        root = data_dir or str(cache_root() / 'data')
        _check_cifar(dataset, Path(root))
        # timm's torch/ datasets read any eval split name as torchvision's test set
        return dataset, PRESETS[dataset], [
            '--dataset', f'torch/{dataset}', '--dataset-download', '--data-dir', root,
            '--train-split', 'train', '--val-split', 'validation']
    if dataset == 'digits':
        return dataset, DIGITS, [
            '--data-dir', str(digits_root()), '--train-split', 'train', '--val-split', 'val', '--num-classes', '10']
    path = Path(dataset).expanduser()
    if not path.is_dir():
        raise UsageError(f'unknown dataset \'{dataset}\': not a preset ({", ".join(PRESETS)}) and no folder '
                         f'{path.resolve()}')
    path = path.resolve()
    if source:  # PATH is the source's --data-dir
        return path.name, IMAGENET, _source_args(
            source, _last_value(extras, '--data-dir') or str(path), extras, imagenet=False)
    return path.name, IMAGENET, _image_folder_args(path, f'dataset folder {path}')


@dataclasses.dataclass(frozen=True)
class FineTune:
    """The recipe of a run started from a pretrained baseline (--init-from), applied on top of the dataset's preset.

    Attributes:
        epoch_fraction: Share of the preset's epochs (at least one).
        lr_scale: Factor on the preset's learning rate.
        temperature: Softmax temperature of the logit distillation (train.py --kd-temperature).
        distill_weight: Weight of the distillation loss (train.py --distill-loss-weight).
        task_weight: Weight of the cross-entropy on the labels (train.py --task-loss-weight).
    """
    epoch_fraction: float = 1 / 3
    lr_scale: float = 0.1
    temperature: float = 4.0
    distill_weight: float = 1.0
    task_weight: float = 1.0

    def args(self, preset: Preset, distill: bool) -> List[str]:
        """train.py arguments that turn `preset` into this recipe: fewer epochs, a cosine schedule, distillation
        (the teacher itself is named apart, by --kd-model-name)."""
        epochs = max(1, round(float(_last_value(preset.args, '--epochs')) * self.epoch_fraction))
        args = ['--epochs', str(epochs), '--sched', 'cosine', '--warmup-epochs', '0']
        if distill:
            args += ['--kd-distill-type', 'logit', '--kd-temperature', str(self.temperature),
                     '--distill-loss-weight', str(self.distill_weight), '--task-loss-weight', str(self.task_weight)]
        return args


FINETUNE = FineTune()
# what a run started from a baseline writes into its run folder: the initial weights (train.py --initial-checkpoint,
# safetensors with how they were made in its metadata) and, for a teacher given as a checkpoint, a folder timm loads
# with local-dir: (train.py --kd-model-name)
INIT_FILE = 'init.safetensors'
TEACHER_DIR = 'teacher'


@dataclasses.dataclass
class _Start:
    """What --init-from and the teacher add to a run, computed and checked before anything is written."""
    init_from: Optional[str]
    transfer: Optional[BaselineTransfer]
    weights: Optional[Dict[str, torch.Tensor]]
    teacher: Optional[str]  # as given
    teacher_model: Optional[torch.nn.Module]  # to write as TEACHER_DIR when the teacher is a checkpoint file


def _model_options(args: Sequence[str]) -> Dict:
    """The model-building arguments among train.py arguments (last wins): num_classes, in_chans, gp, model_kwargs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--num-classes', type=int)
    parser.add_argument('--in-chans', type=int)
    parser.add_argument('--gp')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    known, _ = parser.parse_known_args(list(args))
    kwargs = dict(known.model_kwargs)
    for key in ('num_classes', 'in_chans'):
        if getattr(known, key) is not None:
            kwargs[key] = getattr(known, key)
    if known.gp:
        kwargs['global_pool'] = known.gp
    return kwargs


def _prepare_start(model: str, init_from: Optional[str], teacher: Optional[str], args: Sequence[str]) -> _Start:
    """Load the baseline and the teacher, build the model and copy the baseline into it; check the teacher's classes.

    Everything that can fail here fails before a run folder exists: an unknown or unavailable baseline, one that is
    no baseline of the model, a teacher for other classes than the data's.
    """
    start = _Start(init_from, None, None, teacher, None)
    kwargs = _model_options(args)
    baseline = None
    if init_from:
        try:
            baseline = load_baseline(init_from)
            # the new blocks start from train.py's seed (its default, 42): a rerun starts from the same weights
            torch.manual_seed(int(_last_value(args, '--seed') or 42))
            student = timm.create_model(model, **kwargs)
            start.transfer = dataclasses.replace(init_from_baseline(student, baseline), baseline=init_from)
        except (BaselineError, CheckpointError) as e:
            raise UsageError(f'--init-from {init_from}: {e}') from None
        start.weights = {k: v.contiguous() for k, v in student.state_dict().items()}
    try:
        teacher_model = baseline if teacher == init_from else load_baseline(teacher) if teacher else None
    except (BaselineError, CheckpointError) as e:
        raise UsageError(f'the teacher (--kd-model-name) {teacher}: {e}') from None
    if teacher_model is not None:
        classes = kwargs.get('num_classes', getattr(timm.create_model(model, device='meta'), 'num_classes', None))
        if teacher_model.num_classes != classes:
            raise UsageError(
                f'the teacher {teacher} predicts {teacher_model.num_classes} classes and this run trains '
                f'{classes}: distillation needs a teacher for the same classes. Pass --no-distill to fine-tune '
                f'without one, or --kd-model-name a teacher trained on this data')
        if is_checkpoint_path(teacher):
            start.teacher_model = teacher_model
    return start


def _start_args(start: _Start, run_dir: Path) -> List[str]:
    """The train.py arguments that give a run its initial weights and its teacher (read from `run_dir`)."""
    args = ['--initial-checkpoint', str(run_dir.resolve() / INIT_FILE)] if start.weights is not None else []
    if start.teacher_model is not None:
        args += ['--kd-model-name', f'local-dir:{run_dir.resolve() / TEACHER_DIR}']
    elif start.teacher:
        args += ['--kd-model-name', start.teacher]
    return args


def _write_start(start: _Start, run_dir: Path) -> None:
    """Write the initial weights (how they were made in the file's metadata) and the teacher into the run folder."""
    from safetensors.torch import save_file
    if start.weights is not None:
        metadata = dict(format='pt', init_from=start.init_from, teacher=start.teacher or '',
                        copied=str(len(start.transfer.copied)), new=str(len(start.transfer.new)),
                        recipe=json.dumps(dataclasses.asdict(FINETUNE)))
        save_file(start.weights, str(run_dir / INIT_FILE), metadata=metadata)
    if start.teacher_model is not None:  # with its MoD settings, which timm's own record may not hold
        save_for_hf(start.teacher_model, run_dir / TEACHER_DIR, model_args=mod_model_args(start.teacher_model),
                    safe_serialization=True)


# The folder torchvision's CIFAR datasets extract into, and where they download from
CIFAR_FOLDERS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}
CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/'


def _check_cifar(name: str, root: Path) -> None:
    """torchvision's copy of CIFAR is in `root`, or its download site answers (train.py downloads it there)."""
    if (root / CIFAR_FOLDERS[name]).is_dir() or reachable(CIFAR_URL):
        return
    raise UsageError(
        f'{name}: not in {root} (no {CIFAR_FOLDERS[name]}/) and {CIFAR_URL} cannot be reached to download it. Run '
        f'once with a network to download it there, or set DATA_DIR (or --data-dir) to a folder that holds '
        f'{CIFAR_FOLDERS[name]}/')


def _device_args(device: str, nproc: int, gpus: int) -> List[str]:
    if device.startswith('cuda'):
        if nproc > gpus:
            raise UsageError(f'NPROC={nproc} processes, but {gpus} GPU(s) here (one process per GPU): set NPROC '
                             f'to at most {gpus}, or pass --device cpu')
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
        # every core but one (the process's own) decodes images: ImageNet-rate data loading needs them all
        return ['--amp', '--channels-last', '--pin-mem', '--workers', str(max(1, cores // nproc - 1))]
    # compute already uses every core: one worker per process overlaps image decoding without oversubscribing
    return ['--device', 'cpu', '--workers', '1']


def _launcher(topology: Topology, train_py: Path) -> List[str]:
    run = ['-m', 'timm_mod.tools.run', str(train_py)]
    if topology.world_size == 1:
        return [sys.executable, *run]
    # torchrun as `python -m torch.distributed.run`: the same program, certain to be this interpreter's
    torchrun = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={topology.nproc}']
    if topology.master_addr is None and topology.master_port is None:
        torchrun.append('--standalone')  # a free local port: concurrent single-node runs do not collide
    else:
        torchrun += [f'--nnodes={topology.nnodes}', f'--node_rank={topology.node_rank}',
                     f'--master_addr={topology.master_addr or "127.0.0.1"}', f'--master_port={topology.master_port}']
    return torchrun + run


def _named_run_dir(output: Path, name: str, reserve: bool) -> Path:
    """``output/name`` for --experiment NAME: never one that exists, for a run never overwrites another's."""
    path = output / name
    if name in ('', '.', '..') or '/' in name:
        raise UsageError(f'--experiment {name!r}: a run folder name, without /')
    try:
        if reserve:
            path.mkdir(parents=True)
        elif path.exists():
            raise FileExistsError
    except FileExistsError:
        raise UsageError(f'--experiment {name}: {path} exists, and a run never overwrites another\'s checkpoints. Name '
                         f'another experiment, or continue that run with --resume {path / "last.pth.tar"}') from None
    return path


def _resume_args(checkpoint: Path, model: str) -> List[str]:
    """train.py arguments that resume from `checkpoint` with every argument of the run that wrote it.

    train.py restores the weights, the optimizer, the loss scaler, the EMA weights and the epoch from the checkpoint;
    the interrupted run's args.yaml beside it (train.py --config) restores the rest of its recipe, whatever the
    command line repeated of it. Without args.yaml, the preset's recipe is used.
    """
    args_yaml = checkpoint.parent / 'args.yaml'
    if not args_yaml.is_file():
        print(f'timm_mod: note: no args.yaml beside {checkpoint}: resuming with the preset\'s recipe, not the '
              f'interrupted run\'s arguments', file=sys.stderr)
        return ['--resume', str(checkpoint)]
    import yaml
    try:
        recorded = yaml.safe_load(args_yaml.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f'{args_yaml} is not train.py\'s arguments ({e})') from None
    if not isinstance(recorded, dict) or recorded.get('model') != model:
        raise UsageError(f'{checkpoint} was trained as {recorded.get("model") if isinstance(recorded, dict) else "?"}'
                         f' (its args.yaml), not {model}')
    return ['-c', str(args_yaml), '--resume', str(checkpoint)]


def _last_checkpoint(output: Path, prefix: str) -> Path:
    """last.pth.tar of the most recently saved run named ``prefix-TIMESTAMP`` under `output`."""
    pattern = re.compile(re.escape(prefix) + r'-\d{8}-\d{6}(-\d+)?')
    found = [p for p in output.glob('*/last.pth.tar') if pattern.fullmatch(p.parent.name)]
    if not found:
        raise UsageError(f'nothing to resume: no {output / (prefix + "-*")}/last.pth.tar')
    return max(found, key=lambda p: p.stat().st_mtime)


class Command(list):
    """A train.py (or torchrun) command line, and the run folder this launch reserved for it (None when it reserved
    none: a dry run, or a node other than node 0)."""

    def __init__(self, args: Sequence[str], reserved: Optional[Path]):
        super().__init__(args)
        self.reserved = reserved


def build_command(
        dataset: str,
        model: str,
        extras: Sequence[str] = (),
        resume: Optional[str] = None,
        dry_run: bool = False,
        env: Optional[Mapping[str, str]] = None,
        init_from: Optional[str] = None,
        distill: bool = True,
) -> Command:
    """The train.py (or torchrun) command of one run; checks every input first and fails with a UsageError.

    Args:
        dataset: A preset name or an ImageFolder path.
        model: A model name timm knows (after ``import timm_mod``), or an ``hf-hub:`` name.
        extras: train.py arguments, appended last so they override the preset.
        resume: A checkpoint to resume from, or ``'last'`` for last.pth.tar of the latest run of dataset and model.
        dry_run: Compute the command only: clone nothing, write no data, reserve no run folder.
        env: Environment to read NPROC, NNODES, DATA_DIR, ... from (default: os.environ).
        init_from: A pretrained baseline to start from (see `timm_mod.load_baseline`): its weights are copied into
            the model (`timm_mod.init_from_baseline`), it is the distillation teacher unless `distill` is False or
            --kd-model-name names another, and the run follows the fine-tuning recipe `FINETUNE`.
        distill: With `init_from`, distil from the baseline.
    """
    env = os.environ if env is None else env
    extras = _spelled_out(extras)
    # every check first, then the slow parts (a clone, the digits conversion), then the run folder
    _check_model(model)
    name, preset, data_args = _dataset(dataset, extras, env)
    gpus = torch.cuda.device_count()
    topology = topology_from_env(env, gpus)
    device = _last_value(extras, '--device') or ('cuda' if gpus else 'cpu')
    device_args = _device_args(device, topology.nproc, gpus)
    output = Path(_last_value(extras, '--output') or 'output/train')
    prefix = f'{name}-{safe_model_name(model)}'
    resume_args = []
    if resume:
        if init_from:
            raise UsageError('--init-from starts a new run from a baseline; a resumed run continues from its '
                             'checkpoint')
        checkpoint = _last_checkpoint(output, prefix) if resume == 'last' else Path(resume)
        if not checkpoint.is_file():
            raise UsageError(f'no checkpoint to resume at {checkpoint}')
        resume_args = _resume_args(checkpoint, model)
    if _last_value(extras, '--experiment') is not None and topology.node_rank == 0:  # node 0 owns the folder
        _named_run_dir(output, _last_value(extras, '--experiment'), reserve=False)  # refused before any work
    teacher = _last_value(extras, '--kd-model-name') or (init_from if distill else None)
    if init_from and topology.nnodes > 1 and _last_value(extras, '--experiment') is None:
        raise UsageError('--init-from on several nodes needs --experiment NAME, the same on every node, and an '
                         '--output folder every node sees: each reads the initial weights node 0 writes there')
    start = _prepare_start(model, init_from, teacher, [*preset.args, *data_args, *extras])

    repo = find_timm_repo(clone=not dry_run)
    if repo is None:
        print(f'note: no checkout of timm\'s scripts yet; a real run clones one into {timm_repo_cache()}',
              file=sys.stderr)
        repo = timm_repo_cache()
    if dataset == 'digits' and not dry_run:
        write_digits(digits_root())
    run_args = []
    experiment = _last_value(extras, '--experiment')
    reserve = not dry_run and topology.node_rank == 0  # only node 0 writes: no empty folders on the others
    if experiment is None:
        run_dir = new_run_dir(output, prefix, reserve=reserve)
        run_args = ['--output', str(output), '--experiment', run_dir.name]
    elif topology.node_rank == 0:
        run_dir = _named_run_dir(output, experiment, reserve=reserve)
    else:
        run_dir = output / experiment
    # node 0 writes them; the other nodes read them from the shared folder
    if (start.weights is not None or start.teacher_model is not None) and not dry_run and topology.node_rank == 0:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_start(start, run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # reserved by this launch, holding only what it wrote
            raise
    if start.transfer is not None:
        print(f'timm_mod: {model} {start.transfer}', file=sys.stderr)

    if resume_args and resume_args[0] == '-c':  # the interrupted run's own arguments: no preset, no data arguments
        # --output named here: the recorded one would place a new --experiment elsewhere than where it was checked
        return Command([*_launcher(topology, repo / 'train.py'), *resume_args[:2], *device_args, '--device-modules',
                        'timm_mod', '--output', str(output), *run_args, *resume_args[2:], *extras],
                       run_dir if reserve else None)
    per_process = max(1, preset.global_batch // topology.world_size)
    lr = preset.lr * (FINETUNE.lr_scale if init_from else 1)
    recipe = [*preset.args, '--batch-size', str(per_process), '--lr-base', f'{lr:g}',
              '--lr-base-size', str(preset.lr_batch), '--lr-base-scale', 'linear']
    if init_from:
        recipe += FINETUNE.args(preset, distill=bool(teacher))
    return Command([
        *_launcher(topology, repo / 'train.py'), '--model', model, *data_args, *recipe, *device_args,
        '--device-modules', 'timm_mod', *run_args, *resume_args, *_start_args(start, run_dir),
        *_without(extras, '--kd-model-name')], run_dir if reserve else None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=os.environ.get('TIMM_MOD_PROG') or 'python -m timm_mod.tools.train',
        usage='%(prog)s DATASET MODEL [--dry-run] [--resume [PATH]] [--init-from BASELINE [--no-distill]] '
              '[train.py arguments ...]',
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument('dataset', metavar='DATASET', help=f'a preset ({", ".join(PRESETS)}) or an ImageFolder path')
    parser.add_argument('model', metavar='MODEL', help='a model name (timm\'s or timm_mod\'s), e.g. resnet18_mod')
    parser.add_argument('--dry-run', action='store_true', help='print the command and exit (or DRY_RUN=1)')
    parser.add_argument(
        '--init-from', metavar='BASELINE',
        help='start from a pretrained baseline and distil it: its weights are copied into MODEL wherever they have a '
             'counterpart (stem, head, the standard blocks; the MoD blocks are new), it is the teacher, and the '
             'run follows the fine-tuning recipe (a third of the epochs, a tenth of the learning rate, cosine, '
             'logit distillation at temperature 4). BASELINE: a timm name with its tag (resnet50.a1_in1k), '
             'hf-hub:ORG/NAME, local-dir:FOLDER or a train.py checkpoint')
    parser.add_argument(
        '--no-distill', action='store_true',
        help='with --init-from: fine-tune without a teacher (--kd-model-name names another teacher instead)')
    parser.add_argument(
        '--resume', nargs='?', const='last', metavar='PATH',
        help='resume from the checkpoint PATH; alone (or RESUME=1): from last.pth.tar of the latest run of '
             'DATASET and MODEL under OUTPUT. The resumed run writes a new folder.')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    dry_run = args.dry_run or _env_flag(os.environ, 'DRY_RUN')
    resume = args.resume or ('last' if _env_flag(os.environ, 'RESUME') else None)
    if args.no_distill and not args.init_from:
        parser.exit(2, f'{parser.prog}: error: --no-distill goes with --init-from\n')
    try:
        cmd = build_command(args.dataset, args.model, extras, resume=resume, dry_run=dry_run, init_from=args.init_from,
                            distill=not args.no_distill)
    except (UsageError, TimmScriptError) as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    print(shlex.join(cmd), flush=True)
    if dry_run:
        return 0
    env = dict(os.environ)
    if not env.get('HF_HUB_OFFLINE') and not hub_reachable():
        # timm's readers and downloads would retry for a minute before using the cache: tell them at once
        print('timm_mod: the Hugging Face Hub cannot be reached: train.py runs with HF_HUB_OFFLINE=1 (the local '
              'caches)', file=sys.stderr)
        env['HF_HUB_OFFLINE'] = '1'
    return run(cmd, env)


def _started(run_dir: Path) -> bool:
    """Whether train.py wrote anything into the run folder (what the launcher wrote there does not count)."""
    return run_dir.is_dir() and any(p.name not in (INIT_FILE, TEACHER_DIR) for p in run_dir.iterdir())


def run(cmd: Command, env: Optional[Mapping[str, str]] = None) -> int:
    """Run train.py (or torchrun) and return its exit status; a run that failed before train.py wrote anything leaves
    no folder behind (only the folder this launch reserved, `cmd.reserved`, is ever removed).

    train.py runs as a child in the same process group, so a terminal's Ctrl-C (and a signal to the whole group)
    reaches it directly; SIGTERM and SIGHUP sent to the launcher alone are passed on. A child killed by a signal gives
    the shell's 128 + signal.
    """
    child: List[subprocess.Popen] = []

    def forward(sig, frame):
        if child:
            child[0].send_signal(sig)
        else:  # not started yet: nothing to stop but the launcher
            raise SystemExit(128 + sig)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets it from the terminal
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        child.append(subprocess.Popen(cmd, env=env))
        code = child[0].wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    reserved = getattr(cmd, 'reserved', None)
    if code and reserved is not None and not _started(reserved):
        shutil.rmtree(reserved, ignore_errors=True)  # the launcher's own files only: train.py wrote nothing
        print(f'timm_mod: train.py failed before writing anything: removed {reserved}', file=sys.stderr)
    return 128 - code if code < 0 else code


if __name__ == '__main__':
    sys.exit(main())
