"""Config reload: what changed between the running configuration and the file, and what
each change asks of the running instance.

:func:`plan` compares two :class:`~tui_passenger.config.Config` and sorts every change:

- apps only in the new file start, apps only in the old one drain and stop;
- an app whose changed keys are all in :data:`LIVE_APP_KEYS` is updated in place (limits,
  timeouts, routing); any other changed key (``root``, ``entry``, ``python``, ``env``,
  ``spawn_method``, ``interface``, ``concurrency``, ``user``…, and keys this module does
  not know) means its workers are replaced by a rolling restart from a new spawner;
- ``[server]`` keys in :data:`LIVE_SERVER_KEYS` are applied; any other (the public address
  and port, the admin socket…) needs a restart of tui-passenger and keeps its running value.

:meth:`Server.reload <tui_passenger.server.Server.reload>` carries the plan out. This
module is core: no UI, and it changes nothing itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tui_passenger.config import AppConfig, Config, ServerConfig

if TYPE_CHECKING:
    from tui_passenger.server import Server

#: Per-app keys a running group takes without new workers: read where they are used (the
#: pool, the proxy, the sampler, the next spawn), or applied to the group on reload.
LIVE_APP_KEYS = frozenset({
    "min_instances", "max_instances", "pool_idle_time", "max_requests",
    "max_requests_jitter", "max_request_queue_size", "max_request_queue_time",
    "start_timeout", "refork_after",
    "refork_max_unavailable", "max_request_time", "pipeline_window", "memory_limit",
    "hosts", "base_uri", "default", "max_websockets",
})
#: ``[server]`` keys applied to a running instance; others need a restart of tui-passenger.
LIVE_SERVER_KEYS = frozenset({
    "max_pool_size", "shutdown_timeout", "client_max_body_size", "client_body_buffer_size",
    "trusted_proxies", "access_log", "access_log_format", "access_log_file",
    "access_log_flush", "client_header_timeout", "client_body_timeout",
    "keepalive_timeout", "max_connections",
    "limit_request_line", "limit_request_field_size", "limit_request_fields",
})


def changed_keys(old: Any, new: Any) -> tuple[str, ...]:
    """The fields of two dataclasses of the same type that differ, in field order."""
    return tuple(f.name for f in dataclasses.fields(old)
                 if getattr(old, f.name) != getattr(new, f.name))


@dataclass(frozen=True, slots=True)
class AppChange:
    """One app present in both configurations, with the keys that changed."""

    app: AppConfig
    keys: tuple[str, ...]

    @property
    def restart(self) -> bool:
        """True when its workers must be replaced (a key outside LIVE_APP_KEYS changed)."""
        return any(key not in LIVE_APP_KEYS for key in self.keys)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does: the configuration the instance runs afterwards, and the changes."""

    #: The new configuration, with the keys that need a restart kept at their running value.
    config: Config
    added: tuple[AppConfig, ...]
    removed: tuple[str, ...]
    changed: tuple[AppChange, ...]
    #: ``[server]`` keys applied now, and those that need a restart of tui-passenger.
    server_keys: tuple[str, ...]
    restart_needed: tuple[str, ...]
    keys_changed: bool

    @property
    def restarted(self) -> tuple[AppChange, ...]:
        """Apps whose workers are replaced."""
        return tuple(c for c in self.changed if c.restart)

    @property
    def updated(self) -> tuple[AppChange, ...]:
        """Apps updated in place."""
        return tuple(c for c in self.changed if not c.restart)

    def reply(self) -> dict[str, Any]:
        """The reload's result as the admin API sends it (JSON)."""
        return {
            "config": str(self.config.path) if self.config.path else None,
            "added": [app.name for app in self.added],
            "removed": list(self.removed),
            "restarted": {c.app.name: list(c.keys) for c in self.restarted},
            "updated": {c.app.name: list(c.keys) for c in self.updated},
            "server": list(self.server_keys),
            "restart_needed": list(self.restart_needed),
            "keys": dict(self.config.keys) if self.keys_changed else None,
        }


def plan(old: Config, new: Config) -> ReloadPlan:
    """What reloading ``new`` over the running ``old`` does (nothing is changed here)."""
    before = {app.name: app for app in old.apps}
    after = {app.name: app for app in new.apps}
    changed = []
    for app in new.apps:
        previous = before.get(app.name)
        if previous is not None and previous != app:
            changed.append(AppChange(app, changed_keys(previous, app)))
    server_changes = changed_keys(old.server, new.server)
    restart_needed = tuple(k for k in server_changes if k not in LIVE_SERVER_KEYS)
    server = _keep(old.server, new.server, restart_needed)
    return ReloadPlan(
        config=dataclasses.replace(new, server=server),
        added=tuple(app for app in new.apps if app.name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=tuple(changed),
        server_keys=tuple(k for k in server_changes if k in LIVE_SERVER_KEYS),
        restart_needed=restart_needed,
        keys_changed=old.keys != new.keys)


def _keep(old: ServerConfig, new: ServerConfig, keys: Iterable[str]) -> ServerConfig:
    """``new`` with ``keys`` set back to their value in ``old``."""
    return dataclasses.replace(new, **{key: getattr(old, key) for key in keys})


class ReloadError(Exception):
    """A reload that cannot be done in the instance's present state."""


def apply(server: Server, reload_plan: ReloadPlan) -> None:
    """Carry out ``reload_plan`` on ``server``, all at once on the event loop: apps added,
    updated or restarted first, then the router swapped to the new apps, hosts and
    base_uris, then the removed apps retired (their requests finish, their workers and
    preloaders stop). Rolling restarts and removals go on in the background."""
    config = reload_plan.config
    pool = server.pool
    server.config = pool.config = config
    pool.max_pool_size = config.server.max_pool_size
    pool.live.shutdown_timeout = config.server.shutdown_timeout
    for app in reload_plan.added:
        pool.add_app(app)
    for change in reload_plan.changed:
        pool.update_app(pool.groups[change.app.name], change.app, change.keys, change.restart)
    server.proxy.reconfigure(config)
    removed = [pool.groups[name] for name in reload_plan.removed]
    for group in removed:
        pool.remove_app(group)
    pool.reconcile()
    server.refresh_targets()
