"""What a resumed run reproduces, measured on the quick start's digits.

Trains resnet18_mod on the digits for 6 epochs three ways through ./train.sh: uninterrupted; killed (SIGKILL) as
epoch 3 starts and resumed with RESUME=1, which continues from the killed run's last.pth.tar with its own arguments
(args.yaml); and uninterrupted again, to show how far two identical runs agree. Writes each epoch's validation top-1
to a JSON file and the table between the resume-digits markers of docs/training.md.

    python benchmarks/resume_digits.py      # about 3 minutes on a 2-core CPU
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from timm_mod.tools._cli import replace_section

from _digits import REPO, epochs

EPOCHS = 6
KILL_AT = 3  # killed as this epoch (counted from 0) starts: epochs 0-2 are done and checkpointed


def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHON=sys.executable)


def _run(output: Path, resume: bool = False) -> Path:
    cmd = [str(REPO / 'train.sh'), 'digits', 'resnet18_mod', '--epochs', str(EPOCHS), '--output', str(output)]
    proc = subprocess.run(cmd, env=dict(_env(), RESUME='1' if resume else ''), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed:\n{proc.stderr[-2000:]}')
    runs = sorted((p for p in output.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return runs[-1]


def _killed(output: Path) -> Path:
    cmd = [str(REPO / 'train.sh'), 'digits', 'resnet18_mod', '--epochs', str(EPOCHS), '--output', str(output)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith(f'Train: {KILL_AT} ['):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    [run] = [p for p in output.iterdir() if p.is_dir()]
    return run


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work', type=Path, default=REPO / 'output' / 'resume-digits',
                        help='folder for the runs (a new subfolder each time; default: %(default)s)')
    parser.add_argument('--json', type=Path, default=REPO / 'benchmarks' / 'results' / 'digits' / 'resume.json',
                        help='results file (default: %(default)s)')
    parser.add_argument('--update', default=str(REPO / 'docs' / 'training.md'), metavar='MARKDOWN',
                        help="page whose resume-digits section gets the table ('' for none; default: %(default)s)")
    parser.add_argument('--table-only', action='store_true', help='rewrite the table from --json; train nothing')
    args = parser.parse_args(argv)
    if not args.table_only:
        root = args.work / time.strftime('%Y%m%d-%H%M%S')
        first = _run(root / 'uninterrupted')
        killed = _killed(root / 'killed')
        resumed = _run(root / 'killed', resume=True)
        again = _run(root / 'again')
        rows = dict(uninterrupted=epochs(first), killed=epochs(killed), resumed=epochs(resumed), again=epochs(again))
        results = dict(settings=dict(model='resnet18_mod', data='scikit-learn digits, 364 validation images',
                                     epochs=EPOCHS, killed_as_epoch_starts=KILL_AT,
                                     command='python benchmarks/resume_digits.py'), rows=rows)
        partial = args.json.with_name(f'.{args.json.name}.partial')
        partial.write_text(json.dumps(results, indent=1))
        os.replace(partial, args.json)
    rows = json.loads(args.json.read_text())['rows']
    lines = ['| run | ' + ' | '.join(f'epoch {i + 1}' for i in range(EPOCHS)) + ' |', '|---|' + '---|' * EPOCHS]
    labels = {'uninterrupted': 'uninterrupted', 'again': 'uninterrupted, run again',
              'killed': f'killed as epoch {KILL_AT + 1} starts', 'resumed': 'resumed (RESUME=1)'}
    for key in ('uninterrupted', 'again', 'killed', 'resumed'):
        gap = [None] * (EPOCHS - len(rows[key]))  # the resumed run has only the epochs after the kill
        values = gap + rows[key] if key == 'resumed' else rows[key] + gap
        lines.append(f'| {labels[key]} | ' + ' | '.join('' if v is None else f'{v:.2f}' for v in values) + ' |')
    text = '\n'.join(lines)
    print(text)
    if args.update:
        replace_section(args.update, 'resume-digits', text)


if __name__ == '__main__':
    main()
