"""notebook 04: the experiments around the probing pipeline: threshold sweeps, probe logs, summaries and plots.

`threshold_sweep` binarizes at several thresholds and fits a probe at each. `ProbeLog` fits probes on a task's
train/test rows and keeps one table row per fit, so every sweep of the notebook lands in one results table;
`best_per_source` picks the best variant per feature source; the `plot_*` functions draw the notebook's figures.
`StageTimer` records wall-clock and CPU seconds per stage. Two checks grade the notebook's exercises
(`check_hidden_states_hook`, `check_topn_counts`). The pipeline itself lives in `saelab.probing`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp

from saelab.probing import binarize_pair, fit_probe, max_value
from saelab.tasks import stratified_sample

CLASSIFIER_COLORS = {"logreg": "tab:blue", "tree": "tab:green"}


def threshold_sweep(X_train, y_train, X_test, y_test, thresholds: Sequence[float], classifier: str = "logreg",
                    **probe_kwargs: Any) -> list[dict[str, Any]]:
    """Binarize at each threshold, fit, score: one table row per threshold (threshold, share of ones, macro-F1...).

    Every threshold is checked first (non-negative, below the largest training value), so a bad sweep fails
    before any fitting.
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("threshold_sweep needs at least one threshold.")
    largest = max_value(X_train)
    bad = [t for t in thresholds if not (0 <= t < largest)]
    if bad:
        raise ValueError(f"threshold(s) {bad} out of range: use values >= 0 and below the largest training value "
                         f"({largest:g}).")
    rows = []
    for t in thresholds:
        Xb_train, Xb_test = binarize_pair(X_train, X_test, t)
        density = Xb_train.nnz / max(1, np.prod(Xb_train.shape)) if sp.issparse(Xb_train) else float(Xb_train.mean())
        result = fit_probe(Xb_train, y_train, Xb_test, y_test, classifier, **probe_kwargs)
        rows.append(result.row(threshold=t, density=float(density)))
    return rows


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its live child processes (the workers that fit probe folds in
    parallel, `probing.PROBE_JOBS`)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a worker that ended meanwhile
            continue
        total += times.user + times.system
    return total


class StageTimer:
    """``with timer("stage"): ...`` records wall-clock and CPU seconds per stage, the CPU seconds of the probe
    workers included (on a busy shared machine the CPU seconds are the honest cost); `table()` lists them."""

    def __init__(self):
        self.seconds: dict[str, tuple[float, float]] = {}

    @contextmanager
    def __call__(self, stage: str):
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield
        # max: a worker that retires within the stage takes its CPU seconds with it
        self.seconds[stage] = (time.perf_counter() - wall, max(0.0, cpu_seconds() - cpu))

    def table(self):
        import pandas as pd

        return pd.DataFrame([{"stage": s, "wall s": w, "CPU s": c} for s, (w, c) in self.seconds.items()])


def stratified(split, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """`n` texts and labels of a task split, a stratified sample (all of them when n is larger), in source order."""
    keep = stratified_sample(split.labels, n, seed, what="stratified")
    return [split.texts[i] for i in keep], split.labels[keep]


def stack_texts(tasks: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], dict[tuple[str, str], np.ndarray]]:
    """One list of every task's train and test texts, for a single extraction, and ``rows[task, split]``: where
    each split sits in it."""
    texts: list[str] = []
    rows = {}
    for task, parts in tasks.items():
        for split in ("train", "test"):
            rows[task, split] = np.arange(len(texts), len(texts) + len(parts[split][0]))
            texts += parts[split][0]
    return texts, rows


class ProbeLog:
    """Fits probes on the train/test rows of each task and keeps one results-table row per fit.

    tasks: ``{task: {"train": (texts, labels), "test": (texts, labels), ...}}``; rows: ``{(task, split): indices}``
    into the feature matrices (as `stack_texts` gives them). Extra keyword tags label each row (layer, variant...).
    """

    def __init__(self, tasks: Mapping[str, Mapping[str, Any]], rows: Mapping[tuple[str, str], np.ndarray], *,
                 cv: int = 5):
        self.tasks, self.rows, self.cv = tasks, rows, cv
        self.records: list[dict[str, Any]] = []
        self.predictions: list[np.ndarray] = []  # test predictions of fit i (the "fit" column of the results)

    def split(self, X, task: str):
        """The task's training and test rows of a feature matrix."""
        return X[self.rows[task, "train"]], X[self.rows[task, "test"]]

    def labels(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        return self.tasks[task]["train"][1], self.tasks[task]["test"][1]

    def probe(self, X, task: str, classifiers: Sequence[str] = ("logreg", "tree"), threshold: float | None = None,
              **tags: Any) -> dict[str, Any]:
        """Fit each classifier on the task's training rows (binarized at `threshold` unless None), score the test
        rows, log one row per fit; returns ``{classifier: ProbeResult}``."""
        X_train, X_test = self.split(X, task)
        return self.fit(X_train, X_test, task, classifiers, threshold, **tags)

    def fit(self, X_train, X_test, task: str, classifiers: Sequence[str] = ("logreg", "tree"),
            threshold: float | None = None, **tags: Any) -> dict[str, Any]:
        """As `probe`, on features already split into the task's training and test texts."""
        if threshold is not None:
            X_train, X_test = binarize_pair(X_train, X_test, threshold)
        (y_train, y_test), out = self.labels(task), {}
        for clf in classifiers:
            out[clf] = fit_probe(X_train, y_train, X_test, y_test, clf, cv=self.cv)
            self.records.append(out[clf].row(task=task, **tags, fit=len(self.predictions)))
            self.predictions.append(np.asarray(out[clf].y_pred))
        return out

    def results(self, **where: Any):
        """The results table (a DataFrame), filtered to the rows whose columns equal `where`'s values."""
        import pandas as pd

        frame = pd.DataFrame(self.records)
        for key, value in where.items():
            frame = frame[frame[key] == value]
        return frame


def variant_probes(features: Mapping[str, Any], train: Sequence[int], test: Sequence[int], y_train, y_test,
                   variants: Mapping[str, tuple[str, float | None]], *, cv: int = 5, **tags: Any) -> list[dict]:
    """A logistic regression per variant ``{name: (pooling, threshold or None)}`` of pooled `features`, fitted on
    rows `train` and scored on rows `test`: one row each (tags, variant, macro_f1, interval)."""
    rows = []
    for variant, (pooling, t) in variants.items():
        X_train, X_test = features[pooling][list(train)], features[pooling][list(test)]
        if t is not None:
            X_train, X_test = binarize_pair(X_train, X_test, t)
        result = fit_probe(X_train, y_train, X_test, y_test, "logreg", cv=cv)
        rows.append({**tags, "variant": variant, "macro_f1": result.macro_f1, "interval": str(result.f1)})
    return rows


def best_per_source(sources: Mapping[str, Any], tasks: Sequence[str], classifiers: Sequence[str] = ("logreg", "tree"),
                    columns: Sequence[str] = ("macro_f1", "ci_low", "ci_high", "cv_f1", "layer", "variant", "fit"),
                    by: str = "cv_f1"):
    """For each task, feature source ``{name: results rows}`` and classifier, the variant chosen by `by`: a
    DataFrame with task, features, classifier and `columns`.

    `by="cv_f1"` (default) chooses by cross-validated macro-F1 on the *training* texts (`fit_probe` records it), so
    the test texts only score the choice; `by="macro_f1"` picks the best test score, as the paper reports its best
    (optimistic, and more so for a source with more variants). Ties keep the first row.
    """
    import pandas as pd

    if by not in ("cv_f1", "macro_f1"):
        raise ValueError(f"by must be 'cv_f1' (training-split cross-validation) or 'macro_f1' (test), got {by!r}.")
    out = []
    for task in tasks:
        for name, rows in sources.items():
            for clf in classifiers:
                group = rows[(rows.task == task) & (rows.classifier == clf)]
                if len(group) and group[by].isna().all():
                    raise ValueError(f"No {by} recorded for {name!r} ({clf}, {task}): fit with a choice to make "
                                     "(several Cs, or a tree with max_depth='cv').")
                best = group.loc[group[by].idxmax()].reindex(list(columns)).to_dict() if len(group) else {}
                out.append({"task": task, "features": name, "classifier": clf, **best})
    return pd.DataFrame(out)


def plot_heatmap(ax, table, title: str, ylabels: Sequence[str] | None = None):
    """A macro-F1 heat map of a (rows x columns) table on `ax`, values written in the cells; returns the image (for
    a shared colour bar: none is drawn here)."""
    import seaborn as sns
    sns.heatmap(table.astype(float), vmin=0, vmax=1, cmap="viridis", annot=True, fmt=".2f", annot_kws={"fontsize": 9},
                cbar=False, yticklabels=list(ylabels) if ylabels is not None else False, ax=ax)
    ax.set(title=title)
    return ax.collections[-1]


def plot_source_bars(ax, frame, sources: Sequence[str]):
    """Bars of the best macro-F1 per feature source and classifier, with bootstrap-interval error bars (the caller
    places the legend and the axis labels)."""
    import seaborn as sns
    sns.barplot(frame, x="features", y="macro_f1", hue="classifier", order=list(sources),
                hue_order=list(CLASSIFIER_COLORS), palette=CLASSIFIER_COLORS, saturation=1, errorbar=None, ax=ax)
    ax.get_legend().remove()
    # the intervals are the precomputed bootstrap ones (seaborn would recompute its own): one error bar per bar
    for clf, bars in zip(CLASSIFIER_COLORS, list(ax.containers)):
        rows = frame[frame.classifier == clf].set_index("features").loc[list(sources)].dropna(subset=["macro_f1"])
        ax.errorbar([b.get_x() + b.get_width() / 2 for b in bars], rows.macro_f1, fmt="none", color="k", capsize=3,
                    yerr=[rows.macro_f1 - rows.ci_low, rows.ci_high - rows.macro_f1])
    ax.set(xticks=range(len(sources)), xticklabels=[s.replace(", ", "\n") for s in sources], ylim=(0, 1), xlabel="",
           ylabel="")


def plot_threshold_sweep(ax, sweeps: Mapping[str, Any], continuous: Mapping[str, float], thresholds: Sequence[float]):
    """Macro-F1 against the threshold per classifier ``{clf: sweep table}`` with interval error bars, and each
    classifier's score on the continuous counts as a dotted line."""
    # ax.errorbar, not seaborn: the intervals are precomputed bootstrap ones, which seaborn would recompute wrongly
    for clf, frame in sweeps.items():
        color = CLASSIFIER_COLORS[clf]
        ax.errorbar(frame.threshold, frame.macro_f1, yerr=[frame.macro_f1 - frame.ci_low,
                    frame.ci_high - frame.macro_f1], fmt="o-", color=color, capsize=3, label=clf)
        ax.axhline(continuous[clf], color=color, ls=":", lw=1, label=f"{clf}, continuous counts")
    ax.set(xlabel="threshold t (top-n counts > t)", xticks=list(thresholds))


__all__ = [
    "CLASSIFIER_COLORS",
    "ProbeLog",
    "StageTimer",
    "best_per_source",
    "plot_heatmap",
    "plot_source_bars",
    "plot_threshold_sweep",
    "stack_texts",
    "stratified",
    "threshold_sweep",
    "variant_probes",
]
