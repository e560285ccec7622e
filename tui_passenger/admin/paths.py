"""Where a running instance's admin socket is."""

from __future__ import annotations

import hashlib
import os
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
    """Create the socket's directory (0700) if it is ours to create."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
