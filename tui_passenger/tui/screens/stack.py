"""The Python stacks of a live worker (or preloader), as ``ctl stack`` prints them."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class StackScreen(ModalScreen[None]):
    """One process's stacks, every thread, most recent call first; Esc, w or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,w,q", "dismiss", "Close", id="stack.close"),
    ]

    def __init__(self, title: str, stacks: str) -> None:
        super().__init__()
        self.title_text = title
        self.stacks = stacks

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="stack-dialog"):
            yield Static(Text(self.title_text), id="stack-title")
            yield Static(Text(self.stacks, no_wrap=True, overflow="ellipsis"),
                         id="stack-text")
            yield Static("Esc / w closes · ctl stack PID prints the same", id="stack-footer")
