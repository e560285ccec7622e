"""Theme files: the shipped themes load, broken files give one clear error, the picker works."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.color import Color
from textual.widgets import Label

from tui_passenger.tui.theme_picker import ThemePicker
from tui_passenger.tui.themes import (
    APP_VARIABLES,
    DEFAULT_THEME,
    ThemeError,
    default_theme_dirs,
    fallback_theme,
    load_theme_file,
    load_themes,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "themes"

GOOD = """\
name = "good"
dark = true
primary = "#5fafff"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def no_user_themes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the developer's own ~/.config/tui-passenger/themes from the default search."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# -- the shipped themes ------------------------------------------------------------------

@pytest.mark.usefixtures("no_user_themes")
def test_every_shipped_theme_loads_and_sets_the_app_variables() -> None:
    themes, errors = load_themes()
    assert errors == []
    names = {theme.name for theme in themes}
    assert {"passenger-dark", "passenger-light", "high-contrast"} <= names
    assert len(themes) >= 4
    assert DEFAULT_THEME in names
    for path in sorted(SHIPPED.glob("*.toml")):
        text = path.read_text()
        for variable in APP_VARIABLES:
            # Set by the file itself, not only inherited from the defaults.
            assert f"\n{variable} = " in text, f"{path.name} does not set {variable}"
    for theme in themes:
        for variable in APP_VARIABLES:
            Color.parse(theme.variables[variable])
        # Textual can build the whole colour system from it.
        assert theme.to_color_system().generate()["primary"]


@pytest.mark.usefixtures("no_user_themes")
def test_shipped_themes_are_found_relative_to_the_package() -> None:
    assert default_theme_dirs() == [SHIPPED]


def test_user_theme_directory_is_added_when_it_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "config" / "tui-passenger" / "themes"
    user.mkdir(parents=True)
    write(user, "mine.toml", GOOD.replace('"good"', '"mine"'))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    themes, errors = load_themes()
    assert errors == []
    assert "mine" in {theme.name for theme in themes}
    assert "passenger-dark" in {theme.name for theme in themes}


def test_variables_merge_the_defaults_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", GOOD + '[variables]\nwarning-fd = "red"\nborder = "blue"\n')
    theme = load_theme_file(path)
    assert theme.variables == {**APP_VARIABLES, "warning-fd": "red", "border": "blue"}
    assert theme.dark is True and theme.primary == "#5fafff"


def test_fallback_theme_is_usable() -> None:
    theme = fallback_theme()
    assert theme.name == DEFAULT_THEME
    assert set(APP_VARIABLES) <= set(theme.variables)


# -- broken files ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('name = "x"\ndark = true\nprimary = \n', r"line 3: invalid TOML: Invalid value"),
    ('name = "x"\ndark = true\n', r"missing required key 'primary'"),
    ('name = "x"\ndark = true\nprimary = "#5fafff"\nsecondary = "#zzz"\n',
     r"line 4: secondary: '#zzz' is not a colour"),
    ('name = "x"\ndark = true\nprimary = "#5fafff"\n[variables]\nshared-memory = "nope"\n',
     r"line 5: variables.shared-memory: 'nope' is not a colour"),
    ('name = "x"\ndark = true\nprimary = "#5fafff"\nsecundary = "red"\n',
     r"line 4: unknown key 'secundary' \(did you mean 'secondary'\?\)"),
    ('name = "x"\ndark = "yes"\nprimary = "#5fafff"\n', r"line 2: dark: must be true or false"),
    ('name = "has space"\ndark = true\nprimary = "red"\n', r"line 1: name: must be a string"),
    ('name = "x"\ndark = true\nprimary = 5\n', r"line 3: primary: colour must be a string"),
])
def test_a_broken_file_gives_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "broken.toml", text)
    with pytest.raises(ThemeError, match=expected) as caught:
        load_theme_file(path)
    message = str(caught.value)
    assert "broken.toml" in message
    assert "\n" not in message
    assert caught.value.path == path


def test_load_themes_keeps_the_good_themes_and_reports_each_broken_file(tmp_path: Path) -> None:
    write(tmp_path, "a-good.toml", GOOD)
    write(tmp_path, "b-syntax.toml", 'name = "b"\ndark = true\nprimary = "#fff\n')
    write(tmp_path, "c-missing.toml", 'name = "c"\ndark = true\n')
    write(tmp_path, "d-colour.toml", 'name = "d"\ndark = true\nprimary = "bluish"\n')
    write(tmp_path, "e-unknown.toml", GOOD.replace('"good"', '"e"') + 'primery = "red"\n')
    write(tmp_path, "f-duplicate.toml", GOOD)
    (tmp_path / "notes.txt").write_text("not a theme")

    themes, errors = load_themes(tmp_path)

    assert [theme.name for theme in themes] == ["good"]
    assert len(errors) == 5
    b, c, d, e, f = errors
    assert "b-syntax.toml: line 3: invalid TOML" in b
    assert "c-missing.toml: missing required key 'primary'" in c
    assert "d-colour.toml: line 3: primary: 'bluish' is not a colour" in d
    assert "e-unknown.toml: line 4: unknown key 'primery' (did you mean 'primary'?)" in e
    assert "f-duplicate.toml: line 1: name 'good' is already used by" in f


def test_a_missing_directory_is_not_an_error(tmp_path: Path) -> None:
    assert load_themes(tmp_path / "nope") == ([], [])


# -- the picker --------------------------------------------------------------------------

class PickerApp(App[None]):
    """Registers the shipped themes and opens the picker, remembering its result."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[str | None] = []

    def compose(self) -> ComposeResult:
        yield Label("dashboard")

    def on_mount(self) -> None:
        themes, errors = load_themes(SHIPPED)
        assert errors == []
        for theme in themes:
            self.register_theme(theme)
        # The first name in the picker's (sorted) list, so "down" has somewhere to go.
        self.theme = sorted(self.available_themes)[0]
        self.push_screen(ThemePicker(), self.results.append)


async def test_picker_down_and_enter_changes_the_theme() -> None:
    app = PickerApp()
    async with app.run_test() as pilot:
        await pilot.pause()
        original = app.theme
        assert isinstance(app.screen, ThemePicker)
        await pilot.press("down")
        await pilot.pause()
        previewed = app.theme
        assert previewed != original  # previewed while the cursor moves
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, ThemePicker)
        assert app.theme == previewed
        assert app.results == [previewed]


async def test_picker_escape_restores_the_original_theme() -> None:
    app = PickerApp()
    async with app.run_test() as pilot:
        await pilot.pause()
        original = app.theme
        await pilot.press("down", "down")
        await pilot.pause()
        assert app.theme != original
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ThemePicker)
        assert app.theme == original
        assert app.results == [None]


async def test_picker_highlights_the_current_theme() -> None:
    app = PickerApp()
    async with app.run_test() as pilot:
        await pilot.pause()
        app.pop_screen()
        app.theme = "passenger-light"
        await app.push_screen(ThemePicker())
        await pilot.pause()
        option_list = app.screen.query_one("#theme-picker-list")
        assert option_list.highlighted_option.id == "passenger-light"
        assert app.theme == "passenger-light"


# -- errors reach the user once ----------------------------------------------------------

class NotifyingApp(App[None]):
    """Loads themes like the dashboard does: every error notified once, then the fallback."""

    def __init__(self, theme_dir: Path) -> None:
        super().__init__()
        self.theme_dir = theme_dir
        self.notified: list[str] = []

    def compose(self) -> ComposeResult:
        yield Label("dashboard")

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(APP_VARIABLES)

    def notify(self, message: str, **kwargs: object) -> None:
        self.notified.append(message)
        super().notify(message, **kwargs)

    def on_mount(self) -> None:
        themes, errors = load_themes(self.theme_dir)
        for theme in themes:
            self.register_theme(theme)
        for error in errors:
            # markup=False: messages quote file contents, which may contain [brackets].
            self.notify(error, title="Theme not loaded", severity="error", markup=False)
        if DEFAULT_THEME not in self.available_themes:
            self.register_theme(fallback_theme())
        self.theme = DEFAULT_THEME


async def test_a_broken_theme_file_produces_exactly_one_notification(tmp_path: Path) -> None:
    write(tmp_path, "good.toml", GOOD)
    # Two problems in one file (unknown key and no primary): still one message.
    write(tmp_path, "broken.toml", 'name = "broken"\ndark = true\ncolour = "[red]"\n')
    app = NotifyingApp(tmp_path)
    async with app.run_test(notifications=True) as pilot:
        await pilot.pause()
        assert len(app.notified) == 1
        assert "broken.toml" in app.notified[0]
        assert "unknown key 'colour'" in app.notified[0]
        # The toast rack shows it once the screen is up; wait for it (bounded).
        for _ in range(50):
            if app.screen.query("Toast"):
                break
            await pilot.pause(0.02)
        assert len(app.screen.query("Toast")) == 1
        assert app.theme == DEFAULT_THEME  # the fallback, as passenger-dark was not there
        assert "good" in app.available_themes
        assert "broken" not in app.available_themes
