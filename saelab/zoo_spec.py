"""`SAESpec`: one zoo SAE described (where it reads, what it is, how long it trains), and the training budgets.

Budgets scale with width: every SAE sees at least `TOKENS_PER_LATENT` tokens per latent and never fewer than
`MIN_TOKENS` (2M tokens: 489 steps of 4,096 for a 4,096-latent SAE; 5.1M for 10,240 latents), so a width sweep
compares SAEs trained equally long per latent rather than wider SAEs trained less. The lr schedule (warm-up 5%,
linear decay over the last 20%) and the dead-latent window of AuxK (10% of the run) scale with the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from saelab.sae import SAEConfig
from saelab.train import TrainConfig

TOKENS_PER_LATENT = 500
MIN_TOKENS = 2_000_000
#: smoke runs: an eighth of the latents (4,096 -> 512; widths keep their order), 20 steps of 512 tokens
SMOKE_SHRINK, SMOKE_STEPS, SMOKE_BATCH = 8, 20, 512


def budget(d_sae: int) -> int:
    """Training tokens for an SAE of `d_sae` latents: max(MIN_TOKENS, TOKENS_PER_LATENT x d_sae)."""
    return max(MIN_TOKENS, TOKENS_PER_LATENT * d_sae)


@dataclass(frozen=True)
class SAESpec:
    """One SAE to get: where it reads (`hook`), what it is, and how long it trains.

    `n_tokens=None` trains for `budget(d_sae)` tokens. `options` go to `SAEConfig` (e.g. ``{"l1_coefficient": 0.3}``)
    and `train_options` to `TrainConfig` (e.g. ``{"decay": "cosine"}``); both are stored as sorted tuples so a spec
    can be a dict key. The trainer cycles over the corpus when the budget exceeds it.
    """

    hook: str
    architecture: str = "topk"
    d_sae: int = 4096
    k: int | None = 32
    n_tokens: int | None = None
    batch_size: int = 4096
    lr: float = 2e-3
    seed: int = 0
    normalize_activations: str = "expected_average_only_in"
    options: tuple[tuple[str, Any], ...] = ()
    train_options: tuple[tuple[str, Any], ...] = ()
    smoke: bool = False

    def __post_init__(self) -> None:
        for name in ("options", "train_options"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, tuple(sorted(value.items())))
        if self.architecture not in ("topk", "batchtopk"):
            object.__setattr__(self, "k", None)
        try:  # a bad k, architecture or option fails here, not after a long extraction
            self.sae_config(d_in=1)
            self.train_config()
        except (TypeError, ValueError) as err:
            raise ValueError(f"SAESpec for {self.hook!r}: {err}") from None

    @property
    def label(self) -> str:
        """A short readable name, e.g. ``topk k=32 d_sae=4096 @ blocks.6.hook_resid_post``."""
        extra = " ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                         for key, value in self.options)
        sparsity = f"k={self.k} " if self.k is not None else ""
        return f"{self.architecture} {sparsity}{extra + ' ' if extra else ''}d_sae={self.d_sae} @ {self.hook}"

    @property
    def tokens(self) -> int:
        """Training tokens: `n_tokens`, or the width's budget."""
        return self.n_tokens if self.n_tokens is not None else budget(self.d_sae)

    def sae_config(self, d_in: int) -> SAEConfig:
        return SAEConfig(d_in=d_in, d_sae=self.d_sae, architecture=self.architecture, k=self.k,
                         normalize_activations=self.normalize_activations, hook_name=self.hook,
                         **dict(self.options))

    def train_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(n_tokens=self.tokens, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           log_every=10, **{**dict(self.train_options), **overrides})

    def scaled_for_smoke(self) -> SAESpec:
        """The same SAE, shrunk for smoke runs (never a finding: `smoke=True` is recorded)."""
        d_sae = max(16, self.d_sae // SMOKE_SHRINK)
        k = None if self.k is None else min(self.k, d_sae)
        return dataclasses.replace(self, d_sae=d_sae, k=k, n_tokens=SMOKE_STEPS * SMOKE_BATCH,
                                   batch_size=SMOKE_BATCH, smoke=True)


__all__ = ["MIN_TOKENS", "TOKENS_PER_LATENT", "SAESpec", "budget"]
