"""Writing results without losing anything: new files created exclusively, folders replaced atomically.

The command-line tools never overwrite what they did not write in the same run:

* `new_file`: a result file (``--json``, ``--out``) is created exclusively when the tool starts, so an existing file
  or a concurrent run is refused before any work, and filled at the end; a run that fails removes only its own
  empty file.
* `NewFolder`: a folder (``hub export --out``) is checked and locked when the tool starts, written beside its
  place and moved into it with one rename when complete. An existing folder is replaced only on request and only
  when it is one the tool wrote itself; never a folder that holds one of the tool's own inputs. What an interrupted
  run leaves (its lock, its half-written folder, a previous folder moved aside) is cleaned, or put back, by the next
  run for the same place, which says so.
"""
import contextlib
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Union

__all__ = ['OutputError', 'new_file', 'check_new_file', 'NewFolder']


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


@contextlib.contextmanager
def new_file(path: Union[str, Path], what: str = '--out', mode: str = 'w') -> Iterator:
    """Create `path` exclusively now and yield it open for writing; on an error, remove it again (it is ours).

    Raises:
        OutputError: the file exists (or another run created it first).
    """
    path = check_new_file(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(path, 'x' + mode.replace('w', ''))
    except FileExistsError:
        raise OutputError(f'{what} {path} was created by someone else meanwhile: not overwritten') from None
    try:
        with f:
            yield f
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's run: assume it is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
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
        self._lock: Optional[Path] = None
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
        lock = self.out.with_name(f'.{self.out.name}.lock')
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid, _, host = lock.read_text().partition(' ') if lock.is_file() else ('0', '', '')
                if pid.isdigit() and _alive(int(pid), host.strip()):
                    raise OutputError(f'{self.what} {self.out}: another run (process {pid} on {host.strip()}) is '
                                      f'writing it; wait for it to end') from None
                self._clean_interrupted()
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, 'w') as f:
                f.write(f'{os.getpid()} {socket.gethostname()}')
            self._lock = lock
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
            self._lock.unlink(missing_ok=True)
            self._lock = None

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
                folder.rename(self.out)
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
