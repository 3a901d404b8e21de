"""The binarization explorer (notebook 04): move the threshold, watch macro-F1 follow.

    explorer = saelab.widgets.binarization_explorer(
        {"middle layer · top-n counts": (X_train, X_test)}, y_train, y_test)
    explorer                                  # last line of a notebook cell

MOSAIC turns pooled SAE features into 0/1 features with ``x > threshold`` (1.0 on top-n counts). The explorer
binarizes the chosen feature set at the slider's threshold (or a typed one), fits the chosen classifier on the
training texts and shows test macro-F1 with its bootstrap interval beside the continuous (unbinarized) features'
score, plus a table of every threshold tried so far. Fitting uses `saelab.probing.fit_probe`; the logistic
regression uses one fixed C (default 1.0) so that each move of the slider costs a single fit.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from saelab.probing import (
    CLASSIFIERS,
    binarize_pair,
    check_labelled,
    fit_probe,
    max_value,
)
from saelab.probing_scores import ProbeResult
from saelab.widgets._common import StatusBar, WidgetInputError, show_html

_CLASSIFIER_NAMES = {"logreg": "logistic regression", "tree": "decision tree"}


class BinarizationExplorer:
    """Controls (feature set, classifier, threshold slider and box), a status line and a results table.

    `update()` refits from the controls; `last_result` is the last binarized `ProbeResult`, `history` maps
    (feature set, classifier, threshold) to macro-F1 for every threshold tried.
    """

    def __init__(self, features: Mapping[str, tuple[Any, Any]], y_train, y_test, *, threshold: float = 1.0,
                 classifier: str = "logreg", C: float = 1.0, n_boot: int = 300):
        import ipywidgets as w

        if not features:
            raise ValueError("Give at least one feature set: {name: (X_train, X_test)}.")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"Unknown classifier {classifier!r}; choose one of {CLASSIFIERS}.")
        self.features = {}
        for name, (X_train, X_test) in features.items():
            X_train, _ = check_labelled(X_train, y_train, "training")
            X_test, _ = check_labelled(X_test, y_test, "test")
            self.features[name] = (X_train, X_test)
        self.y_train, self.y_test = np.asarray(y_train), np.asarray(y_test)
        self.C, self.n_boot = float(C), int(n_boot)
        self.last_result: ProbeResult | None = None
        self.history: dict[tuple[str, str, float], float] = {}
        self._continuous: dict[tuple[str, str], ProbeResult] = {}

        names = list(self.features)
        self.feature_set = w.Dropdown(options=names, value=names[0], description="features",
                                      layout=w.Layout(width="460px"))
        self.classifier = w.Dropdown(options=[(_CLASSIFIER_NAMES[c], c) for c in CLASSIFIERS], value=classifier,
                                     description="classifier", layout=w.Layout(width="300px"))
        self.slider = w.FloatSlider(value=threshold, min=0.0, max=self._slider_max(names[0]), step=0.25,
                                    description="threshold", continuous_update=False, readout_format=".2f",
                                    layout=w.Layout(width="460px"))
        self.typed = w.FloatText(value=threshold, description="or type", layout=w.Layout(width="200px"),
                                 continuous_update=False)
        self.status_bar = StatusBar()
        self.output = w.Output()
        self.widget = w.VBox([w.HBox([self.feature_set, self.classifier]), w.HBox([self.slider, self.typed]),
                              self.status_bar.widget, self.output])
        self.widget.add_class("saelab-binarization-explorer")
        self._syncing = False
        self.feature_set.observe(self._from_feature_set, names="value")
        self.classifier.observe(lambda change: self.update(), names="value")
        self.slider.observe(lambda change: self._from_threshold(change["new"]), names="value")
        self.typed.observe(lambda change: self._from_threshold(change["new"]), names="value")
        self.update()

    # ---- computing ----------------------------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return float(self.typed.value)

    def update(self) -> bool:
        """Binarize at the current threshold, fit, score and show; a message instead on bad input."""
        clf, t = self.classifier.value, self.threshold
        ok, _ = self.status_bar.run(self._update, busy=f"fitting a {_CLASSIFIER_NAMES[clf]} on features > {t:g}…",
                                    action=f"score threshold {t:g}")
        if not ok:
            self.output.clear_output()  # a table for another threshold would mislead next to the message
        return ok

    def set_threshold(self, value: float) -> bool:
        """Move both threshold controls to `value` (which refits); returns whether a score was shown."""
        self._from_threshold(value)
        return self.last_result is not None

    def _update(self) -> None:
        name, clf, t = self.feature_set.value, self.classifier.value, self.threshold
        self.last_result = None
        X_train, X_test = self.features[name]
        if not np.isfinite(t):
            raise WidgetInputError("Type a number for the threshold, e.g. 1.0.")
        Xb_train, Xb_test = binarize_pair(X_train, X_test, t)  # a readable ValueError when out of range
        result = fit_probe(Xb_train, self.y_train, Xb_test, self.y_test, clf, Cs=(self.C,), n_boot=self.n_boot)
        continuous = self._continuous_result(name, clf)
        self.last_result = result
        self.history[(name, clf, t)] = result.macro_f1
        on = Xb_train.nnz / np.prod(Xb_train.shape) if sp.issparse(Xb_train) else float(Xb_train.mean())
        show_html(self.output, self._table_html(name, clf, t, continuous))
        self.status_bar.info(f"threshold {t:g} · {_CLASSIFIER_NAMES[clf]} · macro-F1 {result.f1} on "
                             f"{result.n_test} test texts (continuous features: {continuous.macro_f1:.3f}) · "
                             f"{100 * on:.2f}% of training features on")

    def _continuous_result(self, name: str, clf: str) -> ProbeResult:
        key = (name, clf)
        if key not in self._continuous:
            X_train, X_test = self.features[name]
            self._continuous[key] = fit_probe(X_train, self.y_train, X_test, self.y_test, clf, Cs=(self.C,),
                                              n_boot=self.n_boot)
        return self._continuous[key]

    def _slider_max(self, name: str) -> float:
        largest = max_value(self.features[name][0])
        return max(0.25, float(np.floor(largest * 4) / 4 - 0.25)) if largest > 0.25 else 0.25

    # ---- display ------------------------------------------------------------------------------------------------

    def _table_html(self, name: str, clf: str, current: float, continuous: ProbeResult) -> str:
        tried = sorted((t, f1) for (n, c, t), f1 in self.history.items() if n == name and c == clf)
        best = max(f1 for _, f1 in tried)
        rows = "".join(
            f'<tr class="saelab-threshold-row" data-threshold="{t:g}"'
            f'{" style=background:#eef" if t == current else ""}><td align="right">{t:g}</td>'
            f'<td align="right">{f1:.3f}</td><td>{"best so far" if f1 == best else ""}</td></tr>' for t, f1 in tried)
        result = self.last_result
        return (f'<div style="font-family:sans-serif;font-size:13px">'
                f'<p style="margin:2px 0"><b>{html.escape(name)}</b> · {_CLASSIFIER_NAMES[clf]} (C={self.C:g} for '
                f'logistic regression) · binarized at &gt; {current:g}: macro-F1 <b>{result.f1}</b> · '
                f'continuous: {continuous.f1}</p>'
                f'<table style="border-collapse:collapse"><tr><th>threshold</th><th>macro-F1</th><th></th></tr>'
                f'{rows}</table></div>')

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _from_threshold(self, value: float) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.typed.value = float(value)
            if self.slider.min <= value <= self.slider.max:
                self.slider.value = float(value)
        finally:
            self._syncing = False
        self.update()

    def _from_feature_set(self, change: dict) -> None:
        self._syncing = True
        try:
            self.slider.max = self._slider_max(change["new"])
        finally:
            self._syncing = False
        self.update()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def binarization_explorer(features: Mapping[str, tuple[Any, Any]], y_train, y_test, *, threshold: float = 1.0,
                          classifier: str = "logreg", C: float = 1.0, n_boot: int = 300) -> BinarizationExplorer:
    """An interactive binarization explorer: pick pooled features and a classifier, move the threshold, see
    test macro-F1 (with its bootstrap interval) against the continuous features'. Display the returned object
    (last expression of a cell) to see it."""
    return BinarizationExplorer(features, y_train, y_test, threshold=threshold, classifier=classifier, C=C,
                                n_boot=n_boot)


__all__ = [
    "BinarizationExplorer",
    "binarization_explorer",
]
