"""Where do the zoo's SAEs plateau? Held-out explained variance and CE loss score against training tokens.

Trains a TopK (k=32) and a ReLU (L1 0.3) SAE of 4,096 latents at Gemma 3 270M's blocks.6.hook_resid_post on the
zoo corpus for `--tokens` (default 4M, twice the zoo's budget) with the zoo's recipe, and scores a snapshot on
held-out text every `--every` steps (the input scale folded in, as at the end of training). Writes
`docs/plateau.csv` and `docs/plateau.png`; docs/design.md discusses the result.

    .venv/bin/python scripts/plateau.py            # about 30 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from saelab import zoo, zoo_catalog  # noqa: E402
from saelab.activation_cache import ShardedTokens  # noqa: E402
from saelab.models import load_model  # noqa: E402
from saelab.train import train_sae  # noqa: E402
from saelab.zoo_spec import SAESpec  # noqa: E402


def snapshot_scores(model, heldout, sae, scale: float) -> dict[str, float]:
    """The held-out scores of the SAE as it is now, in raw activation units."""
    frozen = copy.deepcopy(sae).eval()
    with torch.no_grad():
        if frozen.cfg.normalize_activations == "expected_average_only_in":
            frozen.fold_activation_norm_scaling_factor(scale)
    return heldout.quality(model, frozen)


def run(model, heldout, spec: SAESpec, every: int) -> list[dict]:
    source = ShardedTokens(zoo.corpus_folder(model), spec.hook)
    rows = []

    def score(step: int, sae, metrics: dict) -> None:
        if step % every == 0 or step == spec.train_config().total_steps:
            rows.append({"architecture": spec.architecture, "tokens": step * spec.batch_size,
                         **snapshot_scores(model, heldout, sae, metrics["input_scale"])})
            print(rows[-1], flush=True)

    train_sae(source, spec.sae_config(source.d_in), spec.train_config(), callback=score, progress=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4_096_000)
    parser.add_argument("--every", type=int, default=50, help="steps between held-out snapshots")
    args = parser.parse_args()
    model = load_model()
    hook = zoo_catalog.resid_post(zoo_catalog.block_at(model, zoo_catalog.SWEEP_DEPTH))
    heldout = zoo.Heldout(model, zoo_catalog.catalog_hooks(model), smoke=False, progress=True)
    specs = [SAESpec(hook, "topk", k=32, n_tokens=args.tokens),
             SAESpec(hook, "relu", n_tokens=args.tokens, options={"l1_coefficient": 0.3})]
    frame = pd.DataFrame([row for spec in specs for row in run(model, heldout, spec, args.every)])
    out = ROOT / "docs"
    frame.to_csv(out / "plateau.csv", index=False)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for arch, rows in frame.groupby("architecture"):
        for ax, key in zip(axes, ("explained_variance", "ce_loss_score")):
            ax.plot(rows.tokens / 1e6, rows[key], "o-", ms=3, label=arch)
    for ax, key in zip(axes, ("held-out explained variance", "CE loss score")):
        ax.axvline(zoo.budget(4096) / 1e6, color="grey", ls=":", label="zoo budget (2.05M)")
        ax.set(xlabel="training tokens (millions)", ylabel=key, title=f"{key} while training, {hook}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plateau.png", dpi=120)
    print(frame.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
