"""What the command-line tools share: argument types, checks that fail before any work, safe outputs, extras.

Every tool reports bad input the same way and before it starts its work: numbers and paths are checked by the
argument types here, models by `check_models`, devices by `check_device`. Result files are created exclusively
(`new_file`) and folders written whole (`NewFolder`), so a tool never overwrites what it did not write in the same
run: an existing file or a concurrent run is refused before any work; a run that fails removes only what it wrote
(parent folders it had to create stay, empty); what an interrupted run left is cleaned, or put back, by the next run
for the same place, which says so.
"""
import argparse
import contextlib
import difflib
import importlib
import os
import re
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = [
    'int_list', 'positive_int', 'nonnegative_int', 'positive_float', 'nonnegative_float', 'fraction', 'existing_file',
    'existing_dir',
    'unknown_models', 'check_models', 'check_device', 'import_extra', 'first_line', 'OutputError', 'new_file',
    'check_new_file', 'new_run_dir', 'NewFolder', 'has_section', 'replace_section']


# --- argument types: argparse reports their ValueError / ArgumentTypeError as "argument --x: invalid ... value"

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text}: must be a whole number of at least 1')
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text}: must be a whole number of at least 0')
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'{text}: must be a number of at least 0')
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'{text}: must be a number above 0')
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'{text}: must be a number above 0 and at most 1')
    return value


def int_list(text: str) -> List[int]:
    """'1,16' -> [1, 16]: comma-separated whole numbers of at least 1."""
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected comma-separated whole numbers, e.g. 1,16') from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: expected comma-separated whole numbers of at least 1, e.g. 1,16')
    return values


def existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f'no file {path}')
    return path


def existing_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f'no folder {path}')
    return path


# --- checks before any work

def unknown_models(names: Iterable[str]) -> Optional[str]:
    """None when timm knows every name (timm_mod imported), else a message naming the unknown ones and the nearest."""
    import timm
    known = timm.list_models()
    problems = []
    for name in names:
        arch = name.partition('.')[0]
        if name.startswith(('hf-hub:', 'local-dir:')) or timm.is_model(arch):
            continue
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
        problems.append(f'{name!r}' + (f' (nearest: {", ".join(close)})' if close else ''))
    if not problems:
        return None
    return (f'unknown model {", ".join(problems)}: python -c "import timm_mod; print(timm_mod.list_models())" lists '
            f'ours, timm.list_models() all')


def check_models(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    problem = unknown_models(names)
    if problem:
        parser.error(problem)


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    import torch
    if device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {device}: no CUDA device here (torch {torch.__version__}); use --device cpu')


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise an ImportError that names the pip install providing it.

    ``import timm_mod`` needs only torch, timm, huggingface_hub and safetensors; the tools import their other packages
    where they use them, through this.

    Args:
        module: The module to import, e.g. 'fvcore.nn'.
        extra: The extra of timm-mod's pyproject.toml that installs its package, e.g. 'tools'.
        purpose: What needs it, the start of the message, e.g. 'counting MACs'.
    """
    try:
        with warnings.catch_warnings():
            # deprecations that an extra's own import raises (fvcore scripts a function with torch.jit.script, which
            # newer torch answers with a FutureWarning) are the package's to fix, not the user's
            warnings.simplefilter('ignore', FutureWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            return importlib.import_module(module)
    except ImportError as e:
        package = module.partition('.')[0]
        raise ImportError(f'{purpose} needs {package}: pip install "timm-mod[{extra}]"', name=package) from e


def first_line(error: BaseException) -> str:
    """An exception's first line, for a one-line error message that quotes it."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# --- outputs that never overwrite

class OutputError(Exception):
    """An output path that would overwrite something, or that another run is writing; the message says which."""


def check_new_file(path: Union[str, Path], what: str = '--out') -> Path:
    """A result file the tool may create: not there yet, in a folder that exists or can be made."""
    path = Path(path)
    if path.exists():
        raise OutputError(f'{what} {path} exists: results are never overwritten; name a new file')
    if path.name in ('', '.', '..'):
        raise OutputError(f'{what} {path} is not a file name')
    return path


def new_run_dir(output: Union[str, Path], prefix: str, reserve: bool = True) -> Path:
    """A run folder no run has used: ``output/prefix-TIMESTAMP``, suffixed ``-1``, ``-2``, ... if taken.

    Args:
        output: The folder of runs.
        prefix: The run's name before its time stamp.
        reserve: Make it now (atomically: two runs started in the same second cannot both get it); else only name it.
    """
    from datetime import datetime
    base = Path(output) / f'{prefix}-{datetime.now().strftime("%Y%m%d-%H%M%S")}'
    for n in range(1000):
        path = base if n == 0 else Path(f'{base}-{n}')
        if not reserve:
            if not path.exists():
                return path
            continue
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise OutputError(f'no free run folder for {base} (1000 taken)')


@contextlib.contextmanager
def new_file(path: Union[str, Path], what: str = '--out', mode: str = 'w', newline: Optional[str] = None) -> Iterator:
    """Create `path` exclusively now and yield it open for writing; on an error, remove it again (it is ours).

    Raises:
        OutputError: the file exists (or another run created it first).
    """
    path = check_new_file(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(path, 'x' + mode.replace('w', ''), newline=newline)
    except FileExistsError:
        raise OutputError(f'{what} {path} was created by someone else meanwhile: not overwritten') from None
    try:
        with f:
            yield f
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _try_lock(fd: int) -> bool:
    """An exclusive lock on an open file without waiting; the system drops it when the process ends, however."""
    try:
        if os.name == 'nt':
            import msvcrt
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class NewFolder:
    """A folder written whole or not at all (see the module docstring).

    Used as::

        with NewFolder(out, force, ours=is_export, protect=[checkpoint]) as target:  # checks and locks, no writing
            ...                                                                    # the long work
            with target.staging() as folder:  # an empty folder beside `out`, moved onto `out` when the block ends
                ...                           # write into folder

    Args:
        out: The folder to write.
        force: Replace an existing, non-empty `out`, if `ours` accepts it.
        ours: Returns why a folder is not one this tool wrote ('' when it is one).
        protect: Paths that must survive: `out` may not be any of them or hold any of them.
        what: How the tool's option names `out` in messages.
    """

    def __init__(
            self,
            out: Union[str, Path],
            force: bool = False,
            ours: Callable[[Path], str] = lambda p: 'it was not written by this tool',
            protect: Sequence[Union[str, Path]] = (),
            what: str = '--out',
    ):
        self.out = Path(os.path.abspath(out))
        self.force = force
        self.ours = ours
        self.protect = [Path(os.path.abspath(p)) for p in protect]
        self.what = what
        self.notes: List[str] = []  # what the cleanup of an interrupted run did
        self._lock: Optional[Tuple[Path, int]] = None
        self._replace = False

    def _sibling(self, kind: str) -> Path:
        return self.out.with_name(f'.{self.out.name}.{uuid.uuid4().hex[:8]}.{kind}')

    def _leftovers(self, kind: str) -> List[Path]:
        pattern = re.compile(rf'\.{re.escape(self.out.name)}\.[0-9a-f]{{8}}\.{kind}')
        return [p for p in self.out.parent.glob(f'.{self.out.name}.*.{kind}') if pattern.fullmatch(p.name)]

    def _clean_interrupted(self) -> None:
        """Undo what a run that died while writing `out` left: its previous folder back, its partial one gone."""
        for old in self._leftovers('old'):
            if not self.out.exists():
                old.rename(self.out)
                self.notes.append(f'an interrupted run had moved the previous {self.out} aside: put back')
            else:
                shutil.rmtree(old)
                self.notes.append(f'removed {old}, the previous {self.out.name} an interrupted run had replaced')
        for partial in self._leftovers('partial'):
            shutil.rmtree(partial)
            self.notes.append(f'removed {partial}, left half-written by an interrupted run')

    def _acquire(self) -> None:
        """Lock `out` for this run (a lock file beside it, held until the run ends), then clean what an interrupted
        run left: only a run holding the lock cleans, so two runs never clean, or write, the same place at once."""
        lock = self.out.with_name(f'.{self.out.name}.lock')
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(lock, os.O_CREAT | os.O_RDWR)
            if not _try_lock(fd):
                holder = os.read(fd, 200).decode(errors='replace').strip() or 'unknown'
                os.close(fd)
                raise OutputError(f'{self.what} {self.out}: another run (process {holder}) is writing it; wait for '
                                  f'it to end')
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder before us removed the file while we waited for it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f'{os.getpid()} on {socket.gethostname()}'.encode())
            self._lock = (lock, fd)
            self._clean_interrupted()
            return
        raise OutputError(f'{self.what} {self.out}: could not lock it ({lock})')

    def _check(self) -> None:
        if self.out.name in ('', '.', '..') or self.out == self.out.parent:
            raise OutputError(f'{self.what} {self.out} is not a folder name')
        for path in self.protect:
            if path == self.out or self.out in path.parents:
                raise OutputError(f'{self.what} {self.out} holds {path}, which this run reads: choose another folder')
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f'{self.what} {self.out} exists and is not a folder')
        if self.out.is_dir() and any(self.out.iterdir()):
            why = self.ours(self.out)
            if why:
                raise OutputError(f'{self.what} {self.out} exists and {why}: it is never replaced, even with --force; '
                                  f'choose another folder')
            if not self.force:
                raise OutputError(f'{self.what} {self.out} exists and is not empty: pass --force to replace it')
            self._replace = True

    def __enter__(self) -> 'NewFolder':
        self._check()  # before the lock: a refused folder leaves nothing behind
        self._acquire()
        try:
            self._check()  # again under the lock, after any cleanup
        except OutputError as e:
            self._release()
            raise OutputError('; '.join([str(e), *self.notes])) from None
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        if self._lock is not None:
            lock, fd = self._lock
            if os.name != 'nt':
                lock.unlink(missing_ok=True)  # while still holding it: a run waiting on this file locks a new one
            os.close(fd)
            self._lock = None
            if os.name == 'nt':
                with contextlib.suppress(OSError):
                    lock.unlink()

    def __exit__(self, *exc) -> None:
        self._release()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty folder beside `out`; when the block ends without an error it becomes `out` in one rename (a
        folder it replaces is moved aside first and deleted once the new one is in place), else it is deleted."""
        folder = self._sibling('partial')
        folder.mkdir()
        try:
            yield folder
            if self._replace:
                old = self._sibling('old')
                self.out.rename(old)
                try:
                    folder.rename(self.out)
                except OSError as e:
                    old.rename(self.out)  # the previous folder back where it was
                    raise OutputError(f'{self.what} {self.out}: could not put the new folder in place ({e.strerror}); '
                                      f'the previous one is unchanged') from None
                shutil.rmtree(old)
            else:
                try:
                    folder.rename(self.out)  # onto a missing or an empty folder: atomic
                except OSError as e:
                    raise OutputError(f'{self.what} {self.out} was filled by someone else meanwhile: not '
                                      f'replaced ({e.strerror})') from None
        finally:
            if folder.exists():
                shutil.rmtree(folder)


# --- markdown sections a tool regenerates between two markers (the README's and the docs' tables)

def has_section(path: Union[str, Path], name: str) -> bool:
    return f'<!-- {name}:begin -->' in Path(path).read_text()


def replace_section(path: Union[str, Path], name: str, body: str) -> None:
    """Replace what stands between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in the file with `body`.

    Raises:
        OutputError: the file has no such markers.
    """
    begin, end = f'<!-- {name}:begin -->', f'<!-- {name}:end -->'
    file = Path(path)
    text = file.read_text()
    if begin not in text or end not in text:
        raise OutputError(f'{file} has no {begin} ... {end} section to update')
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    file.write_text(pattern.sub(lambda _: f'{begin}\n{body}\n{end}', text))
