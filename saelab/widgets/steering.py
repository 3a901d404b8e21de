"""The steering playground: pick a latent, a strength and a prompt; read the steered continuation beside the
unsteered one.

    records = saelab.latents.latent_records(model, sae, texts)    # gives each latent's top activation
    saelab.widgets.steering_playground(model, sae, records)        # in a notebook cell

Steering adds alpha * max_activation(latent) * W_dec[latent] to the residual stream at the SAE's hook at every
position (`saelab.steering`). Both continuations come from one batched, greedy `generate` call. Bad input (an empty
prompt, a latent that does not exist, an alpha that is not a finite number) gives a message, never a traceback.
"""

from __future__ import annotations

import html
import math
from typing import Any

import torch

from saelab import steering as st
from saelab.checks import check_latent
from saelab.widgets._common import StatusBar, WidgetInputError

_BOX = ("font-family:var(--jp-ui-font-family, sans-serif);font-size:13px;border:1px solid #ccc;border-radius:4px;"
        "padding:6px 8px;margin:4px;flex:1;min-width:260px;white-space:pre-wrap")


class SteeringPlayground:
    """Controls (latent, alpha, prompt, number of new tokens, a Generate button), a status line and a result area.

    `generate()` is the button's callback and can be called directly, with optional new values for the controls.
    `result.value` holds the last side-by-side comparison (HTML); `last` the last (unsteered, steered) pair.
    """

    def __init__(self, model, sae, max_acts, *, latent: int | None = None, alpha: float = 5.0,
                 prompt: str = st.NEUTRAL_PROMPT, max_new_tokens: int = 24, records=None):
        import ipywidgets as w

        self.model, self.sae, self.max_acts = model, sae, max_acts
        self.records = records if records is not None else (max_acts if hasattr(max_acts, "top_tokens") else None)
        self.last: tuple[st.Generation, st.Generation] | None = None
        d_sae = sae.cfg.d_sae
        self.latent = w.IntText(value=self._default_latent() if latent is None else int(latent),
                                description="latent", layout=w.Layout(width="200px"))
        self.latent.tooltip = f"an SAE latent, 0 to {d_sae - 1}"
        self.alpha = w.Text(value=f"{alpha:g}", description="alpha", placeholder="steering strength, e.g. 5",
                            layout=w.Layout(width="200px"))
        self.tokens = w.IntSlider(value=max_new_tokens, min=4, max=96, step=4, description="new tokens",
                                  continuous_update=False, layout=w.Layout(width="320px"))
        self.prompt = w.Textarea(value=prompt, description="prompt", placeholder="a prompt to continue",
                                 layout=w.Layout(width="660px", height="56px"))
        self.button = w.Button(description="Generate", button_style="primary", tooltip="generate both continuations")
        self.status = StatusBar()
        self.result = w.HTML(value="")
        self.result.add_class("saelab-steering-result")
        self.widget = w.VBox([w.HBox([self.latent, self.alpha, self.tokens]), w.HBox([self.prompt, self.button]),
                              self.status.widget, self.result])
        self.button.on_click(lambda _: self.generate())
        self.status.info(f"Choose a latent (0 to {d_sae - 1}), a strength and a prompt, then press Generate.")

    # ---- the callback ------------------------------------------------------------------------------------------

    def generate(self, latent: Any = None, alpha: Any = None, prompt: str | None = None,
                 max_new_tokens: int | None = None) -> bool:
        """Generate unsteered and steered continuations and show them side by side. Returns whether it worked."""
        ok, _ = self.status.run(self._set_controls, latent, alpha, prompt, max_new_tokens)  # a message, not a raise
        if not ok:
            return False
        ok, _ = self.status.run(self._compute, busy="generating the unsteered and steered continuations…",
                                action="generate")
        return ok

    def _set_controls(self, latent: Any, alpha: Any, prompt: str | None, max_new_tokens: Any) -> None:
        if latent is not None:
            self.latent.value = _whole_number(latent, "latent", f"an integer between 0 and {self.sae.cfg.d_sae - 1}")
        if alpha is not None:
            self.alpha.value = str(alpha)
        if prompt is not None:
            self.prompt.value = prompt
        if max_new_tokens is not None:
            self.tokens.value = _whole_number(max_new_tokens, "max_new_tokens", "a whole number such as 24")

    def _compute(self) -> None:
        latent, alpha, prompt = self._read_inputs()
        top = float(st.max_activations(self.max_acts, [latent])[0])
        if top <= 0:
            raise WidgetInputError(f"Latent {latent} never fired on the texts its top activation was measured on, so "
                                   "steering with it adds nothing: pick a latent that fires.")
        vector = st.steering_vectors(self.sae, [latent], alpha, [top])[0]
        vectors = torch.stack([torch.zeros_like(vector), vector])
        plain, steered = st.generate(self.model, [prompt, prompt], max_new_tokens=self.tokens.value,
                                     hook=self.sae.cfg.hook_name, vectors=vectors)
        self.last = (plain, steered)
        self.result.value = self._render(latent, alpha, top, plain, steered)
        self.status.info(f"latent {latent}, alpha {alpha:g}: {len(steered.ids)} steered tokens "
                         f"(vector norm {float(vector.norm()):.3g}).")

    def _read_inputs(self) -> tuple[int, float, str]:
        try:
            latent = check_latent(self.latent.value, self.sae.cfg.d_sae)
        except ValueError as err:
            raise WidgetInputError(str(err)) from None
        text = self.alpha.value.strip()
        try:
            alpha = float(text)
        except ValueError:
            raise WidgetInputError(f"alpha must be a number such as 5 or -2, not {text!r}.") from None
        if not math.isfinite(alpha):
            raise WidgetInputError(f"alpha must be a finite number, not {text!r}: try a value between -20 and 20.")
        prompt = self.prompt.value
        if not prompt.strip():
            raise WidgetInputError("The prompt is empty: type some text for the model to continue.")
        return latent, alpha, prompt

    # ---- display ------------------------------------------------------------------------------------------------

    def _default_latent(self) -> int:
        if self.records is not None and (self.records.fire_count > 0).any():
            return int(self.records.latents[int(self.records.fire_count.argmax())])
        return 0

    def _render(self, latent: int, alpha: float, top: float, plain: st.Generation, steered: st.Generation) -> str:
        tokens = ""
        if self.records is not None:
            try:
                shown = ", ".join(repr(t) for t, _ in self.records.top_tokens(latent, 6))
                tokens = f" · fires most on {html.escape(shown)}" if shown else ""
            except ValueError:
                tokens = ""
        prompt = html.escape(plain.prompt)
        return (f'<div style="font-family:sans-serif;font-size:13px;margin:4px">'
                f"<b>Latent {latent}</b>, alpha {alpha:g} × top activation {top:.3g}{tokens}</div>"
                f'<div style="display:flex;flex-wrap:wrap">'
                f'<div style="{_BOX}"><b>unsteered</b>\n<span style="color:#666">{prompt}</span>'
                f"{html.escape(plain.text)}</div>"
                f'<div style="{_BOX};border-color:#e67e22"><b>steered (latent {latent}, alpha {alpha:g})</b>\n'
                f'<span style="color:#666">{prompt}</span>{html.escape(steered.text)}</div></div>')

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _whole_number(value: Any, name: str, wanted: str) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise WidgetInputError(f"{name} must be a whole number: type {wanted}, not {value!r}.") from None


def steering_playground(model, sae, max_acts, *, latent: int | None = None, alpha: float = 5.0,
                        prompt: str = st.NEUTRAL_PROMPT, max_new_tokens: int = 24) -> SteeringPlayground:
    """An interactive steering playground for `sae`'s latents on `model`.

    `max_acts` gives each latent's top activation (the unit of alpha): `LatentRecords` from
    `saelab.latents.latent_records` (which also names the tokens a latent fires on) or a tensor [d_sae].
    Display the returned object (last expression of a cell) to see it.
    """
    return SteeringPlayground(model, sae, max_acts, latent=latent, alpha=alpha, prompt=prompt,
                              max_new_tokens=max_new_tokens)


__all__ = ["SteeringPlayground", "steering_playground"]
