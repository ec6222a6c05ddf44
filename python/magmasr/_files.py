"""Small file helpers shared by the writers (weights, images, videos)."""
from __future__ import annotations

import os


def default_permissions(path: str | os.PathLike) -> None:
    """Gives a file made by ``tempfile.mkstemp`` (mode 0600) the permissions a normally created file would
    have under the current umask, before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
