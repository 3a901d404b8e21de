"""The library's plotting helpers, drawn on small constructed inputs (Agg backend): their labels, titles and the
artists they draw (bars, lines, the heat map's mesh)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection, QuadMesh

from saelab import probing_eval, steering_controls, steering_study, viz

pytestmark = pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")


@pytest.fixture(autouse=True)
def agg():
    matplotlib.use("Agg")
    yield
    plt.close("all")


def test_heatmap_writes_each_value_on_a_zero_to_one_scale():
    table = pd.DataFrame([[0.2, 0.9, 0.5], [0.7, 0.1, 1.0]], index=[6, 9], columns=["mean", "max", "last"])
    _, ax = plt.subplots()
    image = probing_eval.plot_heatmap(ax, table, "task: continuous", ylabels=["early (6)", "late (9)"])
    assert isinstance(image, QuadMesh) and image.get_clim() == (0, 1)
    assert ax.get_title() == "task: continuous"
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.2f}" for v in table.to_numpy().ravel())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mean", "max", "last"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["early (6)", "late (9)"]


def test_source_bars_carry_the_given_intervals():
    rows = [("a", "logreg", 0.6), ("b", "logreg", 0.7), ("c", "logreg", 0.8),
            ("a", "tree", 0.5), ("b", "tree", np.nan), ("c", "tree", 0.4)]   # no tree row for "b"
    frame = pd.DataFrame([{"features": f, "classifier": c, "macro_f1": v, "ci_low": v - 0.1, "ci_high": v + 0.05}
                          for f, c, v in rows])
    _, ax = plt.subplots()
    probing_eval.plot_source_bars(ax, frame, ["a", "b", "c"])
    assert sum(len(bars) for bars in ax.containers[:2]) == 5 and ax.get_legend() is None
    assert ax.get_legend_handles_labels()[1] == ["logreg", "tree"]
    for bars, caps in zip(ax.containers[:2], ax.containers[2:]):   # each error bar sits on its bar, top at ci_high
        upper = caps.lines[1][1]
        assert np.allclose([b.get_x() + b.get_width() / 2 for b in bars], np.asarray(upper.get_xdata(), float))
        assert np.allclose([b.get_height() + 0.05 for b in bars], np.asarray(upper.get_ydata(), float))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"] and ax.get_ylim() == (0, 1)


@pytest.mark.usefixtures("one_thread")
def test_activation_histogram_draws_the_recorded_counts(records):
    latent = int(records.fire_count.argmax())
    fig = viz.plot_activation_histogram(records, latent)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "activation" and ax.get_ylabel() == "tokens" and f"latent {latent}" in ax.get_title()
    assert ax.get_xscale() == "log" and ax.patches
    heights = sum(p.get_height() for p in ax.patches)
    assert heights == int(records.hist_counts[records.position(latent)].sum())


def test_feature_density_has_one_line_per_sae_and_counts_the_dead():
    densities = {"a": torch.tensor([0.0, 0.0, 1e-3, 1e-2, 0.1]), "b": torch.tensor([1e-3, 1e-3, 0.5])}
    fig = viz.plot_feature_density(densities)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_ylabel() == "latents" and ax.get_xlabel().startswith("log10 latent density")
    assert sorted(max(line.get_ydata()) for line in ax.lines) == [1, 2]  # b's two latents at 1e-3 share a bin
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (2 dead)", "b (0 dead)"]


def test_concept_by_alpha_draws_the_mean_with_a_standard_error_band():
    rng = np.random.default_rng(0)
    concept = pd.DataFrame([{"group": g, "latent": j, "alpha": a, "prompt": p, "concept": rng.random()}
                            for g in (steering_controls.OWN, steering_controls.RANDOM_DIRECTION)
                            for j in range(2) for a in (0.0, 1.0, 2.0) for p in range(3)])
    steering_controls.plot_concept_by_alpha(concept)
    ax = plt.gcf().axes[0]
    assert ax.get_xlabel().startswith("alpha") and ax.get_ylabel() == "judge-free concept rating" and ax.get_title()
    lines = [line for line in ax.lines if len(line.get_xdata())]   # seaborn adds empty ones for its legend
    assert len(lines) == 2 and len(ax.collections) == 2   # a line and a band per group
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [steering_controls.OWN,
                                                                    steering_controls.RANDOM_DIRECTION]
    own = concept[concept.group == steering_controls.OWN].groupby("alpha")["concept"]
    assert np.allclose(lines[0].get_ydata(), own.mean())
    band = ax.collections[0].get_paths()[0].vertices
    for alpha, mean, se in zip(own.mean().index, own.mean(), own.sem()):
        ys = band[band[:, 0] == alpha, 1]
        assert np.allclose([ys.min(), ys.max()], [mean - se, mean + se])


def test_scores_by_method_draws_a_bar_per_method_and_a_dot_per_sae():
    by_method = pd.DataFrame({"random": [0.1, 0.2, 0.15, 0.3], "activation": [0.3, 0.4, 0.2, 0.5],
                              "output": [0.5, 0.4, 0.6, 0.55]}, index=[f"topk {i}" for i in range(4)])
    steering_study.plot_scores_by_method(by_method)
    ax = plt.gcf().axes[0]
    assert len(ax.patches) == 3 and [p.get_height() for p in ax.patches] == pytest.approx(by_method.mean().tolist())
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == by_method.size
    assert ax.get_ylabel().startswith("steering score") and ax.get_title().startswith("Steering score")


def test_rank_agreement_has_a_panel_per_method():
    by_method = pd.DataFrame({"random": [0.1, 0.2, 0.3], "output": [0.5, 0.4, 0.6]},
                             index=["topk 8k", "relu 8k", "jumprelu 16k"])
    taus = {m: {"tau": 0.3, "low": -0.2, "high": 0.7} for m in by_method}
    steering_study.plot_rank_agreement([1.0, 2.0, 3.0], by_method, taus)
    axes = plt.gcf().axes
    assert len(axes) == 2 and axes[0].get_ylabel() == "mean steering score"
    assert all(ax.get_xlabel().startswith("interpretability") and "τb = +0.30" in ax.get_title() for ax in axes)
