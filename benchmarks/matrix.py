"""Several settings of the bench in one process, within a wall-clock budget (benchmarks/gpu_matrix.sh runs it).

Each --group is one setting of `python -m timm_mod.tools.bench`, in words separated by spaces:

    eager | compile | compile:MODE   how the models run (compile:reduce-overhead: torch.compile with CUDA graphs)
    bs=1,64                          batch sizes
    train                            also time the training step (forward, backward, SGD step)
    bound                            also time each MoD model with its MoD blocks replaced by identity

e.g. ``--group 'eager bs=32,256 train bound' --group 'compile:reduce-overhead bs=1'``. The settings common to all
groups (--models, --amp, --channels-last, --rounds, ...) are the bench's flags of the same names.

Groups run in the order given, each in units of one baseline with its models at one batch size, timed in turn as
the bench times them. After each unit every row so far is written to --json, so a run cut short (killed, or failed
in a later unit) keeps what it measured. Before a unit starts, its cost is estimated: its models times the seconds
per model that the last unit of the same kind (eager or compiled) and baseline took, else the most a unit of that
kind took, else 4 s eager and 25 s compiled. A unit that would not end within --budget is skipped, and the log names
it: order groups by priority.

One process serves every group: torch, timm and the models' code are imported once, and torch.compile's caches
carry from unit to unit. Two dynamo settings make a compiled unit measure what a separate run of the bench would:
a raised recompile limit (every model and batch size is a new graph of the same forward code, and past the default
8 dynamo would silently run the rest eagerly) and no automatic dynamic shapes (each batch size gets its own static
graph, not one with a symbolic batch); dynamo's caches are reset after each compiled unit.

Run from a checkout (a development tool, not part of the package). It takes the sum of its units, seconds per model
eager and tens of seconds compiled (torch.compile's compiling), and ends within about --budget seconds (only a unit
that runs past its estimate can overrun it).

Example:
    python benchmarks/matrix.py --device cuda --models resnet50_mod,mobilenetv2_mod --amp --channels-last \\
        --group 'eager bs=1,64 bound' --group 'compile bs=256' --budget 300 --json matrix.json
"""
import argparse
import gc
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from timm_mod.models.pairing import BASELINES
from timm_mod.tools._cli import (
    OutputError, check_device, check_models, int_list, new_file, nonnegative_float, positive_float, positive_int)
from timm_mod.tools.bench import configure_dynamo, run_bench

__all__ = ['Group', 'parse_group', 'units', 'run_matrix']

# Seconds per model first assumed for a unit, and the least ever assumed: model builds, warm-up and timing (eager);
# plus torch.compile's tracing and code generation (compiled).
FIRST_ESTIMATE_S = {'eager': 4.0, 'compile': 25.0}


class Group(NamedTuple):
    """One bench setting: how the models run, batch sizes, training step, bounds; `text` as written."""
    text: str
    compile: bool
    compile_mode: Optional[str]
    batch_sizes: Tuple[int, ...]
    train: bool
    bound: bool


def parse_group(text: str) -> Group:
    """'compile:reduce-overhead bs=1 bound' -> Group(...); raises ValueError naming what it does not understand."""
    runtime, batch_sizes, train, bound = None, None, False, False
    for word in text.split():
        if word == 'eager' or word == 'compile' or word.startswith('compile:'):
            runtime = word
        elif word.startswith('bs='):
            batch_sizes = tuple(int(v) for v in word[3:].split(',') if v)
        elif word == 'train':
            train = True
        elif word == 'bound':
            bound = True
        else:
            raise ValueError(f'group {text!r}: unknown word {word!r} (eager, compile[:MODE], bs=N[,N], train, bound)')
    if runtime is None or not batch_sizes:
        raise ValueError(f'group {text!r} needs a runtime (eager, compile, compile:MODE) and bs=N[,N...]')
    mode = runtime.split(':', 1)[1] if ':' in runtime else None
    return Group(text, runtime != 'eager', mode, batch_sizes, train, bound)


def units(group: Group, models: List[str]) -> List[Tuple[int, str, List[str]]]:
    """(batch size, baseline, its models) in run order: batch sizes as written, baselines in order of first use."""
    families: Dict[str, List[str]] = {}
    for name in models:
        if name not in BASELINES:
            raise ValueError(f'{name} has no paired baseline in timm_mod.models.pairing.BASELINES')
        families.setdefault(BASELINES[name], []).append(name)
    return [(bs, base, names) for bs in group.batch_sizes for base, names in families.items()]


def _specs(names: List[str], bound: bool) -> int:
    """Models timed in a unit: the baseline, the MoD models and (with `bound`) their bounds."""
    return 1 + len(names) * (2 if bound else 1)


def _per_model_estimate(spent: Dict[Tuple[str, str], List[float]], kind: str, base: str) -> float:
    """Seconds per model of a unit: what the last unit of the same kind and baseline took, else the most any unit of
    that kind took, else `FIRST_ESTIMATE_S`."""
    if spent.get((kind, base)):
        return spent[(kind, base)][-1]
    same_kind = [t for (k, _), times in spent.items() if k == kind for t in times]
    return max(same_kind) if same_kind else FIRST_ESTIMATE_S[kind]


def _write(path: str, rows: List[Dict[str, Any]]) -> None:
    """Every row so far, replacing the file this run created (written aside first, so never half-written)."""
    folder, name = os.path.split(os.path.abspath(path))
    with tempfile.NamedTemporaryFile('w', dir=folder, prefix=f'.{name}.', suffix='.partial', delete=False) as f:
        json.dump(rows, f, indent=1)
    os.replace(f.name, path)


def run_matrix(
        groups: List[Group],
        models: List[str],
        device: str = 'cpu',
        budget_s: float = float('inf'),
        json_path: Optional[str] = None,
        cudnn_benchmark: bool = False,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
        clock: Callable[[], float] = time.perf_counter,
        **bench_kwargs: Any,
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Every group's units in order, skipping those that would not end within `budget_s` (see the module docstring).

    Returns the bench's rows (each with its `group` and `cudnn_benchmark`) and one record per unit: what it ran, its
    seconds, or why it was skipped. `clock` gives the seconds the budget and the estimates count. `bench_kwargs` go to
    `timm_mod.tools.bench.run_bench` (img_size, amp, channels_last, rounds, min_run_time, threads).
    """
    configure_dynamo()
    if device == 'cuda':
        torch.backends.cudnn.benchmark = cudnn_benchmark
    start = clock()
    spent: Dict[Tuple[str, str], List[float]] = {}  # (kind, baseline) -> seconds per model of its finished units
    plan = [(g, u) for g in groups for u in units(g, models)]
    rows: List[Dict[str, Any]] = []
    records: List[Dict[str, Any]] = []
    for i, (group, (bs, base, names)) in enumerate(plan, 1):
        kind = 'compile' if group.compile else 'eager'
        estimate = _per_model_estimate(spent, kind, base) * _specs(names, group.bound)
        left = budget_s - (clock() - start)
        what = f'[{group.text}] bs={bs} {base} + {",".join(names)}'
        record = dict(group=group.text, batch_size=bs, baseline=base, models=names, estimate_s=round(estimate, 1))
        if estimate > left:
            log(f'matrix {i}/{len(plan)}: SKIPPED {what}: estimated {estimate:.0f} s, {left:.0f} s of the budget left')
            records.append(dict(record, skipped=True))
            continue
        log(f'matrix {i}/{len(plan)}: {what} (estimated {estimate:.0f} s, {left:.0f} s left)')
        t0 = clock()
        unit_rows, _ = run_bench(
            names, device=device, batch_sizes=[bs], compile_model=group.compile, compile_mode=group.compile_mode,
            bound=group.bound, train=group.train, gmacs=False, log=log, **bench_kwargs)
        seconds = clock() - t0
        spent.setdefault((kind, base), []).append(seconds / _specs(names, group.bound))
        for row in unit_rows:
            row.update(group=group.text, cudnn_benchmark=cudnn_benchmark if device == 'cuda' else None)
        rows += unit_rows
        records.append(dict(record, skipped=False, seconds=round(seconds, 1)))
        log(f'matrix {i}/{len(plan)}: done in {seconds:.1f} s ({seconds / _specs(names, group.bound):.1f} s per model)')
        if json_path:
            _write(json_path, rows)
        if group.compile:
            torch._dynamo.reset()
        gc.collect()
        if device == 'cuda':
            torch.cuda.empty_cache()
    if json_path:
        _write(json_path, rows)  # also when every unit was skipped: the file says so
    total = clock() - start
    skipped = ['[{group}] bs={batch_size} {baseline}'.format(**r) for r in records if r['skipped']]
    log(f'matrix: {len(records) - len(skipped)} of {len(records)} units in {total:.0f} s'
        + (f'; skipped for the budget: {", ".join(skipped)}' if skipped else ''))
    return rows, records


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python benchmarks/matrix.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--group', action='append', default=[], required=True,
                        help='one bench setting, e.g. "eager bs=32,256 train bound" (repeat; run in order)')
    parser.add_argument('--models', required=True,
                        help='comma-separated MoD models; each brings its paired baseline')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to run (default cpu)')
    parser.add_argument('--img-size', type=positive_int, default=None, help='input size (default: each model\'s own)')
    parser.add_argument('--threads', type=int_list, default=None,
                        help='intra-op thread counts, comma-separated (default: all cores)')
    parser.add_argument('--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 on the CPU')
    parser.add_argument('--channels-last', action='store_true', help='channels_last models and inputs')
    parser.add_argument('--cudnn-benchmark', action='store_true',
                        help='torch.backends.cudnn.benchmark = True (as timm\'s train.py sets it; default off, as in '
                             'the bench); recorded in every row')
    parser.add_argument('--rounds', type=positive_int, default=3, help='interleaved rounds per unit (default 3)')
    parser.add_argument('--min-run-time', type=nonnegative_float, default=0.05,
                        help='seconds each round\'s blocked_autorange measures a model for (default 0.05; 0: one '
                             'block of calls)')
    parser.add_argument('--budget', type=positive_float, default=float('inf'),
                        help='seconds this run may take; units that would end later are skipped (default: none)')
    parser.add_argument('--json', metavar='FILE', help='write the rows to FILE as they come (a new file)')
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(',') if m]
    check_models(parser, models)
    try:
        groups = [parse_group(g) for g in args.group]
        for g in groups:
            units(g, models)
    except ValueError as e:
        parser.error(str(e))
    check_device(parser, args.device)
    failure = None
    try:
        with new_file(args.json, '--json') if args.json else nullcontext():
            try:
                run_matrix(groups, models, device=args.device, budget_s=args.budget, json_path=args.json,
                           cudnn_benchmark=args.cudnn_benchmark, img_size=args.img_size, threads=args.threads,
                           amp=args.amp, channels_last=args.channels_last, rounds=args.rounds,
                           min_run_time=args.min_run_time)
            except BaseException as e:
                if not args.json or not os.path.getsize(args.json):
                    raise  # nothing measured: the empty file this run made goes with it
                failure = e  # raised below, past new_file, which would remove the rows measured so far
    except OutputError as e:
        parser.error(str(e))
    if failure is not None:
        raise failure


if __name__ == '__main__':
    main()
