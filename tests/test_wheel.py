"""The wheel: built from this checkout and installed away from it, it holds the whole package, declares only the
library's dependencies, and runs every documented ``python -m timm_mod...`` command.

By default the wheel is installed with ``pip install --no-deps --target`` into a temporary folder and each command runs
there with this interpreter and PYTHONPATH naming that folder, from a working directory outside the checkout: the
package imported is the wheel's (checked), the dependencies are this environment's. With TIMM_MOD_WHEEL_PYTHON set
to the interpreter of a virtual environment where the wheel is installed with its own dependencies (as .ci/run
does), the commands run there instead.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import timm
import torch

import timm_mod  # noqa: F401  registers the model whose checkpoint the export test writes

pytestmark = pytest.mark.slow  # a wheel build and a command run per tool: the full sweep

ROOT = Path(__file__).resolve().parents[1]
# What `import timm_mod` needs; everything else is an extra
REQUIREMENTS = {'torch', 'timm', 'huggingface-hub', 'safetensors'}


def _documented_commands():
    """Every ``python -m timm_mod...`` the README and the docs name, and every tool with a command line."""
    text = ''.join(p.read_text() for p in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))])
    commands = set(re.findall(r'python -m (timm_mod(?:\.\w+)+)(?![.\w<])', text))
    tools = ROOT / 'timm_mod' / 'tools'
    commands |= {f'timm_mod.tools.{p.stem}' for p in tools.glob('*.py') if "__name__ == '__main__'" in p.read_text()}
    return sorted(commands)


def _run(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def _has_build_backend() -> bool:
    """Whether this environment has the build backend pyproject.toml asks for (setuptools >= 77)."""
    try:
        import setuptools
    except ImportError:
        return False
    return tuple(int(p) for p in setuptools.__version__.split('.')[:2] if p.isdigit()) >= (77,)


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the checkout's sources: setuptools builds in the source tree, and a build/ folder left
    there would carry deleted modules into later wheels."""
    source = tmp_path_factory.mktemp('source')
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(ROOT / name, source / name)
    for name in ('timm_mod', 'hub_cards'):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns('__pycache__'))
    dist = tmp_path_factory.mktemp('dist')
    cmd = [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', str(source), '-w', str(dist)]
    if _has_build_backend():
        cmd.append('--no-build-isolation')  # this environment's setuptools builds it: no package index needed
    proc = _run(cmd, source, dict(os.environ))
    if proc.returncode and '--no-build-isolation' not in cmd and re.search(
            r'(?i)connection|network|resolve|No matching distribution', proc.stderr):
        pytest.skip('building the wheel needs setuptools>=77 from the package index, which cannot be reached')
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(dist.glob('timm_mod-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory):
    """(python, environment, working directory) of the installed wheel, offline with an empty Hub cache."""
    work = tmp_path_factory.mktemp('work')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(work / 'hub-cache'))
    python = os.environ.get('TIMM_MOD_WHEEL_PYTHON')
    if not python:
        site = tmp_path_factory.mktemp('site')
        proc = _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(site), str(wheel)],
                    work, env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        python, env['PYTHONPATH'] = sys.executable, str(site)
    return python, env, work


def test_wheel_holds_every_module_and_the_card_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / 'timm_mod').rglob('*.py')}
    cards = {f'timm_mod/hub_cards/{p.name}' for p in (ROOT / 'hub_cards').glob('*.md')}
    assert cards and not (modules | cards) - names


def test_wheel_requires_only_what_the_library_imports(wheel):
    with zipfile.ZipFile(wheel) as zf:
        metadata = Parser().parsestr(zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA')))
        .decode())
    required = {re.split(r'[\s<>=!~;\[]', r, 1)[0].lower().replace('_', '-')
                for r in metadata.get_all('Requires-Dist') if 'extra ==' not in r}
    assert required == REQUIREMENTS
    assert {'tools', 'deploy', 'test'} <= set(metadata.get_all('Provides-Extra'))


def test_the_package_imported_is_the_wheels(installed):
    python, env, work = installed
    proc = _run([python, '-c', 'import timm_mod; print(timm_mod.__file__)'], work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.strip())
    assert ROOT not in path.parents
    if 'PYTHONPATH' in env:
        assert Path(env['PYTHONPATH']) in path.parents


@pytest.mark.parametrize('command', _documented_commands())
def test_every_documented_command_runs(command, installed):
    python, env, work = installed
    proc = _run([python, '-m', command, '--help'], work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('usage:'), proc.stdout[:500]


def test_hub_export_runs_from_the_wheel(installed):
    """The card templates ship inside the wheel: an offline export of a random-init checkpoint writes a card."""
    python, env, work = installed
    model = timm.create_model('resnet18_mod_cifar', num_classes=10)
    torch.save(model.state_dict(), work / 'model.pth')
    out = work / 'export'
    proc = _run([python, '-m', 'timm_mod.tools.hub', 'export', '--model', 'resnet18_mod_cifar.c10', '--checkpoint',
                 str(work / 'model.pth'), '--out', str(out)], work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    card = (out / 'README.md').read_text()
    assert card.startswith('---\n') and '# Model card for resnet18_mod_cifar.c10' in card
