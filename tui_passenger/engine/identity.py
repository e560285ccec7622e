"""Which user an app's processes run as, and the refusal to run apps as root by accident."""

from __future__ import annotations

import grp
import os
import pwd
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_passenger.engine.errors import SpawnError

if TYPE_CHECKING:
    from tui_passenger.config import AppConfig


@dataclass(frozen=True)
class Identity:
    """A user to become in the child, before the app is imported."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def as_spec(self) -> list[Any]:
        """What the child needs to switch: [uid, gid, [groups]]."""
        return [self.uid, self.gid, list(self.groups)]


def app_identity(app: AppConfig) -> Identity | None:
    """The identity ``app`` runs as, or None for "as we are"; SpawnError if refused."""
    if not app.user:
        if os.geteuid() == 0 and not app.allow_root:
            raise SpawnError(app.name, "config", 'refusing to run the app as root: set user = '
                                                 '"name" for it (or allow_root = true)')
        return None
    entry = pwd.getpwnam(app.user)
    if entry.pw_uid == os.geteuid():
        return None  # already that user
    if os.geteuid() != 0:
        raise SpawnError(app.name, "config", f"user = {app.user!r} needs tui-passenger to be "
                                             "started as root")
    gid = grp.getgrnam(app.group).gr_gid if app.group else entry.pw_gid
    groups = tuple(sorted({gid, *os.getgrouplist(app.user, gid)}))
    identity = Identity(app.user, entry.pw_uid, gid, groups, entry.pw_dir)
    python = Path(os.path.realpath(app.python))
    needed = [("the interpreter", python), ("the app root", Path(app.root))]
    if python == Path(os.path.realpath(sys.executable)):
        # Ours: its standard library may live elsewhere (a venv's base installation), and
        # the worker imports our package and the environment's packages after switching.
        paths = sysconfig.get_paths()
        needed += [("the interpreter's standard library", Path(paths["stdlib"])),
                   ("the environment's packages", Path(paths["purelib"])),
                   ("the tui_passenger package", Path(__file__).resolve().parent.parent)]
    for what, path in needed:
        blocked = first_inaccessible(path, identity)
        if blocked is not None:
            raise SpawnError(app.name, "config", f"{what} {path} is out of reach of user "
                                                 f"{app.user!r}: {blocked}")
    return identity


def first_inaccessible(path: Path, identity: Identity) -> str | None:
    """Why ``identity`` cannot reach ``path`` (a directory it cannot enter), or None."""
    for part in [*reversed(path.parents), path]:
        try:
            st = os.stat(part)
        except OSError:
            return None  # nothing to say about paths that do not exist
        if st.st_uid == identity.uid:
            bits = st.st_mode >> 6
        elif st.st_gid in identity.groups:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        if part != path and not bits & 0o1:
            return f"{part} (mode {st.st_mode & 0o777:o}) cannot be entered"
        if part == path and not bits & 0o4:
            return f"{part} (mode {st.st_mode & 0o777:o}) cannot be read"
    return None


def socket_dir_for(identity: Identity | None, runtime_dir: Path, app: str) -> Path:
    """Where the app's workers create their sockets: a directory they own if they switch
    user (the runtime directory stays ours, traversable but not listable)."""
    if identity is None:
        return runtime_dir
    runtime_dir.chmod(0o711)
    path = runtime_dir / app
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, identity.uid, identity.gid)
    blocked = first_inaccessible(path, identity)
    if blocked is not None:
        raise SpawnError(app, "config", f"the socket directory {path} is out of reach of "
                                        f"user {identity.user!r}: {blocked}")
    return path
