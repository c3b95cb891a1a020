"""One MoD block against the standard block it stands beside, at each stage's shapes: time and aten op counts.

For every stage of a MoD model that has a MoD block, the stage's first MoD block (e.g. resnet50_mod's layer3.1) is
timed against a standard block of the same stage that is not the stage's first (the first one downsamples): the next
one (layer3.2). A stage with no such block (mobilenetv2_mod's blocks.1 is one standard and one MoD block) gets a
standard block of the same type rebuilt at the stage's C channels, marked "rebuilt". Both see the input they see in
the network: (batch, C, H, W) at the stage's resolution for the given image size, in the autocast dtype with --amp
(the previous block's output is in that dtype) and channels_last with --channels-last. The k-channel block and the
channel selector are also timed alone (--no-parts skips them).

Timing: torch.utils.benchmark, the blocks taking turns round after round (`timm_mod.tools.bench.interleaved`), in
inference (inference_mode, eval) and forward + backward (train mode, input and parameter gradients).

Op counts: every aten op that reaches PyTorch's dispatcher in one eager call (a TorchDispatchMode), the MoD block's
split into selector (pooling, scoring MLP, ranking, top-k, sigmoid), gather (picking the k channels), block (the
k-channel block) and fusion (scaling and adding the result into a copy of the input), and the standard block's.
"work" ops are those that compute or write something, a proxy for kernel launches on a GPU, where at small batch
every launch costs its overhead whatever its size; the others are views and no-ops (reshape, narrow, a `.to` to the
same dtype). A single aten op may launch more than one kernel (cuDNN convolutions, top-k). The forward + backward
count is the whole training call, backward included. The counts are eager's: torch.compile fuses many of them.

Run from a checkout (a development tool, not part of the package). Counting ops alone takes seconds (the first
example, about 15 s on two CPU cores, most of it importing torch). Timing takes at least (2 blocks + 2 parts) x
--rounds x --min-run-time, 4 s at the defaults, for every stage, batch size and mode, plus warm-up: the second
example times 36 of them, several minutes on two CPU cores.

Examples:
    python benchmarks/blockbench.py --model resnet50_mod --batch-size 1 --ops-only
    python benchmarks/blockbench.py --model resnet50_mod,mobilenetv2_mod --batch-size 1,32 --threads 2
    python benchmarks/blockbench.py --device cuda --model resnet50_mod --batch-size 1,32,256 --amp --channels-last \\
        --json blocks.json
"""
import argparse
import copy
import json
import os
import sys
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from timm_mod.convert import adapter_for, find_stages
from timm_mod.layers import MoDBlock
from timm_mod.tools._cli import (
    OutputError, check_device, check_models, int_list, new_file, nonnegative_float, positive_int)
from timm_mod.tools.bench import cpu_name, interleaved

__all__ = ['StagePair', 'OpCounter', 'stage_pairs', 'count_block_ops', 'run_blockbench', 'markdown']

MOD_PHASES = ('selector', 'gather', 'block', 'fusion')
MODES = ('inference', 'train')


class StagePair(NamedTuple):
    """A stage's first MoD block and the standard block it is compared with, and the shape of their input."""
    stage: str
    mod_name: str
    mod: MoDBlock
    std_name: str  # '<mod_name> (rebuilt)' when the stage has no standard block but its first
    std: nn.Module
    shape: Tuple[int, int, int]  # (C, H, W)


def _input_shapes(name: str, img_size: int) -> Dict[str, Tuple[int, int, int]]:
    """(C, H, W) of every MoD block's input at `img_size`, from a forward on the meta device (no memory, no time).

    Each MoD block is replaced by an identity that records its input: a MoD block keeps its input's shape, and its own
    forward asks torch whether autocast is on, which torch does not know for the meta device.
    """
    model = timm.create_model(name, device='meta')
    shapes: Dict[str, Tuple[int, int, int]] = {}

    def record(name):
        def hook(module, args):
            shapes[name] = tuple(args[0].shape[1:])
        return hook

    for block_name, module in list(model.named_modules()):
        if isinstance(module, MoDBlock):
            stand_in = nn.Identity()
            stand_in.register_forward_pre_hook(record(block_name))
            model.set_submodule(block_name, stand_in)
    with torch.inference_mode():
        model.eval()(torch.empty(1, 3, img_size, img_size, device='meta'))
    return shapes


def stage_pairs(model: nn.Module, shapes: Dict[str, Tuple[int, int, int]]) -> List[StagePair]:
    """Per stage with a MoD block: its first MoD block and the first standard block after the stage's first block.

    Where the stage has none, a standard block of the MoD block's inner type is rebuilt at the MoD block's C channels
    by the same adapter that built the k-channel block (`timm_mod.convert`).
    """
    pairs = []
    for stage_name, stage in find_stages(model):
        children = list(stage.named_children())
        mods = [(n, m) for n, m in children if isinstance(m, MoDBlock)]
        if not mods:
            continue
        mod_child, mod = mods[0]
        mod_name = f'{stage_name}.{mod_child}'
        std = next(((n, m) for n, m in children[1:] if not isinstance(m, MoDBlock)), None)
        if std is not None:
            std_name, std_block = f'{stage_name}.{std[0]}', std[1]
        else:
            std_name, std_block = f'{mod_name} (rebuilt)', adapter_for(mod.block)(mod.block, mod.channels)
        pairs.append(StagePair(stage_name, mod_name, mod, std_name, std_block, shapes[mod_name]))
    return pairs


def _aliases_inputs(args: Any, kwargs: Any, out: Any) -> bool:
    """Whether every tensor the op returned shares storage with one of its inputs (a view, or the input itself)."""
    outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not outs:
        return False  # e.g. a scalar read back (.item()): work, and a sync on a GPU
    ins = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
    return all(t.untyped_storage().data_ptr() in ins for t in outs)


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active, per phase (set `phase` to switch), each as work or view.

    An op is "work" when it mutates a tensor (relu_, add_, copy_) or returns a tensor with storage of its own; a
    view or no-op returns only its input's storage (reshape, narrow, permute, ``.to`` to the dtype it has).
    """

    def __init__(self, phase: str = 'all'):
        super().__init__()
        self.phase = phase
        self.ops: Dict[str, Counter] = defaultdict(Counter)  # phase -> op -> calls
        self.views: Dict[str, Counter] = defaultdict(Counter)  # phase -> op -> calls that were views / no-ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func)
        self.ops[self.phase][name] += 1
        if not func._schema.is_mutable and _aliases_inputs(args, kwargs, out):
            self.views[self.phase][name] += 1
        return out

    def total(self, phase: str) -> int:
        return sum(self.ops[phase].values())

    def work(self, phase: str) -> int:
        return self.total(phase) - sum(self.views[phase].values())


@contextmanager
def _mod_phases(block: MoDBlock, counter: OpCounter) -> Iterator[None]:
    """Switches the counter's phase at the MoD block's sub-module boundaries.

    selector: from the block's entry to the selector's return (all of routing, for random routing with no selector,
    which then includes the gather); gather: up to the k-channel block; block; fusion: the rest.
    """
    def to(phase):
        def hook(*_):
            counter.phase = phase
        return hook

    handles = [block.register_forward_pre_hook(to('selector')),
               block.block.register_forward_pre_hook(to('block')),
               block.block.register_forward_hook(to('fusion'))]
    if block.selector is not None:
        handles.append(block.selector.register_forward_hook(to('gather')))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=_amp_dtype(device))


def _amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype the bench uses: float16 on CUDA, bfloat16 on the CPU."""
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def _call(module: nn.Module, x: torch.Tensor, train: bool, amp: bool, grad: Optional[torch.Tensor] = None) -> Any:
    """One inference call, or one forward + backward (input and parameter gradients reset after)."""
    if not train:
        with torch.inference_mode(), _autocast(x.device, amp):
            return module(x)
    with _autocast(x.device, amp):
        out = _first_tensor(module(x))
    out.backward(torch.ones_like(out) if grad is None else grad)
    x.grad = None
    for p in module.parameters():
        p.grad = None
    return out


def count_block_ops(module: nn.Module, x: torch.Tensor, train: bool = False, amp: bool = False) -> OpCounter:
    """The aten ops of one eager call of `module` on `x` (a MoD block's split into `MOD_PHASES`).

    Inference counts one eval call under inference_mode; train counts a train-mode forward (phases as in inference)
    and its backward (phase 'backward').
    """
    counter = OpCounter('block')
    was_training = module.training
    module.train(train)
    x = x.detach().requires_grad_(train)
    try:
        phases = _mod_phases(module, counter) if isinstance(module, MoDBlock) else nullcontext()
        with counter, phases:
            if not train:
                _call(module, x, False, amp)
            else:
                with _autocast(x.device, amp):
                    out = _first_tensor(module(x))
                counter.phase = 'backward'
                out.backward(torch.ones_like(out))
    finally:
        module.train(was_training)
        for p in module.parameters():
            p.grad = None
    return counter


def _ops_summary(counter: OpCounter, phases: Tuple[str, ...]) -> Dict[str, Any]:
    """JSON-ready counts: per phase work and all ops, and each phase's ops by name."""
    return dict(
        work={p: counter.work(p) for p in phases}, all={p: counter.total(p) for p in phases},
        detail={p: dict(counter.ops[p]) for p in phases})


def _timing_fns(
        pair: StagePair,
        x: torch.Tensor,
        train: bool,
        amp: bool,
        parts: bool,
        channels_last: bool,
) -> Dict[str, Callable[[], Any]]:
    """Closures timing the standard block, the MoD block and (with `parts`) its k-channel block and selector."""
    k = pair.mod.k
    modules = {'standard': (pair.std, x), 'mod': (pair.mod, x)}
    if parts:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        modules['k-block'] = (pair.mod.block, x[:, :k].contiguous(memory_format=fmt))
        if pair.mod.selector is not None:
            modules['selector'] = (pair.mod.selector, x)
    fns = {}
    for name, (module, inp) in modules.items():
        module.train(train)
        inp = inp.detach().requires_grad_(train)
        grad = None
        if train:
            out = _call(module, inp, True, amp)
            grad = torch.randn_like(out)
        fns[name] = (lambda m=module, i=inp, g=grad: _call(m, i, train, amp, g))
    return fns


def _prepare_pair(pair: StagePair, device: torch.device, channels_last: bool) -> StagePair:
    """Copies of the pair's blocks on `device` (in channels_last with it); the model itself is left as it is."""
    def move(m):
        m = copy.deepcopy(m).to(device)
        return m.to(memory_format=torch.channels_last) if channels_last else m
    return pair._replace(mod=move(pair.mod), std=move(pair.std))


def run_blockbench(
        models: List[str],
        device: str = 'cpu',
        batch_sizes: Optional[List[int]] = None,
        img_size: Optional[int] = None,
        threads: Optional[int] = None,
        amp: bool = False,
        channels_last: bool = False,
        modes: Tuple[str, ...] = MODES,
        parts: bool = True,
        timing: bool = True,
        rounds: int = 5,
        min_run_time: float = 0.2,
        cudnn_benchmark: bool = False,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> List[Dict[str, Any]]:
    """One row per (model, stage, batch size, mode): the two blocks' times (ms, median and IQR over every round),
    the parts' times, and the op counts of both blocks (see the module docstring)."""
    dev = torch.device(device)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = cudnn_benchmark
    env = dict(torch=torch.__version__, timm=timm.__version__, cpu=cpu_name(), cpu_count=os.cpu_count(),
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None)
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = timm.create_model(name)
        size = img_size or model.pretrained_cfg['input_size'][-1]
        pairs = stage_pairs(model, _input_shapes(name, size))
        if not pairs:
            raise ValueError(f'{name} has no MoD blocks')
        for pair in pairs:
            pair = _prepare_pair(pair, dev, channels_last)
            for bs in batch_sizes or [1]:
                x = torch.randn(bs, *pair.shape, device=dev, dtype=_amp_dtype(dev) if amp else torch.float32)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                for mode in modes:
                    train = mode == 'train'
                    mod_phases = MOD_PHASES + (('backward',) if train else ())
                    row: Dict[str, Any] = dict(
                        model=name, stage=pair.stage, mod_block=pair.mod_name, std_block=pair.std_name,
                        channels=pair.shape[0], k=pair.mod.k, height=pair.shape[1], width=pair.shape[2],
                        batch_size=bs, img_size=size, mode=mode, device=dev.type, threads=threads, amp=amp,
                        channels_last=channels_last, cudnn_benchmark=cudnn_benchmark if dev.type == 'cuda' else None,
                        ops_mod=_ops_summary(count_block_ops(pair.mod, x, train, amp), mod_phases),
                        ops_std=_ops_summary(count_block_ops(pair.std, x, train, amp),
                                             ('block', 'backward') if train else ('block',)),
                        **env)
                    if timing:
                        fns = _timing_fns(pair, x, train, amp, parts, channels_last)
                        for fn in fns.values():  # lazy init, cuDNN's algorithm search, allocator warm-up
                            fn()
                            fn()
                        setting = f'{dev.type} {mode} bs={bs} {pair.mod_name}' + (' cl' if channels_last else '') + (
                            ' amp' if amp else '')
                        timed = interleaved(fns, threads, f'{name} {mode} (ms)', setting, rounds, min_run_time)
                        for part, m in timed.items():
                            row[f'{part}_ms'] = m.median * 1e3
                            row[f'{part}_iqr_ms'] = m.iqr * 1e3
                        row.update(rounds=rounds, min_run_time=min_run_time,
                                   speedup=row['standard_ms'] / row['mod_ms'])
                    rows.append(row)
                    log(_progress(row))
        del model
    return rows


def _progress(row: Dict[str, Any]) -> str:
    ops = f'ops std {row["ops_std"]["work"]["block"]}, MoD {sum(row["ops_mod"]["work"][p] for p in MOD_PHASES)}'
    if 'mod_ms' not in row:
        return f'{row["model"]} {row["mod_block"]} bs={row["batch_size"]} {row["mode"]}: {ops}'
    return (f'{row["model"]} {row["mod_block"]} bs={row["batch_size"]} {row["mode"]}: standard '
            f'{row["standard_ms"]:.3f} ms, MoD {row["mod_ms"]:.3f} ms (x{row["speedup"]:.2f}); {ops}')


def _ms(row: Dict[str, Any], part: str) -> str:
    if f'{part}_ms' not in row:
        return '-'
    return f'{row[f"{part}_ms"]:.3f} ({row[f"{part}_iqr_ms"]:.3f})'


def _op_cells(row: Dict[str, Any]) -> Tuple[str, str]:
    """'work (all)' for the standard block; the MoD block's 'selector + gather + block + fusion = total (all)',
    in training with its backward ('fwd ... + bwd n = total')."""
    std, mod = row['ops_std'], row['ops_mod']
    std_work, std_all = sum(std['work'].values()), sum(std['all'].values())
    parts = ' + '.join(str(mod['work'][p]) for p in MOD_PHASES)
    fwd = sum(mod['work'][p] for p in MOD_PHASES)
    total_work, total_all = sum(mod['work'].values()), sum(mod['all'].values())
    if row['mode'] == 'train':
        return (f'{std["work"]["block"]} + bwd {std["work"]["backward"]} = {std_work} ({std_all})',
                f'({parts} = {fwd}) + bwd {mod["work"]["backward"]} = {total_work} ({total_all})')
    return f'{std_work} ({std_all})', f'{parts} = {total_work} ({total_all})'


def markdown(rows: List[Dict[str, Any]]) -> str:
    """One table per (model, device, batch size, mode, settings)."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        key = (r['model'], r['device'], r['gpu'], r['threads'], r['batch_size'], r['img_size'], r['mode'], r['amp'],
               r['channels_last'], r.get('cudnn_benchmark'))
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        r0 = group[0]
        where = f'GPU ({r0["gpu"]})' if r0['device'] == 'cuda' else f'CPU ({r0["cpu"]}), {r0["threads"]} thread(s)'
        extras = [s for s, on in (('AMP', r0['amp']), ('channels_last', r0['channels_last']),
                                  ('cudnn.benchmark', r0.get('cudnn_benchmark'))) if on]
        if 'rounds' in r0:
            extras.append(f'{r0["rounds"]} interleaved rounds of {r0["min_run_time"]} s')
        timed = 'mod_ms' in r0
        mode = 'inference' if r0['mode'] == 'inference' else 'forward + backward'
        out += [f'#### {r0["model"]}, {mode}, {where}, batch {r0["batch_size"]}, {r0["img_size"]} px'
                + ''.join(f', {e}' for e in extras) + f' (torch {r0["torch"]})', '']
        ops_head = 'MoD ops: selector + gather + block + fusion' + (' (+ bwd)' if r0['mode'] == 'train' else '')
        if timed:
            out += ['| MoD block | C | k | H x W | standard block | standard ms (IQR) | MoD ms (IQR) | standard / MoD '
                    f'| k-block ms | selector ms | standard ops | {ops_head} |',
                    '|---|---|---|---|---|---|---|---|---|---|---|---|']
        else:
            out += [f'| MoD block | C | k | H x W | standard block | standard ops | {ops_head} |',
                    '|---|---|---|---|---|---|---|']
        for r in group:
            std_ops, mod_ops = _op_cells(r)
            head = (f'| {r["mod_block"]} | {r["channels"]} | {r["k"]} | {r["height"]} x {r["width"]} | '
                    f'{r["std_block"]} |')
            if timed:
                out.append(f'{head} {_ms(r, "standard")} | {_ms(r, "mod")} | {r["speedup"]:.2f} | '
                           f'{_ms(r, "k-block")} | {_ms(r, "selector")} | {std_ops} | {mod_ops} |')
            else:
                out.append(f'{head} {std_ops} | {mod_ops} |')
        out.append('')
    out.append('Ops: aten ops that do work (all dispatched ops, views and no-ops included, in brackets); one eager '
               'call.')
    return '\n'.join(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python benchmarks/blockbench.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='resnet50_mod',
                        help='comma-separated MoD models (default resnet50_mod; e.g. mobilenetv2_mod, resnet86_mod)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to run (default cpu)')
    parser.add_argument('--batch-size', type=int_list, default=[1], help='batch sizes, comma-separated (default 1)')
    parser.add_argument('--img-size', type=positive_int, default=None,
                        help='image size the stage shapes are derived from (default: the model\'s own, 224)')
    parser.add_argument('--threads', type=positive_int, default=None, help='intra-op threads (default: all cores)')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on the CPU), the input in that dtype')
    parser.add_argument('--channels-last', action='store_true', help='channels_last blocks and input')
    parser.add_argument('--mode', default='inference,train',
                        help='comma-separated: inference (eval, inference_mode) and/or train (forward + backward); '
                             'default both')
    parser.add_argument('--no-parts', action='store_true',
                        help='do not time the MoD block\'s k-channel block and selector alone')
    parser.add_argument('--ops-only', action='store_true', help='count ops only, no timing')
    parser.add_argument('--cudnn-benchmark', action='store_true',
                        help='torch.backends.cudnn.benchmark = True, as timm\'s train.py sets it (CUDA; default off, '
                             'as in the bench)')
    parser.add_argument('--rounds', type=positive_int, default=5,
                        help='rounds of timing the blocks in turn; each time is the median over all rounds (default 5)')
    parser.add_argument('--min-run-time', type=nonnegative_float, default=0.2,
                        help='seconds each round\'s Timer.blocked_autorange measures a block for (default 0.2; 0: one '
                             'block of calls)')
    parser.add_argument('--json', metavar='FILE', help='write the rows to FILE (a new file)')
    parser.add_argument('--out', metavar='FILE', help='also write the markdown tables to FILE (a new file)')
    args = parser.parse_args(argv)

    models = [m for m in args.model.split(',') if m]
    check_models(parser, models)
    plain = [m for m in models
             if not any(isinstance(b, MoDBlock) for b in timm.create_model(m, device='meta').modules())]
    if plain:
        parser.error(f'no MoD blocks in: {", ".join(plain)}')
    modes = tuple(m for m in args.mode.split(',') if m)
    if not modes or any(m not in MODES for m in modes):
        parser.error(f'--mode: comma-separated from {MODES}, got {args.mode!r}')
    check_device(parser, args.device)
    try:
        with ExitStack() as outputs:  # both files made now, so an existing one is refused before any work
            json_file = outputs.enter_context(new_file(args.json, '--json')) if args.json else None
            md_file = outputs.enter_context(new_file(args.out, '--out')) if args.out else None
            rows = run_blockbench(
                models, device=args.device, batch_sizes=args.batch_size, img_size=args.img_size,
                threads=args.threads, amp=args.amp, channels_last=args.channels_last, modes=modes,
                parts=not args.no_parts, timing=not args.ops_only, rounds=args.rounds,
                min_run_time=args.min_run_time, cudnn_benchmark=args.cudnn_benchmark)
            text = markdown(rows)
            print(text)
            if json_file is not None:
                json.dump(rows, json_file, indent=1)
            if md_file is not None:
                md_file.write(text + '\n')
    except OutputError as e:
        parser.error(str(e))


if __name__ == '__main__':
    main()
