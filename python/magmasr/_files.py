"""Small file helpers shared by the writers (weights, images, videos)."""
from __future__ import annotations

import contextlib
import os
import tempfile


def default_permissions(path: str | os.PathLike) -> None:
    """Gives a file made by ``tempfile.mkstemp`` (mode 0600) the permissions a normally created file would
    have under the current umask, before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file in the same folder that is
    then renamed over it: no reader sees a half-written file, and on failure the temporary file is removed and an
    existing ``path`` is left as it was."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
