"""Reading timm train.py checkpoints safely, and rebuilding the model they hold.

A train.py checkpoint is a pickle; it is only ever loaded with ``torch.load(weights_only=True)``, which restores
tensors and plain containers (and the argparse.Namespace train.py stores under 'args') and executes nothing else.
Everything that can be wrong with the file is reported as a `CheckpointError` naming the file and the problem.
"""
import argparse
import contextlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn
from timm.models import clean_state_dict, get_pretrained_cfg, split_model_name_tag

__all__ = ['CheckpointError', 'read_checkpoint', 'checkpoint_model_kwargs', 'model_from_checkpoint', 'load_strict']


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not hold what it must; the message names the file."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load(path: Path) -> Any:
    if path.suffix == '.safetensors':
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f'cannot read checkpoint {path}: {_first_line(e)}') from e
    safe_globals = getattr(torch.serialization, 'safe_globals', None)  # torch >= 2.5
    try:
        with safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext():
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated, corrupt or foreign file fails in many ways (zip, pickle, EOF, ...)
        raise CheckpointError(f'cannot read checkpoint {path}: {_first_line(e)}') from e


def read_checkpoint(
        path: Union[str, Path],
        ema: bool = False,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """State dict and training metadata of a timm train.py checkpoint, a bare state dict or a safetensors file.

    Args:
        path: The checkpoint file.
        ema: Take 'state_dict_ema' (train.py --model-ema) instead of 'state_dict'.

    Returns:
        The state dict without DDP / torch.compile prefixes, and a dict with the checkpoint's 'arch' (None when it
        names none), 'args' (train.py's arguments as a dict, empty when it has none) and 'epoch' (the last epoch
        trained, counted from 0; None when it says none).

    Raises:
        CheckpointError: the file is missing, unreadable, not a state dict, holds a tensor that is not finite, or its
            'arch' / 'args' are not what train.py writes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    checkpoint = _load(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'{path} holds a {type(checkpoint).__name__}, not a state dict or a train.py checkpoint')

    if 'state_dict' in checkpoint:
        key = 'state_dict_ema' if ema else 'state_dict'
        if checkpoint.get(key) is None:
            raise CheckpointError(f'{path} has no {key!r} (it has {", ".join(map(repr, checkpoint))}): drop --ema')
        state_dict = checkpoint[key]
    elif ema:
        raise CheckpointError(f'{path} is a bare state dict, without EMA weights: drop --ema')
    else:
        state_dict = checkpoint
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f'{path}: its state dict is a {type(state_dict).__name__}, not a non-empty dict of '
                              f'tensors')
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f'{path} is not a state dict: {name!r} holds a {type(value).__name__}')
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f'{path}: {name!r} holds NaN or infinite values (a diverged run?): these weights '
                                  f'cannot be used')

    args = checkpoint.get('args') or {}
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict):
        raise CheckpointError(f"{path}: its 'args' is a {type(args).__name__}, not train.py's arguments")
    arch = checkpoint.get('arch') or args.get('model')
    if arch is not None and not isinstance(arch, str):
        raise CheckpointError(f"{path}: its 'arch' is a {type(arch).__name__} ({arch!r}), not a model name")
    epoch = checkpoint.get('epoch') if 'state_dict' in checkpoint else None
    return clean_state_dict(state_dict), dict(arch=arch, args=dict(args), epoch=epoch)


def checkpoint_model_kwargs(
        state_dict: Dict[str, torch.Tensor],
        train_args: Dict[str, Any],
        cfg: Dict[str, Any],
        overrides: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Constructor arguments that rebuild the model a checkpoint holds.

    train.py's --model-kwargs, then `overrides`, then train.py's --gp, then num_classes and in_chans read off the
    weights (the classifier and the stem named by the pretrained cfg), so a checkpoint trained on 10 classes or
    1-channel images rebuilds as such.

    Args:
        state_dict: The checkpoint's weights.
        train_args: train.py's arguments saved in the checkpoint (empty for a bare state dict).
        cfg: Pretrained cfg of the architecture (its 'classifier' and 'first_conv').
        overrides: Constructor arguments given beside the checkpoint.
    """
    model_kwargs = train_args.get('model_kwargs') or {}
    if not isinstance(model_kwargs, dict):
        raise CheckpointError(f"train.py's model_kwargs must be a dict, got {model_kwargs!r}")
    kwargs = dict(model_kwargs, **(overrides or {}))
    if train_args.get('gp'):
        kwargs['global_pool'] = train_args['gp']
    classifier = cfg.get('classifier')
    weight = state_dict.get(f'{classifier}.weight') if isinstance(classifier, str) else None
    if weight is not None:
        kwargs['num_classes'] = weight.shape[0]
    first_conv = cfg.get('first_conv')
    weight = state_dict.get(f'{first_conv}.weight') if isinstance(first_conv, str) else None
    if weight is not None and weight.ndim == 4:
        kwargs['in_chans'] = weight.shape[1]
    return kwargs


def model_from_checkpoint(path: Union[str, Path], ema: bool = False, arch: Optional[str] = None) -> nn.Module:
    """The model a train.py checkpoint holds, built by timm with the checkpoint's settings and loaded strictly.

    Args:
        path: A train.py checkpoint, a bare state dict or a safetensors file.
        ema: Take the EMA weights.
        arch: Architecture to build; default the checkpoint's own ('arch', or train.py's --model).

    Raises:
        CheckpointError: as `read_checkpoint`; also when the architecture is unknown or not given, or the weights do
            not fit it (the message names the keys and shapes).
    """
    state_dict, meta = read_checkpoint(path, ema)
    arch = arch or meta['arch']
    if not arch:
        raise CheckpointError(f'{path} does not say which model it holds (no \'arch\' or train.py args): name it')
    name = split_model_name_tag(arch)[0]
    if not timm.is_model(name):
        raise CheckpointError(f"{path} holds a {arch!r}, which timm does not know (import the package that "
                              f"registers it)")
    cfg = get_pretrained_cfg(name)
    kwargs = checkpoint_model_kwargs(state_dict, meta['args'], cfg.to_dict() if cfg is not None else {})
    model = timm.create_model(name, **kwargs)
    load_strict(model, state_dict, f'{path} ({name})')
    return model.eval()


def load_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], what: str) -> None:
    """Load every tensor of `state_dict` into `model`, or fail naming the keys and shapes that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
        for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = [
        f'{kind} ({len(keys)}): {", ".join(keys[:4])}{", ..." if len(keys) > 4 else ""}'
        for kind, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                           ('shape mismatches, checkpoint vs model', mismatched)) if keys]
    if problems:
        raise CheckpointError(f'{what}: the weights do not fit the model; ' + '; '.join(problems))
    model.load_state_dict(state_dict)
