"""The dashboard's actions in Textual's command palette (Ctrl+P)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

#: (title, help, action): the same actions the keys run.
COMMANDS = (
    ("Scale up", "Keep one more worker of the selected app warm", "scale_up"),
    ("Scale down", "Keep one worker fewer of the selected app warm", "scale_down"),
    ("Kill worker", "Stop the selected worker (asks first)", "kill"),
    ("Restart app", "Rolling restart of the selected app", "restart"),
    ("Toggle spawn method", "Switch the selected app between smart and direct", "spawn_method"),
    ("Refork app", "Make the selected app's most used worker the preloader of a new "
     "generation", "refork"),
    ("Reload configuration", "Read passenger.toml again: new apps start, removed ones stop, "
     "changed ones restart or update", "reload"),
    ("Pause/resume sampling", "Stop or resume reading /proc", "pause"),
    ("Show stacks", "The Python stack of every thread of the selected worker or preloader",
     "stack"),
    ("Filter", "Show only apps or pids containing some text", "filter"),
    ("Sort", "Cycle the sort order: tree, CPU, PSS, processed", "sort"),
    ("Theme", "Pick a colour theme", "theme"),
    ("Help", "List every key", "help"),
    ("Detach", "Leave the server running without the dashboard", "detach"),
)


class DashboardCommands(Provider):
    """Offers every dashboard action by name."""

    async def discover(self) -> Hits:
        for title, help_text, action in COMMANDS:
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in COMMANDS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action),
                          help=help_text)
