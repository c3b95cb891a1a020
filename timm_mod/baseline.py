"""Start a MoD model from the pretrained weights of its baseline.

A MoD model keeps its baseline's stem, head and standard blocks: resnet50_mod's standard blocks sit where resnet50's
blocks 0, 2, 4, ... of each stage sit. `init_from_baseline` copies every weight that has a counterpart in the
baseline and leaves the MoD blocks as their family initialises them, by one rule for every family:

* stage i of the model takes stage i of the baseline (stages as `timm_mod.convert.find_stages` finds them), and
  block j of a stage takes block j of the baseline's stage. A standard block is copied whole, when the baseline has a
  block j of the same type with the same tensor shapes; otherwise it stays new. A MoD block is always new.
* a stage deeper than the baseline's (resnet75_mod's layer3 has 14 blocks, resnet50's 6) keeps its extra blocks as
  their family initialises them (a ResNet block with its last BN at zero: it starts as an identity); a shallower one
  leaves the baseline's extra blocks unused. The baseline's blocks where the model has MoD blocks are unused too.
* everything outside the stages (stem, head, downsampling between stages) is copied module by module where the
  baseline has a module of the same name, type and shapes: a head for another number of classes stays new.

So resnet75_mod and resnet86_mod take every standard block from resnet101 and three of layer3's from resnet50;
mobilenetv2_mod_l, whose middle stages are wider than mobilenetv2_100's, takes the stem, the head and the blocks
whose shapes agree. What was copied, what is new and what was left is returned as a `BaselineTransfer`.

The baseline is a model or where to get one: a timm name with its pretrained tag ('resnet50.a1_in1k'),
'hf-hub:ORG/NAME', 'local-dir:FOLDER', or a train.py checkpoint (read with weights_only=True); downloads come from
the Hugging Face cache when offline (HF_HUB_OFFLINE=1) or when the Hub cannot be reached.
"""
import dataclasses
import difflib
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from timm.models import get_pretrained_cfg, parse_model_name, split_model_name_tag

from ._offline import hub_reachable, offline_unless_reachable
from .checkpoint import model_from_checkpoint
from .convert import find_stages
from .layers import MoDBlock

__all__ = [
    'BaselineError', 'BaselineTransfer', 'TransferUnit', 'load_baseline', 'init_from_baseline', 'is_checkpoint_path']

# file endings that make a baseline a checkpoint file rather than a model name
CHECKPOINT_SUFFIXES = ('.pth', '.pth.tar', '.pt', '.tar', '.ckpt', '.bin', '.safetensors')
MOD_BLOCKS = 'MoD blocks, as their family initialises them'
NO_COUNTERPART = 'no counterpart in the baseline'


class BaselineError(ValueError):
    """A baseline that cannot be loaded or that does not fit the model; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class TransferUnit:
    """One block or module of the model and what it got from the baseline.

    Attributes:
        name: Its name in the model ('layer1.1', 'conv1', 'fc').
        copied: Whether its weights were copied from the baseline.
        reason: Why it is new, one of a few kinds (empty when copied).
        detail: The difference to the baseline that made it new, where there is one.
        tensors: Its state-dict keys in the model.
        params: Its number of parameters.
        block: Whether it is a block of a stage (else a module outside the stages: stem, head, ...).
    """
    name: str
    copied: bool
    reason: str
    tensors: Tuple[str, ...]
    params: int
    block: bool = True
    detail: str = ''


@dataclasses.dataclass(frozen=True)
class BaselineTransfer:
    """What `init_from_baseline` copied from the baseline into the model, and what it left."""
    baseline: str
    units: Tuple[TransferUnit, ...]
    unused: Tuple[str, ...]  # baseline state-dict keys that nothing took

    @property
    def copied(self) -> List[str]:
        """State-dict keys of the model whose values are the baseline's."""
        return [k for u in self.units if u.copied for k in u.tensors]

    @property
    def new(self) -> List[str]:
        """State-dict keys of the model that keep their initialisation."""
        return [k for u in self.units if not u.copied for k in u.tensors]

    def summary(self) -> str:
        """A few lines: counts and names of the copied and new parts, grouped by why they are new."""
        def params(units):
            return sum(u.params for u in units) / 1e6

        copied = [u for u in self.units if u.copied]
        lines = [f'from {self.baseline}: copied {len(self.copied)} tensors ({params(copied):.2f} M parameters): '
                 f'{", ".join(u.name for u in copied)}']
        reasons: Dict[str, List[TransferUnit]] = {}
        for u in self.units:
            if not u.copied:
                reasons.setdefault(u.reason, []).append(u)
        for reason, units in reasons.items():
            example = next((f' (e.g. {u.name}: {u.detail})' for u in units if u.detail), '')
            lines.append(f'new, {reason}: {sum(len(u.tensors) for u in units)} tensors ({params(units):.2f} M '
                         f'parameters): {", ".join(u.name for u in units)}{example}')
        if self.unused:
            lines.append(f'left unused: {len(self.unused)} tensors of the baseline')
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.summary()


def is_checkpoint_path(source: str) -> bool:
    """Whether a baseline or teacher names a checkpoint file rather than a model (a timm name, hf-hub:, local-dir:)."""
    if source.startswith(('hf-hub:', 'local-dir:')):
        return False
    return source.endswith(CHECKPOINT_SUFFIXES) or Path(source).expanduser().is_file()


def _missing(name: str, repo: Optional[str], error: Exception) -> BaselineError:
    if isinstance(error, RepositoryNotFoundError):
        why = 'the repo does not exist on the Hub (or is private or gated: log in with `hf auth login`)'
    elif isinstance(error, RevisionNotFoundError):
        why = 'the requested revision does not exist'
    elif hub_constants.HF_HUB_OFFLINE:
        why = f'HF_HUB_OFFLINE is set and they are not in the Hugging Face cache {hub_constants.HF_HUB_CACHE}'
    elif not hub_reachable():
        why = f'the Hub cannot be reached and they are not in the Hugging Face cache {hub_constants.HF_HUB_CACHE}'
    else:
        why = (f'the Hub could not be reached and they are not in the Hugging Face cache {hub_constants.HF_HUB_CACHE} '
               f'({type(error).__name__})')
    where = f" (Hugging Face Hub repo '{repo}')" if repo else ''
    return BaselineError(
        f'cannot load the weights of baseline {name}{where}: {why}. Download them once online (python -c "import '
        f'timm; timm.create_model(\'{name}\', pretrained=True)"), or pass a train.py checkpoint or local-dir:FOLDER')


def load_baseline(source: Union[str, Path, nn.Module]) -> nn.Module:
    """The pretrained baseline a MoD model starts from, in eval mode.

    Args:
        source: A model (returned as it is), a timm name with its pretrained tag ('resnet50.a1_in1k'; a bare name
            takes timm's default tag), 'hf-hub:ORG/NAME', 'local-dir:FOLDER' or a train.py checkpoint file.

    Raises:
        BaselineError: an unknown model, a model without pretrained weights, weights that are not in the cache
            offline, a missing folder.
        CheckpointError: a checkpoint that cannot be read or does not fit its architecture.
    """
    if isinstance(source, nn.Module):
        return source.eval()
    source = str(source)
    if is_checkpoint_path(source):
        return model_from_checkpoint(Path(source).expanduser())
    try:
        scheme, name = parse_model_name(source)
    except ValueError as e:  # an ORG/NAME without hf-hub:, or a path to a folder without local-dir:
        raise BaselineError(f'baseline {source!r}: {e}') from None
    repo = None
    if scheme == 'local-dir' and not (Path(name) / 'config.json').is_file():
        raise BaselineError(f'baseline {source}: no config.json in {name} (local-dir: takes a folder that '
                            f'`hub export` or timm\'s save_for_hf wrote)')
    if scheme == 'hf-hub':
        repo = name.split('@')[0]
    if not scheme:
        arch, tag = split_model_name_tag(name)
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=4, cutoff=0.6)
            hint = f'; nearest: {", ".join(close)}' if close else ''
            raise BaselineError(f'unknown baseline {source!r}: timm has no model {arch!r}{hint}')
        tags = timm.list_pretrained(f'{arch}.*')
        try:
            cfg = get_pretrained_cfg(name, allow_unregistered=False) if tag else get_pretrained_cfg(arch)
        except RuntimeError:  # timm: "Invalid pretrained tag"
            cfg = None
        if cfg is None or not cfg.has_weights:
            raise BaselineError(
                f'baseline {source!r} has no pretrained weights in timm'
                + (f' (with weights: {", ".join(tags[:6])})' if tags else '') + '; or pass a train.py checkpoint')
        repo = cfg.hf_hub_id
    try:
        with offline_unless_reachable():  # no network: the cache at once, not a minute of retries
            model = timm.create_model(source, pretrained=True)
    except (EntryNotFoundError, HfHubHTTPError, OSError) as e:  # LocalEntryNotFoundError, offline, unreachable
        raise _missing(source, repo, e) from e
    except RuntimeError as e:
        raise BaselineError(f'cannot load baseline {source}: {e}') from e
    return model.eval()


def _label(model: nn.Module) -> str:
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    return arch or type(model).__name__


def _difference(model: nn.Module, base: nn.Module) -> str:
    """Why `base` cannot give `model` its weights ('' when it can): the first difference of type or shapes."""
    if type(model) is not type(base):
        return f"the baseline's is a {type(base).__name__}, this a {type(model).__name__}"
    own, theirs = model.state_dict(), base.state_dict()
    if set(own) != set(theirs):
        key = sorted(set(own) ^ set(theirs))[0]
        return f'their tensors differ ({key})'
    for key, value in own.items():
        if value.shape != theirs[key].shape:
            return f'shapes differ ({key}: {tuple(theirs[key].shape)} in the baseline, {tuple(value.shape)} here)'
    return ''


def _unit(name: str, module: nn.Module, copied: bool, reason: str = '', detail: str = '') -> TransferUnit:
    keys = tuple(f'{name}.{k}' for k in module.state_dict())
    return TransferUnit(name, copied, reason, keys, sum(p.numel() for p in module.parameters()), detail=detail)


def _plan(model: nn.Module, base: nn.Module) -> Tuple[List[TransferUnit], List[Tuple[str, str]]]:
    """Every unit of the model, copied or new, and the (model key, baseline key) pairs to copy."""
    try:
        stages, base_stages = find_stages(model), find_stages(base)
    except TypeError as e:
        raise BaselineError(f'{_label(base)} cannot be a baseline of {_label(model)}: {e}') from None
    if len(stages) != len(base_stages):
        raise BaselineError(f'{_label(base)} has {len(base_stages)} stages, {_label(model)} {len(stages)}: it is not '
                            f'a baseline of this model')
    units, pairs, covered = [], [], set()
    for (stage_name, stage), (base_name, base_stage) in zip(stages, base_stages):
        base_blocks = list(base_stage.named_children())
        for j, (child_name, block) in enumerate(stage.named_children()):
            name = f'{stage_name}.{child_name}'
            if isinstance(block, MoDBlock):
                unit = _unit(name, block, False, MOD_BLOCKS)
            elif j >= len(base_blocks):
                unit = _unit(name, block, False, f"deeper than the baseline's stage ({base_name} has "
                                                 f"{len(base_blocks)} blocks), as their family initialises them")
            else:
                other_name, other = base_blocks[j]
                why = _difference(block, other)
                unit = _unit(name, block, not why, NO_COUNTERPART if why else '', why)
                if not why:
                    pairs += [(f'{name}.{k}', f'{base_name}.{other_name}.{k}') for k in block.state_dict()]
            units.append(unit)
            covered.update(unit.tensors)

    # outside the stages, module by module: each module's own tensors (a parent's children are listed apart)
    base_modules = dict(base.named_modules())
    own, base_state = model.state_dict(), base.state_dict()
    rest: Dict[str, List[str]] = {}
    for key in own:
        if key not in covered:
            rest.setdefault(key.rpartition('.')[0], []).append(key)
    for owner, keys in rest.items():
        module, other = model.get_submodule(owner), base_modules.get(owner)
        if other is None:
            why = 'not in the baseline'
        elif type(module) is not type(other):
            why = f"the baseline's is a {type(other).__name__}, this a {type(module).__name__}"
        else:
            why = next((f'shapes differ ({k}: {tuple(base_state[k].shape)} in the baseline, '
                        f'{tuple(own[k].shape)} here)' for k in keys
                        if k not in base_state or base_state[k].shape != own[k].shape), '')
        params = sum(p.numel() for p in module.parameters(recurse=False))
        units.append(TransferUnit(owner, not why, NO_COUNTERPART if why else '', tuple(keys), params, block=False,
                                  detail=why))
        if not why:
            pairs += [(k, k) for k in keys]
    return units, pairs


def init_from_baseline(
        model: nn.Module,
        baseline: Union[str, Path, nn.Module],
) -> BaselineTransfer:
    """Copy into `model`, in place, every weight that has a counterpart in the pretrained baseline.

    Works for every registered MoD model and for any `timm_mod.mod(...)` model, by the rule of this module's
    docstring; the MoD blocks and every part without a counterpart keep their initialisation.

    Args:
        model: The model to initialise (a MoD model, or any timm CNN whose stages `find_stages` finds).
        baseline: A model, or where to load one (see `load_baseline`).

    Returns:
        What was copied and what is new, with names and counts.

    Raises:
        BaselineError, CheckpointError: the baseline cannot be loaded, or it is no baseline of this model (different
            stages, or not one of its blocks fits); the model is left unchanged then.
    """
    label = str(baseline) if isinstance(baseline, (str, Path)) else _label(baseline)
    base = load_baseline(baseline)
    units, pairs = _plan(model, base)
    standard = [u for u in units if u.block and u.reason != MOD_BLOCKS]
    if not any(u.copied for u in standard):
        first = next((u for u in standard if not u.copied), None)
        raise BaselineError(
            f'{label} is no baseline of {_label(model)}: none of its blocks fits'
            + (f' ({first.name}: {first.detail or first.reason})' if first else ''))
    own, theirs = model.state_dict(), base.state_dict()
    with torch.no_grad():
        for key, base_key in pairs:
            own[key].copy_(theirs[base_key])
    taken = {base_key for _, base_key in pairs}
    return BaselineTransfer(label, tuple(units), tuple(k for k in theirs if k not in taken))
