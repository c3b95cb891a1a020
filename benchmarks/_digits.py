"""What the digits measurements share: a ./train.sh run, its per-epoch accuracy, the validation images, a docs table."""
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]


def train(args: List[str], output: Path, log: Path) -> Path:
    """./train.sh digits ARGS into a new folder `output`; the run folder it made."""
    output.mkdir(parents=True, exist_ok=False)
    cmd = [str(REPO / 'train.sh'), 'digits', *args, '--output', str(output)]
    with log.open('w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHON=sys.executable))
    if proc.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed ({proc.returncode}); its log: {log}')
    [run] = [p for p in output.iterdir() if p.is_dir()]
    return run


def epochs(run: Path) -> List[float]:
    """Validation top-1 after each epoch of a train.py run (its summary.csv)."""
    with (run / 'summary.csv').open() as f:
        return [float(row['eval_top1']) for row in csv.DictReader(f)]


def validation_batches(model: torch.nn.Module, batch_size: int = 128) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The 364 digits validation images as train.py evaluates them (32 px, crop 1.0, the model's mean and std)."""
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm_mod.tools.train import digits_root, write_digits
    root = write_digits(digits_root())
    config = resolve_data_config({'input_size': (3, 32, 32), 'crop_pct': 1.0}, model=model)
    dataset = create_dataset('', root=str(root), split='val')
    loader = create_loader(dataset, input_size=config['input_size'], batch_size=batch_size, is_training=False,
                           interpolation=config['interpolation'], mean=config['mean'], std=config['std'],
                           crop_pct=config['crop_pct'], num_workers=0, device=torch.device('cpu'))
    return [(x, y) for x, y in loader]


def write_results(path: Path, rows: List, command: str, **settings) -> None:
    """The results file of a measurement: its rows and settings (the machine and versions included), written whole."""
    import json
    import platform
    import timm
    settings.update(machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
                    torch=torch.__version__, timm=timm.__version__, command=command)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f'.{path.name}.partial')
    partial.write_text(json.dumps(dict(settings=settings, rows=rows), indent=1))
    os.replace(partial, path)  # never left half-written


def trained_models_cli(doc: str, name: str, page: str, models: Tuple[str, ...], measure, table) -> None:
    """The command line of a measurement on trained digits models: train `models` with ./train.sh digits (or take
    --checkpoints), `measure(model name, checkpoint)` each into rows, write them to the results file and `table(rows)`
    between the NAME markers of the docs page."""
    import argparse
    import json
    import time
    from timm_mod.checkpoint import read_checkpoint
    from timm_mod.tools._cli import replace_section
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoints', nargs='+', type=Path, metavar='CKPT',
                        help=f'train.py checkpoints of digits models (default: train {" and ".join(models)} with '
                             f'./train.sh digits)')
    parser.add_argument('--work', type=Path, default=REPO / 'output' / f'{name}-digits',
                        help='folder for the training runs (default: %(default)s)')
    parser.add_argument('--json', type=Path, default=REPO / 'benchmarks' / 'results' / 'digits' / f'{name}.json',
                        help='results file (default: %(default)s)')
    parser.add_argument('--update', default=str(REPO / 'docs' / page), metavar='MARKDOWN',
                        help=f"page whose {name}-digits section gets the table ('' for none; default: %(default)s)")
    parser.add_argument('--table-only', action='store_true', help='rewrite the table from --json; measure nothing')
    args = parser.parse_args()
    missing = [c for c in args.checkpoints or [] if not c.is_file()]
    if missing:
        parser.error(f'no checkpoint at {", ".join(map(str, missing))}')
    if not args.table_only:
        if args.checkpoints:
            runs = [(read_checkpoint(c)[1]['arch'], c) for c in args.checkpoints]
        else:
            root = args.work / time.strftime('%Y%m%d-%H%M%S')
            root.mkdir(parents=True)
            runs = [(m, train([m], root / m, root / f'{m}.log') / 'model_best.pth.tar') for m in models]
        rows = [row for model, checkpoint in runs for row in measure(model, checkpoint)]
        write_results(args.json, rows, f'python benchmarks/{name}_digits.py', weights='./train.sh digits MODEL')
    text = table(json.loads(args.json.read_text())['rows'])
    print(text)
    if args.update:
        replace_section(args.update, f'{name}-digits', text)
