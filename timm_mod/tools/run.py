"""Run one of timm's own scripts, unchanged, with the timm_mod models registered.

    python -m timm_mod.tools.run validate.py --model resnet18_mod --data-dir /data/imagenet \\
        --checkpoint model_best.pth.tar
    python -m timm_mod.tools.run benchmark.py --model resnet86_mod --bench inference
    torchrun --nproc_per_node 2 -m timm_mod.tools.run train.py --model resnet18_mod --device cpu ...

timm's train.py can import our models itself (``--device-modules timm_mod``); validate.py, benchmark.py,
inference.py and onnx_export.py have no such flag, so this launcher imports timm_mod first and then runs the script
as ``__main__``. A bare script name (``train.py``) is taken from a checkout of timm's repository, found in this order:

1. the folder of ``$TIMM_TRAIN_PY`` (a train.py inside a pytorch-image-models checkout);
2. a cached checkout, ``$TIMM_MOD_CACHE/pytorch-image-models`` (default ``~/.cache/timm_mod/pytorch-image-models``);
3. a shallow clone of the tag of the installed timm version into that cache folder, made on first use.

Nothing of timm's repository is copied into this package: the scripts stay timm's, at the user's timm version.
"""
import argparse
import functools
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import timm
import torch

__all__ = ['TimmScriptError', 'cache_root', 'timm_repo_cache', 'find_timm_repo', 'resolve_script', 'fix_cpu_ddp']

TIMM_REPO_URL = 'https://github.com/huggingface/pytorch-image-models'
TIMM_SCRIPTS = ('train.py', 'validate.py', 'benchmark.py', 'inference.py', 'onnx_export.py')
# how long the one-time clone of timm's scripts may take before the launcher gives up and says how to fix it
CLONE_SECONDS = 300


class TimmScriptError(RuntimeError):
    """timm's scripts cannot be found (or fetched); the message says how to point ``TIMM_TRAIN_PY`` at a checkout."""


def cache_root() -> Path:
    """timm_mod's cache folder: ``$TIMM_MOD_CACHE``, else ``~/.cache/timm_mod``."""
    return Path(os.environ.get('TIMM_MOD_CACHE') or Path.home() / '.cache' / 'timm_mod')


def timm_repo_cache() -> Path:
    """Where the cached checkout of timm's repository lives (whether or not it exists yet)."""
    return cache_root() / 'pytorch-image-models'


def _how_to_fix() -> str:
    return (f'Point TIMM_TRAIN_PY at train.py in a checkout of {TIMM_REPO_URL} (ideally at tag v{timm.__version__}, '
            f'the installed timm), e.g.\n'
            f'    git clone --depth 1 --branch v{timm.__version__} {TIMM_REPO_URL} /some/dir\n'
            f'    export TIMM_TRAIN_PY=/some/dir/train.py')


def _checkout_version(repo: Path) -> Optional[str]:
    version_py = repo / 'timm' / 'version.py'
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_py.read_text()) if version_py.is_file() else None
    return match.group(1) if match else None


def _note_version(repo: Path) -> None:
    # A note, not an error: timm's scripts change slowly and usually run fine against a nearby timm release.
    version = _checkout_version(repo)
    if version and version != timm.__version__:
        print(f'timm_mod: note: the timm checkout {repo} is version {version}, the installed timm is '
              f'{timm.__version__}; its scripts run against the installed timm', file=sys.stderr)


def _clone(dest: Path) -> None:
    """Shallow-clone the tag of the installed timm version into ``dest`` (atomically: a half clone is never used)."""
    if shutil.which('git') is None:
        raise TimmScriptError(f'timm\'s train.py was not found and git is not installed to fetch it.\n{_how_to_fix()}')
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = f'v{timm.__version__}'
    print(f'timm_mod: fetching timm\'s scripts: git clone --depth 1 --branch {tag} {TIMM_REPO_URL} {dest}',
          file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix='.clone-') as tmp:
        cmd = ['git', 'clone', '-q', '--depth', '1', '--branch', tag, TIMM_REPO_URL, str(Path(tmp) / 'repo')]
        env = dict(os.environ, GIT_TERMINAL_PROMPT='0')  # fail instead of waiting for credentials
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CLONE_SECONDS)
        except subprocess.TimeoutExpired:
            raise TimmScriptError(
                f'git clone of {TIMM_REPO_URL} took over {CLONE_SECONDS} s: stopped.\n{_how_to_fix()}') from None
        if proc.returncode:
            raise TimmScriptError(
                f'timm\'s train.py was not found and cloning {TIMM_REPO_URL} at {tag} failed:\n'
                f'    {proc.stderr.strip()[-500:]}\n{_how_to_fix()}')
        os.replace(Path(tmp) / 'repo', dest)


def find_timm_repo(clone: bool = True) -> Optional[Path]:
    """The checkout of timm's repository whose scripts we run (see the module docstring for the search order).

    Args:
        clone: Clone the installed timm version's tag into the cache when no checkout is found. Without it, a
            missing checkout returns None.

    Raises:
        TimmScriptError: ``$TIMM_TRAIN_PY`` is set but is not a file, or cloning failed.
    """
    env_path = os.environ.get('TIMM_TRAIN_PY')
    if env_path:
        # an explicit setting that is wrong must not silently fall back to another train.py
        if not Path(env_path).is_file():
            raise TimmScriptError(f'TIMM_TRAIN_PY={env_path} is not a file.\n{_how_to_fix()}')
        return Path(env_path).resolve().parent
    cached = timm_repo_cache()
    if (cached / 'train.py').is_file():
        _note_version(cached)
        return cached
    if not clone:
        return None
    _clone(cached)
    return cached


def resolve_script(script: str) -> Path:
    """A path as given, or a bare script name (``validate.py``) looked up in timm's checkout."""
    if os.sep in script or (os.altsep and os.altsep in script):
        path = Path(script)
        if not path.is_file():
            raise TimmScriptError(f'{script} is not a file')
        return path.resolve()
    repo = find_timm_repo()
    path = repo / script
    if not path.is_file():
        known = ', '.join(p for p in TIMM_SCRIPTS if (repo / p).is_file())
        raise TimmScriptError(f'no {script} in the timm checkout {repo} (it has: {known})')
    return path


def _drop_cpu_device_ids(init):
    @functools.wraps(init)
    def __init__(self, module, device_ids=None, *args, **kwargs):
        if device_ids is not None and all(torch.device(d).type == 'cpu' for d in device_ids):
            device_ids = None
        init(self, module, device_ids, *args, **kwargs)
    return __init__


def fix_cpu_ddp() -> None:
    """Work around timm's train.py handing ``device_ids=[device]`` to DistributedDataParallel even on CPU.

    DDP rejects device_ids for CPU modules (it wants None), so distributed CPU training (gloo) fails with an
    unmodified train.py. Dropping CPU device ids at DDP's door fixes every timm version's train.py without touching
    it; GPU device ids pass through unchanged. Remove this once timm's train.py passes ``device_ids=None`` on CPU.
    """
    ddp = torch.nn.parallel.DistributedDataParallel
    if not getattr(ddp.__init__, '_timm_mod_cpu_fix', False):
        ddp.__init__ = _drop_cpu_device_ids(ddp.__init__)
        ddp.__init__._timm_mod_cpu_fix = True


def _is_distributed() -> bool:
    """True inside a torchrun (or SLURM) process group of more than one process, the only place DDP is used."""
    return int(os.environ.get('WORLD_SIZE', 1)) > 1 or int(os.environ.get('SLURM_NTASKS', 1)) > 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m timm_mod.tools.run', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('script', help=f'a path, or one of timm\'s scripts by name: {", ".join(TIMM_SCRIPTS)}')
    parser.add_argument('args', nargs=argparse.REMAINDER, help='arguments for the script, passed unchanged')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    # only the script name is ours: everything after it, --help included, belongs to the script
    if not args or args[0] in ('-h', '--help'):
        _parser().print_help()
        sys.exit(0 if args else 2)
    try:
        script = resolve_script(args[0])
    except TimmScriptError as e:
        sys.exit(f'timm_mod.tools.run: {e}')

    # The models are registered already: `python -m timm_mod.tools.run` imports the timm_mod package before this module.
    if _is_distributed():
        fix_cpu_ddp()
    # Unlike `python script.py`, the script's folder is not put on sys.path: timm's scripts import nothing from it but
    # the checkout's own timm/ package, which must not stand in for the installed timm our models are registered in.
    sys.argv = [str(script)] + args[1:]
    runpy.run_path(str(script), run_name='__main__')


if __name__ == '__main__':
    main()
