"""Theme files: ``themes/*.toml`` (and the user's own) loaded into :class:`textual.theme.Theme`.

A theme file is a flat TOML table::

    name = "passenger-dark"      # required, unique; letters, digits, "-" and "_"
    dark = true                  # required
    primary = "#5fafff"          # required; any colour textual.color.Color.parse accepts
    # optional colours: secondary, accent, foreground, background, surface, panel, boost,
    # warning, error, success
    # optional numbers: luminosity_spread, text_alpha

    [variables]                  # optional: Textual theme variables, plus the app's own:
    shared-memory = "#5fafff"    # shared memory in the memory bars
    private-memory = "#ff8700"   # private memory in the memory bars
    warning-fd = "#ffaf00"       # file descriptors flagged as warnings (shared sockets)

Themes come from the repository's ``themes/`` directory and, when it exists, from
``$XDG_CONFIG_HOME/tui-passenger/themes`` (``~/.config/tui-passenger/themes``).
:func:`load_themes` never raises for a bad file: it returns one message per broken file,
for the app to show once (``notify``), and the app falls back to :func:`fallback_theme`
when the theme it wants did not load.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "APP_VARIABLES",
    "DEFAULT_THEME",
    "ThemeError",
    "default_theme_dirs",
    "fallback_theme",
    "load_theme_file",
    "load_themes",
]

#: The app's own theme variables and their values when a theme does not set them.
#: An App can return these from ``get_theme_variable_defaults()`` so that Textual's
#: built-in themes work with CSS that uses ``$shared-memory`` and friends.
APP_VARIABLES: dict[str, str] = {
    "shared-memory": "#5fafff",
    "private-memory": "#ff8700",
    "warning-fd": "#ffaf00",
}

#: The theme the dashboard starts with; :func:`fallback_theme` builds it without a file.
DEFAULT_THEME = "passenger-dark"

_REQUIRED = ("name", "dark", "primary")
_COLOURS = ("primary", "secondary", "accent", "foreground", "background", "surface", "panel",
            "boost", "warning", "error", "success")
_NUMBERS = ("luminosity_spread", "text_alpha")
_KNOWN = (*_REQUIRED, *_COLOURS, *_NUMBERS, "variables")
# The name becomes the CSS class "-theme-<name>" on the App, so keep it to class characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)")


class ThemeError(Exception):
    """A theme file that cannot be used: ``path``, the ``reason`` and the ``line`` if known."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{_display(self.path)}: line {self.line}" if self.line else _display(self.path)
        return f"{where}: {self.reason}"


def default_theme_dirs() -> list[Path]:
    """The shipped ``themes/`` directory, then the user's theme directory if it exists."""
    dirs = [Path(__file__).resolve().parents[2] / "themes"]
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    user = Path(config_home) / "tui-passenger" / "themes"
    if user.is_dir():
        dirs.append(user)
    return dirs


def load_themes(theme_dir: Path | None = None) -> tuple[list[Theme], list[str]]:
    """Load every ``*.toml`` theme in ``theme_dir`` (default: :func:`default_theme_dirs`).

    Returns the themes that loaded and one error message per file that did not; a
    missing directory is no error. A name already taken by an earlier file is an error
    for the later file, so a user's file never silently replaces a shipped theme.
    """
    dirs = default_theme_dirs() if theme_dir is None else [Path(theme_dir)]
    themes: list[Theme] = []
    errors: list[str] = []
    origin: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeError as exc:
                errors.append(str(exc))
                continue
            if theme.name in origin:
                errors.append(str(ThemeError(
                    path, f"name {theme.name!r} is already used by {_display(origin[theme.name])}",
                    _key_line(path.read_text(encoding="utf-8"), None, "name"))))
                continue
            origin[theme.name] = path
            themes.append(theme)
    return themes, errors


def load_theme_file(path: Path) -> Theme:
    """Read one theme file; raises :class:`ThemeError` naming the first problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(path, f"cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = int(match.group(1)) if match else None
        message = _TOML_POSITION.sub("", message)
        raise ThemeError(path, f"invalid TOML: {message}", line) from None
    return _theme_from_table(path, text, data)


def fallback_theme() -> Theme:
    """The default theme built in code, for when ``passenger-dark.toml`` did not load."""
    return Theme(
        name=DEFAULT_THEME, dark=True, primary="#5fafff", secondary="#87afd7",
        accent="#ffaf5f", foreground="#d0d0d0", background="#121212", surface="#1c1c1c",
        panel="#262626", warning="#ffaf00", error="#ff5f5f", success="#87d787",
        variables=dict(APP_VARIABLES),
    )


def _theme_from_table(path: Path, text: str, data: dict[str, Any]) -> Theme:
    def fail(reason: str, key: str | None = None, table: str | None = None) -> ThemeError:
        return ThemeError(path, reason, _key_line(text, table, key) if key else None)

    for key in data:
        if key not in _KNOWN:
            hint = difflib.get_close_matches(key, _KNOWN, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise fail(f"unknown key {key!r}{suggestion}", key)
    for key in _REQUIRED:
        if key not in data:
            raise fail(f"missing required key {key!r}")

    name = data["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail(f"name: must be a string of letters, digits, '-' and '_', got {name!r}",
                   "name")
    if not isinstance(data["dark"], bool):
        raise fail(f"dark: must be true or false, got {data['dark']!r}", "dark")

    colours: dict[str, str] = {}
    for key in _COLOURS:
        if key in data:
            try:
                colours[key] = _colour(data[key], key)
            except ValueError as exc:
                raise fail(str(exc), key) from None
    numbers: dict[str, float] = {}
    for key in _NUMBERS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail(f"{key}: must be a number, got {value!r}", key)
            numbers[key] = float(value)

    variables = dict(APP_VARIABLES)
    table = data.get("variables", {})
    if not isinstance(table, dict):
        raise fail("variables: must be a table", "variables")
    for key, value in table.items():
        where = f"variables.{key}"
        if not isinstance(value, str):
            raise fail(f"{where}: must be a string, got {value!r}", key, "variables")
        if key in APP_VARIABLES:
            # Our own variables are always colours: check them here rather than as a CSS
            # error on the first screen that uses them.
            try:
                value = _colour(value, where)
            except ValueError as exc:
                raise fail(str(exc), key, "variables") from None
        variables[key] = value

    # Checked above, key by key; Theme's own defaults stand for the keys not given.
    options: dict[str, Any] = {**colours, **numbers}
    return Theme(name=name, dark=data["dark"], variables=variables, **options)


def _colour(value: object, key: str) -> str:
    """``value`` if Textual can parse it as a colour, else ValueError naming ``key``."""
    if not isinstance(value, str):
        raise ValueError(f"{key}: colour must be a string, got {value!r}")
    try:
        Color.parse(value)
    except ColorParseError as exc:
        hint = f" (did you mean {exc.suggested_color!r}?)" if exc.suggested_color else ""
        raise ValueError(f"{key}: {value!r} is not a colour{hint}") from None
    return value


def _key_line(text: str, table: str | None, key: str | None) -> int | None:
    """The line that sets ``key`` in ``[table]`` (None: the top level), for messages."""
    if key is None:
        return None
    current: str | None = None
    quoted = re.escape(key)
    assignment = re.compile(rf"""\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*=""")
    header = re.compile(r"\s*\[\s*([^\]\s]+)\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        found = header.match(line)
        if found:
            current = found.group(1)
        elif current == table and assignment.match(line):
            return number
    return None


def _display(path: Path) -> str:
    """``path`` relative to the working directory or with ``~`` when that is shorter."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        pass
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)
