"""Measure MoD models against the baselines the paper pairs them with (Tables 1, 2, 7, 8, 9).

Latency is timed with torch.utils.benchmark's Timer and summarised with Compare, the paper's tool. For every
(model, setting) the bench records parameters, GMACs (fvcore), inference latency (median and IQR), throughput,
speed-up against the paired baseline measured under the same settings, training throughput (forward + backward +
SGD step) and its speed-up, and peak memory (CUDA only). The paper's own speed-ups are printed beside ours, labelled.

Examples:
    python -m timm_mod.bench --models resnet50_mod --threads 1 --batch-size 1
    python -m timm_mod.bench --device cuda --batch-size 1,64,256 --amp --channels-last --json gpu.json
    python -m timm_mod.bench --models resnet50_mod --mod-c 2,4,8,16,32,64   # Table 10's c sweep
    python -m timm_mod.bench --models resnet50_mod,resnet75_mod --bound      # + MoD blocks replaced by identity
"""
import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils import benchmark

from .complexity import count_gmacs, count_params_m
from .layers import MoDBlock
from .paper import BASELINES, PAPER

__all__ = ['default_models', 'mod_bound', 'run_bench', 'markdown_table', 'cpu_name']


def default_models() -> List[str]:
    """Every MoD model with a paired baseline: the paper's rows, then the beyond-the-paper conversions."""
    return list(BASELINES)


def mod_bound(model: nn.Module) -> nn.Module:
    """The same network with every MoD block replaced by identity: the speed limit the MoD blocks allow."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, MoDBlock):
                setattr(module, child_name, nn.Identity())
    return model


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse_variant(spec: str) -> Tuple[str, Dict[str, Any], bool]:
    """'resnet50_mod[c=16]' -> ('resnet50_mod', {'mod_c': 16}, False); 'x[bound]' -> ('x', {}, True)."""
    if '[' not in spec:
        return spec, {}, False
    name, tag = spec[:-1].split('[', 1)
    if tag == 'bound':
        return name, {}, True
    return name, {'mod_c': int(tag.split('=', 1)[1])}, False


def _build(spec: str, device: torch.device, channels_last: bool) -> nn.Module:
    name, kwargs, bound = _parse_variant(spec)
    model = timm.create_model(name, **kwargs)
    if bound:
        mod_bound(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _time(fn: Callable[[], Any], threads: int, label: str, sub_label: str, description: str,
          min_run_time: float) -> benchmark.Measurement:
    fn()  # warm-up outside the timer (allocations, lazy init, autotuning)
    timer = benchmark.Timer(
        stmt='fn()', globals={'fn': fn}, num_threads=threads, label=label, sub_label=sub_label,
        description=description)
    return timer.blocked_autorange(min_run_time=min_run_time)


def _measure(
        spec: str,
        device: torch.device,
        threads: int,
        batch_size: int,
        img_size: Optional[int],
        channels_last: bool,
        amp: bool,
        compile_model: bool,
        compile_mode: Optional[str],
        train: bool,
        min_run_time: float,
) -> Tuple[Dict[str, Any], List[benchmark.Measurement]]:
    torch.set_num_threads(threads)
    model = _build(spec, device, channels_last)
    size = img_size or model.pretrained_cfg['input_size'][-1]
    x = torch.randn(batch_size, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    setting = f'{device.type} t={threads} bs={batch_size} {size}px' + (' cl' if channels_last else '') + (
        ' amp' if amp else '') + (' compile' if compile_model else '')
    row: Dict[str, Any] = dict(
        model=spec, device=device.type, threads=threads, batch_size=batch_size, img_size=size,
        channels_last=channels_last, amp=amp, compile=(compile_mode or 'default') if compile_model else False,
        params_m=round(count_params_m(model), 4))
    measurements = []

    def autocast():
        if not amp:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=torch.float16 if device.type == 'cuda' else torch.bfloat16)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    run_model = torch.compile(model, mode=compile_mode) if compile_model else model

    def infer():
        with torch.inference_mode(), autocast():
            return run_model(x)

    m = _time(infer, threads, 'inference (ms)', spec, setting, min_run_time)
    measurements.append(m)
    row.update(latency_ms=m.median * 1e3, latency_iqr_ms=m.iqr * 1e3, throughput_img_s=batch_size / m.median)
    if train:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        target = torch.randint(0, model.num_classes, (batch_size,), device=device)
        train_model = torch.compile(model, mode=compile_mode) if compile_model else model

        def step():
            with autocast():
                loss = nn.functional.cross_entropy(train_model(x), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        m = _time(step, threads, 'train step (ms)', spec, setting, min_run_time)
        measurements.append(m)
        row.update(train_img_s=batch_size / m.median)
    if device.type == 'cuda':
        row['peak_mem_mb'] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return row, measurements


def _pairs(models: List[str], mod_cs: List[int], bound: bool) -> List[Tuple[str, Optional[str]]]:
    """(variant spec, baseline) for every row to measure, baselines first so they are measured once."""
    rows: List[Tuple[str, Optional[str]]] = []
    for name in models:
        base = BASELINES.get(name)
        if base and (base, None) not in rows:
            rows.append((base, None))
    for name in models:
        if name in [r[0] for r in rows]:
            continue
        base = BASELINES.get(name)
        specs = [f'{name}[c={c}]' for c in mod_cs] if mod_cs else [name]
        if bound and any(isinstance(m, MoDBlock) for m in timm.create_model(name, device='meta').modules()):
            specs.append(f'{name}[bound]')
        rows.extend((spec, base) for spec in specs)
    return rows


def run_bench(
        models: List[str],
        device: str = 'cpu',
        threads: Optional[List[int]] = None,
        batch_sizes: Optional[List[int]] = None,
        img_size: Optional[int] = None,
        channels_last: bool = False,
        amp: bool = False,
        compile_model: bool = False,
        compile_mode: Optional[str] = None,
        mod_cs: Optional[List[int]] = None,
        bound: bool = False,
        train: bool = True,
        gmacs: bool = True,
        min_run_time: float = 1.0,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Tuple[List[Dict[str, Any]], List[benchmark.Measurement]]:
    """Measure every model (and its paired baseline) in every (threads, batch size) setting."""
    dev = torch.device(device)
    threads = threads or [torch.get_num_threads()]
    batch_sizes = batch_sizes or [1]
    pairs = _pairs(models, mod_cs or [], bound)
    total = len(pairs) * len(threads) * len(batch_sizes)
    rows, measurements = [], []
    macs_cache: Dict[Tuple[str, int], float] = {}
    env = dict(torch=torch.__version__, timm=timm.__version__, cpu=cpu_name(), cpu_count=os.cpu_count(),
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None)
    start, done = time.perf_counter(), 0
    for t in threads:
        for bs in batch_sizes:
            base_rows: Dict[str, Dict[str, Any]] = {}
            for spec, base in pairs:
                done += 1
                row, ms = _measure(
                    spec, dev, t, bs, img_size, channels_last, amp, compile_model, compile_mode, train, min_run_time)
                if gmacs:
                    key = (spec, row['img_size'])
                    if key not in macs_cache:
                        macs_cache[key] = count_gmacs(_build(spec, torch.device('cpu'), False),
                                                      (3, row['img_size'], row['img_size']))
                    row['gmacs'] = round(macs_cache[key], 4)
                row.update(baseline=base, **env)
                if base is None:
                    base_rows[spec] = row
                    row.update(speedup=1.0, train_speedup=1.0 if train else None)
                else:
                    ref = base_rows[base]
                    row['speedup'] = ref['latency_ms'] / row['latency_ms']
                    row['train_speedup'] = row['train_img_s'] / ref['train_img_s'] if train else None
                rows.append(row)
                measurements.extend(ms)
                elapsed = time.perf_counter() - start
                log(f'[{done}/{total}] {spec:<24} t={t} bs={bs}: {row["latency_ms"]:.2f} ms, '
                    f'x{row["speedup"]:.2f} vs {base or "itself"} '
                    f'(elapsed {elapsed:.0f}s, eta {elapsed / done * (total - done):.0f}s)')
    return rows, measurements


def _paper_speedup(spec: str, device: str) -> Optional[float]:
    row = PAPER.get(_parse_variant(spec)[0])
    if row is None or '[' in spec:
        return None
    return row.speedup_gpu if device == 'cuda' else row.speedup_cpu


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """Our measurements with the paper's reported speed-up beside them (labelled as the paper's)."""
    lines = [
        '| model | vs | setting | params (M) | GMACs | latency ms (IQR) | speed-up | paper speed-up | train img/s | '
        'train speed-up |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        setting = f'{r["device"]} {r["threads"]}t bs{r["batch_size"]} {r["img_size"]}px' + (
            ' cl' if r.get('channels_last') else '') + (' amp' if r.get('amp') else '') + (
            ' compile' if r.get('compile') else '')
        paper = _paper_speedup(r['model'], r['device']) if r.get('baseline') else None
        lines.append('| {} | {} | {} | {:.2f} | {} | {:.2f} ({:.2f}) | {} | {} | {} | {} |'.format(
            r['model'], r.get('baseline') or '-', setting, r['params_m'],
            f'{r["gmacs"]:.2f}' if r.get('gmacs') is not None else '-',
            r['latency_ms'], r['latency_iqr_ms'],
            f'{r["speedup"]:.2f}' if r.get('baseline') else '-',
            f'{paper:.2f}' if paper else '-',
            f'{r["train_img_s"]:.1f}' if r.get('train_img_s') else '-',
            f'{r["train_speedup"]:.2f}' if r.get('baseline') and r.get('train_speedup') else '-'))
    return '\n'.join(lines)


def _int_list(text: str) -> List[int]:
    return [int(v) for v in text.replace(' ', ',').split(',') if v]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.bench', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='',
                        help='comma-separated models; each MoD model brings its paired baseline '
                             '(default: every MoD model of timm_mod.paper.BASELINES)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to run (default cpu)')
    parser.add_argument('--threads', type=_int_list, default=None,
                        help='intra-op thread counts, comma-separated (default: all cores)')
    parser.add_argument('--batch-size', type=_int_list, default=[1], help='batch sizes, comma-separated (default 1)')
    parser.add_argument('--img-size', type=int, default=None,
                        help='input size for every model (default: each model\'s own, 224 or 32 for CIFAR)')
    parser.add_argument('--channels-last', action='store_true', help='channels_last memory format for model and input')
    parser.add_argument('--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 on CPU')
    parser.add_argument('--compile', action='store_true', help='torch.compile the model (baselines too)')
    parser.add_argument('--compile-mode', default=None,
                        help='torch.compile mode, e.g. reduce-overhead (CUDA graphs) or max-autotune')
    parser.add_argument('--mod-c', type=_int_list, default=None,
                        help='build each MoD model with these c values, comma-separated (Table 10\'s sweep)')
    parser.add_argument('--bound', action='store_true',
                        help='also time each MoD model with its MoD blocks replaced by identity (its speed bound)')
    parser.add_argument('--no-train', action='store_true', help='skip the training-step measurement')
    parser.add_argument('--no-gmacs', action='store_true', help='skip fvcore MAC counting')
    parser.add_argument('--min-run-time', type=float, default=1.0,
                        help='seconds each Timer.blocked_autorange measures for (default 1.0)')
    parser.add_argument('--json', metavar='FILE', help='write one JSON row per (model, setting) to FILE')
    parser.add_argument('--plot', metavar='DIR', help='draw Figure 3\'s four panels into DIR (needs matplotlib)')
    args = parser.parse_args(argv)

    models = [m for m in args.models.split(',') if m] or default_models()
    known = set(timm.list_models())
    unknown = [m for m in models if m not in known]
    if unknown:
        import difflib
        hints = {m: difflib.get_close_matches(m, known, n=3) for m in unknown}
        parser.error('unknown model(s): ' + '; '.join(f'{m} (did you mean {", ".join(h) or "-"}?)'
                                                        for m, h in hints.items()))
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    if args.json and os.path.exists(args.json):
        parser.error(f'{args.json} exists; choose a new file (results are never overwritten)')
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error('--plot needs matplotlib: pip install "timm-mod[plot]"')

    rows, measurements = run_bench(
        models, device=args.device, threads=args.threads, batch_sizes=args.batch_size, img_size=args.img_size,
        channels_last=args.channels_last, amp=args.amp, compile_model=args.compile, compile_mode=args.compile_mode,
        mod_cs=args.mod_c,
        bound=args.bound, train=not args.no_train, gmacs=not args.no_gmacs, min_run_time=args.min_run_time)
    benchmark.Compare(measurements).print()
    print(markdown_table(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        from .report import plot_figure3
        for path in plot_figure3(rows, args.plot):
            print(f'wrote {path}', file=sys.stderr)


if __name__ == '__main__':
    main()
