"""Small file helpers shared by the writers (weights, images, videos): every output is written to a temporary
file beside the file it replaces and renamed over it, as the C++ ``AtomicFile`` does."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile


def default_permissions(path: str | os.PathLike) -> None:
    """Gives a file made by ``tempfile.mkstemp`` (mode 0600) the permissions a normally created file would
    have under the current umask, before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def replace_target(path: str | os.PathLike) -> str:
    """The file that writing `path` replaces: `path` itself, or, when it is a symbolic link, the file it leads to
    (through chains of links; a dangling link's missing file), so that the link stays a link, as with ``cp`` and
    editors."""
    path = os.fspath(path)
    return os.path.realpath(path) if os.path.islink(path) else path


def temp_beside(path: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, str, str]:
    """``(fd, temporary path, target)``: a new temporary file ``.<name>.<random><suffix>`` in the folder of
    ``target = replace_target(path)``, for :func:`finish` to rename over it. A name too long to take the
    temporary name's extra characters is shortened in the temporary name only. OSError (from ``mkstemp``) when
    the folder cannot take a new file."""
    target = replace_target(path)
    folder, base = os.path.split(os.path.abspath(target))
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    budget = max(0, limit - len(suffix.encode()) - 10)  # "." + stem + "." + 8 random characters + suffix
    stem = base
    while len(stem.encode()) > budget:
        stem = stem[:-1]
    fd, tmp = tempfile.mkstemp(prefix="." + stem + ".", suffix=suffix, dir=folder)
    return fd, tmp, target


def finish(tmp: str, target: str) -> None:
    """Renames the written temporary file over `target`, which keeps its permission bits if it exists (a new
    file gets those of any new file under the umask)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
    else:
        default_permissions(tmp)
    os.replace(tmp, target)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file in the same folder that is
    then renamed over it: no reader sees a half-written file, and on failure the temporary file is removed and an
    existing ``path`` is left as it was."""
    path = os.fspath(path)
    try:
        fd, tmp, target = temp_beside(path)
    except OSError as e:  # name the file asked for, not the temporary one
        raise type(e)(e.errno, f"cannot write {path} ({e.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        finish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
