"""Measure MoD models against the baselines the paper pairs them with (Tables 1, 2, 7, 8, 9).

Latency is timed with torch.utils.benchmark's Timer and summarised with Compare, the paper's tool; a baseline and
the models compared with it are timed in turn, round after round (`--rounds`), so that a machine's drifting speed
hits them alike. For every (model, setting) the bench records parameters, GMACs (fvcore), inference latency (median
and IQR), throughput, speed-up against the paired baseline measured under the same settings, training throughput
(forward + backward + SGD step) and its speed-up, and peak memory (CUDA only). The paper's own speed-ups are printed
beside ours, labelled.

Examples:
    python -m timm_mod.tools.bench --models resnet50_mod --threads 1 --batch-size 1
    python -m timm_mod.tools.bench --device cuda --batch-size 1,64,256 --amp --channels-last --json gpu.json
    python -m timm_mod.tools.bench --models resnet50_mod --mod-c 2,4,8,16,32,64   # Table 10's c sweep
    python -m timm_mod.tools.bench --models resnet50_mod,resnet75_mod --bound      # + MoD blocks replaced by identity
    python -m timm_mod.tools.bench --runtime onnxruntime --threads 1 --bound --no-train   # ONNX Runtime, CPU
    python -m timm_mod.tools.bench --runtime openvino --threads 1 --bound --no-train      # OpenVINO, CPU

Runtimes (--runtime): ``eager`` (PyTorch), ``compile`` (torch.compile, inductor), ``onnxruntime`` (exported with
torch.onnx.export, --exporter dynamo or torchscript) and ``openvino`` (openvino.convert_model), the last two on the CPU
with a dynamic batch axis (`timm_mod.tools.deploy`). Baselines, MoD models and bounds go through the same runtime.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils import benchmark

from ..layers import MoDBlock
from ..models.pairing import BASELINES
from . import deploy
from ._cli import (
    OutputError, check_device, check_models, import_extra, int_list, new_file, nonnegative_float, positive_int)
from .complexity import count_gmacs, count_params_m
from .paper import PAPER

# random images the INT8 quantization of the bench calibrates on (its speed does not depend on what they show)
CALIBRATION_IMAGES = 8

__all__ = [
    'CALIBRATION_IMAGES', 'default_models', 'configure_dynamo', 'interleaved', 'malloc_setting', 'mod_bound',
    'run_bench', 'markdown_table', 'cpu_name']


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


def malloc_setting() -> Optional[str]:
    """The allocator settings of this process (GLIBC_TUNABLES, LD_PRELOAD), which move CPU latencies at large batch.

    glibc serves allocations of tens of MB (a batch-32 feature map) with fresh mmaps, so every forward page-faults
    them in again; on this project's VM that was ~45 % of a batch-32 ResNet50 forward and most of its spread.
    """
    parts = [f'{k}={os.environ[k]}' for k in ('GLIBC_TUNABLES', 'LD_PRELOAD') if os.environ.get(k)]
    return ' '.join(parts) or None


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


def interleaved(
        fns: Dict[str, Callable[[], Any]],
        threads: int,
        label: str,
        description: str,
        rounds: int,
        min_run_time: float,
) -> Dict[str, benchmark.Measurement]:
    """Time every fn once per round, round after round, and merge each fn's rounds into one Measurement.

    On a shared machine other processes' load comes and goes; timing the models in turn spreads it over all of them
    rather than penalising whichever ran at a busy moment, so a speed-up compares models measured under the same
    conditions. Each `blocked_autorange` first runs its statement to size the block, which doubles as the warm-up a
    model needs after another one ran.
    """
    timers = {name: benchmark.Timer(stmt='fn()', globals={'fn': fn}, num_threads=threads, label=label,
                                    sub_label=name, description=description) for name, fn in fns.items()}
    runs: Dict[str, List[benchmark.Measurement]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, timer in timers.items():
            runs[name].append(timer.blocked_autorange(min_run_time=min_run_time))
    return {name: benchmark.Measurement.merge(ms)[0] for name, ms in runs.items()}


def _prepare(
        spec: str,
        device: torch.device,
        batch_size: int,
        img_size: Optional[int],
        channels_last: bool,
        amp: bool,
        compile_model: bool,
        compile_mode: Optional[str],
        train: bool,
        runtime: str = 'eager',
        exporter: str = 'dynamo',
        threads: int = 1,
        precision: str = 'fp32',
        keep: str = 'none',
) -> Tuple[Dict[str, Any], Callable[[], Any], Optional[Callable[[], Any]]]:
    """A row describing the model and setting, an inference call and (with `train`) a training-step call.

    Inference runs an eval-mode copy; the training step (forward, backward, SGD step) a train-mode one, so the two
    can be timed in any order. With an ONNX Runtime or OpenVINO `runtime` the inference call runs the exported or
    converted eval-mode model there (`threads` threads), and there is no training step.
    """
    model = _build(spec, device, channels_last)
    size = img_size or model.pretrained_cfg['input_size'][-1]
    x = torch.randn(batch_size, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    deployed = runtime in ('onnxruntime', 'openvino')
    row: Dict[str, Any] = dict(
        model=spec, device=device.type, batch_size=batch_size, img_size=size,
        channels_last=channels_last, amp=amp, compile=(compile_mode or 'default') if compile_model else False,
        runtime=runtime, exporter=exporter if runtime == 'onnxruntime' else None,
        precision=precision, keep=keep if precision == 'int8' else None,
        params_m=round(count_params_m(model), 4),
        _weights_mb=sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2 ** 20)

    def autocast():
        if not amp:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=torch.float16 if device.type == 'cuda' else torch.bfloat16)

    eval_model = model.eval()
    if deployed:
        # INT8 is calibrated on CALIBRATION_IMAGES random images: the same for a baseline, its models and bounds
        gen = torch.Generator().manual_seed(0)
        calibration = [torch.randn(CALIBRATION_IMAGES, *x.shape[1:], generator=gen).numpy()]
        return row, deploy.runner(runtime, eval_model, x, threads, exporter, bf16=amp, precision=precision,
                                  calibration=calibration, keep=keep), None
    run_model = torch.compile(eval_model, mode=compile_mode) if compile_model else eval_model

    def infer():
        with torch.inference_mode(), autocast():
            return run_model(x)

    step = None
    if train:
        train_model = _build(spec, device, channels_last).train()
        optimizer = torch.optim.SGD(train_model.parameters(), lr=1e-4, momentum=0.9)
        target = torch.randint(0, train_model.num_classes, (batch_size,), device=device)
        run_train = torch.compile(train_model, mode=compile_mode) if compile_model else train_model

        def step():
            with autocast():
                loss = nn.functional.cross_entropy(run_train(x), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return row, infer, step


def configure_dynamo() -> None:
    """Make every compiled model and batch size its own static graph, as a separate run of the bench would.

    Each model and batch size is a new graph of the same forward code: past dynamo's default recompile limit (8) the
    rest would silently run eagerly, and a second batch size would get one graph with a symbolic batch.
    """
    config = torch._dynamo.config
    if hasattr(config, 'recompile_limit'):
        config.recompile_limit = 64
    else:  # torch < 2.6
        config.cache_size_limit = 64
    config.automatic_dynamic_shapes = False


def _warm_up(fns, device: torch.device, calls: int) -> Optional[float]:
    """Runs each call `calls` times (lazy init, compilation, CUDA graph capture) before any timing.

    Returns on CUDA the memory the calls needed at peak beyond what was allocated before them (MiB); None elsewhere.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    for fn in fns:
        for _ in range(calls if fn is not None else 0):
            fn()
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20


def _groups(models: List[str], mod_cs: List[int], bound: bool) -> List[Tuple[Optional[str], List[str]]]:
    """(baseline, variant specs compared with it) in order; models without a baseline form their own groups."""
    groups: Dict[Optional[str], List[str]] = {}
    alone: List[Tuple[Optional[str], List[str]]] = []
    baselines = {BASELINES.get(name) for name in models}
    for name in models:
        base = BASELINES.get(name)
        if base is None and name in baselines:
            continue  # measured in its own group, as the baseline
        specs = [f'{name}[c={c}]' for c in mod_cs] if mod_cs and base else [name]
        if bound and any(isinstance(m, MoDBlock) for m in timm.create_model(name, device='meta').modules()):
            specs.append(f'{name}[bound]')
        if base is None:
            alone.append((None, specs))
            continue
        group = groups.setdefault(base, [])
        group.extend(s for s in specs if s not in group and s != base)
    return list(groups.items()) + alone


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
        rounds: int = 5,
        min_run_time: float = 0.2,
        runtime: str = 'eager',
        exporter: str = 'dynamo',
        precision: str = 'fp32',
        keep: str = 'none',
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Tuple[List[Dict[str, Any]], List[benchmark.Measurement]]:
    """Measure every model (and its paired baseline) in every (threads, batch size) setting.

    A baseline and the models compared with it are built together and timed in turn, `rounds` times (see
    `interleaved`); each latency is the median over all of its rounds' runs.
    """
    dev = torch.device(device)
    if runtime == 'compile' or compile_model:
        compile_model, runtime = True, 'compile'
        configure_dynamo()
    if runtime in ('onnxruntime', 'openvino'):
        deploy.require(runtime)
        if dev.type != 'cpu' or compile_model or channels_last:
            raise ValueError(f'--runtime {runtime} runs on the CPU, without --compile or --channels-last')
        train = False
    threads = threads or [torch.get_num_threads()]
    batch_sizes = batch_sizes or [1]
    groups = _groups(models, mod_cs or [], bound)
    total = sum(len(specs) + (base is not None) for base, specs in groups) * len(threads) * len(batch_sizes)
    rows, measurements = [], []
    macs_cache: Dict[Tuple[str, int], float] = {}
    env = dict(torch=torch.__version__, timm=timm.__version__, cpu=cpu_name(), cpu_count=os.cpu_count(),
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None, malloc=malloc_setting())
    start, done = time.perf_counter(), 0
    for t in threads:
        torch.set_num_threads(t)
        for bs in batch_sizes:
            for base, specs in groups:
                names = ([base] if base else []) + specs
                prepared = {
                    spec: _prepare(spec, dev, bs, img_size, channels_last, amp, compile_model, compile_mode, train,
                                   runtime, exporter, t, precision, keep)
                    for spec in names}
                first = next(iter(prepared.values()))[0]
                setting = f'{dev.type} {runtime} t={t} bs={bs} {first["img_size"]}px' + (
                    ' cl' if channels_last else '') + (' amp' if amp else '')
                peak_mb = {spec: _warm_up(p[1:], dev, 3 if compile_model else 1) for spec, p in prepared.items()}
                timed = interleaved({s: p[1] for s, p in prepared.items()}, t, 'inference (ms)', setting, rounds,
                                    min_run_time)
                stepped = interleaved({s: p[2] for s, p in prepared.items()}, t, 'train step (ms)', setting, rounds,
                                      min_run_time) if train else {}
                for spec in names:
                    row = prepared[spec][0]
                    m = timed[spec]
                    row.update(threads=t, latency_ms=m.median * 1e3, latency_iqr_ms=m.iqr * 1e3,
                               throughput_img_s=bs / m.median, rounds=rounds)
                    measurements.append(m)
                    if train:
                        measurements.append(stepped[spec])
                        row['train_img_s'] = bs / stepped[spec].median
                    if peak_mb[spec] is not None:  # the model's weights + what its calls allocated at peak
                        row['peak_mem_mb'] = row.pop('_weights_mb') + peak_mb[spec]
                    row.pop('_weights_mb', None)
                    if gmacs:
                        key = (spec, row['img_size'])
                        if key not in macs_cache:
                            macs_cache[key] = count_gmacs(_build(spec, torch.device('cpu'), False),
                                                          (3, row['img_size'], row['img_size']))
                        row['gmacs'] = round(macs_cache[key], 4)
                    ref = row if spec == base or base is None else prepared[base][0]
                    row.update(baseline=None if ref is row else base, **env)
                    row['speedup'] = ref['latency_ms'] / row['latency_ms']
                    row['train_speedup'] = row['train_img_s'] / ref['train_img_s'] if train else None
                    rows.append(row)
                    done += 1
                    elapsed = time.perf_counter() - start
                    log(f'[{done}/{total}] {spec:<24} t={t} bs={bs}: {row["latency_ms"]:.2f} ms, '
                        f'x{row["speedup"]:.2f} vs {row["baseline"] or "itself"} '
                        f'(elapsed {elapsed:.0f}s, eta {elapsed / done * (total - done):.0f}s)')
                del prepared
    return rows, measurements


def _paper_speedup(spec: str, device: str) -> Optional[float]:
    row = PAPER.get(_parse_variant(spec)[0])
    if row is None or '[' in spec:
        return None
    return row.speedup_gpu if device == 'cuda' else row.speedup_cpu


def _runtime_label(row: Dict[str, Any]) -> str:
    runtime = row.get('runtime') or ('compile' if row.get('compile') else 'eager')
    return f'{runtime} ({row["exporter"]} export)' if row.get('exporter') else runtime


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """Our measurements with the paper's reported speed-up beside them (labelled as the paper's)."""
    lines = [
        '| model | vs | setting | params (M) | GMACs | latency ms (IQR) | speed-up | paper speed-up | train img/s | '
        'train speed-up |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        setting = f'{r["device"]} {_runtime_label(r)} {r["threads"]}t bs{r["batch_size"]} {r["img_size"]}px' + (
            ' cl' if r.get('channels_last') else '') + (' amp' if r.get('amp') else '')
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.tools.bench', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='',
                        help='comma-separated models; each MoD model brings its paired baseline '
                             '(default: every MoD model of timm_mod.models.pairing.BASELINES)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to run (default cpu)')
    parser.add_argument('--threads', type=int_list, default=None,
                        help='intra-op thread counts, comma-separated (default: all cores)')
    parser.add_argument('--batch-size', type=int_list, default=[1], help='batch sizes, comma-separated (default 1)')
    parser.add_argument('--img-size', type=positive_int, default=None,
                        help='input size for every model (default: each model\'s own, 224 or 32 for CIFAR)')
    parser.add_argument('--channels-last', action='store_true', help='channels_last memory format for model and input')
    parser.add_argument('--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 on CPU')
    parser.add_argument('--runtime', default='eager', choices=deploy.RUNTIMES,
                        help='what runs the models (default eager): PyTorch eager, torch.compile, ONNX Runtime or '
                             'OpenVINO (CPU; --amp there means bfloat16 inference precision)')
    deploy.add_graph_arguments(parser, CALIBRATION_IMAGES)
    parser.add_argument('--compile', action='store_true', help='torch.compile the model (baselines too); '
                                                               'the same as --runtime compile')
    parser.add_argument('--compile-mode', default=None,
                        help='torch.compile mode, e.g. reduce-overhead (CUDA graphs) or max-autotune')
    parser.add_argument('--mod-c', type=int_list, default=None,
                        help='build each MoD model with these c values, comma-separated (Table 10\'s sweep)')
    parser.add_argument('--bound', action='store_true',
                        help='also time each MoD model with its MoD blocks replaced by identity (its speed bound)')
    parser.add_argument('--no-train', action='store_true', help='skip the training-step measurement')
    parser.add_argument('--no-gmacs', action='store_true', help='skip fvcore MAC counting')
    parser.add_argument('--rounds', type=positive_int, default=5,
                        help='rounds of timing a baseline and its models in turn; each latency is the median over '
                             'all rounds (default 5)')
    parser.add_argument('--min-run-time', type=nonnegative_float, default=0.2,
                        help='seconds each round\'s Timer.blocked_autorange measures a model for (default 0.2)')
    parser.add_argument('--json', metavar='FILE', help='write one JSON row per (model, setting) to FILE')
    parser.add_argument('--plot', metavar='DIR', help='draw Figure 3\'s four panels into DIR (needs matplotlib)')
    args = parser.parse_args(argv)

    models = [m for m in args.models.split(',') if m] or default_models()
    check_models(parser, models)
    check_device(parser, args.device)
    if args.precision == 'int8' and args.runtime not in ('onnxruntime', 'openvino'):
        parser.error('--precision int8 needs --runtime onnxruntime or openvino')
    if args.runtime in ('onnxruntime', 'openvino'):
        try:
            deploy.require(args.runtime)
        except ImportError as e:
            parser.error(str(e))
        try:
            deploy.require(args.runtime, args.precision)
        except ImportError as e:
            parser.error(str(e))
        if args.device != 'cpu' or args.compile or args.channels_last:
            parser.error(f'--runtime {args.runtime} runs on the CPU, without --compile or --channels-last')
    if args.plot:
        try:
            import_extra('matplotlib', 'plot', '--plot')
        except ImportError as e:
            parser.error(str(e))
    try:
        with new_file(args.json, '--json') if args.json else contextlib.nullcontext() as f:
            _bench(args, models, f)
    except OutputError as e:
        parser.error(str(e))


def _bench(args: argparse.Namespace, models: List[str], json_file) -> None:
    rows, measurements = run_bench(
        models, device=args.device, threads=args.threads, batch_sizes=args.batch_size, img_size=args.img_size,
        channels_last=args.channels_last, amp=args.amp, compile_model=args.compile, compile_mode=args.compile_mode,
        mod_cs=args.mod_c,
        bound=args.bound, train=not args.no_train, gmacs=not args.no_gmacs, rounds=args.rounds,
        min_run_time=args.min_run_time, runtime=args.runtime, exporter=args.exporter, precision=args.precision,
        keep=args.keep)
    benchmark.Compare(measurements).print()
    print(markdown_table(rows))
    if json_file is not None:
        json.dump(rows, json_file, indent=1)
    if args.plot:
        from .report import plot_figure3
        for path in plot_figure3(rows, args.plot):
            print(f'wrote {path}', file=sys.stderr)


if __name__ == '__main__':
    main()
