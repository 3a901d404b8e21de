"""The latent browser: pick an SAE latent by number or by searching its top tokens, and see its dashboard.

    records = saelab.latents.latent_records(model, sae, texts)
    saelab.widgets.latent_browser(records, model=model, sae=sae)   # last line of a notebook cell

Widgets need a live kernel; in a saved notebook use `saelab.viz.latent_dashboard`, whose HTML stays in the file.
Bad input (a latent that does not exist, a search that finds nothing) gives a message in the widget, never a
traceback; a progress indicator shows while a dashboard is computed.
"""

from __future__ import annotations

from typing import Any

from saelab.latents import LatentRecords
from saelab.viz import latent_dashboard
from saelab.widgets._common import StatusBar, WidgetInputError, show_html


class LatentBrowser:
    """A latent picker (number box, slider, previous / next, a search box over top tokens) and a dashboard area.

    `show(latent)` and `search(query)` are what the controls call; they can be called directly too.
    `status.value` holds the last message (HTML); `last_dashboard` the last dashboard shown.
    """

    def __init__(self, records: LatentRecords, model=None, sae=None, start: int | None = None,
                 dashboard_kwargs: dict[str, Any] | None = None):
        import ipywidgets as w

        self.records, self.model, self.sae = records, model, sae
        self.dashboard_kwargs = dict(dashboard_kwargs or {})
        self.last_dashboard = None
        last = records.d_sae - 1
        self.number = w.IntText(value=0, description="latent", layout=w.Layout(width="170px"),
                                continuous_update=False)
        self.slider = w.IntSlider(value=0, min=0, max=last, description="", continuous_update=False,
                                  layout=w.Layout(width="320px"))
        self.previous = w.Button(description="◀", layout=w.Layout(width="40px"), tooltip="previous latent")
        self.next = w.Button(description="▶", layout=w.Layout(width="40px"), tooltip="next latent")
        self.query = w.Text(placeholder="search top tokens, e.g. ' the'", description="search",
                            continuous_update=False, layout=w.Layout(width="300px"))
        self.results = w.Dropdown(options=[], description="matches", layout=w.Layout(width="420px"))
        self.status_bar = StatusBar()
        self.status = self.status_bar.message  # the message area (HTML widget); `.value` is the last message
        self.output = w.Output()
        self.widget = w.VBox([
            w.HBox([self.number, self.previous, self.next, self.slider]),
            w.HBox([self.query, self.results]),
            self.status_bar.widget,
            self.output,
        ])
        self.widget.add_class("saelab-latent-browser")
        self._syncing = False
        self.number.observe(lambda change: self._from_control(change["new"]), names="value")
        self.slider.observe(lambda change: self._from_control(change["new"]), names="value")
        self.previous.on_click(lambda _: self._step(-1))
        self.next.on_click(lambda _: self._step(+1))
        self.query.observe(lambda change: self.search(change["new"]), names="value")
        self.results.observe(self._from_results, names="value")
        first = start if start is not None else self._first_alive()
        if first is not None:
            self.show(first)
        else:
            self.status_bar.error("No tracked latent fired on these texts: there is nothing to browse.")

    # ---- what the controls call ---------------------------------------------------------------------------------

    def show(self, latent: Any) -> bool:
        """Show a latent's dashboard; on bad input show a message instead. Returns whether a dashboard was shown."""
        ok, _ = self.status_bar.run(self._show, latent, busy=f"computing the dashboard of latent {latent}…",
                                    action=f"show latent {latent}")
        return ok

    def search(self, query: str) -> list[tuple[int, str, float]]:
        """Find latents whose top tokens contain `query`; list them in the matches drop-down and show the best."""
        ok, hits = self.status_bar.run(self._search, query, busy=f"searching top tokens for {query!r}…",
                                       action="search")
        return hits if ok else []

    # ---- the work -----------------------------------------------------------------------------------------------

    def _show(self, latent: Any) -> None:
        latent = self._parse(latent)
        self.records.position(latent)  # a readable ValueError for a latent out of range or not recorded
        self._set_controls(latent)
        dashboard = latent_dashboard(self.records, latent, self.model, self.sae, **self.dashboard_kwargs)
        self.last_dashboard = dashboard
        show_html(self.output, dashboard.html)
        stats = self.records.stats(latent)
        tokens = ", ".join(repr(token) for token, _ in self.records.top_tokens(latent, 3))
        self.status_bar.info(f"latent {latent}: {stats['fire_count']:,} firing tokens "
                             f"(density {100 * stats['density']:.3g}%)" + (f"; top tokens {tokens}" if tokens else ""))

    def _search(self, query: str) -> list[tuple[int, str, float]]:
        query = query or ""
        if not query.strip():
            self.results.options = []
            raise WidgetInputError("Type part of a token (e.g. 'love' or '!') to find latents whose top tokens "
                                   "contain it.")
        hits = self.records.search(query)
        if not hits:
            self.results.options = []
            raise WidgetInputError(f"No latent has {query.strip()!r} among its top tokens; try a shorter piece of "
                                   "the word.")
        self._syncing = True
        try:
            self.results.options = [(f"latent {lat}: {tok!r} ({act:.3g})", lat) for lat, tok, act in hits]
            self.results.value = hits[0][0]
        finally:
            self._syncing = False
        self._show(hits[0][0])
        self.status_bar.info(f"{len(hits)} latent(s) have {query.strip()!r} among their top tokens; showing "
                             f"latent {hits[0][0]}, the strongest. Pick another under 'matches'.")
        return hits

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _parse(self, latent: Any) -> int:
        if isinstance(latent, str):
            text = latent.strip()
            if not text.lstrip("-").isdigit():
                raise WidgetInputError(f"{latent!r} is not a latent number: type an integer between 0 and "
                                       f"{self.records.d_sae - 1}.")
            latent = int(text)
        return latent

    def _first_alive(self) -> int | None:
        alive = (self.records.fire_count > 0).nonzero()
        return int(self.records.latents[alive[0, 0]]) if len(alive) else None

    def _set_controls(self, latent: int) -> None:
        self._syncing = True
        try:
            self.number.value = latent
            self.slider.value = latent
        finally:
            self._syncing = False

    def _from_control(self, value: int) -> None:
        if not self._syncing:
            self.show(value)

    def _from_results(self, change: dict) -> None:
        if not self._syncing and change["new"] is not None:
            self.show(change["new"])

    def _step(self, delta: int) -> None:
        latents = self.records.latents.tolist()
        current = self.number.value
        candidates = [i for i in latents if (i > current if delta > 0 else i < current)]
        if not candidates:
            self.status_bar.error("No further latent in that direction.")
            return
        self.show(candidates[0] if delta > 0 else candidates[-1])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def latent_browser(records: LatentRecords, model=None, sae=None, start: int | None = None,
                   **dashboard_kwargs: Any) -> LatentBrowser:
    """An interactive latent browser: pick a latent by number or search its top tokens, see its dashboard.

    `model` and `sae` add the logit lens (tokens the latent promotes and suppresses). Display the returned object
    (last expression of a cell) to see it.
    """
    return LatentBrowser(records, model=model, sae=sae, start=start, dashboard_kwargs=dashboard_kwargs)


__all__ = [
    "LatentBrowser",
    "latent_browser",
]
