"""Turn benchmark JSON files (from ``python -m timm_mod.tools.bench --json``) into the benchmarks page and Figure 3.

    python -m timm_mod.tools.report benchmarks/results/*.json --out docs/benchmarks.md --plot benchmarks/figures

Every number written comes from the JSON rows; the paper's numbers (timm_mod.tools.paper) are shown beside them and
labelled as the paper's.
"""
import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ._cli import import_extra
from ._cli import has_section, replace_section
from .paper import PAPER

__all__ = ['load_rows', 'render_markdown', 'render_payoff', 'render_int8', 'plot_figure3']

SETTING_KEYS = (
    'source', 'device', 'gpu', 'runtime', 'exporter', 'precision', 'keep', 'threads', 'batch_size', 'channels_last',
    'amp', 'compile')
RUNTIME_NAMES = {
    'eager': 'PyTorch eager', 'compile': 'torch.compile', 'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO'}


def load_rows(paths: Sequence[str]) -> List[Dict[str, Any]]:
    rows = []
    for path in paths:
        with open(path) as f:
            for row in json.load(f):
                row['source'] = Path(path).name
                rows.append(row)
    return rows


def runtime_of(row: Dict[str, Any]) -> str:
    """'eager', 'compile', 'onnxruntime' or 'openvino' (rows written before --runtime existed: eager or compile)."""
    return row.get('runtime') or ('compile' if row.get('compile') else 'eager')


def _setting_title(row: Dict[str, Any]) -> str:
    where = f'GPU ({row["gpu"]})' if row['device'] == 'cuda' else f'CPU ({row["cpu"]}), {row["threads"]} thread(s)'
    runtime = runtime_of(row)
    mode = row.get('compile')
    name = RUNTIME_NAMES.get(runtime, runtime) + (f' ({mode})' if isinstance(mode, str) and mode != 'default' else '')
    if row.get('exporter'):
        name += f' ({row["exporter"]} ONNX export)'
    if row.get('precision') == 'int8':
        name += ' INT8' + (f' (MoD {row["keep"]} in float32)' if row.get('keep') not in (None, 'none') else '')
    precision = 'bfloat16' if runtime == 'openvino' and row.get('amp') else 'AMP'
    extras = [label for label, on in (('channels_last', row.get('channels_last')), (precision, row.get('amp'))) if on]
    if row.get('rounds'):
        extras.append(f'{row["rounds"]} interleaved rounds')
    return f'{name}, {where}, batch {row["batch_size"]}' + (', ' + ', '.join(extras) if extras else '') + (
        f' (torch {row["torch"]}, timm {row["timm"]}; `{row.get("source", "-")}`)')


def _fmt(value: Optional[float], spec: str = '.2f') -> str:
    return '-' if value is None else format(value, spec)


def render_markdown(rows: List[Dict[str, Any]]) -> str:
    """One table per setting: ours (speed-up vs the paired baseline, bound) beside the paper's speed-up. The malloc
    setting of the CPU runs is stated once, before the tables."""
    out = []
    mallocs = sorted({r['malloc'] for r in rows if r.get('malloc')})
    if mallocs:
        out.append('Every CPU run below sets malloc: ' + ', '.join(f'`{m}`' for m in mallocs) + '.\n')
    for group in _groups(rows).values():
        by_name = {r['model']: r for r in group}
        out.append(f'### {_setting_title(group[0])}\n')
        out.append('| model | vs | params (M) | GMACs | latency ms (IQR) | speed-up | bound | of bound '
                   '| paper speed-up | train img/s | train speed-up |')
        out.append('|---|---|---|---|---|---|---|---|---|---|---|')
        for r in group:
            if r['model'].endswith('[bound]'):
                continue
            base = r.get('baseline')
            bound = by_name.get(f'{r["model"]}[bound]')
            paper = PAPER.get(r['model'])
            paper_speedup = None
            if paper is not None and base:
                paper_speedup = paper.speedup_gpu if r['device'] == 'cuda' else paper.speedup_cpu
            out.append('| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |'.format(
                r['model'], base or '-', _fmt(r['params_m']), _fmt(r.get('gmacs')),
                _fmt(r['latency_ms']), _fmt(r['latency_iqr_ms']),
                _fmt(r['speedup']) if base else '-', _fmt(bound['speedup']) if bound else '-',
                _fmt(r['speedup'] / bound['speedup']) if base and bound else '-',
                _fmt(paper_speedup), _fmt(r.get('train_img_s'), '.1f'),
                _fmt(r.get('train_speedup')) if base else '-'))
        out.append('')
    return '\n'.join(out)


PAYOFF_MODELS = ('resnet50_mod', 'resnet75_mod', 'resnet86_mod', 'mobilenetv2_mod', 'mobilenetv2_mod_l')


def render_int8(rows: List[Dict[str, Any]]) -> str:
    """The paper models in ONNX Runtime and OpenVINO, float32 beside INT8: each one's speed-up over its baseline in the
    same precision (the fraction of its bound in brackets), and what INT8 gains over float32 for the model itself.

    INT8 with every MoD block's selector kept in float32 (`--keep selector`) gets its own column where measured."""
    found: Dict[tuple, Dict[str, Any]] = {}
    for r in rows:
        if r.get('runtime') in ('onnxruntime', 'openvino') and r.get('precision') in ('fp32', 'int8'):
            variant = r['precision'] if r['precision'] == 'fp32' or r.get('keep') in (None, 'none') else 'int8-selector'
            found[(r['runtime'], r['threads'], r['batch_size'], variant, r['model'])] = r
    variants = [v for v in ('fp32', 'int8', 'int8-selector') if any(k[3] == v for k in found)]
    titles = {'fp32': 'float32', 'int8': 'INT8', 'int8-selector': 'INT8, selector float32'}
    lines = ['| runtime | threads | batch | model | ' + ' | '.join(f'{titles[v]} speed-up (of bound)' for v in variants)
             + ' | INT8 over float32 |', '|---|---|---|---|' + '---|' * (len(variants) + 1)]
    settings = sorted({k[:3] for k in found}, key=lambda k: (k[0], k[1], k[2]))
    for runtime, threads, batch in settings:
        for model in PAYOFF_MODELS:
            cells = []
            for variant in variants:
                r = found.get((runtime, threads, batch, variant, model))
                bound = found.get((runtime, threads, batch, variant, f'{model}[bound]'))
                cells.append('-' if r is None else f'{r["speedup"]:.2f}' + (
                    f' ({r["speedup"] / bound["speedup"]:.2f})' if bound else ''))
            fp32, int8 = (found.get((runtime, threads, batch, v, model)) for v in ('fp32', 'int8'))
            gain = f'{fp32["latency_ms"] / int8["latency_ms"]:.2f}' if fp32 and int8 else '-'
            if any(c != '-' for c in cells):
                lines.append(f'| {RUNTIME_NAMES[runtime]} | {threads} | {batch} | {model} | ' + ' | '.join(cells)
                             + f' | {gain} |')
    return '\n'.join(lines)


def _groups(rows: List[Dict[str, Any]]) -> 'OrderedDict[tuple, List[Dict[str, Any]]]':
    groups: 'OrderedDict[tuple, List[Dict[str, Any]]]' = OrderedDict()
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in SETTING_KEYS), []).append(row)
    return groups


def _payoff_label(row: Dict[str, Any]) -> str:
    runtime = runtime_of(row)
    name = RUNTIME_NAMES.get(runtime, runtime)
    mode = row.get('compile')
    if isinstance(mode, str) and mode != 'default':
        name += f' ({mode})'
    if row['device'] == 'cuda':
        where = f'GPU {(row.get("gpu") or "").replace("NVIDIA ", "")}'
    else:
        where = f'CPU, {row["threads"]} thread{"s" if row["threads"] > 1 else ""}'
    extras = ' AMP' if row.get('amp') and row['device'] == 'cuda' else (' bf16' if row.get('amp') else '')
    return f'{name} | {where}{extras} | {row["batch_size"]}'


def render_payoff(rows: List[Dict[str, Any]]) -> str:
    """One line per measured setting: each paper model's speed-up over its baseline and, in brackets, the fraction of
    its bound it reaches; a speed-up below 1 (slower than the baseline) in bold. Training lines where measured.

    Where several files measured the same setting, the one read last (a later run) gives the line.
    """
    lines = ['| runtime | device | batch | ' + ' | '.join(PAYOFF_MODELS) + ' |',
             '|---|---|---|' + '---|' * len(PAYOFF_MODELS)]
    latest: Dict[str, List[Dict[str, Any]]] = {}
    for group in _groups(rows).values():
        if group[0].get('precision') == 'int8':
            continue  # INT8 has its own table (render_int8)
        if any(r['model'] in PAYOFF_MODELS for r in group):
            latest.pop(_payoff_label(group[0]), None)  # re-inserted: lines keep the order of the runs that give them
            latest[_payoff_label(group[0])] = group
    for group in latest.values():
        by_name = {r['model']: r for r in group}
        for key, label in (('speedup', ''), ('train_speedup', ', training')):
            if not any(by_name.get(m, {}).get(key) for m in PAYOFF_MODELS):
                continue
            cells = []
            for m in PAYOFF_MODELS:
                value, bound = by_name.get(m, {}).get(key), by_name.get(f'{m}[bound]', {}).get(key)
                if value is None:
                    cells.append('')
                    continue
                text = f'**{value:.2f}**' if round(value, 2) < 1 else f'{value:.2f}'
                cells.append(text + (f' ({value / bound:.2f})' if bound else ''))
            lines.append(f'| {_payoff_label(group[0])}{label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_figure3(rows: List[Dict[str, Any]], out_dir: str) -> List[Path]:
    """Figure 3's panels: the paper's top-1 against our GMACs, params, CPU latency and GPU latency."""
    matplotlib = import_extra('matplotlib', 'plot', 'drawing Figure 3')
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    imagenet = [r for r in rows if r['model'] in PAPER and PAPER[r['model']].table in ('1', '7')]
    cpu = {r['model']: r for r in imagenet if r['device'] == 'cpu' and r['batch_size'] == 1 and r['threads'] == 1}
    gpu = {r['model']: r for r in imagenet if r['device'] == 'cuda' and r['batch_size'] == 1}
    anyrow = {r['model']: r for r in imagenet}
    gmacs = {r['model']: r['gmacs'] for r in imagenet if r.get('gmacs') is not None}  # GPU runs have none
    panels = [
        ('GMACs (fvcore, ours)', gmacs),
        ('Params (M, ours)', {m: r['params_m'] for m, r in anyrow.items()}),
        ('CPU latency, 1 thread, batch 1 (ms, ours)', {m: r['latency_ms'] for m, r in cpu.items()}),
        ('GPU latency, batch 1 (ms, ours)', {m: r['latency_ms'] for m, r in gpu.items()}),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    for ax, (xlabel, values) in zip(axes, panels):
        for family, marker, color in (('mod', 'o', 'tab:red'), ('base', 's', 'tab:blue')):
            pts = sorted(
                (v, PAPER[m].top1, m) for m, v in values.items()
                if v is not None and PAPER[m].top1 and (('_mod' in m) == (family == 'mod')))
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, linestyle='',
                    label='ResNet-MoD' if family == 'mod' else 'ResNet')
            for v, top1, m in pts:
                ax.annotate(m.replace('resnet', 'R').replace('_mod', '-MoD'), (v, top1), fontsize=7,
                            textcoords='offset points', xytext=(3, 3))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ImageNet top-1 (%), the paper's")
        ax.grid(alpha=0.3)
        if not values or all(v is None for v in values.values()):
            ax.text(0.5, 0.5, 'not measured', transform=ax.transAxes, ha='center')
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc='lower right')
    fig.suptitle("Figure 3 reproduced: the paper's reported top-1 against our measured cost")
    fig.tight_layout()
    path = out / 'figure3.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.tools.report', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('json', nargs='+', help='benchmark JSON files')
    parser.add_argument('--out', help='write the markdown tables here (default: stdout)')
    parser.add_argument('--header', help='markdown file placed before the tables')
    parser.add_argument('--footer', action='append', default=[],
                        help='markdown file placed after the tables (repeat for several, in order)')
    parser.add_argument('--plot', metavar='DIR', help='also draw Figure 3 into DIR')
    parser.add_argument('--int8', metavar='FILE',
                        help='rewrite the float32 / INT8 table of the ONNX Runtime and OpenVINO rows between the '
                             '<!-- int8-speed:begin/end --> markers in FILE')
    parser.add_argument('--payoff', metavar='FILE',
                        help='rewrite the where-MoD-pays-off table (speed-up and fraction of bound per runtime and '
                             'setting) between the <!-- payoff:begin/end --> markers in FILE')
    args = parser.parse_args(argv)
    missing = [p for p in args.json + [args.header] + args.footer if p and not Path(p).is_file()]
    if missing:
        parser.error(f'no such benchmark file: {", ".join(missing)}')
    for path, section in ((args.payoff, 'payoff'), (args.int8, 'int8-speed')):
        if path and not has_section(path, section):
            parser.error(f'{path} has no <!-- {section}:begin --> marker')
    if args.plot:
        try:
            import_extra('matplotlib', 'plot', '--plot')  # known before anything is written
        except ImportError as e:
            parser.error(str(e))
    rows = load_rows(args.json)
    text = (Path(args.header).read_text() if args.header else '') + render_markdown(rows) + ''.join(
        '\n' + Path(p).read_text() for p in args.footer)
    if args.out:
        Path(args.out).write_text(text)
        print(f'wrote {args.out}', file=sys.stderr)
    else:
        print(text)
    if args.plot:
        for path in plot_figure3(rows, args.plot):
            print(f'wrote {path}', file=sys.stderr)
    if args.payoff:
        replace_section(args.payoff, 'payoff', render_payoff(rows))
        print(f'updated the payoff table in {args.payoff}', file=sys.stderr)
    if args.int8:
        replace_section(args.int8, 'int8-speed', render_int8(rows))
        print(f'updated the INT8 table in {args.int8}', file=sys.stderr)


if __name__ == '__main__':
    main()
