"""Where do the zoo's SAEs plateau? Held-out explained variance and CE loss score against training tokens.

Trains a TopK (k=32) and a ReLU (L1 0.3) SAE of 4,096 latents at Gemma 3 270M's blocks.6.hook_resid_post on the
zoo corpus for `--tokens` (default 4M, twice the zoo's budget) with the zoo's recipe, and scores a snapshot on
held-out text every `--every` steps (the input scale folded in, as at the end of training). The snapshots before
the run's learning-rate decay sit below what a run ending there reaches, so the zoo's own SAEs of the same recipes
(2.05M tokens, decayed at their end) are drawn beside them as stars. Writes
`docs/plateau.csv` and `docs/plateau.png`; docs/design.md discusses the result.

    .venv/bin/python scripts/plateau.py            # 33 min on 2 cores (2026-12-03)
    .venv/bin/python scripts/plateau.py --replot   # redraw the figure from docs/plateau.csv
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from saelab.io import atomic_path  # noqa: E402
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


def plot(frame: pd.DataFrame, finished: dict, hook: str, budget: int, path: Path) -> None:
    """Held-out EV, CE loss score and L0 against tokens, the zoo's finished SAEs as stars at their budget."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    keys = {"explained_variance": "held-out explained variance", "ce_loss_score": "CE loss score", "l0": "L0"}
    for arch, rows in frame.groupby("architecture"):
        for ax, key in zip(axes, keys):
            line, = ax.plot(rows.tokens / 1e6, rows[key], "o-", ms=3,
                            label=f"{arch}, a {rows.tokens.max() / 1e6:.1f}M-token run")
            ax.plot(budget / 1e6, finished[arch][key], "*", ms=12, color=line.get_color(),
                    label=f"{arch}, the zoo's SAE (its schedule ends at the budget)")
    for ax, title in zip(axes, keys.values()):
        ax.axvline(budget / 1e6, color="grey", ls=":", label=f"the zoo's budget ({budget / 1e6:.2f}M tokens)")
        ax.set(xlabel="training tokens (millions)", title=title)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Gemma 3 270M {hook}, 4,096 latents: held-out scores while training", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4_096_000)
    parser.add_argument("--every", type=int, default=50, help="steps between held-out snapshots")
    parser.add_argument("--replot", action="store_true", help="redraw docs/plateau.png from docs/plateau.csv")
    args = parser.parse_args()
    out = ROOT / "docs"
    model = load_model()
    hook = zoo_catalog.resid_post(zoo_catalog.block_at(model, zoo_catalog.SWEEP_DEPTH))
    sweep = zoo_catalog.notebook_specs(model, "06")  # the zoo's recipes at this hook
    zoo_specs = [sweep["topk k=32"], sweep["relu l1=0.3"]]
    assert all(spec.hook == hook for spec in zoo_specs)
    if args.replot:
        frame = pd.read_csv(out / "plateau.csv")
    else:
        heldout = zoo.Heldout(model, zoo_catalog.catalog_hooks(model), smoke=False, progress=True)
        specs = [dataclasses.replace(spec, n_tokens=args.tokens) for spec in zoo_specs]
        frame = pd.DataFrame([row for spec in specs for row in run(model, heldout, spec, args.every)])
        with atomic_path(out / "plateau.csv") as tmp:
            frame.to_csv(tmp, index=False)
    # the zoo's own SAEs of the same recipes, trained on the zoo budget with the schedule decaying at its end
    finished = {spec.architecture: sae.cfg.metadata["zoo_quality"]
                for spec, sae in zoo.get_saes(model, zoo_specs).items()}
    plot(frame, finished, hook, zoo_specs[0].tokens, out / "plateau.png")
    print(frame.to_string())
    print("the zoo's SAEs:", {arch: {k: round(q[k], 4) for k in ("explained_variance", "ce_loss_score", "l0")}
                               for arch, q in finished.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
