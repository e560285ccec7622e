"""The systems and apps of bench/throughput.py: how each deployment is configured and started.

Every system runs on its defaults, as shipped (tui-passenger with its access log on, uvicorn
with its access log on, nginx with the access log of Debian's nginx.conf, gunicorn sync,
granian, Passenger Standalone), with the same number of worker processes; the only changes
are what a benchmark on one machine needs (loopback ports, scratch directories, enough
nginx ``worker_connections`` for 1,000 clients). ``tpnolog`` is tui-passenger with
``access_log = false``: the cost of the log is tp / tpnolog.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from servers import Server, Skip, TmuxServer, free_port

ROOT = Path(__file__).resolve().parent.parent
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
_VENV_BIN = Path(PYTHON).parent
GTHREAD_THREADS = 4
NGINX_WORKER_CONNECTIONS = 4096  # Debian ships 768: not enough for 1,000 clients + upstreams
NGINX_UPSTREAM_KEEPALIVE = 32


@dataclass(frozen=True)
class App:
    """An app every system of its interface serves: a directory and ``module:callable``."""

    name: str
    interface: str  # "wsgi" or "asgi"
    root: Path
    entry: str


APPS = {
    "hello": App("hello WSGI", "wsgi", ROOT / "sample_apps" / "hello_wsgi", "app:application"),
    "asgi": App("hello ASGI", "asgi", ROOT / "sample_apps" / "hello_asgi", "app:app"),
    "django": App("Django page", "wsgi", ROOT / "bench" / "apps" / "django_page",
                  "app:application"),
}
BOTH, WSGI, ASGI = ("wsgi", "asgi"), ("wsgi",), ("asgi",)
#: key -> (name, the interfaces it serves)
SYSTEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tp": ("tui-passenger", BOTH),
    "tpnolog": ("tui-passenger, access log off", BOTH),
    "tpdash": ("tui-passenger dashboard", BOTH),
    "tpbase": ("tui-passenger at base", BOTH),
    "sync": ("gunicorn sync", WSGI),
    "gthread": ("gunicorn gthread", WSGI),
    "nginx-gunicorn": ("nginx → gunicorn", WSGI),
    "uvicorn": ("uvicorn", ASGI),
    "nginx-uvicorn": ("nginx → uvicorn", ASGI),
    "granian": ("granian", BOTH),
    "passenger": ("passenger", WSGI),
}
ALIASES = {"tpasgi": "tp"}  # the old name of tui-passenger serving the ASGI app
#: the Python packages a system needs in the venv (the ``bench`` extra): key -> (module, spec)
PACKAGES = {"sync": ("gunicorn", "gunicorn>=22"), "gthread": ("gunicorn", "gunicorn>=22"),
            "nginx-gunicorn": ("gunicorn", "gunicorn>=22"),
            "uvicorn": ("uvicorn", "uvicorn>=0.29"),
            "nginx-uvicorn": ("uvicorn", "uvicorn>=0.29"),
            "granian": ("granian", "granian>=1.6")}
#: key -> (command, why it is needed): a system whose command is missing is skipped
COMMANDS = {"passenger": "passenger", "nginx-gunicorn": "nginx", "nginx-uvicorn": "nginx",
            "tpdash": "tmux"}


def serves(key: str, app: App) -> bool:
    """Whether system ``key`` can serve ``app`` (its interface)."""
    return app.interface in SYSTEMS[key][1]


def tp_toml(work: Path, port: int, workers: int, app: App, access_log: bool = True) -> Path:
    """The tui-passenger config, the same for headless and dashboard (admin socket in work):
    everything else on its defaults."""
    toml = work / "bench.toml"
    toml.write_text(
        f'[server]\naddress = "127.0.0.1"\nport = {port}\nmax_pool_size = {workers}\n'
        f'allow_root = true\n'
        + ("" if access_log else "access_log = false\n")
        + f'admin_socket = {json.dumps(str(work / "admin.sock"))}\n\n'
        f'[[app]]\nname = "bench"\nroot = {json.dumps(str(app.root))}\n'
        f'entry = "{app.entry}"\ninterface = "{app.interface}"\n'
        f'spawn_method = "smart"\nmin_instances = {workers}\n'
        f'max_instances = {workers}\ndefault = true\n')
    return toml


def nginx_conf(work: Path, port: int, upstream: Path) -> Path:
    """nginx as a reverse proxy to a Unix socket, upstream keep-alive on, access log on (as
    Debian's nginx.conf), everything of its own in ``work``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers reach the app's socket
    conf = work / "nginx.conf"
    temp = "".join(f"    {kind}_temp_path {work / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(
        f"{user}worker_processes auto;\npid {work / 'nginx.pid'};\n"
        f"error_log {work / 'nginx-error.log'} warn;\n"
        f"events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}\n"
        f"http {{\n    access_log {work / 'access.log'};\n    sendfile on;\n{temp}"
        f"    upstream app {{ server unix:{upstream}; "
        f"keepalive {NGINX_UPSTREAM_KEEPALIVE}; }}\n"
        f"    server {{\n        listen 127.0.0.1:{port};\n        location / {{\n"
        f"            proxy_pass http://app;\n            proxy_http_version 1.1;\n"
        f'            proxy_set_header Connection "";\n'
        f"            proxy_set_header Host $host;\n"
        f"            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        f"        }}\n    }}\n}}\n")
    return conf


def behind_nginx(app_argv: list[str], work: Path, port: int, sock: Path) -> list[str]:
    """One process group: the app server in the background, then nginx in the foreground
    (the app server becomes nginx's child, so every process is found under one root)."""
    conf = nginx_conf(work, port, sock)
    nginx = ["nginx", "-p", str(work), "-c", str(conf), "-g", "daemon off;"]
    return ["sh", "-c", f"{shlex.join(app_argv)} & exec {shlex.join(nginx)}"]


def passenger_server(key: str, app: App, port: int, work: Path, log: Path,
                     workers: int) -> Server:
    """Passenger Standalone, builtin engine, direct spawning (its smart spawning is for Ruby
    only), with a startup file that imports the app from its directory."""
    module, attr = app.entry.split(":")
    (work / "passenger_wsgi.py").write_text(
        f"import sys\nsys.path.insert(0, {str(app.root)!r})\n"
        f"from {module} import {attr} as application\n")
    pid_file = work / "passenger.pid"
    argv = ["passenger", "start", "--engine=builtin", "--address", "127.0.0.1",
            "--port", str(port), "--min-instances", str(workers),
            "--max-pool-size", str(workers), "--spawn-method", "direct",
            "--app-type", "wsgi", "--startup-file", "passenger_wsgi.py",
            "--python", PYTHON, "--environment", "production",
            "--log-file", str(work / "passenger.log"), "--pid-file", str(pid_file),
            "--instance-registry-dir", str(work),
            "--no-friendly-error-pages", "--disable-turbocaching",
            "--disable-security-update-check", "--disable-anonymous-telemetry",
            "--no-install-runtime", "--no-compile-runtime", "--auto"]
    # TMPDIR: its temp dirs land in ``work`` too, so none outlives the run.
    return Server(key, SYSTEMS[key][0], argv, port, work, log, marker=str(work),
                  stop_argv=["passenger", "stop", "--pid-file", str(pid_file)],
                  pid_file=pid_file, env={"TMPDIR": str(work)})


def make_server(key: str, app: App, workers: int, work: Path, base: Path | None,
                tmux_socket: str) -> Server:
    """Build (not start) system ``key`` serving ``app`` in its scratch directory ``work``;
    ``tpbase`` runs the package from the ``base`` tree (first on PYTHONPATH, which its
    preloader and workers inherit)."""
    port, name, log = free_port(), SYSTEMS[key][0], work / "server.log"
    work.mkdir(parents=True)
    module, attr = app.entry.split(":")
    gunicorn = [PYTHON, "-m", "gunicorn", "-w", str(workers), "--chdir", str(app.root)]
    uvicorn = [PYTHON, "-m", "uvicorn", "--workers", str(workers), "--app-dir", str(app.root)]
    if key in ("tp", "tpnolog", "tpbase"):
        toml = tp_toml(work, port, workers, app, access_log=key != "tpnolog")
        argv = [PYTHON, "-m", "tui_passenger", "--headless", "-c", str(toml),
                "--port", str(port)]
        if key == "tpbase":
            assert base is not None, "tpbase needs --base"
            return Server(key, name, argv, port, base, log, env={"PYTHONPATH": str(base)})
        return Server(key, name, argv, port, ROOT, log)
    if key == "tpdash":
        toml = tp_toml(work, port, workers, app)
        argv = [PYTHON, "-m", "tui_passenger", "-c", str(toml), "--port", str(port),
                "--log-file", str(log)]
        return TmuxServer(key, name, argv, port, ROOT, log, marker=str(toml),
                          tmux_socket=tmux_socket)
    if key in ("sync", "gthread"):
        argv = [*gunicorn, "-b", f"127.0.0.1:{port}", "-k", key]
        if key == "gthread":
            argv += ["--threads", str(GTHREAD_THREADS)]
        return Server(key, name, [*argv, app.entry], port, work, log)
    if key == "nginx-gunicorn":
        sock = work / "app.sock"
        argv = behind_nginx([*gunicorn, "-b", f"unix:{sock}", app.entry], work, port, sock)
        return Server(key, name, argv, port, work, log)
    if key == "uvicorn":
        argv = [*uvicorn, "--host", "127.0.0.1", "--port", str(port), app.entry]
        return Server(key, name, argv, port, work, log)
    if key == "nginx-uvicorn":
        sock = work / "app.sock"
        argv = behind_nginx([*uvicorn, "--uds", str(sock), app.entry], work, port, sock)
        return Server(key, name, argv, port, work, log)
    if key == "granian":
        argv = [str(_VENV_BIN / "granian"), "--interface", app.interface, "--workers",
                str(workers), "--host", "127.0.0.1", "--port", str(port),
                "--working-dir", str(app.root), f"{module}:{attr}"]
        return Server(key, name, argv, port, work, log)
    if key == "passenger":
        return passenger_server(key, app, port, work, log, workers)
    raise ValueError(f"unknown system {key!r}")


def preflight(keys: list[str]) -> dict[str, str]:
    """``{key: "skipped: why"}`` for every system whose command or package is missing
    (installing a missing package of the ``bench`` extra with pip first)."""
    status: dict[str, str] = {}
    for key in keys:
        command = COMMANDS.get(key)
        if command and not shutil.which(command):
            status[key] = (f"skipped: '{command}' not installed (Debian: apt-get install "
                           f"{command}, or rerun with --install)")
    for key, (module, spec) in PACKAGES.items():
        if key in keys and key not in status:
            try:
                ensure_package(module, spec)
            except (Skip, subprocess.TimeoutExpired) as exc:
                status[key] = f"skipped: {exc}"
    return status


def base_tree(rev: str, tmp: Path) -> Path:
    """A scratch worktree of ``rev`` (for ``--base``); removed by :func:`drop_base_tree`."""
    tree = tmp / "base-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                    str(tree), rev], check=True)
    return tree


def drop_base_tree(tmp: Path) -> None:
    """Remove the ``--base`` worktree, if one was made."""
    tree = tmp / "base-tree"
    if tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)



def ensure_package(module: str, spec: str) -> None:
    """Install ``spec`` into the venv when ``module`` is missing (it is in the ``bench``
    extra)."""
    if subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0:
        return
    print(f"{module} is not importable by {PYTHON}: installing {spec} with pip "
          "(the 'bench' extra)")
    done = subprocess.run([PYTHON, "-m", "pip", "install", "-q", spec],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise Skip(f"{module} missing and pip install failed: {tail_text(done.stderr)}")


def apt_install(packages: list[str]) -> bool:
    """``apt-get update`` then ``apt-get install -y PACKAGES`` (as root, or through
    ``sudo -n``); True if it succeeded. Says what it does."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if not shutil.which("apt-get") or (sudo and not shutil.which("sudo")):
        print(f"cannot install {' '.join(packages)}: needs apt-get and root (or sudo)")
        return False
    print(f"installing {' '.join(packages)} from Debian: "
          f"{shlex.join([*sudo, 'apt-get', 'install', '-y', *packages])}", flush=True)
    quiet = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive"]  # survives sudo's env reset
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            done = subprocess.run([*quiet, *argv], timeout=600, check=False)
        except subprocess.TimeoutExpired:
            return False
        if done.returncode != 0:
            return False
    return True


def tail_text(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-3:])

