"""The repository around the package: the timm releases it supports, and documentation whose links and paths hold."""
import ast
import re
import tomllib
from pathlib import Path

import pytest
import timm
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from timm_mod._timm import TIMM_RANGE

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/header.md is the start of docs/benchmarks.md, checked there
DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md')),
        *sorted(p for p in (ROOT / 'benchmarks').glob('*.md') if p.name != 'header.md')]


def test_the_supported_timm_releases_are_stated_once_and_include_the_installed_one():
    requirements = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
    [timm_req] = [r for r in requirements if re.match(r'timm\b', r)]
    assert SpecifierSet(timm_req[len('timm'):]) == SpecifierSet(f'>={TIMM_RANGE[0]},<{TIMM_RANGE[1]}')
    assert Version(timm.__version__) in SpecifierSet(timm_req[len('timm'):])


def test_private_timm_names_are_imported_in_one_place():
    """Only timm_mod/_timm.py imports from timm's underscore modules or imports timm's underscore names."""
    offenders = []
    for path in (ROOT / 'timm_mod').rglob('*.py'):
        if path.name == '_timm.py':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split('.')[0] == 'timm':
                modules, names = [node.module], [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                modules, names = [a.name for a in node.names if a.name.split('.')[0] == 'timm'], []
            else:
                continue
            if any('._' in m for m in modules) or any(n.startswith('_') for n in names):
                offenders.append(f'{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}')
    assert not offenders


def _anchors(path: Path) -> set:
    """GitHub's anchors of a markdown file's headings."""
    headings = re.findall(r'^#+ (.+)$', path.read_text(), re.M)
    return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-') for h in headings}


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_cited_path_exists(doc):
    text = doc.read_text()
    problems = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+://', target) or target.startswith('mailto:'):
            continue
        file, _, anchor = target.partition('#')
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            problems.append(f'link {target}: no {path}')
        elif anchor and path.suffix == '.md' and anchor not in _anchors(path):
            problems.append(f'link {target}: no heading #{anchor} in {path.name}')
    for cited in re.findall(r'`((?:timm_mod|tests|benchmarks|docs|hub_cards)/[\w./-]+)`', text):
        if not (ROOT / cited.rstrip('/')).exists() and '*' not in cited and '<' not in cited:
            problems.append(f'cited path {cited} does not exist')
    assert not problems
