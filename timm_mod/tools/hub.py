"""Export timm train.py checkpoints as Hugging Face Hub model repos, and publish them.

    python -m timm_mod.tools.hub export --model resnet75_mod --checkpoint output/train/RUN/model_best.pth.tar \\
        --out hub/resnet75_mod.in1k --ema --results results.csv
    python -m timm_mod.tools.hub publish --model resnet75_mod --checkpoint ... --out hub/resnet75_mod.in1k [--dry-run]

An exported folder holds what timm's `save_for_hf` writes, model.safetensors and config.json, plus README.md, the
model card rendered from the family's template in hub_cards/. config.json's model_args carry num_classes, in_chans and
the MoD settings, so ``timm.create_model('hf-hub:ORG/NAME.TAG', pretrained=True)`` rebuilds the trained architecture.
The folder is written beside --out, loaded back through timm, and moved into place only if it reproduces the
checkpoint's outputs exactly. `publish` uploads it with huggingface_hub, as timm's `push_to_hf_hub` does.
"""
import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn
from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id
from timm.data import resolve_data_config
from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, save_for_hf, split_model_name_tag
from timm.utils import ParseKwargs

from ..checkpoint import CheckpointError, checkpoint_model_kwargs, load_strict, read_checkpoint
from ..models import MODEL_MODULES, list_models
from ..models._common import WEIGHTS_FILE, hub_repo_id
from ._cli import NewFolder, OutputError, first_line, import_extra
from .cards import (
    CARD_TEMPLATES, CARDS_DIR, MOD_ARGS, HubError, arch_of, card_context, mod_model_args, read_results, render_card,
    training_dataset, training_record)

__all__ = ['HubError', 'export', 'publish']

# What the card needs beyond what loading a model needs, from the 'tools' extra
CARD_PACKAGES = (('jinja2', 'rendering the model card'), ('fvcore.nn', 'counting MACs for the model card'))

_logger = logging.getLogger(__name__)


# The model arguments config.json may carry: what rebuilds the architecture of the weights, nothing that decides how
# weights are loaded (pretrained_strict, pretrained_cfg, ...). Drop rates are kept as trained: they change nothing in
# inference and tell a fine-tuner what the weights were trained with.
MODEL_ARGS = ('num_classes', 'in_chans', 'global_pool', 'output_stride', *MOD_ARGS, 'drop_rate', 'drop_path_rate')


def _exported_tag(model_name: str, repo_id: str, name: str) -> Optional[str]:
    """The tag the user exports the weights under: the one in --model (NAME.TAG), else in the repo (ORG/NAME.TAG).

    Not the default tag that a bare --model falls back to for its cfg: that says nothing about the weights.
    """
    repo_name = repo_id.split('/')[-1]
    return split_model_name_tag(model_name)[1] or (
        repo_name[len(name) + 1:] if repo_name.startswith(f'{name}.') else None)


def _resolve_cfg(model_name: str) -> Dict[str, Any]:
    """The registered pretrained cfg of `name[.tag]` (the default tag when none is given)."""
    name, tag = split_model_name_tag(model_name)
    if name not in list_models():
        raise HubError(f'unknown model {name!r}: not a timm_mod model (see timm_mod.list_models())')
    try:
        return get_pretrained_cfg(model_name).to_dict()
    except RuntimeError as e:
        # every registered tag, with or without published weights: exporting is how weights come to exist
        known = ', '.join(get_arch_pretrained_cfgs(name))
        raise HubError(f'unknown tag {tag!r} for {name}, known: {known}') from e


def _data_overlay(train_args: Dict[str, Any], cfg: Dict[str, Any], in_chans: int) -> Dict[str, Any]:
    """The pretrained cfg fields in which the weights' preprocessing differs from the registered cfg.

    train.py's args record the input size, mean, std, ... it trained with (None where it used the model's); the
    input channels are those of the weights.
    """
    data = resolve_data_config(train_args, pretrained_cfg=cfg) if train_args else {}
    overlay = {k: v for k, v in data.items() if v != cfg.get(k)}
    input_size = (in_chans, *overlay.get('input_size', cfg['input_size'])[1:])
    if input_size != tuple(cfg['input_size']):
        overlay['input_size'] = input_size
        if input_size[1:] != tuple(cfg['input_size'][1:]):
            overlay['pool_size'] = None  # the registered pool size belongs to the registered resolution
    return overlay


EXPORTED_FILES = ('README.md', 'config.json', WEIGHTS_FILE)


def _not_an_export(folder: Path) -> str:
    """Why `folder` is not one that export wrote ('' when it is): --force replaces nothing else."""
    extra = sorted(p.name for p in folder.iterdir() if p.name not in EXPORTED_FILES)
    if extra:
        return f'holds {", ".join(extra[:3])}{", ..." if len(extra) > 3 else ""}, which export does not write'
    try:
        json.loads((folder / 'config.json').read_text())['architecture']
    except (OSError, ValueError, KeyError, TypeError):
        return 'has no config.json that export wrote'
    return ''


def _drop_repeated_num_classes(path: Path) -> None:
    """Keep num_classes at the top of config.json only, not again in model_args, where timm's save_for_hf repeats it.

    timm reads it from either place; transformers' TimmWrapper passes num_classes itself and then the model_args, so
    a repeated one fails with "got multiple values for keyword argument 'num_classes'".
    """
    config = json.loads(path.read_text())
    config.get('model_args', {}).pop('num_classes', None)
    path.write_text(json.dumps(config, indent=2))


def _check_round_trip(folder: Path, model: nn.Module, registry_name: Optional[str]) -> None:
    """Load the exported folder back through timm and require the source model's outputs, bit for bit.

    With `registry_name`, the folder is published where ``timm.create_model(registry_name, pretrained=True)`` looks,
    which builds the registered architecture rather than the one in config.json: that route must match too.
    """
    x = torch.randn(1, *model.pretrained_cfg['input_size'], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    routes = {f'local-dir:{folder}': {}}
    if registry_name:
        routes[registry_name] = dict(pretrained_cfg_overlay=dict(file=str(folder / WEIGHTS_FILE)))
    for source, kwargs in routes.items():
        try:
            reloaded = timm.create_model(source, pretrained=True, **kwargs).eval()
            with torch.no_grad():
                same = torch.equal(reloaded(x), expected)
        except RuntimeError as e:
            same, why = False, first_line(e)
        else:
            why = 'it computes different outputs'
        if not same and source == registry_name:
            raise HubError(
                f'timm.create_model({registry_name!r}, pretrained=True) could not use these weights ({why}): its '
                f'registered cfg builds another model (num_classes, in_chans or MoD settings differ). Export them '
                f"under another --repo-id; 'hf-hub:REPO_ID' rebuilds the model from config.json.")
        if not same:
            raise HubError(f'the exported folder does not load back as the same model: {why}')


def export(
        model_name: str,
        checkpoint: Union[str, Path],
        out: Union[str, Path],
        ema: bool = False,
        results: Optional[Union[str, Path]] = None,
        repo_id: Optional[str] = None,
        dataset: Optional[str] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        force: bool = False,
        init_from: Optional[str] = None,
) -> Path:
    """Write a Hub model folder (model.safetensors, config.json, README.md) from a train.py checkpoint.

    Args:
        model_name: timm_mod model, optionally with the pretrained tag whose cfg (input size, mean, std, Hub repo)
            the weights follow, e.g. 'resnet75_mod.in1k'; the default tag when none is given.
        checkpoint: train.py checkpoint (with 'state_dict', optionally 'state_dict_ema') or bare state dict.
        out: Folder to create; an existing non-empty one is replaced only with `force`.
        ema: Export the EMA weights.
        results: validate.py results file of these weights, for the card's measured top-1 / top-5.
        repo_id: Hub repo the card's usage names; default the tag's own repo (`hub_repo_id`), where
            ``pretrained=True`` looks once the tag is published.
        dataset: Hub dataset id of the training data, for the card; default: where the checkpoint's train.py args
            or the tag say it (`training_dataset`), else the card declares none.
        model_kwargs: Constructor arguments beyond those recorded in the checkpoint's train.py args.
        force: Replace a non-empty `out`.
        init_from: The baseline the weights started from, where the checkpoint cannot say (see `training_record`).

    Returns:
        The folder written.

    Raises:
        HubError: on an unknown model, an unreadable checkpoint or results file, weights that do not fit the model,
            an `out` that would be overwritten, or a folder that would not load back as the same model.
    """
    # everything that can be wrong with the inputs is checked before the model is built
    for module, purpose in CARD_PACKAGES:
        try:
            import_extra(module, 'tools', purpose)
        except ImportError as e:
            raise HubError(str(e)) from e
    if not CARDS_DIR.is_dir():
        raise HubError(f'model card templates not found in {CARDS_DIR}: this timm-mod install is incomplete')
    cfg = _resolve_cfg(model_name)
    name, tag = cfg['architecture'], cfg['tag']
    repo_id = repo_id or hub_repo_id(name, tag)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f'invalid --repo-id {repo_id!r}: {e}') from e
    if '/' not in repo_id:
        raise HubError(f"--repo-id {repo_id!r} needs its organisation or user: 'ORG/NAME.TAG'")
    target = NewFolder(out, force, ours=_not_an_export, protect=[checkpoint] + ([results] if results else []))
    try:
        state_dict, meta = read_checkpoint(checkpoint, ema)
        kwargs = checkpoint_model_kwargs(state_dict, meta['args'], cfg, overrides=model_kwargs)
    except CheckpointError as e:
        raise HubError(str(e)) from None
    trained_as = meta['arch'] and arch_of(meta['arch'])
    if trained_as and trained_as != name:
        raise HubError(f"{checkpoint} was trained as {meta['arch']!r} (its 'arch'), not {name!r}")
    unknown = sorted(set(kwargs) - set(MODEL_ARGS))
    if unknown:
        raise HubError(
            f'model arguments {", ".join(unknown)} (from --model-kwargs or the checkpoint\'s train.py model_kwargs) '
            f'are not published: config.json carries only {", ".join(MODEL_ARGS)}')
    exported_tag = _exported_tag(model_name, repo_id, name)
    dataset_info = training_dataset(dataset, meta['args'], exported_tag)
    if results and not dataset_info:
        raise HubError('--results needs --dataset: neither the tag nor the checkpoint says which data the results '
                       'are on')
    measured = read_results(results, name, checkpoint) if results else None
    training = training_record(meta, Path(checkpoint), init_from)
    try:
        with target:  # checked and locked before the model is built; written whole or not at all
            for note in target.notes:
                _logger.info(note)
            _write_export(target, cfg, state_dict, meta, kwargs, checkpoint, repo_id, exported_tag, dataset_info,
                          measured, training)
    except OutputError as e:
        raise HubError(str(e)) from None
    return target.out


def _write_export(
        target: NewFolder,
        cfg: Dict[str, Any],
        state_dict: Dict[str, torch.Tensor],
        meta: Dict[str, Any],
        kwargs: Dict[str, Any],
        checkpoint: Union[str, Path],
        repo_id: str,
        exported_tag: Optional[str],
        dataset_info: Optional[Tuple[str, str]],
        measured: Optional[Dict[str, Any]],
        training: Dict[str, Any],
) -> None:
    """Build the model, load the checkpoint, render the card and write the folder, verified by a round trip."""
    name, tag = cfg['architecture'], cfg['tag']
    overlay = _data_overlay(meta['args'], cfg, kwargs.get('in_chans', cfg['input_size'][0]))
    # the weights are tagged as exported (a digits model is no in1k model), or not at all
    overlay['tag'] = exported_tag
    _logger.info(f'building {name} with {kwargs or "its defaults"}')
    model = timm.create_model(f'{name}.{tag}', pretrained_cfg_overlay=overlay, **kwargs)
    try:
        load_strict(model, state_dict, f'{checkpoint} does not fit {name} built with these settings')
    except CheckpointError as e:
        raise HubError(f'{e}. Check --model, and --model-kwargs against the settings the checkpoint was trained '
                       f'with.') from None
    model.eval()
    registry_name = f'{name}.{tag}' if repo_id == hub_repo_id(name, tag) else None
    if registry_name:  # the round trip checks the rest; these differences are cheap to see now
        differs = {k: v for k, v in overlay.items() if k != 'tag'}
        if kwargs.get('num_classes', cfg['num_classes']) != cfg['num_classes']:
            differs['num_classes'] = kwargs['num_classes']
        if differs:
            raise HubError(
                f'timm.create_model({registry_name!r}, pretrained=True) could not use these weights: they differ from '
                f"its registered cfg in {differs}. Export them under another --repo-id; 'hf-hub:REPO_ID' rebuilds "
                f'the model from config.json.')
    model_args = dict(kwargs, **mod_model_args(model))
    model_args.setdefault('num_classes', model.num_classes)

    family = next(m for m in MODEL_MODULES if name in timm.list_models(module=m))
    _logger.info('counting parameters and MACs for the model card')
    context = card_context(model, name, repo_id, registry_name, model_args, dataset_info, measured, training)
    card = render_card(CARD_TEMPLATES[family], **context)
    with target.staging() as folder:
        save_for_hf(model, folder, model_args=model_args, model_config=dict(training=training),
                    safe_serialization=True)
        _drop_repeated_num_classes(folder / 'config.json')
        (folder / 'README.md').write_text(card, encoding='utf-8')
        _logger.info('loading the folder back through timm to compare outputs')
        _check_round_trip(folder, model, registry_name)


def publish(
        folder: Union[str, Path],
        repo_id: str,
        private: bool = False,
        commit_message: str = 'Add model',
) -> str:
    """Create the Hub repo if needed and upload an exported folder to it, as timm's `push_to_hf_hub` does.

    timm's own function saves from a live model and writes timm's generic card; this uploads the folder that
    `export` wrote and verified. The token comes from huggingface_hub's usual places (HF_TOKEN, `hf auth login`).

    Returns:
        URL of the repo.
    """
    api = HfApi(library_name='timm', library_version=timm.__version__)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_url.repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(repo_url)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.tools.hub', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        '--model', required=True, metavar='NAME[.TAG]',
        help='timm_mod model the checkpoint was trained as; the tag (default: the first registered, e.g. in1k) picks '
             'the pretrained cfg, the data behind it and the default --repo-id')
    common.add_argument(
        '--checkpoint', required=True, metavar='FILE',
        help='timm train.py checkpoint (model_best.pth.tar, last.pth.tar) or a bare state dict, '
             'loaded with weights_only=True')
    common.add_argument(
        '--out', required=True, metavar='DIR', help='folder to write model.safetensors, config.json and README.md to')
    common.add_argument(
        '--ema', action='store_true', help="export the EMA weights ('state_dict_ema', from train.py --model-ema)")
    common.add_argument(
        '--results', metavar='FILE',
        help="timm validate.py results file (--results-file, csv or json) of these weights: its top-1 / top-5 go "
             "into the card's Results and model-index; without it the card claims no measured accuracy")
    common.add_argument(
        '--repo-id', metavar='ORG/NAME.TAG',
        help='Hub repo the card names and publish uploads to (default: the tag\'s own repo, e.g. '
             'timm-mod/resnet75_mod.in1k, where pretrained=True looks once the tag is published)')
    common.add_argument(
        '--dataset', metavar='ID',
        help="Hub dataset id of the training data, for the card's metadata (default: the checkpoint's train.py "
             "--dataset where it names one, hfds/ID, hfids/ID, torch/cifar10, ...; else the tag of --model or "
             "--repo-id: in1k imagenet-1k, c10 cifar10, c100 cifar100; else the card declares none)")
    common.add_argument(
        '--model-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='KEY=VALUE',
        help="constructor arguments the checkpoint was trained with, beyond those in its train.py 'args' "
             "(e.g. mod_c=32)")
    common.add_argument(
        '--init-from', metavar='BASELINE',
        help='the pretrained baseline the weights started from, for the card and config.json, where the checkpoint '
             'cannot say (./train.sh --init-from records it in the run folder, which export reads)')
    common.add_argument('--force', action='store_true', help='replace --out if it exists and is not empty')
    commands.add_parser(
        'export', parents=[common], help='write a Hub model folder from a checkpoint',
        description='Write model.safetensors, config.json and README.md to --out, verified by loading them back.')
    publish_parser = commands.add_parser(
        'publish', parents=[common], help='export, then create the Hub repo and upload the folder',
        description='Export to --out, then create --repo-id on the Hub and upload the folder to it. The token comes '
                    'from HF_TOKEN or `hf auth login`.')
    publish_parser.add_argument('--private', action='store_true', help='create the repo private')
    publish_parser.add_argument('--commit-message', default='Add model', help='message of the upload commit')
    publish_parser.add_argument('--dry-run', action='store_true', help='stop after the export; upload nothing')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format='%(message)s')
    _logger.setLevel(logging.INFO)  # our progress lines, not timm's loading chatter
    uploading = args.command == 'publish' and not args.dry_run
    try:
        cfg = _resolve_cfg(args.model)
        repo_id = args.repo_id or hub_repo_id(cfg['architecture'], cfg['tag'])
        if uploading and not get_token():  # before the export, which can take minutes
            raise HubError('no Hugging Face token: set HF_TOKEN or run `hf auth login` (or pass --dry-run)')
        out = export(
            args.model, args.checkpoint, args.out, ema=args.ema, results=args.results, repo_id=repo_id,
            dataset=args.dataset, model_kwargs=args.model_kwargs, force=args.force, init_from=args.init_from)
    except HubError as e:
        parser.exit(2, f'{parser.prog} {args.command}: error: {e}\n')
    _logger.info(f'wrote {out}: ' + ', '.join(sorted(p.name for p in out.iterdir())))
    if args.command == 'export':
        _logger.info(f"load it with timm.create_model('local-dir:{out}', pretrained=True) after `import timm_mod`")
    elif args.dry_run:
        _logger.info(f'dry run: {repo_id} neither created nor uploaded to')
    else:
        _logger.info(f'creating {repo_id} if needed and uploading {out}')
        print(publish(out, repo_id, private=args.private, commit_message=args.commit_message))


if __name__ == '__main__':
    main()
