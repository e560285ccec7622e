"""A modal list of the app's themes: the highlighted one is previewed, Enter keeps it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

__all__ = ["ThemePicker"]


class ThemePicker(ModalScreen[str | None]):
    """Pick a theme: moving the cursor previews it, Enter returns its name, Esc restores."""

    DEFAULT_CSS = """
    ThemePicker {
        align: center middle;
        background: $background 60%;
    }
    ThemePicker > Vertical {
        width: 40;
        height: auto;
        max-height: 80%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    ThemePicker #theme-picker-title {
        width: 100%;
        text-style: bold;
        color: $primary;
        padding-bottom: 1;
    }
    ThemePicker OptionList {
        height: auto;
        max-height: 20;
        border: none;
        background: $surface;
    }
    ThemePicker #theme-picker-help {
        width: 100%;
        color: $text-muted;
        padding-top: 1;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="theme-picker.cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        # Remembered when the screen is built, so Esc can undo every preview.
        self._original: str | None = None

    def compose(self) -> ComposeResult:
        self._original = self.app.theme
        names = sorted(self.app.available_themes)
        options = [Option(name, id=name) for name in names]
        with Vertical():
            yield Label("Theme", id="theme-picker-title")
            yield OptionList(*options, id="theme-picker-list")
            yield Label("↑↓ preview · Enter keep · Esc cancel", id="theme-picker-help")

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        try:
            option_list.highlighted = option_list.get_option_index(self.app.theme)
        except OptionDoesNotExist:  # the current theme is not registered any more
            option_list.highlighted = 0
        option_list.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        """Preview: apply the highlighted theme to the whole app."""
        event.stop()
        name = event.option.id
        if name is not None and name != self.app.theme:
            self.app.theme = name

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter (or a click) keeps the theme."""
        event.stop()
        name = event.option.id
        if name is not None:
            self.app.theme = name
        self.dismiss(name)

    def action_cancel(self) -> None:
        """Esc: put the original theme back and return None."""
        if self._original is not None and self.app.theme != self._original:
            self.app.theme = self._original
        self.dismiss(None)
