"""The Hub model card of exported weights: what the card shows, where each fact comes from, and the rendering.

Every number in a card is computed at export (parameters, MACs), read from a validate.py results file, or taken from
timm_mod.tools.paper and labelled as the paper's. How the weights were made (the baseline they started from, the
teacher, the recipe) comes from the checkpoint's train.py arguments and the run folder. Templates live in hub_cards/,
one per family, extending hub_cards/_base.md.
"""
import csv
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch.nn as nn
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from timm.models import get_pretrained_cfg, split_model_name_tag

from ..baseline import is_checkpoint_path
from ..models._common import MOD_ARG_TYPES
from ..models.pairing import BASELINES
from ._cli import import_extra
from .complexity import count_gmacs, count_params_m
from .paper import PAPER

__all__ = [
    'HubError', 'CARDS_DIR', 'CARD_TEMPLATES', 'MOD_ARGS', 'arch_of', 'read_results', 'mod_model_args',
    'training_dataset', 'training_record', 'render_card', 'card_context']


def _cards_dir() -> Path:
    """hub_cards/: inside the installed package (a wheel ships it there), else at the top of the source checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / 'hub_cards'
    return installed if installed.is_dir() else package.parent / 'hub_cards'


CARDS_DIR = _cards_dir()
# Card template of each family, keyed by the basename of the module that registers it (timm_mod.MODEL_MODULES)
CARD_TEMPLATES = {
    'mod_resnet': 'resnet_mod.md', 'mod_mobilenetv2': 'mobilenetv2_mod.md', 'mod_cifar': 'cifar.md',
    'mod_timm': 'beyond_paper.md',
}
MOD_ARGS = tuple(MOD_ARG_TYPES)
# Hub dataset id and display name of the data behind each pretrained tag
DATASETS = {'in1k': ('imagenet-1k', 'ImageNet-1k'), 'c10': ('cifar10', 'CIFAR-10'), 'c100': ('cifar100', 'CIFAR-100')}
# The tag of the data behind train.py's --dataset values that are torchvision's copies of them
TORCH_DATASETS = {'torch/imagenet': 'in1k', 'torch/cifar10': 'c10', 'torch/cifar100': 'c100'}


class HubError(Exception):
    """A problem with what export / publish were given; the command line reports it without a traceback."""


def arch_of(model: str) -> Optional[str]:
    """Architecture a timm model string names; None for hf-hub: / local-dir: sources, which do not say offline."""
    return None if ':' in model else split_model_name_tag(model)[0]


def read_results(
        path: Union[str, Path],
        name: str,
        checkpoint: Optional[Union[str, Path]] = None,
) -> Dict[str, Any]:
    """The row of a timm validate.py results file (--results-file, csv or json) that belongs to these weights.

    A file of several rows (validate.py over several models or checkpoints) must hold exactly one row for the
    checkpoint (matched by file name) or, failing that, for the architecture.

    Args:
        path: The results file.
        name: Architecture of the exported model.
        checkpoint: The exported checkpoint.

    Returns:
        top1 and top5 (floats, %) and the evaluation settings validate.py records (img_size, crop_pct, interpolation).
    """
    path = Path(path)
    if not path.is_file():
        raise HubError(f'results file not found: {path}')
    text = path.read_text()
    try:
        rows = json.loads(text) if text.lstrip().startswith(('{', '[')) else list(csv.DictReader(text.splitlines()))
    except json.JSONDecodeError as e:
        raise HubError(f'cannot read results file {path}: {e}') from e
    rows = [r for r in ([rows] if isinstance(rows, dict) else rows) if isinstance(r, dict) and not r.get('error')]
    if len(rows) > 1:
        ckpt_name = Path(checkpoint).name if checkpoint else None
        rows = ([r for r in rows if ckpt_name and Path(r.get('checkpoint') or '').name == ckpt_name]
                or [r for r in rows if arch_of(str(r.get('model', ''))) == name])
    if len(rows) != 1:
        raise HubError(f'{path} must hold one result for {name} (or for its checkpoint), found {len(rows)}')
    row = rows[0]
    arch = arch_of(str(row.get('model', '')))
    if arch and arch != name:
        raise HubError(f"{path} holds results of {row['model']!r}, not of {name!r}")
    try:
        result = dict(top1=float(row['top1']), top5=float(row['top5']))
    except (KeyError, TypeError, ValueError) as e:
        raise HubError(f'{path}: the result needs numeric top1 and top5 (validate.py output), got {row}') from e
    result.update({k: row[k] for k in ('img_size', 'crop_pct', 'interpolation') if row.get(k) not in (None, '')})
    return result


def mod_model_args(model: nn.Module) -> Dict[str, Any]:
    """The MoD settings of a built model as constructor arguments (`timm_mod.mod` records them on every MoD model);
    empty for a model without MoD blocks. `export` proves them by rebuilding the model from config.json."""
    settings = getattr(model, 'mod_settings', None) or {}
    return {f'mod_{k}': settings[k] for k in ('c', 'reduction', 'fusion', 'routing') if k in settings}


def training_dataset(
        dataset: Optional[str],
        train_args: Dict[str, Any],
        tag: Optional[str],
) -> Optional[Tuple[str, str]]:
    """Hub dataset id and display name of the data the weights were trained on; None where that is not known.

    Known from, in this order: `dataset` (--dataset); train.py's --dataset in the checkpoint's args, where it names
    a Hub dataset (hfds/ID, hfids/ID) or a torchvision copy of one (torch/imagenet, torch/cifar10, torch/cifar100);
    the tag the weights are exported under (in1k, c10, c100). A local folder (train.py's default ImageFolder, or
    WebDataset shards) names none: weights trained on one get a card that declares no dataset, unless --dataset
    says which.

    Args:
        dataset: Hub dataset id given by the user.
        train_args: train.py's arguments saved in the checkpoint.
        tag: The tag the weights are exported under, where the user named one; None otherwise.
    """
    names = dict(DATASETS.values())
    if dataset:
        return dataset, names.get(dataset, dataset)
    source = str(train_args.get('dataset') or '')
    if source.lower() in TORCH_DATASETS:
        return DATASETS[TORCH_DATASETS[source.lower()]]
    scheme, _, hub_id = source.partition('/')
    if scheme.lower() in ('hfds', 'hfids'):
        try:
            validate_repo_id(hub_id)
        except HFValidationError:
            pass  # a local dataset folder
        else:
            return hub_id, names.get(hub_id, hub_id)
    return DATASETS.get(tag)


# train.py arguments that describe how the weights were trained, recorded in config.json's 'training' and the card
RECIPE_ARGS = (
    'epochs', 'opt', 'lr', 'sched', 'weight_decay', 'batch_size', 'img_size', 'kd_distill_type', 'kd_temperature',
    'distill_loss_weight', 'task_loss_weight')


def _source_label(source: str) -> str:
    """How a baseline or teacher is named in a public card: a path on the trainer's disk says nothing."""
    if is_checkpoint_path(source):
        return f'a train.py checkpoint ({Path(source).name})'
    if source.startswith('local-dir:'):
        return f'a local Hub folder ({Path(source[len("local-dir:"):]).name})'
    return source


def _hub_id(source: Optional[str]) -> Optional[str]:
    """The Hub repo a baseline's weights come from, for the card's base_model; None for local weights."""
    if not source or is_checkpoint_path(source) or source.startswith('local-dir:'):
        return None
    if source.startswith('hf-hub:'):
        return source[len('hf-hub:'):].split('@')[0]
    try:
        cfg = get_pretrained_cfg(source)
    except RuntimeError:
        return None
    return cfg.hf_hub_id if cfg is not None else None


def _init_metadata(path: Path) -> Dict[str, str]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), 'pt') as f:
            return dict(f.metadata() or {})
    except Exception:  # a .pth initial checkpoint of the user's, or a damaged file: nothing recorded in it
        return {}


def training_record(meta: Dict[str, Any], checkpoint: Path, init_from: Optional[str] = None) -> Dict[str, Any]:
    """How the weights were made, from the checkpoint's train.py arguments: the baseline they started from, the
    teacher they were distilled from, the recipe and the epochs.

    A run that `./train.sh --init-from` started holds its initial weights in the run folder (train.py
    --initial-checkpoint), whose metadata names the baseline and the teacher; the file is looked for where train.py
    read it and beside the checkpoint.

    Args:
        meta: `read_checkpoint`'s metadata ('args', 'epoch').
        checkpoint: The checkpoint file.
        init_from: The baseline the weights started from, where the checkpoint cannot say (it wins over what the
            initial weights' metadata says of the baseline, not of the teacher).

    Raises:
        HubError: the checkpoint started from initial weights that are no longer there and `init_from` is not given.
    """
    args = meta['args']
    initial = args.get('initial_checkpoint') or ''
    record: Dict[str, Any] = {'init_from': init_from, 'teacher': None}
    recorded: Dict[str, str] = {}
    if initial:
        found = next((p for p in (Path(initial), checkpoint.parent / Path(initial).name) if p.is_file()), None)
        if found is None and init_from is None:
            raise HubError(
                f'{checkpoint} was trained from the initial weights {initial}, which are not there (nor beside the '
                f'checkpoint): pass --init-from BASELINE to record where its weights came from')
        recorded = _init_metadata(found) if found is not None else {}
        if init_from is None:
            record['init_from'] = recorded.get('init_from') or Path(initial).name
    teacher = args.get('kd_model_name')
    if teacher:
        # a teacher the launcher wrote into the run folder is named by what it was made from
        record['teacher'] = recorded.get('teacher') or teacher
        record['distillation'] = {k: args.get(k) for k in RECIPE_ARGS if k.startswith(('kd_', 'distill', 'task'))}
    record['recipe'] = {k: args.get(k) for k in RECIPE_ARGS if not k.startswith(('kd_', 'distill', 'task'))}
    # the weights are those after this epoch (of the recipe's 'epochs'); None for a bare state dict
    record['epoch'] = int(meta['epoch']) + 1 if meta.get('epoch') is not None else None
    record['base_model'] = _hub_id(record['init_from'])
    for key in ('init_from', 'teacher'):
        if record[key]:
            record[key] = _source_label(record[key])
    return record


def render_card(template: str, **context) -> str:
    """Render one hub_cards/ template (Jinja2) and check that huggingface_hub parses its metadata.

    Args:
        template: File name in hub_cards/, e.g. 'resnet_mod.md'.
        **context: The template's variables (see `card_context`); `card_data` is a `ModelCardData`.
    """
    jinja2 = import_extra('jinja2', 'tools', 'rendering the model card')
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(CARDS_DIR),
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails the export instead of vanishing from the card
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    context['card_data'] = context['card_data'].to_yaml()
    text = env.get_template(template).render(**context)
    ModelCard(text)  # raises on front matter the Hub would reject
    return text


def _paper_context(name: str, num_classes: int) -> Optional[Dict[str, Any]]:
    """The paper's reported rows for this architecture and its baseline, or None when the paper has none."""
    row = PAPER.get(name)
    if row is None:
        return None
    cifar = row.table == '9'
    classes = 100 if cifar and num_classes == 100 else 10 if cifar else 1000
    rows = []
    for label, key in ((name, name), (f'{BASELINES.get(name)} (baseline)', BASELINES.get(name))):
        paper = PAPER.get(key)
        if paper is not None:
            params = paper.params_m_c100 if classes == 100 else paper.params_m
            rows.append(dict(name=label, top1=paper.top1, params_m=params, gmacs=paper.gmacs))
    return dict(table=row.table, dataset='CIFAR-10' if cifar else 'ImageNet-1k', classes=classes, rows=rows)


def card_context(
        model: nn.Module,
        name: str,
        repo_id: str,
        registry_name: Optional[str],
        model_args: Dict[str, Any],
        dataset: Optional[Tuple[str, str]],
        results: Optional[Dict[str, Any]],
        training: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Everything a card template shows, measured on the model being exported."""
    cfg = model.pretrained_cfg
    mod = {k: model_args[k] for k in MOD_ARGS if k in model_args}
    default_mod = mod_model_args(timm.create_model(name, device='meta'))
    eval_results = None
    if results:
        eval_results = [
            EvalResult(
                task_type='image-classification', dataset_type=dataset[0], dataset_name=dataset[1],
                metric_type='accuracy', metric_name=f'Top-{k} accuracy', metric_value=results[f'top{k}'])
            for k in (1, 5)]
    card_data = ModelCardData(
        library_name='timm',
        license=cfg.get('license', 'apache-2.0'),
        pipeline_tag='image-classification',
        # not 'transformers': these models load only through timm with timm_mod imported
        tags=['image-classification', 'timm'] + (['mixture-of-depths'] if mod else []),
        datasets=[dataset[0]] if dataset else None,
        model_name=repo_id.split('/')[-1] if results else None,  # names the model-index entry
        eval_results=eval_results,
        base_model=(training or {}).get('base_model'),
    )
    return dict(
        card_data=card_data,
        model_name=repo_id.split('/')[-1],
        repo_id=repo_id,
        registry_name=registry_name,
        architecture=name,
        baseline=BASELINES.get(name),
        num_classes=model.num_classes,
        image_size=' x '.join(map(str, cfg['input_size'][1:])),
        in_chans=cfg['input_size'][0],
        params_m=count_params_m(model),
        gmacs=count_gmacs(model),
        mod=mod,
        dataset=dict(id=dataset[0], name=dataset[1]) if dataset else None,
        results=results,
        training=training,
        # the paper's numbers describe its settings: none are shown for a model built with others
        paper=_paper_context(name, model.num_classes) if mod == default_mod else None,
    )
