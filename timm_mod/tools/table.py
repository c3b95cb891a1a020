"""Print (or write into a markdown file) the model table: our parameter and MAC counts beside the paper's.

    python -m timm_mod.tools.table                    # print the table
    python -m timm_mod.tools.table --update README.md # replace the table between its markers in README.md
"""
import argparse
import sys
from typing import List, Optional, Sequence

import timm

from ..models import list_models
from ._cli import check_models, existing_file, has_section, replace_section
from .complexity import count_gmacs, count_params_m
from .paper import PAPER

SECTION = 'model-table'


def model_table(names: List[str]) -> str:
    rows = [
        '| model | input | params (M) | paper params (M) | GMACs (fvcore) | paper GMACs |',
        '|---|---|---|---|---|---|',
    ]
    for name in names:
        model = timm.create_model(name)
        size = model.pretrained_cfg['input_size']
        paper = PAPER.get(name)
        rows.append('| {} | {} | {:.2f} | {} | {:.3f} | {} |'.format(
            name, size[-1], count_params_m(model), f'{paper.params_m:.2f}' if paper else '-',
            count_gmacs(model), f'{paper.gmacs:.3f}' if paper else '-'))
    return '\n'.join(rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m timm_mod.tools.table', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='', help='comma-separated model names (default: every timm_mod model)')
    parser.add_argument('--update', metavar='FILE', type=existing_file,
                        help=f'rewrite the table between the <!-- {SECTION}:begin/end --> markers in FILE')
    args = parser.parse_args(argv)
    names = args.models.split(',') if args.models else list_models()
    check_models(parser, names)
    if args.update and not has_section(args.update, SECTION):
        parser.error(f'{args.update} has no <!-- {SECTION}:begin --> marker')
    table = model_table(names)
    if not args.update:
        print(table)
        return
    replace_section(args.update, SECTION, table)
    print(f'updated the model table in {args.update}', file=sys.stderr)


if __name__ == '__main__':
    main()
