"""saelab.widgets in the kernel (no browser): the shared status bar, the pooling explorer's numbers against an
independent computation, and readable messages on bad input. tests/browser drives the same widgets in Chromium."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saelab.activations import extract
from saelab.widgets import StatusBar, WidgetInputError, pooling_explorer, pooling_summary
from saelab.widgets._common import BUSY_CLASS, ERROR_CLASS, INFO_CLASS

pytest.importorskip("ipywidgets")
pytestmark = pytest.mark.usefixtures("one_thread")
HOOK = "blocks.1.hook_resid_post"
TEXT = "The cat sat on the mat because it was tired."


def test_status_bar_shows_busy_while_running_and_messages_after():
    status = StatusBar()
    seen = {}

    def work(x):
        seen["busy"] = (status.busy_now, BUSY_CLASS in status.indicator._dom_classes,
                        status.indicator.layout.display, "adding one" in status.indicator.value)
        return x + 1

    assert status.run(work, 1, busy="adding one…") == (True, 2)
    assert seen["busy"] == (True, True, "", True)
    assert not status.busy_now and BUSY_CLASS not in status.indicator._dom_classes
    assert status.indicator.layout.display == "none"


def test_status_bar_turns_exceptions_into_messages():
    status = StatusBar()
    callback = status.guard(lambda: 1 / 0, action="divide")
    callback()  # never raises
    assert "Could not divide: ZeroDivisionError: division by zero" in status.message.value
    assert "<details" in status.message.value and "Traceback" in status.message.value  # folded away
    assert ERROR_CLASS in status.message._dom_classes and BUSY_CLASS not in status.indicator._dom_classes

    def bad_input():
        raise WidgetInputError("Type a number <here>.")

    assert status.run(bad_input) == (False, None)
    assert "Type a number &lt;here&gt;." in status.message.value  # escaped, shown as is, no details
    assert "details" not in status.message.value
    status.info("fine")
    assert INFO_CLASS in status.message._dom_classes and ERROR_CLASS not in status.message._dom_classes


def test_pooling_shares_against_an_independent_computation(tiny):
    summary = pooling_summary(tiny, TEXT, HOOK)
    rows = extract(tiny, [TEXT], HOOK, pooling="none", progress=False).tensor.double().numpy()
    n = len(rows)
    assert len(summary.tokens) == n and summary.norms.shape == (n,)
    for pooling, expected in [("mean", rows.mean(0)), ("sum", rows.sum(0)), ("max", rows.max(0)), ("last", rows[-1])]:
        np.testing.assert_allclose(summary.pooled[pooling].double().numpy(), expected, rtol=1e-5, atol=1e-5)
        # the pooled vectors are what extract itself gives with that pooling
        direct = extract(tiny, [TEXT], HOOK, pooling=pooling, progress=False).tensor[0]
        torch.testing.assert_close(summary.pooled[pooling], direct)
        assert abs(float(summary.shares[pooling].sum()) - 1) < 1e-5
    mean = rows.mean(0)
    np.testing.assert_allclose(summary.shares["mean"].numpy(), rows @ mean / (n * mean @ mean), rtol=1e-4)
    np.testing.assert_allclose(summary.shares["sum"].numpy(), summary.shares["mean"].numpy(), rtol=1e-4)
    argmax_counts = np.bincount(rows.argmax(0), minlength=n) / rows.shape[1]
    np.testing.assert_allclose(summary.shares["max"].numpy(), argmax_counts)
    assert summary.shares["last"].tolist() == [0.0] * (n - 1) + [1.0]


def test_pooling_summary_with_bos_adds_one_token(tiny):
    without, with_bos = pooling_summary(tiny, TEXT, HOOK), pooling_summary(tiny, TEXT, HOOK, include_bos=True)
    assert len(with_bos.tokens) == len(without.tokens) + 1
    assert with_bos.tokens[1:] == without.tokens


def test_pooling_explorer_responds_and_explains_bad_input(tiny):
    explorer = pooling_explorer(tiny, texts=[TEXT, "Dogs bark at night."], layer=0)
    assert explorer.last_summary.hook == "blocks.0.hook_resid_post"
    assert "tokens at blocks.0.hook_resid_post" in explorer.status_bar.message.value

    explorer.text.value = "   "
    assert ERROR_CLASS in explorer.status_bar.message._dom_classes
    assert "The text is empty" in explorer.status_bar.message.value
    explorer.example.value = "Dogs bark at night."
    assert explorer.text.value == "Dogs bark at night." and explorer.last_summary.text == "Dogs bark at night."

    for box in explorer.poolings.values():
        box.value = False
    assert "Tick at least one pooling" in explorer.status_bar.message.value
    explorer.poolings["max"].value = True
    assert list(explorer.last_summary.shares) == ["max"]

    explorer.layer.value, explorer.site.value = 1, "mlp_out"
    assert explorer.last_summary.hook == "blocks.1.hook_mlp_out"
    explorer.include_bos.value = True
    assert explorer.last_summary.include_bos and explorer.last_summary.tokens[0] == tiny.tokenizer.bos_token


def test_pooling_explorer_rejects_an_unknown_site(tiny):
    with pytest.raises(ValueError, match="Unknown hook site 'resid_mid'"):
        pooling_explorer(tiny, site="resid_mid")
