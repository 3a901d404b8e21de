"""The harness can fail: a widget whose callback is broken, or a notebook whose cell raises, fails the check.

A throwaway notebook, written for the test, shows a working slider next to two broken ones (one computes the
wrong thing, one raises) and a box whose callback is guarded by saelab's StatusBar. The checks must pass on the
working widget and fail, with a message saying what was expected and what the page showed, on the broken ones.
"""

from __future__ import annotations

import lab_harness as h
import nbformat
import pytest

WIDGETS = '''
import ipywidgets as w
from saelab.widgets import StatusBar

def slider_and_label(description, callback):
    slider, label = w.IntSlider(value=5, min=0, max=20, description=description), w.HTML("double: 10")
    slider.observe(lambda change: callback(change, label), names="value")
    return w.VBox([slider, label])

def double(change, label):
    label.value = f"double: {2 * change['new']}"

def double_forgot_factor(change, label):  # broken: computes the wrong thing
    label.value = f"double: {change['new']}"

def double_raises(change, label):  # broken: raises inside the callback
    raise RuntimeError("deliberately broken callback")

status = StatusBar()
guarded = w.IntText(value=1, description="divide by")
guarded.observe(status.guard(lambda change: status.info(f"1 / {change['new']} = {1 / change['new']:.2f}"),
                             busy="dividing…", action="divide"), names="value")
'''


def write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def selftest_lab(lab, lab_root):
    """The session's page, pointed at a folder of throwaway notebooks inside the server's root."""
    write_notebook(lab_root / "selftest" / "harness_selftest.ipynb", [
        WIDGETS,
        'slider_and_label("working", double)',
        'slider_and_label("wrong", double_forgot_factor)',
        'slider_and_label("raising", double_raises)',
        "w.VBox([guarded, status.widget])",
    ])
    write_notebook(lab_root / "selftest" / "failing_cell.ipynb", [
        "x = 1",
        'raise ValueError("this cell fails on purpose")',
        "y = 2",
    ])
    lab.folder = "selftest/"
    lab.callback_errors_expected = True  # this test breaks callbacks on purpose and checks they are caught
    return lab


def test_broken_widget_callbacks_fail_the_check(selftest_lab):
    nb = selftest_lab.run_notebook("harness_selftest.ipynb")

    working = nb.widget('slider_and_label("working"', name="working")
    working.drag_slider(working.slider("working"), 0.4)  # a mouse drag, as a person would
    value = int(working.slider_value(working.slider("working")))
    assert value not in (5,), "the drag did not move the slider"
    working.expect(working.root.locator(".widget-html-content"), f"double: {2 * value}", exact=True,
                   what="after a drag")
    working.press_slider(working.slider("working"), "ArrowRight", 2)
    working.expect(working.root.locator(".widget-html-content"), f"double: {2 * (value + 2)}", exact=True,
                   what="after two arrow keys")

    wrong = nb.widget('slider_and_label("wrong"', name="wrong")
    wrong.press_slider(wrong.slider("wrong"), "ArrowRight", 3)  # 5 -> 8
    with pytest.raises(AssertionError, match=r"expected exactly 'double: 16', actual 'double: 8'"):
        wrong.expect(wrong.root.locator(".widget-html-content"), "double: 16", exact=True, timeout=4)

    raising = nb.widget('slider_and_label("raising"', name="raising")
    assert nb.callback_errors() == []
    raising.press_slider(raising.slider("raising"), "ArrowRight", 1)  # 5 -> 6
    with pytest.raises(AssertionError, match=r"expected exactly 'double: 12', actual 'double: 10'"):
        raising.expect(raising.root.locator(".widget-html-content"), "double: 12", exact=True, timeout=4)
    nb.wait_idle()
    with pytest.raises(h.NotebookError, match="deliberately broken callback"):
        nb.assert_no_callback_errors()  # what the `lab` fixture checks after every test

    # a callback guarded by saelab's StatusBar shows the problem as a message, not a traceback
    n_errors = len(nb.callback_errors())
    guarded = nb.widget("w.VBox([guarded", name="guarded")
    guarded.type("divide by", "0")
    guarded.expect_message("Could not divide: ZeroDivisionError: division by zero", error=True)
    guarded.shot("division by zero")
    guarded.type("divide by", "4")
    guarded.expect_message("1 / 4 = 0.25")
    assert len(nb.callback_errors()) == n_errors, "the guarded callback leaked a traceback to the log console"


def test_a_failing_cell_fails_the_run(selftest_lab):
    with pytest.raises(h.NotebookError, match=r"(?s)code cell 3 of 3 did not run.*this cell fails on purpose"):
        selftest_lab.run_notebook("failing_cell.ipynb")
