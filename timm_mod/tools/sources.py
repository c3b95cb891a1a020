"""timm's dataset sources for ./train.sh: what each needs, checked before a run starts.

timm's train.py reads data through ``--dataset SCHEME/NAME`` (`timm.data.create_dataset`), with ``--data-dir`` as
the root the scheme reads from:

* ``hfds/NAME``: a Hugging Face dataset, a Hub id or a local folder, downloaded and prepared once into the datasets
  cache (``--data-dir``, default ``HF_DATASETS_CACHE``), then read by index;
* ``hfids/NAME``: the same datasets, streamed shard by shard and stored nowhere; timm needs each split's size, which
  the dataset card gives (or ``--train-num-samples`` / ``--val-num-samples``);
* ``wds/NAME``: WebDataset .tar shards in ``--data-dir`` and the ``_info.json`` (or ``info.json``) beside them that
  lists each split's shards and size, as timm's Hub datasets ship it; NAME only names the data;
* ``tfds/NAME``: a TensorFlow Datasets dataset prepared in ``--data-dir`` (``--dataset-download`` prepares it).

`inspect_source` checks that the reader's packages are installed and that the data can be reached (the Hub, or
offline the datasets cache; the shards and their index), and reads what the source says about itself: its splits and
their sizes, its image and label columns, its number of classes. `check_split` checks one split against it.
"""
import dataclasses
import importlib
import json
from pathlib import Path
from typing import Dict, Optional, Tuple

from .._offline import offline_unless_reachable
from ._cli import first_line

__all__ = ['SCHEMES', 'SourceError', 'SourceInfo', 'inspect_source', 'check_split', 'check_keys']

# The modules each scheme's timm reader imports (pip installs them under these names, but for _PIP_NAMES)
SCHEMES: Dict[str, Tuple[str, ...]] = {
    'hfds': ('datasets',), 'hfids': ('datasets',), 'wds': ('webdataset',),
    'tfds': ('tensorflow', 'tensorflow_datasets'),
}
_PIP_NAMES = {'tensorflow_datasets': 'tensorflow-datasets'}
# The validation split ./train.sh picks for a PATH: the first of these the source has
EVAL_SPLITS = ('validation', 'val', 'valid', 'test')
# timm's wds reader finds a split's shards and size in the first of these it finds in the shard folder
WDS_INFO_FILES = ('_info.json', 'info.json')


class SourceError(ValueError):
    """A dataset source that train.py could not read, with what to do about it."""


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a source says about itself before its data is read; None or empty where it does not say.

    Attributes:
        source: The ``SCHEME/NAME`` it was inspected as.
        root: The folder it reads from (``--data-dir``), when it has one.
        splits: Each split's size (None when the source names the split without its size); empty when unknown.
        shards: wds only: each split's shard files, relative to `root`.
        columns: Hugging Face datasets only: the column names.
        input_key: The image column, when the source's features say which one it is.
        target_key: The label column, when the source's features say which one it is.
        num_classes: The number of classes, when its label is a ClassLabel.
    """
    source: str
    root: Optional[str] = None
    splits: Dict[str, Optional[int]] = dataclasses.field(default_factory=dict)
    shards: Dict[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    columns: Tuple[str, ...] = ()
    input_key: Optional[str] = None
    target_key: Optional[str] = None
    num_classes: Optional[int] = None

    def eval_split(self) -> str:
        """The split to validate on: the first of validation, val, valid, test the source has (validation if it
        does not list its splits)."""
        return next((s for s in EVAL_SPLITS if s in self.splits), EVAL_SPLITS[0])


def _require(scheme: str) -> Tuple[object, ...]:
    """Import the modules the scheme's timm reader needs, or fail naming the pip packages to install."""
    modules, missing = [], []
    for name in SCHEMES[scheme]:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            missing.append(_PIP_NAMES.get(name, name))
    if missing:
        extra = '' if scheme == 'tfds' else ' (or, in a timm-mod checkout, pip install -e ".[data]")'
        raise SourceError(f'{scheme}/ datasets need {" and ".join(missing)}, not installed here: '
                          f'pip install {" ".join(missing)}{extra}')
    return tuple(modules)


def _hf_columns(features) -> Tuple[Tuple[str, ...], Optional[str], Optional[str], Optional[int]]:
    """Columns, image column, label column and class count of Hugging Face `datasets.Features` (None: unknown)."""
    import datasets
    if not features:
        return (), None, None, None
    columns = tuple(features)
    images = [c for c in columns if isinstance(features[c], datasets.Image)]
    # webdataset-style datasets (timm/imagenet-1k-wds) name columns by file extension: jpg, cls
    input_key = images[0] if len(images) == 1 else next((c for c in ('image', 'jpg') if c in images), None)
    labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
    if len(labels) == 1:
        return columns, input_key, labels[0], features[labels[0]].num_classes
    return columns, input_key, next((c for c in ('label', 'cls') if c in columns), None), None


def _inspect_hf(scheme: str, name: str, data_dir: Optional[str]) -> SourceInfo:
    datasets, = _require(scheme)
    source = f'{scheme}/{name}'
    cache = data_dir or datasets.config.HF_DATASETS_CACHE
    told_offline = datasets.config.HF_HUB_OFFLINE
    try:
        # reads the dataset card and the names of its files (or, offline, the cache), not its data; without a
        # network, at once from the cache rather than after datasets' retries
        with offline_unless_reachable():
            builder = datasets.load_dataset_builder(name, cache_dir=data_dir)
    except ConnectionError as e:
        if told_offline:
            why = 'HF_HUB_OFFLINE is set'
            fix = ('run once online (HF_HUB_OFFLINE unset) to download it there, or pass --data-dir with a datasets '
                   'cache that holds it')
        else:
            why = 'the Hugging Face Hub cannot be reached'
            fix = 'check the network, or pass --data-dir with a datasets cache that holds it'
        raise SourceError(f'{source}: {why} and {name} is not in the datasets cache {cache}: {fix}') from e
    except Exception as e:  # not on the Hub, gated, no data files, ...: datasets says which
        hint = ''
        if 'gated' in str(e):
            hint = (f'; accept its terms at https://huggingface.co/datasets/{name} and log in (hf auth login, or '
                    f'HF_TOKEN)')
        raise SourceError(f'{source}: {first_line(e)}{hint}') from e
    if builder.info.splits:
        splits = {s: info.num_examples or None for s, info in builder.info.splits.items()}
    else:  # data files found, not yet counted (a local folder, a Hub dataset without sizes in its card)
        splits = dict.fromkeys(builder.config.data_files or {})
    columns, input_key, target_key, num_classes = _hf_columns(builder.info.features)
    return SourceInfo(source, root=data_dir, splits=splits, columns=columns, input_key=input_key,
                      target_key=target_key, num_classes=num_classes)


def _inspect_wds(name: str, data_dir: Optional[str]) -> SourceInfo:
    _require('wds')
    source = f'wds/{name}'
    if not data_dir:
        raise SourceError(f'{source} reads its shards from --data-dir (or DATA_DIR): the folder of .tar shards and '
                          f'their {WDS_INFO_FILES[0]}')
    if _remote(data_dir):
        return SourceInfo(source, root=data_dir)  # webdataset reads remote shards and their index itself
    root = Path(data_dir).expanduser().resolve()  # named in full: a relative --data-dir is relative to train.py's cwd
    if not root.is_dir():
        raise SourceError(f'{source}: no shard folder {root}')
    if not any(root.glob('*.tar')):
        raise SourceError(f'{source}: no .tar shards in {root}')
    info_file = next((root / f for f in WDS_INFO_FILES if (root / f).is_file()), None)
    if info_file is None:
        return SourceInfo(source, root=str(root))
    try:
        splits = json.loads(info_file.read_text())['splits']
        return SourceInfo(
            source, root=str(root), splits={s: v.get('num_samples') for s, v in splits.items()},
            shards={s: tuple(v['filenames']) for s, v in splits.items()})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SourceError(f'{source}: {info_file} does not list splits with their filenames and num_samples, as '
                          f'timm\'s wds reader needs ({type(e).__name__}: {first_line(e)})') from e


def _inspect_tfds(name: str, data_dir: Optional[str], download: bool) -> SourceInfo:
    tf, tfds = _require('tfds')
    source = f'tfds/{name}'
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise SourceError(f'{source}: {first_line(e)}') from e
    # TFDS writes dataset_info.json into the dataset's folder when it has prepared it
    if not download and not tf.io.gfile.exists(f'{builder.data_dir}/dataset_info.json'):
        raise SourceError(
            f'{source} is not prepared in {builder.data_dir}: pass --dataset-download to prepare it (some datasets, '
            f'imagenet2012 among them, first need their archives in {data_dir or "~/tensorflow_datasets"}'
            f'/downloads/manual)')
    try:
        num_classes = builder.info.features['label'].num_classes
    except (KeyError, AttributeError):  # no label feature, or not a ClassLabel
        num_classes = None
    return SourceInfo(source, root=data_dir, splits={s: v.num_examples for s, v in builder.info.splits.items()},
                      num_classes=num_classes)


def inspect_source(source: str, data_dir: Optional[str] = None, download: bool = False) -> SourceInfo:
    """Check that train.py can read `source` and read what it says about itself.

    Args:
        source: ``hfds/NAME``, ``hfids/NAME``, ``wds/NAME`` or ``tfds/NAME``, as train.py's ``--dataset``.
        data_dir: train.py's ``--data-dir``: the datasets cache (hfds, hfids), the shard folder (wds) or the TFDS data
            folder (tfds).
        download: train.py's ``--dataset-download`` is given (tfds: prepare a dataset that is not prepared yet).

    Raises:
        SourceError: naming what is missing (a package, the network or the cached dataset, shards, ...) and the fix.
    """
    scheme, _, name = source.partition('/')
    scheme = scheme.lower()  # as timm: only the scheme is case-insensitive
    if scheme not in SCHEMES or not name:
        raise SourceError(f'--dataset {source}: not one of timm\'s dataset sources this launcher checks, '
                          f'{", ".join(s + "/NAME" for s in SCHEMES)}')
    if scheme in ('hfds', 'hfids'):
        return _inspect_hf(scheme, name, data_dir)
    if scheme == 'wds':
        return _inspect_wds(name, data_dir)
    return _inspect_tfds(name, data_dir, download)


def _wds_pattern_split(split: str) -> Tuple[Tuple[str, ...], Optional[int]]:
    """Shards and size of a split given as timm's wds pattern, ``NAME-train-{0000..0099}.tar|SIZE``."""
    from webdataset.shardlists import expand_urls
    pattern, _, size = split.partition('|')
    return tuple(expand_urls(pattern)), int(size) if size.isdigit() else None


def _remote(root: Optional[str]) -> bool:
    return bool(root) and ('://' in root or root.startswith('pipe:'))


def check_split(info: SourceInfo, split: str, training: bool, size_given: bool = False) -> None:
    """Check that the source has `split`, that timm will know its size where it needs it, and (wds) its shards.

    Args:
        info: What `inspect_source` found.
        split: The split name, as train.py's ``--train-split`` / ``--val-split``.
        training: It is the training split (timm's iterable readers need its size).
        size_given: ``--train-num-samples`` / ``--val-num-samples`` gives its size.
    """
    scheme = info.source.split('/')[0].lower()
    if scheme == 'wds' and _remote(info.root):
        return  # webdataset reads remote shards and their index itself
    if scheme == 'wds' and ('tar' in split or '..' in split):  # timm's own test for a shard pattern
        shards, size = _wds_pattern_split(split)
    elif scheme == 'wds' and not info.shards:
        raise SourceError(
            f'{info.source}: no {" or ".join(WDS_INFO_FILES)} in {info.root}, which timm\'s wds reader takes each '
            f'split\'s shards and size from; write one, or give the split as a shard pattern with its size '
            f'(--train-split \'NAME-train-{{0000..0099}}.tar|SIZE\')')
    elif info.splits and split not in info.splits:
        raise SourceError(f'{info.source} has no split {split!r} (it has {", ".join(info.splits)}): pass '
                          f'{"--train-split" if training else "--val-split"} NAME')
    else:
        shards, size = info.shards.get(split, ()), info.splits.get(split)
    if (scheme == 'hfids' or (scheme == 'wds' and training)) and size is None and not size_given:
        raise SourceError(f'{info.source}: timm needs the size of split {split!r} to plan its epochs, and the source '
                          f'does not give it: pass {"--train-num-samples" if training else "--val-num-samples"} N')
    missing = [s for s in shards if not (Path(info.root) / s).is_file()]
    if missing:
        raise SourceError(f'{info.source}: {len(missing)} of the {len(shards)} shards of split {split!r} are not in '
                          f'{info.root} (first: {missing[0]})')


def check_keys(info: SourceInfo, input_key: Optional[str], target_key: Optional[str]) -> None:
    """Check that ``--input-key`` / ``--target-key`` (comma-separated fields allowed) name columns the source has."""
    if not info.columns:
        return
    for flag, keys in (('--input-key', input_key), ('--target-key', target_key)):
        for key in (keys or '').split(','):
            if key and key not in info.columns:
                raise SourceError(f'{info.source} has no column {key!r} for {flag} (it has {", ".join(info.columns)})')

