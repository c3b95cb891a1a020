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
