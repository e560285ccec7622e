"""Where a running instance's admin socket is."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from tui_passenger.config import Config


def runtime_base() -> Path:
    """``$XDG_RUNTIME_DIR/tui-passenger``, else a per-user directory under the temp dir."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "tui-passenger"
    return Path(tempfile.gettempdir()) / f"tui-passenger-{os.getuid()}"


def admin_socket_path(config: Config) -> Path:
    """``[server] admin_socket``, else a path derived from the config file's location (so
    ``-c passenger.toml`` finds the instance started with it)."""
    if config.server.admin_socket:
        return Path(config.server.admin_socket)
    key = str(config.path.resolve()) if config.path else f"port-{config.server.port}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return runtime_base() / f"admin-{digest}.sock"


def private_directory(path: Path) -> None:
    """Create the socket's directory (0700), and refuse one that is not safely ours.

    The default directory is in the shared temp dir when XDG_RUNTIME_DIR is unset: another
    user could have created it first, with a symlink or a socket waiting inside.
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(f"refusing to use {directory}: it must be a directory owned by uid "
                      f"{os.geteuid()} that nobody else can write (remove it, or set "
                      "[server] admin_socket)")
