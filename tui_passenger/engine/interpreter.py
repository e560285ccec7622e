"""The app's interpreter: is it a Python we can run on, and how a child imports our runtime.

An app may run on its own interpreter (``python = "/srv/app/.venv/bin/python"``), a
virtualenv with nothing of ours installed in it. Children therefore start with a ``-c``
bootstrap that loads the ``tui_passenger`` package from where the manager has it, by file
location: nothing is added to ``sys.path``, so neither the directory holding our package
(our own site-packages, with Textual, aiohttp and the rest) nor anything else of ours can
shadow or satisfy the app's imports. What the child runs (``runtime/``, ``hooks.py``, the
two entry modules) needs the standard library only, on CPython 3.9 or newer.

Before the first child on an interpreter, :func:`check_interpreter` asks it for its version
(once per interpreter file), so a Python too old, or a program that is not Python at all,
is a clear spawn error rather than a traceback or a silent exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys

import tui_passenger

#: The oldest Python an app's interpreter may be.
MINIMUM = (3, 9)
#: How long an interpreter may take to print its version.
PROBE_TIMEOUT = 10.0
#: Where our package is; the bootstrap loads it from here.
PACKAGE_DIR = os.path.dirname(os.path.abspath(tui_passenger.__file__))

# Valid on every Python since 2.6, so that an old one still answers.
_PROBE = ("import sys; v = sys.version_info; "
          "sys.stdout.write('tui-passenger-probe %d %d %d\\n' % (v[0], v[1], v[2]))")
_ANSWER = re.compile(r"tui-passenger-probe (\d+) (\d+) (\d+)")

# Loads our package by location (no sys.path entry), then runs the entry module as __main__.
_BOOTSTRAP = """\
# tui-passenger: {module}
import sys
if sys.version_info < {minimum!r}:
    sys.exit('tui-passenger needs Python {needs} or newer, not ' + sys.version.split()[0])
import importlib.util, os, runpy
if sys.path[:1] == ['']:  # as with -m: the starting directory itself, not whatever is current
    sys.path[0] = os.getcwd()
spec = importlib.util.spec_from_file_location(
    'tui_passenger', {init!r}, submodule_search_locations=[{package!r}])
package = importlib.util.module_from_spec(spec)
sys.modules['tui_passenger'] = package
spec.loader.exec_module(package)
del spec, package, os
runpy.run_module({module!r}, run_name='__main__', alter_sys=True)
"""


class InterpreterUnfit(OSError):
    """The app's ``python`` is too old or not a Python interpreter (the message says which)."""


def bootstrap(module: str) -> str:
    """The ``-c`` program that runs our ``module`` (``tui_passenger.worker``, say) as
    ``python -m`` would, on an interpreter that does not have our package installed."""
    return _BOOTSTRAP.format(minimum=MINIMUM, needs=".".join(map(str, MINIMUM)),
                             init=os.path.join(PACKAGE_DIR, "__init__.py"),
                             package=PACKAGE_DIR, module=module)


#: Verdicts by interpreter file (path, inode, mtime): None when fit, else the reason.
_verdicts: dict[tuple[str, int, int], str | None] = {}


async def check_interpreter(python: str, env: dict[str, str]) -> None:
    """Raise InterpreterUnfit unless ``python`` is Python 3.9 or newer (asked once per file);
    OSError if it cannot be run at all."""
    if python == sys.executable:  # ours: fit by definition, no need to ask
        return
    info = os.stat(python)
    key = (python, info.st_ino, info.st_mtime_ns)
    if key not in _verdicts:
        _verdicts[key] = await _probe(python, env)
    reason = _verdicts[key]
    if reason is not None:
        raise InterpreterUnfit(reason)


async def _probe(python: str, env: dict[str, str]) -> str | None:
    """Why ``python`` will not do, or None."""
    proc = await asyncio.create_subprocess_exec(
        python, "-c", _PROBE, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return (f"it did not print its version within {PROBE_TIMEOUT:g} s; is it a Python "
                "interpreter?")
    text = output.decode("utf-8", "replace")
    answer = _ANSWER.search(text)
    needs = ".".join(map(str, MINIMUM))
    if answer is None:
        said = text.strip().splitlines()[-1][:200] if text.strip() else "nothing"
        return (f"not a Python interpreter (exit status {proc.returncode}, printed {said!r}); "
                f"tui-passenger needs Python {needs} or newer")
    version = tuple(int(part) for part in answer.groups())
    if version[:2] < MINIMUM:
        shown = ".".join(map(str, version))
        return f"Python {shown} is too old: tui-passenger needs Python {needs} or newer"
    return None
