"""Starting a MoD model from its pretrained baseline, measured end to end on the quick start's digits.

For each (MoD model, baseline) pair and seed, every run through ./train.sh and timm's own train.py / validate.py:

  baseline     ./train.sh digits BASELINE                         the full 10-epoch digits recipe
  scratch      ./train.sh digits MODEL                            the same recipe, from random weights
  scratch-N    ./train.sh digits MODEL --epochs N                 from random weights, the fine-tuning run's epochs
  distilled    ./train.sh digits MODEL --init-from BASELINE_CKPT  copied from the baseline, distilled from it
  fine-tuned   ... --init-from BASELINE_CKPT --no-distill         copied, trained on the labels alone

and the copied model's accuracy before any step (validate.py on the run's initial weights). Writes every epoch's
validation top-1 to a JSON file and the table between the distill-digits markers of docs/training.md.

    python benchmarks/distill_digits.py                      # resnet18_mod and mobilenetv2_mod, seeds 0 1 2
    python benchmarks/distill_digits.py --pairs resnet18_mod:resnet18 --seeds 0 --update ''

About 20 minutes on a 2-core CPU with the defaults (30 short CPU trainings). The digits are scikit-learn's 1,797
8x8 images at 32 px: 364 validation images, so one image is 0.27 points. ImageNet results are not measured here.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from timm_mod.tools._cli import replace_section

from _digits import REPO, epochs, train

PAIRS = ('resnet18_mod:resnet18', 'mobilenetv2_mod:mobilenetv2_100')


def _validate(model: str, checkpoint: Path, results: Path, log: Path) -> float:
    """Validation top-1 of a checkpoint with timm's validate.py, evaluated as train.py evaluates the digits."""
    from timm_mod.tools.train import digits_root
    cmd = [sys.executable, '-m', 'timm_mod.tools.run', 'validate.py', '--model', model, '--checkpoint',
           str(checkpoint), '--data-dir', str(digits_root()), '--split', 'val', '--num-classes', '10', '--img-size',
           '32', '--crop-pct', '1.0', '--device', 'cpu', '--workers', '1', '--results-file', str(results),
           '--results-format', 'json']
    with log.open('w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed ({proc.returncode}); its log: {log}')
    rows = json.loads(results.read_text())
    return float((rows[0] if isinstance(rows, list) else rows)['top1'])


def measure(model: str, baseline: str, seed: int, root: Path) -> List[Dict]:
    """Every run of one pair and seed, as rows of the results file."""
    from timm_mod.tools.train import DIGITS, FINETUNE, _last_value
    short = max(1, round(int(_last_value(DIGITS.args, '--epochs')) * FINETUNE.epoch_fraction))
    tag = f'{model}-s{seed}'
    rows = []

    def run(start: str, name: str, args: List[str], before: Optional[float] = None, init: bool = False) -> Path:
        path = train([name, '--seed', str(seed), *args], root / f'{tag}-{start}', root / f'{tag}-{start}.log')
        row = dict(student=model, model=name, start=start, seed=seed, epochs=epochs(path))
        if init:
            row['before'] = _validate(name, path / 'init.safetensors', root / f'{tag}-{start}-init.json',
                                      root / f'{tag}-{start}-init.log')
        rows.append(row)
        print(f'{name} {start} seed {seed}: ' + ' '.join(f'{a:.2f}' for a in row['epochs'])
              + (f' (before: {row["before"]:.2f})' if init else ''), file=sys.stderr)
        return path

    base = run('baseline', baseline, [])
    checkpoint = base / 'model_best.pth.tar'
    run('scratch', model, [])
    run(f'scratch-{short}', model, ['--epochs', str(short)])
    run('distilled', model, ['--init-from', str(checkpoint)], init=True)
    run('fine-tuned', model, ['--init-from', str(checkpoint), '--no-distill'], init=True)
    return rows


def _cell(values: List[float]) -> str:
    if not values:
        return ''
    mean = statistics.mean(values)
    return f'{mean:.2f}' if len(values) == 1 or min(values) == max(values) else (
        f'{mean:.2f} ({min(values):.2f}-{max(values):.2f})')


def table(results: Dict) -> str:
    """The markdown table of a results file: mean validation top-1 over the seeds (range in brackets)."""
    rows = results['rows']
    short = max(len(r['epochs']) for r in rows if r['start'] == 'distilled')
    lines = [
        '| model | start | epochs | before training | ' + ' | '.join(f'epoch {i + 1}' for i in range(short))
        + ' | last epoch | best |',
        '|---|---|---|---|' + '---|' * short + '---|---|']
    order = ['baseline', 'scratch', f'scratch-{short}', 'fine-tuned', 'distilled']
    labels = {'baseline': 'random (the baseline itself)', 'scratch': 'random', f'scratch-{short}': 'random',
              'fine-tuned': 'its baseline, labels only', 'distilled': 'its baseline, distilled from it'}
    students = list(dict.fromkeys(r['student'] for r in rows))
    for student in students:
        pair = [r for r in rows if r['student'] == student]
        baseline_rows = [r for r in pair if r['start'] == 'baseline']
        baseline = baseline_rows[0]['model'] if baseline_rows else ''
        for start in order:
            group = [r for r in pair if r['start'] == start]
            if not group:
                continue
            n = len(group[0]['epochs'])
            before = [r['before'] for r in group if 'before' in r]
            cells = [_cell([r['epochs'][i] for r in group]) if i < n else '' for i in range(short)]
            lines.append(
                f'| {baseline if start == "baseline" else student} | {labels[start]} | {n} | {_cell(before)} | '
                + ' | '.join(cells) + f' | {_cell([r["epochs"][-1] for r in group])} | '
                f'{_cell([max(r["epochs"]) for r in group])} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), metavar='MODEL:BASELINE',
                        help='MoD model and the timm model it starts from (default: %(default)s)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='train.py --seed of every run')
    parser.add_argument('--work', type=Path, default=REPO / 'output' / 'distill-digits',
                        help='folder for the runs (a new subfolder each time; default: %(default)s)')
    parser.add_argument('--json', type=Path, default=REPO / 'benchmarks' / 'results' / 'digits' / 'distill.json',
                        help='results file to write (default: %(default)s)')
    parser.add_argument('--update', default=str(REPO / 'docs' / 'training.md'), metavar='MARKDOWN',
                        help="page whose distill-digits section gets the table ('' for none; default: %(default)s)")
    parser.add_argument('--table-only', action='store_true', help='rewrite the table from --json; train nothing')
    args = parser.parse_args(argv)
    pairs = []
    for pair in args.pairs:
        model, sep, baseline = pair.partition(':')
        if not sep or not model or not baseline:
            parser.error(f'--pairs takes MODEL:BASELINE, got {pair!r}')
        pairs.append((model, baseline))

    if not args.table_only:
        import timm_mod  # noqa: F401  (registers the models, so a misspelt name fails before any run)
        import timm
        unknown = [n for pair in pairs for n in pair if not timm.is_model(n)]
        if unknown:
            parser.error(f'unknown model(s): {", ".join(unknown)}')
        root = args.work / time.strftime('%Y%m%d-%H%M%S')
        root.mkdir(parents=True)
        rows = [row for model, baseline in pairs for seed in args.seeds for row in measure(model, baseline, seed,
                                                                                             root)]
        import torch
        results = dict(
            settings=dict(
                data='scikit-learn digits, 32 px, 1,433 train / 364 validation images', recipe='./train.sh digits',
                seeds=args.seeds, machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
                torch=torch.__version__, timm=timm.__version__, command='python benchmarks/distill_digits.py'),
            rows=rows)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = args.json.with_name(f'.{args.json.name}.partial')
        partial.write_text(json.dumps(results, indent=1))
        os.replace(partial, args.json)  # the results file is never left half-written
    results = json.loads(args.json.read_text())
    text = table(results)
    print(text)
    if args.update:
        replace_section(args.update, 'distill-digits', text)


if __name__ == '__main__':
    main()
