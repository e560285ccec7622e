"""Open file descriptors of our processes, and those that fork() left shared between them.

A file descriptor opened while the app loads in the preloader is inherited by every worker it
forks: the processes then hold the *same open file description* (one socket, one file offset).
For a client socket (a memcached or database connection) that is a bug - requests and replies
from several processes interleave on one connection. ``inventory`` finds such descriptors and
attaches a level and a note with the remedy.

A socket is one open file description per inode, so the same ``socket:[N]`` in two processes
is shared. A pipe inode has two descriptions (its read and its write end), and a file's inode
may be opened independently many times, so for those ``kcmp(2)`` confirms that two descriptors
are the same description (see ``same_description``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .memory import read_proc_file
from .sockets import SocketTable

__all__ = [
    "FdEntry",
    "ProcessInfo",
    "RawFd",
    "SocketTable",
    "inventory",
    "read_fds",
    "same_description",
]

O_CLOEXEC = 0o2000000
SOCKET_KINDS = frozenset({"tcp", "tcp6", "udp", "udp6", "unix"})
FORKED_ROLES = frozenset({"preloader", "mold", "worker"})
REMEDY = "reconnect it in a starting_worker_process hook (see sample_apps/memcache_fixed)"
#: When a mold (a worker promoted by refork) holds it too: it was opened during a request.
MOLD_REMEDY = ("it was opened during a request and handed on by refork: close it in a "
               "starting_mold hook, or reconnect it in a starting_worker_process hook")


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What the caller knows about one inspected process.

    ``role`` is "manager", "preloader", "mold" or "worker"; ``own_fds`` are the descriptors
    the runtime itself uses in that process (stdio, control channel, listening socket...):
    never flagged.
    """

    role: str
    app: str | None = None
    own_fds: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class RawFd:
    """One descriptor as read from ``/proc/PID/fd`` and ``/proc/PID/fdinfo``.

    ``inode`` comes from the link for sockets and pipes, from stat() otherwise; ``dev`` and
    ``mode`` are None/0 for sockets and pipes (not stat'ed).
    """

    fd: int
    link: str
    inode: int | None
    cloexec: bool
    flags: int
    pos: int
    dev: int | None = None
    mode: int = 0


@dataclass(frozen=True, slots=True)
class FdEntry:
    """One descriptor of one process, classified, with what it shares and any warning."""

    fd: int
    kind: str
    target: str
    inode: int | None
    cloexec: bool
    shared_with: tuple[int, ...] = ()
    level: str | None = None
    note: str = ""
    own: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``warning`` holds the note when there is a level, else None."""
        return {
            "fd": self.fd,
            "kind": self.kind,
            "target": self.target,
            "inode": self.inode,
            "cloexec": self.cloexec,
            "shared_with": list(self.shared_with),
            "warning": self.note if self.level else None,
            "level": self.level,
            "own": self.own,
        }


def _link_inode(link: str) -> int | None:
    """The N of ``socket:[N]`` / ``pipe:[N]``."""
    try:
        return int(link[link.index("[") + 1:-1])
    except ValueError:
        return None


def read_fdinfo(pid: int, fd: int) -> tuple[int, int]:
    """(flags, pos) of one descriptor from ``/proc/PID/fdinfo/FD``; flags are the open flags."""
    flags = pos = 0
    for line in read_proc_file(f"/proc/{pid}/fdinfo/{fd}").splitlines()[:3]:
        if line.startswith(b"flags:"):
            flags = int(line.split()[1], 8)
        elif line.startswith(b"pos:"):
            pos = int(line.split()[1])
    return flags, pos


def read_fds(pid: int) -> list[RawFd]:
    """All open descriptors of ``pid``, sorted by number; those closed meanwhile are skipped.

    Raises ``ProcessLookupError`` if the process is gone, ``PermissionError`` if not ours.
    """
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        raise ProcessLookupError(3, f"no such process: {pid}") from None
    result = []
    for fd in sorted(int(name) for name in names):
        path = f"{base}/{fd}"
        try:
            link = os.readlink(path)
            flags, pos = read_fdinfo(pid, fd)
            dev: int | None = None
            mode = 0
            if link.startswith(("socket:", "pipe:")):
                inode = _link_inode(link)
            else:
                st = os.stat(path)
                inode, dev, mode = st.st_ino, st.st_dev, st.st_mode
        except (FileNotFoundError, ProcessLookupError):
            continue  # closed since listdir (or the process is exiting)
        result.append(RawFd(fd=fd, link=link, inode=inode, cloexec=bool(flags & O_CLOEXEC),
                            flags=flags, pos=pos, dev=dev, mode=mode))
    return result


KCMP_FILE = 0
# kcmp(2) syscall numbers; other architectures fall back to comparing fdinfo.
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "arm64": 272, "riscv64": 272, "i686": 349}
_kcmp_nr: int | None = _SYS_KCMP.get(platform.machine())
_libc_syscall: Any = None


def _kcmp(pid1: int, pid2: int, fd1: int, fd2: int) -> int:
    """kcmp(KCMP_FILE): 0 when same description, > 0 when not, -errno on failure."""
    global _kcmp_nr, _libc_syscall
    if _kcmp_nr is None:
        return -errno.ENOSYS
    if _libc_syscall is None:
        func = ctypes.CDLL(None, use_errno=True).syscall
        func.restype = ctypes.c_long
        func.argtypes = [ctypes.c_long] * 6
        _libc_syscall = func
    result = int(_libc_syscall(_kcmp_nr, pid1, pid2, KCMP_FILE, fd1, fd2))
    if result < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            _kcmp_nr = None  # not in this kernel: don't try again
        return -err
    return result


def _same_by_fdinfo(pid1: int, fd1: int, pid2: int, fd2: int) -> bool | None:
    """Fallback without kcmp: same file, same offset and same open flags."""
    try:
        paths = f"/proc/{pid1}/fd/{fd1}", f"/proc/{pid2}/fd/{fd2}"
        if any(os.readlink(p).startswith("anon_inode:") for p in paths):
            return None  # all anonymous inodes are one inode: no way to tell
        st1, st2 = os.stat(paths[0]), os.stat(paths[1])
        if (st1.st_dev, st1.st_ino) != (st2.st_dev, st2.st_ino):
            return False
        return read_fdinfo(pid1, fd1) == read_fdinfo(pid2, fd2)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def same_description(pid1: int, fd1: int, pid2: int, fd2: int) -> bool | None:
    """Whether two descriptors refer to one open file description (what fork() shares).

    Uses kcmp(2); where it is unavailable (ENOSYS, EPERM) falls back to "same inode, same
    offset and same flags", which can be fooled by two independent opens that happen to be at
    the same offset. None when it cannot tell (a process or descriptor is gone).
    """
    if pid1 == pid2 and fd1 == fd2:
        return True
    result = _kcmp(pid1, pid2, fd1, fd2)
    if result >= 0:
        return result == 0
    if -result in (errno.ESRCH, errno.EBADF):
        return None
    return _same_by_fdinfo(pid1, fd1, pid2, fd2)


def classify(raw: RawFd, sockets: SocketTable) -> tuple[str, str]:
    """(kind, target) of a descriptor; sockets are looked up in ``sockets``."""
    link = raw.link
    if link.startswith("socket:"):
        found = sockets.describe(raw.inode) if raw.inode is not None else None
        return found if found is not None else ("other", link)
    if link.startswith("pipe:"):
        return "pipe", link
    if link.startswith("anon_inode:"):
        name = link[len("anon_inode:"):]
        if name == "[eventfd]":
            return "eventfd", link
        if name == "[eventpoll]":
            return "epoll", link
        return "other", link
    if link.startswith("/"):
        if link.startswith(("/dev/pts/", "/dev/tty")) or link == "/dev/console":
            return "tty", link
        return "file", link
    return "other", link  # net:[...] namespaces, etc.


def _pids(pids: Iterable[int]) -> str:
    pids = list(pids)
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(str(p) for p in pids)


def assess(kind: str, target: str, raw: RawFd, role: str, shared_with: tuple[int, ...],
           roles: Mapping[int, str]) -> tuple[str | None, str]:
    """(level, note) for a descriptor that is not the runtime's own."""
    if not shared_with:
        return None, ""
    who = _pids(shared_with)
    if kind in SOCKET_KINDS:
        if target.startswith("listening "):
            return "info", (
                f"listening socket shared with {who} (inherited through fork): these processes "
                "accept connections from one queue - fine if intended, otherwise open it in a "
                "starting_worker_process hook")
        holders = [role, *(roles[p] for p in shared_with)]
        workers = holders.count("worker")
        forked = sum(1 for r in holders if r in FORKED_ROLES)
        if workers >= 1 and forked >= 2:
            return "warning", (
                f"socket shared with {who} (inherited through fork): requests from these "
                f"processes interleave on one connection - "
                f"{MOLD_REMEDY if 'mold' in holders else REMEDY}")
        return "info", f"socket shared with {who}: one connection open in several processes"
    if kind == "file" and stat.S_ISREG(raw.mode):
        return "info", (
            f"file shared with {who}: harmless, but writes from these processes may interleave "
            "(e.g. a log file), and they move one shared file offset")
    if kind == "pipe":
        if raw.flags & os.O_ACCMODE == os.O_RDONLY:
            return "info", (
                f"pipe (read end) shared with {who} (inherited through fork): these processes "
                "take turns reading what is written to it")
        return "info", (
            f"pipe (write end) shared with {who} (inherited through fork): writes from these "
            "processes may interleave, and its reader sees no end-of-file until every holder "
            "closes it")
    if kind in ("epoll", "eventfd"):
        return "info", (
            f"{kind} shared with {who} (inherited through fork): an event loop created before "
            "fork is seen by several processes - create it in a starting_worker_process hook")
    return None, ""


Member = tuple[int, RawFd]


def _file_classes(members: list[Member]) -> list[list[Member]]:
    """Split descriptors of one file into groups holding the same open file description."""
    classes: list[list[Member]] = []
    for pid, raw in members:
        for group in classes:
            rep_pid, rep = group[0]
            if same_description(pid, raw.fd, rep_pid, rep.fd):
                group.append((pid, raw))
                break
        else:
            classes.append([(pid, raw)])
    return classes


def _sharing(raw: Mapping[int, list[RawFd]],
             processes: Mapping[int, ProcessInfo]) -> dict[tuple[int, int], tuple[int, ...]]:
    """(pid, fd) -> the other pids holding the same description (own-on-both-sides excluded)."""
    groups: dict[tuple[Any, ...], list[Member]] = {}
    for pid, fds in raw.items():
        for r in fds:
            if r.link.startswith("socket:"):  # a socket is one description: never reopened
                key: tuple[Any, ...] = ("socket", r.link)
            elif r.dev is None:  # a pipe: its two ends are two descriptions of one inode
                key = ("pipe", r.link)
            else:
                key = ("file", r.dev, r.inode)
            groups.setdefault(key, []).append((pid, r))
    shared: dict[tuple[int, int], tuple[int, ...]] = {}
    for key, members in groups.items():
        if len({pid for pid, _ in members}) < 2:
            continue
        classes = [members] if key[0] == "socket" else _file_classes(members)
        for group in classes:
            for pid, r in group:
                mine = r.fd in processes[pid].own_fds
                others = sorted({
                    p for p, o in group
                    if p != pid and not (mine and o.fd in processes[p].own_fds)
                })
                if others:
                    shared[(pid, r.fd)] = tuple(others)
    return shared


def inventory(processes: Mapping[int, ProcessInfo], *,
              sockets: SocketTable | None = None) -> dict[int, list[FdEntry]]:
    """Classify every descriptor of the given processes and flag those shared through fork.

    Only the given pids are compared with each other. Processes that vanish or are not ours
    are left out of the result. ``sockets`` defaults to a fresh ``SocketTable.read()``.
    """
    raw: dict[int, list[RawFd]] = {}
    for pid in processes:
        try:
            raw[pid] = read_fds(pid)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    if sockets is None:
        wanted = {r.inode for fds in raw.values() for r in fds
                  if r.inode is not None and r.link.startswith("socket:")}
        sockets = SocketTable.read(inodes=wanted) if wanted else SocketTable()
    shared = _sharing(raw, processes)
    roles = {pid: info.role for pid, info in processes.items()}
    result: dict[int, list[FdEntry]] = {}
    for pid, fds in raw.items():
        info = processes[pid]
        entries = []
        for r in fds:
            kind, target = classify(r, sockets)
            own = r.fd in info.own_fds
            shared_with = shared.get((pid, r.fd), ())
            level, note = (None, "") if own else assess(kind, target, r, info.role,
                                                        shared_with, roles)
            entries.append(FdEntry(fd=r.fd, kind=kind, target=target, inode=r.inode,
                                   cloexec=r.cloexec, shared_with=shared_with, level=level,
                                   note=note, own=own))
        result[pid] = entries
    return result
