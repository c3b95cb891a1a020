"""Channel-selection analysis of one MoD block (paper Sec. 5.1, Figure 4).

Counts, per class and over all classes, how often the channel selector of a MoD block picks each channel, writes the
counts as CSV and draws each class's selection frequencies against the all-classes baseline.

    python -m timm_mod.tools.selection --model resnet18_mod --checkpoint output/train/.../model_best.pth.tar \\
        --data ~/.cache/timm_mod/digits --out selection/
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from timm.data import create_dataset, create_loader, resolve_data_config

from ..layers import MoDBlock
from ..checkpoint import CheckpointError, load_strict, read_checkpoint
from ._cli import (
    OutputError, check_models, check_new_file, existing_dir, existing_file, import_extra, new_file, positive_int)

__all__ = ['mod_blocks', 'default_block', 'count_selections']


def mod_blocks(model: nn.Module) -> List[Tuple[str, MoDBlock]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MoDBlock)]


def default_block(model: nn.Module) -> str:
    """The first MoD block of the third stage (the paper analyses one in ResNet75-MoD's third module)."""
    blocks = mod_blocks(model)
    stage3 = model.feature_info[3]['module'] + '.' if len(model.feature_info) > 3 else None
    for name, _ in blocks:
        if stage3 and name.startswith(stage3):
            return name
    return blocks[len(blocks) // 2][0]


def _resolve_block(model: nn.Module, spec: Optional[str]) -> Tuple[str, MoDBlock]:
    blocks = dict(mod_blocks(model))
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no MoD blocks')
    name = spec or default_block(model)
    if name not in blocks:
        # 'S.I': block I of feature stage S (feature_info index, stage 1 = first stage after the stem)
        parts = name.split('.')
        if len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[0]) < len(model.feature_info):
            name = f'{model.feature_info[int(parts[0])]["module"]}.{parts[1]}'
    if name not in blocks:
        raise ValueError(f'no MoD block {spec!r}; MoD blocks of this model: {", ".join(blocks)}')
    block = blocks[name]
    if block.selector is None:
        raise ValueError(f'{name} routes at random: there is no learned selection to analyse')
    return name, block


@torch.no_grad()
def count_selections(
        model: nn.Module,
        block: MoDBlock,
        loader,
        num_classes: int,
        max_per_class: int,
) -> torch.Tensor:
    """(num_classes, C) counts of how often each channel was among a sample's k selected channels."""
    counts = torch.zeros(num_classes, block.channels, dtype=torch.long)
    seen = torch.zeros(num_classes, dtype=torch.long)
    picked = {}
    handle = block.selector.register_forward_hook(lambda m, i, out: picked.__setitem__('idx', out[1]))
    try:
        for images, targets in loader:
            keep = seen[targets] < max_per_class
            if not keep.any():
                if (seen >= max_per_class).all():
                    break
                continue
            model(images[keep])
            for cls, idx in zip(targets[keep].tolist(), picked['idx'].tolist()):
                if seen[cls] < max_per_class:
                    counts[cls, idx] += 1
                    seen[cls] += 1
    finally:
        handle.remove()
    return counts


def _plot(counts: torch.Tensor, classes: List[str], block_name: str, model_name: str, path: Path, show: int):
    matplotlib = import_extra('matplotlib', 'plot', 'drawing Figure 4')
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    share = counts.float() / counts.sum(1, keepdim=True).clamp(min=1) * 100
    overall = counts.sum(0).float() / counts.sum().clamp(min=1) * 100
    rows = [('all classes', overall)] + [(classes[i], share[i]) for i in range(min(show, len(classes)))]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.8 * len(rows)), sharex=True)
    channels = range(counts.shape[1])
    for ax, (label, values) in zip(axes, rows):
        ax.bar(channels, values.tolist(), color='tab:gray' if label == 'all classes' else 'tab:blue', width=1.0)
        if label != 'all classes':
            ax.step(channels, overall.tolist(), where='mid', color='tab:red', linewidth=0.8, label='all classes')
            ax.legend(fontsize=7, loc='upper right')
        ax.set_ylabel('% of\nselections', fontsize=8)
        ax.set_title(label, fontsize=9, loc='left')
    axes[-1].set_xlabel(f'channel of {block_name}')
    fig.suptitle(f'Channel selection frequencies, {model_name} {block_name}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.tools.selection', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='timm_mod model name, e.g. resnet18_mod')
    parser.add_argument('--checkpoint', type=existing_file,
                        help='train.py checkpoint, state dict or safetensors file (loaded with weights_only=True)')
    parser.add_argument('--ema', action='store_true', help='use the checkpoint\'s EMA weights')
    parser.add_argument('--data', required=True, type=existing_dir,
                        help='ImageFolder root: its val/ (or validation/) split, else itself')
    parser.add_argument('--out', required=True, help='output folder for selection.csv and selection.png')
    parser.add_argument('--block', help='MoD block: a module name (layer3.1) or stage.index (3.1); '
                                        'default: the first MoD block of the third stage')
    parser.add_argument('--img-size', type=positive_int, help='input size (default: the model\'s)')
    parser.add_argument('--samples-per-class', type=positive_int, default=50,
                        help='samples counted per class (default 50)')
    parser.add_argument('--plot-classes', type=positive_int, default=5, help='classes drawn in the figure (default 5)')
    parser.add_argument('--batch-size', type=positive_int, default=64, help='images per forward (default 64)')
    args = parser.parse_args(argv)

    check_models(parser, [args.model])
    split = next((args.data / s for s in ('val', 'validation') if (args.data / s).is_dir()), args.data)
    out = Path(args.out)
    try:
        for name in ('selection.csv', 'selection.png'):
            check_new_file(out / name, '--out')
        import_extra('matplotlib', 'plot', 'drawing Figure 4')  # known before the counting, not after
        state_dict = read_checkpoint(args.checkpoint, args.ema)[0] if args.checkpoint else None
    except (OutputError, ImportError, CheckpointError) as e:
        parser.error(str(e))

    dataset = create_dataset('', root=str(split))
    classes = sorted(dataset.reader.class_to_idx, key=dataset.reader.class_to_idx.get)
    model = timm.create_model(args.model, num_classes=len(classes))
    if state_dict is not None:
        try:
            load_strict(model, state_dict, f'{args.checkpoint} ({args.model}, {len(classes)} classes in {split})')
        except CheckpointError as e:
            parser.error(str(e))
    model.eval()
    try:
        block_name, block = _resolve_block(model, args.block)
    except ValueError as e:
        parser.error(str(e))
    config = resolve_data_config({'input_size': (3, args.img_size, args.img_size)} if args.img_size else {},
                                 model=model)
    loader = create_loader(dataset, batch_size=args.batch_size, **{k: config[k] for k in (
        'input_size', 'interpolation', 'mean', 'std', 'crop_pct')}, num_workers=0, device=torch.device('cpu'))
    counts = count_selections(model, block, loader, len(classes), args.samples_per_class)

    with new_file(out / 'selection.csv', '--out', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['class', 'samples'] + [f'ch{c}' for c in range(block.channels)])
        for i, name in enumerate(classes):
            writer.writerow([name, int(counts[i].sum()) // block.k] + counts[i].tolist())
        writer.writerow(['all', int(counts.sum()) // block.k] + counts.sum(0).tolist())
    _plot(counts, classes, block_name, args.model, out / 'selection.png', args.plot_classes)
    print(f'{block_name}: k={block.k} of {block.channels} channels; wrote {out / "selection.csv"} and '
          f'{out / "selection.png"}', file=sys.stderr)


if __name__ == '__main__':
    main()
