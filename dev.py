#!/usr/bin/env python3
"""Bootstrap and run tui-passenger from a fresh clone with nothing but python3.

    python3 dev.py run [ARGS...]    start tui-passenger on the bundled sample apps
    python3 dev.py test [ARGS...]   run the whole test suite (ARGS go to pytest)
    python3 dev.py bench NAME ...   run a benchmark from bench/ (e.g. spawn)

The first call creates .venv/ and installs the project with its extras into it; later
calls reinstall only when pyproject.toml has changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".tui-passenger-installed"
EXTRAS = "test,samples,dev,bench"  # bench: the test suite renders and smoke-runs the report


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _wanted_stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(EXTRAS.encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_venv() -> Path:
    """Create .venv and install the project into it unless it is already current."""
    python = _venv_python()
    wanted = _wanted_stamp()
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    if not python.exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("dev.py: installing tui-passenger and its dependencies", file=sys.stderr)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f".[{EXTRAS}]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "bench"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_venv())
    os.chdir(ROOT)
    if command == "run":
        if not any(a in ("-c", "--config") or a.startswith("--config=") for a in rest):
            rest = ["-c", str(ROOT / "passenger.toml"), *rest]
        args = [python, "-m", "tui_passenger", *rest]
    elif command == "test":
        args = [python, "-m", "pytest", *rest]
    else:
        if not rest:
            print("dev.py bench NAME [ARGS...]: NAME is a script in bench/", file=sys.stderr)
            return 2
        args = [python, str(ROOT / "bench" / f"{rest[0]}.py"), *rest[1:]]
    os.execv(python, args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
