"""Errors a person can act on, and writes that never leave half a file behind.

Every module imports this one for PocketError, so it imports only what that needs: tempfile and
pathlib (with shutil, random and re behind them, ~2 MiB of a process that only generates text) are
imported by the atomic writes that use them, and typing (1.7 MiB with re and enum) only by type
checkers.
"""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class PocketError(Exception):
    """A failure the command line reports as one line (what failed, the value, what to do)."""


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], private: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it over ``dest`` only if the block succeeds.

    The temporary file lives in the destination folder so the final ``os.replace`` is atomic and
    a crash, a full disk or an exception leaves the old file (or nothing) in place, never a torn one.
    ``private=True`` (secrets): the file is 0600 from its creation on, never readable by others,
    not even for the moment before the secret is written.
    """
    import tempfile
    from pathlib import Path

    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise PocketError(f"cannot write {dest}: folder {parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    if not private:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any new file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))
