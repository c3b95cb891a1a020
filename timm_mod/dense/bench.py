"""Time the paper's dense-prediction systems: inference latency of FCN and Faster R-CNN on each backbone.

    python -m timm_mod.dense bench --threads 1,16 --json dense.json
    python -m timm_mod.dense bench --systems faster_rcnn --threads 1 --det-size 600 1000 --rounds 5

Models are randomly initialised (MoD's shapes are static, so its cost does not depend on the weights), batch 1,
timed with torch.utils.benchmark; the first backbone is the baseline of every speed-up, printed beside the paper's
Table 3 / 4 speed-ups.
"""
import argparse
import contextlib
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils import benchmark

from ..tools._cli import OutputError, check_device, int_list, new_file, nonnegative_float, positive_int
from ..tools.bench import cpu_name, interleaved
from ..tools.complexity import count_params_m
from ..tools.paper import DENSE_PAPER
from .backbone import check_backbone
from .engine import SYSTEMS, build_system

__all__ = ['bench_systems', 'markdown_table', 'add_bench_args', 'bench_command']

DEFAULT_BACKBONES = ('resnet50', 'resnet50_mod', 'resnet75_mod', 'resnet86_mod')


def _fix_detection_workload(model: nn.Module) -> None:
    """Zero an untrained detector's box classifier, so no box passes the 0.05 score threshold.

    Untrained class scores hover around 1 / 21, just under the threshold: how many of the 1000 proposals x 20
    classes reach the final NMS then depends on the random draw, not on the backbone being timed.
    """
    predictor = model.roi_heads.box_predictor.cls_score
    nn.init.zeros_(predictor.weight)
    nn.init.zeros_(predictor.bias)


def _inference_fn(system: str, backbone: str, size: Tuple[int, int],
                  device: torch.device) -> Tuple[nn.Module, Callable[[], Any]]:
    """An untrained system in eval mode and a call running it on one random image of `size`."""
    model = build_system(system, backbone, **(dict(aux=False) if system == 'fcn' else dict(img_size=size)))
    model = model.eval().to(device)
    if system == 'faster_rcnn':
        _fix_detection_workload(model)
    x = torch.randn(1, 3, *size, device=device)
    inputs = x if system == 'fcn' else [x[0]]

    def infer():
        with torch.inference_mode():
            return model(inputs)
    return model, infer


def bench_systems(
        systems: Sequence[str] = SYSTEMS,
        backbones: Sequence[str] = DEFAULT_BACKBONES,
        threads: Optional[Sequence[int]] = None,
        fcn_size: Tuple[int, int] = (1024, 2048),
        det_size: Tuple[int, int] = (600, 1000),
        device: str = 'cpu',
        rounds: int = 5,
        min_run_time: float = 0.0,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Tuple[List[Dict[str, Any]], List[benchmark.Measurement]]:
    """Inference latency of each system on each backbone, batch 1, speed-up against the first backbone.

    Models are randomly initialised: MoD's shapes are static, so its cost does not depend on the weights. FCN runs
    without its auxiliary head (it only serves training); Faster R-CNN gets one image of `det_size`, resizes within
    (min_size, max_size) = det_size, so a 600 x 1000 image is not resized, and its box classifier is zeroed (see
    `_fix_detection_workload`). The backbones are timed in turn, `rounds` times (see
    `timm_mod.tools.bench.interleaved`).
    """
    dev = torch.device(device)
    threads = threads or [torch.get_num_threads()]
    env = dict(torch=torch.__version__, timm=timm.__version__, cpu=cpu_name(), cpu_count=os.cpu_count(),
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None)
    rows, measurements = [], []
    for system in systems:
        size = tuple(fcn_size if system == 'fcn' else det_size)
        for t in threads:
            torch.set_num_threads(t)
            built = {f'{system}_{b}': _inference_fn(system, b, size, dev) for b in backbones}
            setting = f'{dev.type} t={t} bs=1 {size[0]}x{size[1]}'
            timed = interleaved({name: fn for name, (_, fn) in built.items()}, t, f'{system} inference',
                                 setting, rounds, min_run_time)
            base = None
            for (name, (model, _)), backbone in zip(built.items(), backbones):
                m = timed[name]
                measurements.append(m)
                paper = DENSE_PAPER.get(name)
                row = dict(model=name, system=system, backbone=backbone, baseline=base['model'] if base else None,
                           device=dev.type, threads=t, batch_size=1, img_size=list(size),
                           params_m=round(count_params_m(model), 4), latency_ms=m.median * 1e3,
                           latency_iqr_ms=m.iqr * 1e3, runs=len(m.times), **env)
                row['speedup'] = base['latency_ms'] / row['latency_ms'] if base else 1.0
                row['paper_speedup'] = (paper.speedup_gpu if dev.type == 'cuda' else paper.speedup_cpu) \
                    if paper and base else None
                base = base or row
                rows.append(row)
                log(f'{name:<28} {setting}: {row["latency_ms"]:.1f} ms (IQR {row["latency_iqr_ms"]:.1f}, '
                    f'{row["runs"]} runs), x{row["speedup"]:.2f}')
            del built
    return rows, measurements


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """Our measurements with the paper's Table 3 / 4 speed-ups beside them, labelled as the paper's."""
    lines = ['| system | backbone | setting | params (M) | latency ms (IQR) | speed-up | paper speed-up |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        setting = f'{r["device"]} {r["threads"]}t bs{r["batch_size"]} {r["img_size"][0]}x{r["img_size"][1]}'
        lines.append('| {} | {} | {} | {:.3f} | {:.1f} ({:.1f}) | {} | {} |'.format(
            r['system'], r['backbone'], setting, r['params_m'], r['latency_ms'], r['latency_iqr_ms'],
            f'{r["speedup"]:.2f}' if r['baseline'] else '-',
            f'{r["paper_speedup"]:.2f}' if r.get('paper_speedup') else '-'))
    return '\n'.join(lines)


# --- command line --------------------------------------------------------------------------------------------------

def add_bench_args(p: argparse.ArgumentParser) -> None:
    """The arguments of ``python -m timm_mod.dense bench``."""
    p.add_argument('--systems', default=','.join(SYSTEMS), help='comma-separated: fcn, faster_rcnn (default both)')
    p.add_argument('--backbones', default=','.join(DEFAULT_BACKBONES),
                   help='comma-separated timm models; the first is the baseline (default: R50 and the paper\'s three '
                        'MoD backbones)')
    p.add_argument('--threads', type=int_list, default=None,
                   help='intra-op thread counts, comma-separated (default: all cores)')
    p.add_argument('--fcn-size', type=positive_int, nargs=2, metavar=('H', 'W'), default=(1024, 2048),
                   help='FCN input (default 1024 2048, Cityscapes)')
    p.add_argument('--det-size', type=positive_int, nargs=2, metavar=('H', 'W'), default=(600, 1000),
                   help='Faster R-CNN input, also its resize limits (default 600 1000, Appendix C)')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to run (default cpu)')
    p.add_argument('--rounds', type=positive_int, default=5,
                   help='rounds of timing every backbone in turn; the latency is the median over all (default 5)')
    p.add_argument('--min-run-time', type=nonnegative_float, default=0.0,
                   help='seconds each round\'s Timer.blocked_autorange measures a model for (default 0: one run)')
    p.add_argument('--json', metavar='FILE',
                   help='write one JSON row per (system, backbone, threads) to FILE, a new file (never overwritten)')


def bench_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Run ``python -m timm_mod.dense bench``: every check first, then the timing, its tables and its --json rows.

    Args:
        parser: The bench sub-command's parser, which reports bad input.
        args: Its parsed arguments.
    """
    systems, backbones = args.systems.split(','), args.backbones.split(',')
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f'--systems: unknown system(s) {", ".join(unknown)}, expected some of {", ".join(SYSTEMS)}')
    for name in backbones:
        try:
            check_backbone(name)
        except ValueError as e:
            parser.error(f'--backbones: {e}')
    check_device(parser, args.device)
    try:
        # created now, so an existing file is refused before the (long) timing; removed again if the timing fails
        with new_file(args.json, '--json') if args.json else contextlib.nullcontext() as json_file:
            rows, measurements = bench_systems(
                systems, backbones, args.threads, tuple(args.fcn_size), tuple(args.det_size), args.device,
                args.rounds, args.min_run_time)
            benchmark.Compare(measurements).print()
            print(markdown_table(rows))
            if json_file is not None:
                json.dump(rows, json_file, indent=1)
    except OutputError as e:
        parser.error(str(e))
