"""What every saelab widget shares: a busy indicator, a message area, and callbacks that never raise.

A widget callback runs in the kernel when a learner clicks or types. An exception there does not appear next to
the widget: ipywidgets sends it to JupyterLab's log console, which nobody has open, so the widget just looks
broken. `StatusBar.guard` wraps every callback: while it runs, a progress indicator shows what is being computed;
when it fails, the message area says what went wrong in a sentence (and keeps the traceback folded away under
"details" for a bug report).

    status = StatusBar()
    button.on_click(status.guard(compute, busy="computing the dashboard…"))
    VBox([controls, status.widget, output])

The indicator and the message area carry CSS classes (`saelab-busy`, `saelab-error`, `saelab-info`) so that the
browser tests can wait for a computation to finish and tell an error from a result.
"""

from __future__ import annotations

import contextlib
import functools
import html
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

_FONT = "font-family:var(--jp-ui-font-family, sans-serif);font-size:13px"
BUSY_CLASS, ERROR_CLASS, INFO_CLASS = "saelab-busy", "saelab-error", "saelab-info"


class WidgetInputError(ValueError):
    """Bad input typed or chosen in a widget: its message is shown as is, as advice, not as a failure."""


class StatusBar:
    """A busy indicator and a message line, side by side (`.widget`).

    `.indicator` shows an animated bar and what is being computed while a callback runs; `.message` holds the
    last message (HTML; `.message.value`), with class `saelab-error` when it reports a problem.
    """

    def __init__(self, width: str = "100%"):
        import ipywidgets as w

        self.indicator = w.HTML(value="", layout=w.Layout(display="none"))
        self.message = w.HTML(value="")
        self.message.add_class("saelab-message")
        self.widget = w.HBox([self.indicator, self.message], layout=w.Layout(width=width, min_height="24px"))
        self.busy_now = False
        self.last_error: str | None = None
        self.last_seconds: float | None = None  # how long the last successful call took

    # ---- messages ---------------------------------------------------------------------------------------------

    def info(self, text: str) -> None:
        """Show a neutral message (plain text; it is escaped)."""
        self._show(text, error=False)

    def error(self, text: str, details: str | None = None) -> None:
        """Show a problem in a sentence, with optional technical details folded away."""
        self.last_error = text
        self._show(text, error=True, details=details)

    def clear(self) -> None:
        self.message.value = ""
        self.message.remove_class(ERROR_CLASS)
        self.message.remove_class(INFO_CLASS)

    def _show(self, text: str, error: bool, details: str | None = None) -> None:
        color = "#b00020" if error else "#333"
        prefix = "⚠ " if error else ""
        body = f'<span style="{_FONT};color:{color}">{prefix}{html.escape(text)}</span>'
        if details:
            body += (f'<details style="{_FONT};color:#666"><summary>details</summary>'
                     f'<pre style="font-size:11px;white-space:pre-wrap">{html.escape(details)}</pre></details>')
        self.message.value = body
        self.message.remove_class(INFO_CLASS if error else ERROR_CLASS)
        self.message.add_class(ERROR_CLASS if error else INFO_CLASS)

    # ---- the busy indicator -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def busy(self, text: str = "computing…") -> Iterator[None]:
        """Show an animated progress bar and `text` while the block runs; hide it afterwards, even on errors."""
        self.busy_now = True
        self.indicator.value = (f'<span style="{_FONT};color:#555;white-space:nowrap">'
                                f'<progress style="width:90px;vertical-align:middle"></progress> '
                                f'{html.escape(text)}</span>')
        self.indicator.add_class(BUSY_CLASS)
        self.indicator.layout.display = ""
        try:
            yield
        finally:
            self.indicator.layout.display = "none"
            self.indicator.remove_class(BUSY_CLASS)
            self.indicator.value = ""
            self.busy_now = False

    # ---- callbacks that never raise ---------------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any, busy: str | None = None, action: str | None = None,
            **kwargs: Any) -> tuple[bool, Any]:
        """Call `fn(*args, **kwargs)` with the busy indicator on; report an exception in the message area.

        Returns (succeeded, result). `action` names what was attempted ("build the dashboard"), for the message.
        """
        started = time.perf_counter()
        try:
            with self.busy(busy or "computing…"):
                result = fn(*args, **kwargs)
        except WidgetInputError as err:
            self.error(str(err))
            return False, None
        except ValueError as err:  # saelab raises ValueErrors that say what was wrong and what to do
            self.error(f"{_could_not(action)}{err}")
            return False, None
        except Exception as err:  # noqa: BLE001 - shown in the widget: a traceback in a callback is never seen
            details = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            self.error(f"{_could_not(action)}{type(err).__name__}: {err}", details=details)
            return False, None
        self.last_seconds = time.perf_counter() - started
        return True, result

    def guard(self, fn: Callable[..., Any], busy: str | None = None, action: str | None = None) -> Callable:
        """`fn` wrapped for use as a widget callback (`observe`, `on_click`): busy indicator on, never raises."""

        @functools.wraps(fn)
        def callback(*args: Any, **kwargs: Any) -> None:
            self.run(fn, *args, busy=busy, action=action, **kwargs)

        return callback


def _could_not(action: str | None) -> str:
    return f"Could not {action}: " if action else ""


def show_html(output, html_text: str) -> None:
    """Replace what an `ipywidgets.Output` shows with some HTML."""
    from IPython.display import HTML, display

    output.clear_output(wait=True)
    with output:
        display(HTML(html_text))


__all__ = [
    "StatusBar",
    "WidgetInputError",
    "show_html",
]
