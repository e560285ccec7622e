"""Direct spawning: every worker is a fresh interpreter that imports the app itself."""

from __future__ import annotations

import asyncio
import os
import time

from tui_passenger.engine.errors import SpawnError
from tui_passenger.engine.interpreter import bootstrap, check_interpreter
from tui_passenger.engine.process import WorkerProcess
from tui_passenger.engine.spawner import ChildPipes, Spawner


async def start_child(python: str, module: str, spec_json: str, pipes: ChildPipes,
                      env: dict[str, str], *, switches_user: bool = False
                      ) -> asyncio.subprocess.Process:
    """Start ``module`` on ``python`` (as ``-m`` would, through the bootstrap that finds our
    package without installing it there) with the control channel and output pipes.

    OSError if it cannot; :class:`~.interpreter.InterpreterUnfit` (an OSError) when
    ``python`` is too old or not Python.

    The child gets its own session, so a Ctrl+C in the manager's terminal reaches only the
    manager, which then stops its children in order. It starts in ``/``, not in the app
    root: the working directory comes first on sys.path (as with ``-m``), and a child that is still
    root must not import from a directory the app's user can write (it enters the app root
    itself, after switching user). For the same reason ``-s`` keeps that user's
    site-packages out.
    """
    control_fd = pipes.child_control.fileno()
    flags = ["-s"] if switches_user else []
    try:
        await check_interpreter(python, env)
        return await asyncio.create_subprocess_exec(
            python, *flags, "-c", bootstrap(module), "--spec", spec_json,
            "--control-fd", str(control_fd),
            stdin=asyncio.subprocess.DEVNULL, stdout=pipes.stdout[1], stderr=pipes.stderr[1],
            pass_fds=(control_fd,), env=env, cwd="/", start_new_session=True)
    finally:
        pipes.close_child_ends()


class DirectSpawner(Spawner):
    """Spawns a fresh ``tui_passenger.worker`` process for each worker."""

    method = "direct"

    async def spawn(self) -> WorkerProcess:
        self.preflight()
        started = time.monotonic()
        number = next(self.numbers)
        pipes = ChildPipes()
        try:
            proc = await start_child(self.app.python, "tui_passenger.worker",
                                     self.spec_json(number=number), pipes, self.env,
                                     switches_user=self.spec.run_as is not None)
        except OSError as exc:
            pipes.close_ours()
            raise SpawnError(self.app.name, "interpreter",
                             f"cannot start {self.app.python}: {exc}") from exc
        worker = self.new_worker(proc.pid, os.getpid(), pipes, started, number)
        worker.watch_exit(proc.wait())
        await worker.wait_ready(self._deadline(started))
        return worker

