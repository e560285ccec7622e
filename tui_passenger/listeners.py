"""Where the public side listens: ``[server] bind`` (TCP addresses and Unix sockets, like
gunicorn's ``--bind``), the short form ``address`` + ``port``, or the sockets systemd
passes (socket activation, see :mod:`tui_passenger.systemd`).

Opening them is all or nothing: a failure closes what this start opened, removes the socket
files it created, and raises :class:`StartError` with a sentence for a person (the address,
what is wrong, the fix). A live Unix socket, ours or anyone's, is never taken over.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from tui_passenger.config_model import ServerConfig
from tui_passenger.systemd import inherited_sockets

#: A bind entry: ``unix:PATH``, ``[IPv6]:PORT`` or ``HOST:PORT``.
_BIND_RE = re.compile(r"unix:(?P<path>.+)|\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]:(?P<port6>\d+)|"
                      r"(?P<host>[^:\[\]/\s]+):(?P<port>\d+)")
BACKLOG = 1024


class StartError(OSError):
    """A start that cannot go on; ``str()`` says why and what to do, in one sentence."""


@dataclass(frozen=True, slots=True)
class BindAddress:
    """One place to listen: a TCP ``host`` and ``port``, or a Unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> BindAddress | None:
        """``unix:/run/app.sock``, ``127.0.0.1:3000``, ``[::1]:3000``; None if invalid."""
        match = _BIND_RE.fullmatch(text.strip())
        if match is None:
            return None
        if match["path"] is not None:
            return cls(path=match["path"])
        port = int(match["port6"] or match["port"])
        return cls(host=match["v6"] or match["host"], port=port) if port <= 65535 else None

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return format_address(self.host, self.port)


class Listener:
    """A listening socket and what to show for it (``http://HOST:PORT``, ``unix:PATH``)."""

    __slots__ = ("sock", "name", "_created")

    def __init__(self, sock: socket.socket, name: str, created: Path | None = None) -> None:
        self.sock = sock
        self.name = name
        #: The socket file this start created (removed on close), with its inode.
        self._created = (created, os.stat(created).st_ino) if created is not None else None

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """``(host, port)`` for a TCP socket, else None."""
        if self.sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        host, port = self.sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Close the socket and remove its file, if this start created it and it is still
        the same file (another instance may have taken a path since)."""
        self.sock.close()
        if self._created is not None:
            path, inode = self._created
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    path.unlink()


def claim_unix_path(path: Path, what: str) -> None:
    """Make way for a Unix socket at ``path``: remove a stale socket file (its owner exited
    without cleaning up); refuse a live one, or anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartError(f"cannot listen on unix:{path}: it exists and is not a socket "
                         f"({what}); remove it or choose another path")
    if socket_is_live(path):
        raise StartError(f"cannot listen on unix:{path}: another process is listening "
                         f"there ({what}); stop it or choose another path")
    path.unlink()


def socket_is_live(path: Path) -> bool:
    """True when a process accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def open_listeners(server: ServerConfig, fix: str) -> list[Listener]:
    """The public sockets: systemd's if it passed any, else bound as configured. ``fix``
    tells the operator how to choose another address (``--port``, ``[server] bind``)."""
    try:
        inherited = inherited_sockets()
    except OSError as exc:
        raise StartError(f"cannot use the sockets systemd passed (LISTEN_FDS): {exc}") from None
    if inherited:
        return [_adopt(sock, name) for sock, name in inherited]
    opened: list[Listener] = []
    try:
        for address in bind_addresses(server):
            opened.append(_bind_unix(address, server) if address.path else
                          _bind_tcp(address, fix, v6only=bool(server.bind)))
    except BaseException:
        for listener in opened:
            listener.close()
        raise
    return opened


def bind_addresses(server: ServerConfig) -> list[BindAddress]:
    """``[server] bind``, else the short form ``address`` + ``port``."""
    if server.bind:
        return [address for text in server.bind
                if (address := BindAddress.parse(text)) is not None]
    return [BindAddress(host=server.address, port=server.port)]


def _adopt(sock: socket.socket, name: str) -> Listener:
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_ACCEPTCONN):
        raise StartError(f"the socket systemd passed as {name} is not a listening stream "
                         "socket (ListenStream= in the .socket unit)")
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return Listener(sock, _url(*sock.getsockname()[:2]))
    return Listener(sock, f"unix:{sock.getsockname()}" if sock.family == socket.AF_UNIX
                    else name)


def _bind_tcp(address: BindAddress, fix: str, *, v6only: bool) -> Listener:
    try:
        info = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"cannot listen on {address}: {exc.strerror}; {fix}") from None
    family, _, _, _, sockaddr = info[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and v6only:
            # A bind list says each address: [::]:3000 beside 0.0.0.0:3000 must not clash.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on {address}: {_why(exc)}; {fix}") from None
    sock.setblocking(False)
    return Listener(sock, _url(*sock.getsockname()[:2]))


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return ("the address is already in use (by another program, or by another "
                "tui-passenger: `tui-passenger status` asks the one started with this config)")
    if exc.errno == errno.EACCES:
        return ("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE, or "
                "systemd socket activation)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this machine has that address"
    return exc.strerror or str(exc)


def _bind_unix(address: BindAddress, server: ServerConfig) -> Listener:
    path = Path(address.path)
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartError(f"cannot listen on {address}: cannot create its directory: "
                         f"{exc.strerror}") from None
    claim_unix_path(path, "a [server] bind socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777)  # no window in which the socket has a wider mode
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on {address}: {_why(exc)}") from None
    finally:
        os.umask(old_umask)
    listener = Listener(sock, str(address), created=path)
    try:
        if server.bind_group is not None:
            os.chown(path, -1, grp.getgrnam(server.bind_group).gr_gid)
        os.chmod(path, server.bind_mode)
        sock.listen(BACKLOG)
    except (OSError, KeyError) as exc:
        listener.close()
        raise StartError(f"cannot listen on {address}: cannot set its group "
                         f"{server.bind_group!r} or mode {server.bind_mode:04o}: {exc}") from None
    sock.setblocking(False)
    return listener


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url(host: str, port: int) -> str:
    return "http://" + format_address(host, port)
