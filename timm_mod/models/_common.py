"""Settings shared by the timm_mod model families."""
import json
import os
from pathlib import Path
from typing import Any, Dict, FrozenSet, Optional, Type, TypeVar

import torch.nn as nn
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, resolve_pretrained_cfg

from ..convert import mod

__all__ = [
    'HUB_ORG', 'PAPER_ID', 'PUBLISHED', 'WEIGHTS_FILE', 'MoDModelMixin', 'hub_repo_id', 'mod_cfg', 'build_mod_model']

# The Hugging Face organisation that hosts timm_mod weights, set once here; TIMM_MOD_HUB_ORG overrides it.
HUB_ORG = os.environ.get('TIMM_MOD_HUB_ORG', 'timm-mod')
# The `name.tag`s whose weights are published in HUB_ORG, the one list a release updates when it publishes a repo
# (and the README's "Pretrained weights" table with it; a test checks the two agree). Only these cfgs carry a weight
# source, since timm lists every cfg with one as pretrained.
PUBLISHED: FrozenSet[str] = frozenset()
PAPER_ID = 'arXiv:2409.17016'
# The one weight file of a timm_mod Hub repo (`python -m timm_mod.tools.hub export` writes no pickle)
WEIGHTS_FILE = 'model.safetensors'

ModelT = TypeVar('ModelT', bound=nn.Module)
# the MoD keywords of every model and their types
MOD_ARG_TYPES = {'mod_c': int, 'mod_reduction': int, 'mod_fusion': str, 'mod_routing': str}


class MoDModelMixin:
    """Builds a timm model class, then converts it with `timm_mod.mod` (settings recorded as ``mod_settings``).

    Used as ``class ResNetMoD(MoDModelMixin, ResNet)``: the parent takes every argument but these keywords:

    * ``mod_c``: channel reduction c of the MoD blocks, each processing k = C // c channels (default: the class's
      ``default_mod_c``; None there means the paper's rule, `timm_mod.convert.default_c`),
    * ``mod_reduction``: bottleneck ratio r of the channel selector,
    * ``mod_fusion``: where processed channels are added, 'first', 'last' (MoD-lk) or 'original',
    * ``mod_routing``: 'topk' (learned selector) or 'random'.
    """
    default_mod_c: Optional[int] = None

    def __init__(
            self,
            *args,
            mod_c: Optional[int] = None,
            mod_reduction: int = 16,
            mod_fusion: str = 'first',
            mod_routing: str = 'topk',
            **kwargs,
    ):
        super().__init__(*args, **kwargs)
        mod(self, c=self.default_mod_c if mod_c is None else mod_c, reduction=mod_reduction, fusion=mod_fusion,
            routing=mod_routing)


def hub_repo_id(name: str, tag: str) -> str:
    """The Hub repo that holds, or once published will hold, the weights of `name.tag`: 'timm-mod/resnet75_mod.in1k'.

    `python -m timm_mod.tools.hub export` / `publish` default to it; the cfg names it only once it is in PUBLISHED.
    """
    return f'{HUB_ORG}/{name}.{tag}'


def mod_cfg(name: str, tag: str = 'in1k', **kwargs) -> Dict[str, Any]:
    """Pretrained cfg of one `name.tag`, ImageNet-1k defaults (as timm's ResNet `_cfg`) unless overridden.

    Only a published `name.tag` gets a weight source, its Hub repo. `hf_hub_filename` makes timm fetch the
    safetensors file directly: without it timm falls back to looking for a pickled pytorch_model.bin, which our repos
    never hold, and a missing repo is looked up twice.
    """
    source = {}
    if f'{name}.{tag}' in PUBLISHED:
        source = {'hf_hub_id': hub_repo_id(name, tag), 'hf_hub_filename': WEIGHTS_FILE}
    return {
        **source,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'fc',
        'license': 'apache-2.0', 'paper_ids': PAPER_ID,
        **kwargs,
    }


def _missing_weights_reason(error: Exception) -> str:
    if isinstance(error, LocalEntryNotFoundError):  # before EntryNotFoundError, its parent
        if hub_constants.HF_HUB_OFFLINE:
            return 'HF_HUB_OFFLINE is set and they are not in the local cache'
        return 'the Hub could not be reached and they are not in the local cache'
    if isinstance(error, RepositoryNotFoundError):
        return 'the repo does not exist on the Hub (or is private or gated: log in with `hf auth login`)'
    if isinstance(error, RevisionNotFoundError):
        return 'the requested revision does not exist'
    return f'the repo has no {WEIGHTS_FILE}'


# model_args keys that decide how weights are loaded rather than what the model is: a Hub or local folder's config.json
# may not set them (a repo with "pretrained_strict": false would load a file missing half its tensors without a word)
LOADER_ARGS = ('features_only', 'feature_cfg', 'kwargs_filter', 'checkpoint_path', 'cache_dir')


def _read_config(cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """config.json of the folder or Hub repo `cfg` was read from (hf-hub: / local-dir:), as written; None otherwise."""
    if cfg.get('source') == 'local-dir' and cfg.get('file'):
        path = Path(cfg['file']) / 'config.json'
    elif cfg.get('source') == 'hf-hub' and cfg.get('hf_hub_id'):
        from huggingface_hub import hf_hub_download
        repo, _, revision = cfg['hf_hub_id'].partition('@')
        path = Path(hf_hub_download(repo, 'config.json', revision=revision or None))  # already cached by timm
    else:
        return None
    return json.loads(path.read_text())


def check_hub_config(kwargs: Dict[str, Any]) -> None:
    """Refuse a Hub / local folder whose config.json would load its weights wrongly without an error.

    timm takes the number of classes from three fields and resolves a disagreement silently: the model gets one
    count, the pretrained cfg another, and the classifier weights are dropped for a random head. And any model_args key
    becomes a constructor argument, so "pretrained_strict": false makes a file missing tensors load anyway.

    Raises:
        RuntimeError: naming the folder or repo and the fields.
    """
    cfg = kwargs.get('pretrained_cfg')
    cfg = cfg if isinstance(cfg, dict) else getattr(cfg, '__dict__', {})
    config = _read_config(cfg) if isinstance(cfg, dict) else None
    if config is None:
        return
    where = f"config.json of {cfg.get('file') or cfg.get('hf_hub_id')}"
    model_args = config.get('model_args') or {}
    pretrained_cfg = config.get('pretrained_cfg') or {}
    if not isinstance(model_args, dict) or not isinstance(pretrained_cfg, dict):
        raise RuntimeError(f'{where}: model_args and pretrained_cfg must be objects (JSON dicts)')
    loaders = sorted(k for k in model_args if k.startswith('pretrained') or k in LOADER_ARGS)
    if loaders:
        raise RuntimeError(
            f'{where}: model_args sets {", ".join(loaders)}, which decide how weights are loaded, not what the model '
            f'is; refused (remove them from config.json; pass them to create_model yourself if you mean them)')
    counts = {'num_classes': config.get('num_classes'), 'pretrained_cfg.num_classes': pretrained_cfg.get('num_classes'),
              'model_args.num_classes': model_args.get('num_classes')}
    counts = {k: v for k, v in counts.items() if v is not None}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RuntimeError(f'{where}: {key} must be a whole number of classes, got {value!r}')
    if len(set(counts.values())) > 1:
        raise RuntimeError(
            f'{where} disagrees with itself: ' + ', '.join(f'{k} {v}' for k, v in counts.items())
            + '; timm would build one and drop the classifier weights for a random head. Make them agree with the '
              'classifier in model.safetensors')
    for key in ('in_chans', *MOD_ARG_TYPES):
        value = model_args.get(key)
        expected = MOD_ARG_TYPES.get(key, int)
        if value is not None and (isinstance(value, bool) or not isinstance(value, expected)):
            kind = 'a whole number' if expected is int else 'a string'
            raise RuntimeError(f'{where}: model_args.{key} must be {kind}, got {value!r}')


def build_mod_model(
        model_cls: Type[ModelT],
        variant: str,
        pretrained: bool = False,
        **kwargs,
) -> ModelT:
    """timm's `build_model_with_cfg`, failing with what to do when pretrained weights are unpublished or not found.

    Without a weight source timm would log a warning and return a randomly initialised model, which a user who asked
    for pretrained=True can easily miss; so an unpublished `name.tag` fails at once, before anything is built.
    huggingface_hub's own errors do not say which repo was looked up (offline it only says that "the requested
    files" are not in the cache), so a published repo that cannot be fetched fails naming it.

    Args:
        model_cls: Model class.
        variant: Model name, the key of its default cfgs.
        pretrained: Load pretrained weights.
        **kwargs: `build_model_with_cfg` arguments (pretrained_cfg, feature_cfg, ...) and model arguments.
    """
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    name = f'{cfg.architecture}.{cfg.tag}' if cfg.tag else variant
    load_instead = (
        f"Use pretrained=False for random init, or load weights you have: timm.create_model('local-dir:DIR', "
        f"pretrained=True) for an exported folder, 'hf-hub:ORG/REPO' for a Hub repo (config.json rebuilds the "
        f"model), or pretrained_cfg_overlay=dict(file='DIR/{WEIGHTS_FILE}').")
    check_hub_config(kwargs)
    if pretrained and not (cfg.has_weights or cfg.state_dict):
        published = ', '.join(sorted(PUBLISHED)) or 'none yet'
        raise RuntimeError(
            f"No pretrained weights are published for {name} (timm_mod's published weights: {published}; see "
            f"'Pretrained weights' in its README). {load_instead}")
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise RuntimeError(
            f"No pretrained weights for {name}: {_missing_weights_reason(e)} (Hugging Face Hub repo "
            f"'{cfg.hf_hub_id}', cache {hub_constants.HF_HUB_CACHE}). {load_instead} TIMM_MOD_HUB_ORG sets the "
            f"organisation that hosts timm_mod's weights (now '{HUB_ORG}')."
        ) from e
