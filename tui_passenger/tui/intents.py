"""The dashboard's intent keys: scale, kill, restart, spawn method, refork, stacks, pause,
reload. Each calls one :class:`~tui_passenger.core.Core` intent off the UI's loop and
notifies its answer (the operations layer's sentence, or its refusal).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from textual.app import App

from tui_passenger.core import Core
from tui_passenger.operations import Done, Refused
from tui_passenger.snapshot import AppStatus, Snapshot
from tui_passenger.tui.rows import Selection
from tui_passenger.tui.screens.confirm import Confirm
from tui_passenger.tui.screens.stack import StackScreen

#: What a call to the core may raise with a reason for the operator: a refusal (the same
#: words the CLI and the admin API give), an instance that does not answer, a server fault.
INTENT_ERRORS = (Refused, OSError, RuntimeError)


class Intents(App[None]):
    """The intent actions of the dashboard (:class:`~tui_passenger.tui.app.Dashboard`)."""

    core: Core
    snapshot: Snapshot | None
    interval: float
    keymap: dict[str, str]
    _scale_targets: dict[str, tuple[int, float]]
    _own_reloads: int

    def selection(self) -> Selection | None:
        """The row under the cursor (the dashboard knows its table)."""
        raise NotImplementedError

    async def tick(self, urgent: bool = False) -> None:
        """Refresh now (the dashboard's refresh)."""
        raise NotImplementedError

    def _intent(self, label: str, call: Callable[[], Awaitable[Done]]) -> None:
        async def run() -> None:
            try:
                done = await call()
            except INTENT_ERRORS as exc:
                self.notify(f"{label}: {exc}", severity="error", markup=False)
                return
            self.notify(done.message, markup=False)
            await self.tick(urgent=True)

        self.run_worker(run(), exclusive=False, group="intents", exit_on_error=False)

    def _selected_app(self) -> AppStatus | None:
        selection = self.selection()
        if selection is None:
            self.notify("select an app or a process first", severity="warning")
            return None
        return selection.app

    def _scale_by(self, step: int) -> None:
        app = self._selected_app()
        if app is None:
            return
        name = app.name
        # Presses faster than the refresh add up: count from the last target we asked for
        # until the snapshot has caught up with it.
        base = app.min_instances
        pending = self._scale_targets.get(name)
        if pending is not None and time.monotonic() - pending[1] < 3 * self.interval + 1:
            base = pending[0]
        count = max(0, base + step)
        self._scale_targets[name] = (count, time.monotonic())

        async def call() -> Done:
            try:
                return await self.core.scale(name, count)
            except Refused:  # e.g. above the limit: the next press counts from the pool's
                self._scale_targets.pop(name, None)
                raise

        self._intent(f"scale {name}", call)

    def action_scale_up(self) -> None:
        """Keep one more worker of the selected app warm."""
        self._scale_by(+1)

    def action_scale_down(self) -> None:
        """Keep one worker fewer of the selected app warm (not below 0)."""
        self._scale_by(-1)

    def action_kill(self) -> None:
        """Ask, then stop the selected worker (the pid is fixed when the key is pressed)."""
        selection = self.selection()
        if selection is None or selection.kind != "worker" or selection.process is None:
            self.notify("select a worker row to stop one", severity="warning")
            return
        pid, app = selection.process.pid, selection.app.name
        question = (f"Stop worker {pid} of app {app}? It is drained first; "
                    "the pool replaces it if below the minimum.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._intent(f"kill {pid}", lambda: self.core.kill(pid))

        self.push_screen(Confirm(question, title="Stop worker"), answered)

    def action_restart(self) -> None:
        """Rolling restart of the selected app."""
        if (app := self._selected_app()) is not None:
            name = app.name
            self.notify(f"{name}: restarting, one worker at a time…")
            self._intent(f"restart {name}", lambda: self.core.restart(name))

    def action_spawn_method(self) -> None:
        """Switch the selected app between smart and direct spawning (rolling)."""
        if (app := self._selected_app()) is not None:
            name = app.name
            method = "direct" if app.spawn_method == "smart" else "smart"
            self.notify(f"{name}: switching to {method} spawning…")
            self._intent(f"spawn method {name}",
                         lambda: self.core.set_spawn_method(name, method))

    def action_refork(self) -> None:
        """Promote the selected app's most used worker to preloader, replace the others."""
        if (app := self._selected_app()) is not None:
            name = app.name
            if app.spawn_method != "smart":
                self.notify(f"{name}: refork needs smart spawning (press m first)",
                            severity="warning")
                return
            self.notify(f"{name}: reforking from its most used worker…")
            self._intent(f"refork {name}", lambda: self.core.refork(name))

    def action_stack(self) -> None:
        """Show the Python stack of every thread of the selected worker or preloader."""
        selection = self.selection()
        if selection is None or selection.process is None:
            self.notify("select a worker or preloader row first", severity="warning")
            return
        pid = selection.process.pid

        async def run() -> None:
            try:
                done = await self.core.stack(pid)
            except INTENT_ERRORS as exc:
                self.notify(f"stack {pid}: {exc}", severity="error", markup=False)
                return
            title, _, stacks = done.message.partition("\n")
            self.push_screen(StackScreen(title, stacks))

        self.run_worker(run(), exclusive=False, group="intents", exit_on_error=False)

    def action_pause(self) -> None:
        """Pause or resume reading /proc."""
        pause = self.snapshot is None or self.snapshot.sampling
        self._intent("sampling", lambda: self.core.pause_sampling(pause))

    def action_reload(self) -> None:
        """Read the configuration file again and apply it (refused: nothing changed)."""
        self.notify("reloading the configuration…")

        async def reload() -> Done:
            self._own_reloads += 1  # refused or done, its answer is notified
            try:
                done = await self.core.reload()
            except (OSError, RuntimeError):
                self._own_reloads -= 1  # it did not reach the instance: no entry comes
                raise
            keys = done.reply.get("keys")
            if isinstance(keys, dict):  # the new [keys] table, when it changed
                self.keymap = {str(k): str(v) for k, v in keys.items()}
                self.set_keymap(self.keymap)
            return done

        self._intent("reload", reload)
