"""Train and evaluate the paper's dense-prediction systems: FCN on Cityscapes, Faster R-CNN on Pascal VOC.

    python -m timm_mod.dense seg --backbone resnet86_mod --data /data/cityscapes --pretrained-backbone
    torchrun --nproc_per_node 4 -m timm_mod.dense seg --backbone resnet75_mod --data /data/cityscapes
    python -m timm_mod.dense det --backbone resnet86_mod --data /data/voc    # holds VOCdevkit/VOC2007, VOC2012
    python -m timm_mod.dense seg --data /data/cityscapes --eval-only --resume output/dense/seg-.../last.pth
    python -m timm_mod.dense bench --threads 1,16 --json dense.json          # timing: timm_mod.dense.bench

Defaults are the paper's schedules. seg (Appendix B, MMSegmentation's FCN-R50-D8 80k): SGD lr 0.01, momentum 0.9,
weight decay 5e-4, poly decay (power 0.9) to 1e-4 over 80k iterations, 2 images of 512 x 1024 per process (the
paper: 4 GPUs, SyncBN, used here whenever training on several GPUs), evaluation every 8k iterations (mIoU, aAcc,
mAcc at full resolution). det (Appendix C, MMDetection's faster_rcnn_r50_fpn_1x_voc0712): SGD momentum 0.9, weight
decay 1e-4, 2 images per process, lr 0.01 per 16 images (scaled linearly), 500 warm-up iterations, 12 epochs of
VOC 2007 + 2012 trainval with the lr divided by 10 after 9, horizontal flip 0.5, images resized to 1000 x 600;
evaluated on VOC 2007 test with the VOC07 11-point mAP@0.5 (the paper's) and torchmetrics' COCO-style mAP@0.5.

Each run writes into a new folder under --output (args.json, metrics.jsonl, last.pth); an earlier run is never
overwritten. Checkpoints are plain state dicts (torch.save), loaded with torch.load(weights_only=True). Bad input,
a --resume checkpoint included, is reported before any data or model is loaded.
"""
import argparse
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from ..tools._cli import (
    check_device, existing_dir, existing_file, import_extra, new_run_dir, nonnegative_float, nonnegative_int,
    positive_float, positive_int)
from ..tools.complexity import count_params_m
from .backbone import check_backbone
from .data import VOC_CLASSES, check_cityscapes, check_voc, cityscapes, detection_collate, parse_voc_sets, voc
from .detection import faster_rcnn
from .segmentation import IGNORE_INDEX, fcn, fcn_loss

__all__ = ['build_system', 'main']

SYSTEMS = ('fcn', 'faster_rcnn')
TASK_SYSTEM = {'seg': 'fcn', 'det': 'faster_rcnn'}
CITYSCAPES_CLASSES = 19
DET_BASE_BATCH = 16  # MMDetection's lr 0.01 is for 8 GPUs x 2 images


def build_system(system: str, backbone: str, img_size: Optional[Sequence[int]] = None, **kwargs) -> nn.Module:
    """'fcn' (19 classes, output stride 8) or 'faster_rcnn' (21 classes) on `backbone`.

    Args:
        system: 'fcn' or 'faster_rcnn'.
        backbone: timm model name.
        img_size: Faster R-CNN's (min_size, max_size) resize; ignored by FCN.
        **kwargs: Passed to `timm_mod.dense.segmentation.fcn` or `timm_mod.dense.detection.faster_rcnn`.
    """
    if system == 'fcn':
        return fcn(backbone, num_classes=CITYSCAPES_CLASSES, **kwargs)
    if system == 'faster_rcnn':
        size = dict(min_size=img_size[0], max_size=img_size[1]) if img_size else {}
        return faster_rcnn(backbone, num_classes=len(VOC_CLASSES) + 1, **size, **kwargs)
    raise ValueError(f'unknown system {system!r}, expected one of {SYSTEMS}')


# --- distributed ---------------------------------------------------------------------------------------------------

def _init_distributed(device_name: str) -> Tuple[int, int, torch.device]:
    """(rank, world size, device); torchrun's environment variables start the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world == 1:
        return 0, 1, torch.device(device_name)
    local_rank = int(os.environ['LOCAL_RANK'])
    if device_name == 'cuda':
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_name)
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return dist.get_rank(), world, device


def _log(rank: int, text: str) -> None:
    if rank == 0:
        print(text, flush=True)


# --- data ----------------------------------------------------------------------------------------------------------

def _datasets(args: argparse.Namespace) -> Tuple[Optional[Dataset], Dataset]:
    if args.task == 'seg':
        train = None if args.eval_only else cityscapes(
            args.data, 'train', True, tuple(args.img_size), tuple(args.crop_size))
        val = cityscapes(args.data, args.eval_split, False, tuple(args.img_size), tuple(args.crop_size))
    else:
        train = None if args.eval_only else voc(args.data, parse_voc_sets(args.train_sets), True)
        val = voc(args.data, parse_voc_sets(args.eval_sets), False)
    for name, ds in (('training', train), ('evaluation', val)):
        if ds is not None and len(ds) == 0:
            raise ValueError(f'the {name} set under {args.data} holds no images')
    return train, val


def _loaders(args: argparse.Namespace, train_ds: Optional[Dataset], eval_ds: Dataset, rank: int,
             world: int) -> Tuple[Optional[DataLoader], DataLoader]:
    collate = detection_collate if args.task == 'det' else None
    train_loader = None
    if train_ds is not None:
        if len(train_ds) < args.batch_size * world:
            raise ValueError(f'the training set holds {len(train_ds)} images, fewer than one batch of '
                             f'{args.batch_size} x {world} process(es)')
        sampler = DistributedSampler(train_ds, world, rank, seed=args.seed) if world > 1 else RandomSampler(
            train_ds, generator=torch.Generator().manual_seed(args.seed))
        train_loader = DataLoader(
            train_ds, args.batch_size, sampler=sampler, num_workers=args.workers, collate_fn=collate, drop_last=True,
            persistent_workers=args.workers > 0)
    # Every rank evaluates its own stride of the samples, none twice (DistributedSampler would pad with repeats);
    # seg images go one at a time as MMSegmentation's, full-resolution labels of any size.
    shard = Subset(eval_ds, range(rank, len(eval_ds), world))
    eval_loader = DataLoader(shard, 1 if args.task == 'seg' else args.batch_size, num_workers=args.workers,
                             collate_fn=collate)
    return train_loader, eval_loader


def _check_data(args: argparse.Namespace) -> None:
    if args.task == 'seg':
        check_cityscapes(args.data, ([] if args.eval_only else ['train']) + [args.eval_split])
    else:
        check_voc(args.data, ([] if args.eval_only else parse_voc_sets(args.train_sets)) + parse_voc_sets(
            args.eval_sets))


# --- training ------------------------------------------------------------------------------------------------------

def _loss(args: argparse.Namespace, model: nn.Module, images: Any, targets: Any, device: torch.device) -> torch.Tensor:
    if args.task == 'seg':
        return fcn_loss(model(images.to(device)), targets.to(device))
    images = [img.to(device) for img in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return sum(model(images, targets).values())


def _lr_lambda(args: argparse.Namespace) -> Callable[[int], float]:
    """Factor of the base lr at each iteration: seg poly decay to min_lr; det linear warm-up, then a step at 3/4."""
    if args.task == 'seg':
        floor = args.min_lr / args.lr
        return lambda it: (1 - floor) * (1 - min(it, args.iters) / args.iters) ** args.power + floor

    def det(it: int) -> float:
        # MMDetection's linear warm-up from warmup_ratio x lr
        warm = 1.0 if it >= args.warmup_iters else 1 - (1 - it / args.warmup_iters) * (1 - args.warmup_ratio)
        return warm * (0.1 if it >= int(0.75 * args.iters) else 1.0)
    return det


def _record(args: argparse.Namespace) -> Dict[str, Any]:
    """The arguments as plain values: JSON and torch.load(weights_only=True) read paths back only as strings."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, iteration: int,
          epoch_iters: int, args: argparse.Namespace, metrics: Optional[Dict[str, float]]) -> None:
    state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                 iteration=iteration, epoch_iters=epoch_iters, args=_record(args), metrics=metrics)
    tmp = path.with_suffix('.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)  # a run stopped while saving keeps its previous checkpoint


# What `_save` writes and a resumed or evaluated run reads; epoch_iters (iterations per epoch) says when a run
# scheduled in epochs has finished, without building its dataset.
CHECKPOINT_FIELDS = dict(model=dict, optimizer=dict, scheduler=dict, iteration=int, epoch_iters=int, args=dict)


def _nonfinite(state: Any, name: str = '') -> Optional[str]:
    """The key of the first floating-point tensor in nested dicts and lists that holds NaN or infinity, else None."""
    if isinstance(state, torch.Tensor):
        return name if state.is_floating_point() and not bool(state.isfinite().all()) else None
    if isinstance(state, (list, tuple)):
        state = dict(enumerate(state))
    for key, value in state.items() if isinstance(state, dict) else ():
        found = _nonfinite(value, f'{name}.{key}' if name else str(key))
        if found:
            return found
    return None


def _read_checkpoint(path: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """The --resume checkpoint, if it is one of this task and backbone whose tensors are all finite.

    Raises:
        ValueError: what is wrong with it, in one line.
    """
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated, corrupt or foreign file fails in many ways (zip, pickle, EOF, ...)
        raise ValueError(f'not a readable checkpoint: torch.load(weights_only=True) failed ({type(e).__name__}); the '
                         f'file is truncated or corrupt, or holds more than tensors and plain values') from None
    if not isinstance(ckpt, dict):
        raise ValueError(f'holds a {type(ckpt).__name__}, not a timm_mod.dense checkpoint')
    bad = [key for key, kind in CHECKPOINT_FIELDS.items() if not isinstance(ckpt.get(key), kind)]
    if 'args' not in bad:
        bad += [f"args['{key}']" for key in ('task', 'backbone') if not isinstance(ckpt['args'].get(key), str)]
    if bad:
        raise ValueError(f'not a timm_mod.dense checkpoint (no valid {", ".join(bad)}): resume from a last.pth of '
                         f'python -m timm_mod.dense')
    saved = ckpt['args']
    if (saved['task'], saved['backbone']) != (args.task, args.backbone):
        raise ValueError(f'saved by a {saved["task"]} run on {saved["backbone"]}, not {args.task} on {args.backbone}')
    where = _nonfinite(ckpt)
    if where:
        raise ValueError(f'{where} holds NaN or infinite values: the run had diverged when it was saved')
    return ckpt


def _check_unfinished(args: argparse.Namespace, ckpt: Dict[str, Any]) -> None:
    """Refuse to resume a run at the end of its schedule: it would train, evaluate and save nothing.

    Raises:
        ValueError: saying where the run stands and what to do instead.
    """
    by_epoch = args.iters is None  # det's default: the schedule is --epochs long
    done = ckpt['iteration'] // ckpt['epoch_iters'] if by_epoch else ckpt['iteration']
    end = args.epochs if by_epoch else args.iters
    if done >= end:
        unit, flag = ('epoch', '--epochs') if by_epoch else ('iteration', '--iters')
        where = f'finished at {unit} {done} of {end}' if done == end else f'is at {unit} {done}, past {flag} {end}'
        raise ValueError(f'the run {where}: evaluate it with --eval-only, or raise {flag} above {done} to train '
                         f'further')


@torch.inference_mode()
def evaluate(args: argparse.Namespace, model: nn.Module, loader: DataLoader, device: torch.device) -> Dict[str, float]:
    """Cityscapes: mIoU, aAcc, mAcc (%). VOC: mAP@0.5 VOC07 11-point (the paper's) and COCO-style (%)."""
    model.eval()
    if args.task == 'seg':
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
        common = dict(num_classes=CITYSCAPES_CLASSES, ignore_index=IGNORE_INDEX)
        metrics = MetricCollection({
            'mIoU': MulticlassJaccardIndex(**common), 'aAcc': MulticlassAccuracy(average='micro', **common),
            'mAcc': MulticlassAccuracy(average='macro', **common)}).to(device)
        for image, label in loader:
            label = label.to(device)
            logits = model(image.to(device))['out']
            if logits.shape[-2:] != label.shape[-2:]:
                logits = F.interpolate(logits, size=label.shape[-2:], mode='bilinear', align_corners=False)
            metrics.update(logits.argmax(1), label)
    else:
        from torchmetrics.detection import MeanAveragePrecision
        from .voc_eval import VOC07MeanAP
        preds, targets = [], []
        for images, batch_targets in loader:
            preds += [{k: v.cpu() for k, v in p.items()} for p in model([img.to(device) for img in images])]
            targets += batch_targets
        if dist.is_initialized():
            # torchmetrics' MeanAveragePrecision syncs one tensor per image, so it needs equal shards on every
            # rank; gathering the (small) detections lets every rank compute on all images instead.
            shards = [None] * dist.get_world_size()
            dist.all_gather_object(shards, (preds, targets))
            preds, targets = [p for s in shards for p in s[0]], [t for s in shards for t in s[1]]
        metrics = {
            'mAP50_voc07': VOC07MeanAP(len(VOC_CLASSES), sync_on_compute=False),
            'mAP50_coco': MeanAveragePrecision(iou_thresholds=[0.5], backend=args.coco_backend, sync_on_compute=False),
        }
        metrics['mAP50_voc07'].update(preds, targets)
        # COCO's crowd regions are the nearest thing it has to VOC's difficult objects: matches to them are ignored
        metrics['mAP50_coco'].update(
            preds, [dict(boxes=t['boxes'], labels=t['labels'], iscrowd=t['difficult'].long()) for t in targets])
    results = {name: metric.compute() for name, metric in metrics.items()}
    return {name: 100 * float(v['map'] if isinstance(v, dict) else v) for name, v in results.items()}


def run(args: argparse.Namespace, ckpt: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train (unless --eval-only) and evaluate one system; returns the run folder and the last metrics.

    Args:
        args: The seg or det command line, checked.
        ckpt: The --resume checkpoint, read and checked (see `_read_checkpoint`).
    """
    rank, world, device = _init_distributed(args.device)
    try:
        return _run(args, ckpt, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _run(args: argparse.Namespace, ckpt: Optional[Dict[str, Any]], rank: int, world: int,
         device: torch.device) -> Dict[str, Any]:
    torch.manual_seed(args.seed + rank)
    train_ds, eval_ds = _datasets(args)
    # before the model is built (its pretrained weights downloaded): the loaders refuse a set smaller than a batch
    train_loader, eval_loader = _loaders(args, train_ds, eval_ds, rank, world)
    model = build_system(TASK_SYSTEM[args.task], args.backbone, args.img_size if args.task == 'det' else None,
                         pretrained_backbone=args.pretrained_backbone)
    if ckpt:
        model.load_state_dict(ckpt['model'])
    model.to(device)
    if args.task == 'det' and train_loader is not None:
        args.iters = args.iters or args.epochs * len(train_loader)
        args.lr = args.lr or 0.01 * args.batch_size * world / DET_BASE_BATCH
    run_dir = new_run_dir(args.output, f'{args.task}-{args.backbone}') if rank == 0 else None
    if run_dir:
        (run_dir / 'args.json').write_text(json.dumps(_record(args), indent=1))
        plan = 'evaluation only' if args.eval_only else f'{args.iters} iterations, lr {args.lr}'
        _log(rank, f'run folder {run_dir}; {args.task} {args.backbone} {count_params_m(model):.3f} M params, '
                   f'{world} process(es) on {device}, {plan}')

    def evaluate_and_log(iteration: int) -> Dict[str, float]:
        metrics = evaluate(args, model, eval_loader, device)
        _log(rank, f'eval @ {iteration}: ' + ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()))
        if run_dir:
            with open(run_dir / 'metrics.jsonl', 'a') as f:
                f.write(json.dumps(dict(iteration=iteration, **metrics)) + '\n')
        return metrics

    if args.eval_only:
        return dict(run_dir=run_dir, metrics=evaluate_and_log(ckpt['iteration'] if ckpt else 0))
    if world > 1 and device.type == 'cuda' and args.task == 'seg':
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the paper's SyncBN across GPUs
    train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None) \
        if world > 1 else model
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(args))
    if ckpt:
        optimizer.load_state_dict(ckpt['optimizer'])
        scheduler.load_state_dict(ckpt['scheduler'])

    metrics = None
    for iteration in _train_iterations(args, train_model, optimizer, scheduler, train_loader, device,
                                       ckpt['iteration'] if ckpt else 0, rank):
        if iteration == args.iters or (args.eval_interval and iteration % args.eval_interval == 0):
            metrics = evaluate_and_log(iteration)
            if run_dir:
                _save(run_dir / 'last.pth', model, optimizer, scheduler, iteration, len(train_loader), args,
                      metrics)
            train_model.train()
    return dict(run_dir=run_dir, metrics=metrics)


def _train_iterations(
        args: argparse.Namespace,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loader: DataLoader,
        device: torch.device,
        iteration: int,
        rank: int,
) -> Iterator[int]:
    """One SGD step per batch from `iteration` to args.iters, yielding the number of iterations done after each."""
    first, start = iteration, time.perf_counter()
    epoch = iteration // len(loader)
    model.train()
    while iteration < args.iters:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        for images, targets in loader:
            loss = _loss(args, model, images, targets, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            iteration += 1
            if iteration % args.log_interval == 0 or iteration == args.iters:
                _log(rank, f'iter {iteration}/{args.iters} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.3g} '
                           f'{(time.perf_counter() - start) / (iteration - first):.2f} s/iter')
            yield iteration
            if iteration == args.iters:
                return
        epoch += 1


# --- command line --------------------------------------------------------------------------------------------------

def _add_run_args(p: argparse.ArgumentParser, task: str) -> None:
    seg = task == 'seg'
    p.add_argument('--backbone', default='resnet86_mod', help='timm model name (default resnet86_mod)')
    p.add_argument('--data', type=existing_dir, required=True,
                   help='Cityscapes root (leftImg8bit/, gtFine/)' if seg else 'folder holding VOCdevkit/VOC2007, ...')
    p.add_argument('--output', type=Path, default=Path('output/dense'),
                   help='parent folder; each run gets a new subfolder <task>-<backbone>-<time> (default output/dense)')
    p.add_argument('--pretrained-backbone', action='store_true',
                   help='start from the backbone\'s ImageNet weights (timm / Hugging Face Hub), as the paper does')
    p.add_argument('--iters', type=positive_int, default=80_000 if seg else None,
                   help='training iterations (default 80000)' if seg else 'training iterations (default: --epochs)')
    p.add_argument('--batch-size', type=positive_int, default=2, help='images per process (default 2)')
    p.add_argument('--lr', type=positive_float, default=0.01 if seg else None,
                   help='base learning rate (default 0.01)' if seg else
                   f'base learning rate (default 0.01 x total batch / {DET_BASE_BATCH})')
    p.add_argument('--momentum', type=nonnegative_float, default=0.9, help='SGD momentum (default 0.9)')
    p.add_argument('--weight-decay', type=nonnegative_float, default=5e-4 if seg else 1e-4,
                   help=f'SGD weight decay (default {5e-4 if seg else 1e-4})')
    p.add_argument('--img-size', type=positive_int, nargs=2, metavar=('H', 'W') if seg else ('SHORT', 'LONG'),
                   default=(1024, 2048) if seg else (600, 1000),
                   help='image scale: training resizes it by [0.5, 2], evaluation to it (default 1024 2048)' if seg
                   else 'resize to this short side unless the long side would pass LONG (default 600 1000)')
    if seg:
        p.add_argument('--crop-size', type=positive_int, nargs=2, metavar=('H', 'W'), default=(512, 1024),
                       help='training crop (default 512 1024)')
        p.add_argument('--min-lr', type=nonnegative_float, default=1e-4,
                       help='lr at the end of the poly decay (default 1e-4)')
        p.add_argument('--power', type=positive_float, default=0.9, help='poly decay power (default 0.9)')
        p.add_argument('--eval-split', default='val', choices=('val', 'test', 'train'),
                       help='Cityscapes split evaluated (default val)')
    else:
        p.add_argument('--epochs', type=positive_int, default=12,
                       help='training length in epochs when --iters is not given; lr / 10 after 3/4 (default 12)')
        p.add_argument('--warmup-iters', type=nonnegative_int, default=500,
                       help='linear lr warm-up iterations (default 500)')
        p.add_argument('--warmup-ratio', type=nonnegative_float, default=0.001,
                       help='warm-up start, times the lr (default 0.001)')
        p.add_argument('--train-sets', default='2007-trainval,2012-trainval',
                       help='VOC YEAR-SET list trained on (default 2007-trainval,2012-trainval)')
        p.add_argument('--eval-sets', default='2007-test', help='VOC YEAR-SET list evaluated (default 2007-test)')
        p.add_argument('--coco-backend', default='pycocotools', choices=('pycocotools', 'faster_coco_eval'),
                       help='package torchmetrics uses for the COCO-style mAP (default pycocotools)')
    p.add_argument('--eval-interval', type=nonnegative_int, default=8000 if seg else 0,
                   help='evaluate and checkpoint every N iterations, 0 = at the end only '
                        f'(default {8000 if seg else 0}); the end is always evaluated')
    p.add_argument('--eval-only', action='store_true', help='only evaluate (the --resume checkpoint, if given)')
    p.add_argument('--resume', type=existing_file, metavar='CKPT',
                   help='continue training from (or with --eval-only, evaluate) CKPT, the last.pth of an earlier run')
    p.add_argument('--workers', type=nonnegative_int, default=4, help='data loading processes per process (default 4)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'),
                   help='cuda if available, else cpu')
    p.add_argument('--log-interval', type=positive_int, default=50,
                   help='print the loss every N iterations (default 50)')
    p.add_argument('--seed', type=nonnegative_int, default=0, help='random seed (default 0)')


def _parser() -> Tuple[argparse.ArgumentParser, Dict[str, argparse.ArgumentParser]]:
    """The parser and its sub-command parsers (each reports errors with its own usage line)."""
    from .bench import add_bench_args  # here, not at the top: bench imports this module for the systems it times
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.dense', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='task', required=True)
    subs = {
        'seg': sub.add_parser('seg', help='FCN on Cityscapes (Table 3)'),
        'det': sub.add_parser('det', help='Faster R-CNN + FPN on Pascal VOC (Table 4)'),
        'bench': sub.add_parser('bench', help='inference latency of both systems on each backbone'),
    }
    _add_run_args(subs['seg'], 'seg')
    _add_run_args(subs['det'], 'det')
    add_bench_args(subs['bench'])
    return parser, subs


def _check_extras(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The packages evaluation needs, found missing now rather than after the training."""
    try:
        import_extra('torchmetrics', 'dense', 'evaluation')
        if args.task == 'det' and args.coco_backend == 'pycocotools':
            import_extra('pycocotools', 'dense', 'the COCO-style mAP')
    except ImportError as e:
        parser.error(str(e))
    if args.task == 'det' and args.coco_backend == 'faster_coco_eval':
        try:
            importlib.import_module('faster_coco_eval')
        except ImportError:
            parser.error('--coco-backend faster_coco_eval needs faster-coco-eval, which the dense extra does not '
                         'install: pip install faster-coco-eval')


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """Everything that can be wrong with a seg or det command line, reported before any data or model is loaded.

    Returns:
        The --resume checkpoint, read and checked; None without --resume.
    """
    try:
        check_backbone(args.backbone)
    except ValueError as e:
        parser.error(f'--backbone: {e}')
    check_device(parser, args.device)
    try:
        _check_data(args)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    existing = next(path for path in (args.output, *args.output.parents) if path.exists())
    if not existing.is_dir():
        parser.error(f'--output {args.output}: {existing} is a file, not a folder')
    _check_extras(parser, args)
    if not args.resume:
        return None
    try:
        ckpt = _read_checkpoint(args.resume, args)
        if not args.eval_only:
            _check_unfinished(args, ckpt)
    except ValueError as e:
        parser.error(f'--resume {args.resume}: {e}')
    return ckpt


def main(argv: Optional[Sequence[str]] = None) -> Optional[Dict[str, Any]]:
    """``python -m timm_mod.dense seg|det|bench``; returns a seg or det run's folder and last metrics."""
    parser, subs = _parser()
    args = parser.parse_args(argv)
    if args.task == 'bench':
        from .bench import bench_command
        return bench_command(subs['bench'], args)
    ckpt = _check_args(subs[args.task], args)
    return run(args, ckpt)


if __name__ == '__main__':
    main()
