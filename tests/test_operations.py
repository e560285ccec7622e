"""The operations layer: every front end (embedded core, attach client, CLI, admin API) gets
the same typed result and says the same words, done or refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import assert_no_children
from tests.serving import config_text, wait_until
from tests.test_dashboard import dashboard_on, notifications, until
from tui_passenger.admin.client import AdminClient
from tui_passenger.config import parse_config
from tui_passenger.cores import AttachedCore, EmbeddedCore
from tui_passenger.operations import (
    Action,
    Done,
    RefusalKind,
    Refused,
    message,
    reply_error,
)
from tui_passenger.pool.group import READY

APPS = [{"name": "app", "min_instances": 1, "max_instances": 2},
        {"name": "plain", "spawn_method": "direct", "base_uri": "/plain"}]


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


@contextlib.asynccontextmanager
async def both_cores(**server: object) -> AsyncIterator[tuple[EmbeddedCore, AttachedCore]]:
    """An embedded core with its admin API, and an attach client to that API."""
    embedded = EmbeddedCore(parse_config(config_text(server, APPS), path="test.toml"))
    await embedded.start()
    attached = AttachedCore(embedded.server.admin.path)
    try:
        await embedded.server.pool.wait_started(30)
        await attached.start()
        yield embedded, attached
    finally:
        await attached.stop()
        await embedded.stop()


def ready(group: Any) -> int:
    """Workers of ``group`` up and taking requests (not spawning, not on their way out)."""
    return sum(1 for p in group.processes if p.state is READY)


async def ctl(core: EmbeddedCore, *args: str) -> tuple[int, str, str]:
    """``tui-passenger ctl ARGS`` in a subprocess, against the core's admin socket."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui_passenger", "ctl", *args,
        "--admin-socket", str(core.server.admin.path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def refusal(call: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        await call
    return caught.value


# (what the dashboard calls, its ctl arguments, the kind, the reason)
REFUSALS = [
    (("scale", "nope", 1), ("scale", "nope", "1"), RefusalKind.NOT_FOUND,
     "no app named 'nope' (apps: app, plain)"),
    (("scale", "app", 3), ("scale", "app", "3"), RefusalKind.INVALID,
     "count 3 is above the limit of 2 (max_instances / max_pool_size)"),
    (("scale", "app", -1), ("scale", "app", "-1"), RefusalKind.INVALID,
     "count must be a whole number ≥ 0, got -1"),
    (("kill", 999_999_999), ("kill", "999999999"), RefusalKind.NOT_FOUND,
     "pid 999999999 is not a worker of this instance"),
    (("refork", "plain"), ("refork", "plain"), RefusalKind.CONFLICT,
     "plain: refork needs smart spawning (the app uses direct)"),
    (("set_spawn_method", "app", "fast"), None, RefusalKind.INVALID,
     "method must be \"smart\" or \"direct\", got 'fast'"),
]


async def test_a_refusal_reads_the_same_from_every_front_end():
    async with both_cores() as (embedded, attached):
        group = embedded.server.pool.groups["app"]
        for (intent, *values), argv, kind, reason in REFUSALS:
            for core in (embedded, attached):
                refused = await refusal(getattr(core, intent)(*values))
                assert (refused.kind, refused.reason, str(refused)) == (kind, reason, reason), \
                    (core, intent)
            if argv is not None:
                code, out, err = await ctl(embedded, *argv)
                assert (code, out, err) == (1, "", f"tui-passenger: ctl failed: {reason}\n")
        # Nothing was changed by a refusal: the embedded scale no longer clamps silently.
        assert group.min_instances == 1 and group.live_count() == 1


async def test_the_admin_api_answers_a_refusal_with_its_kind_as_status():
    async with both_cores() as (embedded, _):
        client = AdminClient(embedded.server.admin.path)
        cases = [("/apps/nope/restart", None), ("/apps/app/scale", {"count": 3}),
                 ("/apps/app/scale", {"count": True}), ("/processes/x/kill", None),
                 ("/apps/plain/refork", None), ("/apps/app/spawn-method", {"method": 1}),
                 ("/sampling", {"paused": "yes"})]
        for url, body in cases:
            status, data = await asyncio.to_thread(client.request, "POST", url, body)
            refused = reply_error(status, json.loads(data))
            assert isinstance(refused, Refused) and refused.kind.value == status, (url, data)
        assert [k.value for k in RefusalKind] == [400, 403, 404, 409, 504]
        assert isinstance(reply_error(500, {"error": "boom"}), RuntimeError)
        assert str(reply_error(502, "not an object")) == "HTTP 502"


async def test_done_is_the_same_result_and_message_from_every_front_end():
    async with both_cores() as (embedded, attached):
        group = embedded.server.pool.groups["app"]
        first = await embedded.scale("app", 2)
        assert first == Done(Action.SCALE, {"app": "app", "min_instances": 2})
        assert first.message == "app: keeping 2 worker(s) warm"
        assert await attached.scale("app", 2) == first
        code, out, err = await ctl(embedded, "scale", "app", "2")
        assert (code, out, err) == (0, first.message + "\n", "")
        await wait_until(lambda: ready(group) == 2, 30)

        victim = group.processes[0].pid
        done = await attached.kill(victim)
        assert done.action is Action.KILL and done.reply["pid"] == victim
        assert done.message == f"app: worker {victim} stopped ({done.reply['exit']})"
        await wait_until(lambda: ready(group) == 2, 30)

        switched = await embedded.set_spawn_method("app", "direct")
        assert switched.reply == {"app": "app", "spawn_method": "direct", "replaced": 2}
        back = await attached.set_spawn_method("app", "smart")
        assert back.message == "app: now smart spawning, 2 worker(s) replaced"
        code, out, _ = await ctl(embedded, "restart", "app")
        assert code == 0 and out == message(Action.RESTART, {"app": "app", "replaced": 2}) + "\n"


async def test_scaling_up_in_a_full_pool_is_refused_with_who_uses_it():
    async with both_cores(max_pool_size=2) as (embedded, attached):
        group = embedded.server.pool.groups["app"]
        reason = ("app: cannot keep 2 worker(s) warm (at most 1 now): pool full: 2 of "
                  "max_pool_size 2 in use (app 1, plain 1); lower another app or raise "
                  "max_pool_size")
        for core in (embedded, attached):
            refused = await refusal(core.scale("app", 2))
            assert (refused.kind, refused.reason) == (RefusalKind.CONFLICT, reason)
        code, out, err = await ctl(embedded, "scale", "app", "2")
        assert (code, out, err) == (1, "", f"tui-passenger: ctl failed: {reason}\n")
        assert group.min_instances == 1 and embedded.server.pool.total() == 2
        # Down is always allowed; then the place it frees is room for app.
        assert (await attached.scale("plain", 0)).message == "plain: keeping 0 worker(s) warm"
        assert (await attached.scale("app", 2)).message == "app: keeping 2 worker(s) warm"
        await wait_until(lambda: ready(group) == 2, 30)


async def test_sampling_pauses_and_a_disabled_sampler_is_a_conflict():
    async with both_cores() as (embedded, attached):
        sampler = embedded.server.sampler
        assert sampler is not None
        done = await attached.pause_sampling(True)
        assert (done.reply, done.message, sampler.paused) == ({"paused": True},
                                                               "sampling paused", True)
        done = await embedded.pause_sampling(False)
        assert (done.message, sampler.paused) == ("sampling resumed", False)
        embedded.server.sampler = None  # as an instance started without sampling
        try:
            for core in (embedded, attached):
                refused = await refusal(core.pause_sampling(True))
                assert (refused.kind, refused.reason) == (
                    RefusalKind.CONFLICT, "sampling is disabled in this instance")
        finally:
            embedded.server.sampler = sampler


async def test_the_dashboard_shows_the_refusal_and_counts_on_from_the_pool():
    async with dashboard_on({"min_instances": 1, "max_instances": 1}) as (group, app, pilot):
        said = notifications(app)
        await pilot.press("plus")
        reason = "count 2 is above the limit of 1 (max_instances / max_pool_size)"
        await until(pilot, lambda: f"scale app: {reason}" in said, what="the refusal")
        assert group.min_instances == 1
        # The refused target is forgotten: minus counts down from the pool's 1, not from 2.
        await pilot.press("minus")
        await until(pilot, lambda: "app: keeping 0 worker(s) warm" in said, what="scale to 0")
        assert group.min_instances == 0


async def test_stop_asks_the_runner_to_stop_once_and_answers_at_once():
    async with both_cores() as (embedded, attached):
        client = AdminClient(embedded.server.admin.path)
        done = await asyncio.to_thread(client.act, Action.STOP)
        assert done.reply["pid"] == os.getpid()  # the embedded server runs here
        assert done.message.startswith(f"instance {done.reply['pid']} stopping")
        assert embedded.server.stop_requested.is_set() and not embedded.server.stopped.is_set()
        with pytest.raises(Refused) as refused:
            await embedded.operations.stop()
        assert refused.value.kind is RefusalKind.CONFLICT
