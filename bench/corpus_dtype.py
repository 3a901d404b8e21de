"""Benchmark: the zoo corpus extracted by a bfloat16 copy of the model (`zoo.corpus_model`) against float32.

The first `--n` texts of the zoo corpus (`zoo.training_texts()`) on Gemma 3 270M, extracted twice with
`saelab.extract_to_cache` as `make zoo` does (every catalog hook, batch `zoo.EXTRACT_BATCH`, float16 storage):
once by the float32 model, once by its bfloat16 copy. The same TopK SAE at `--hook` (the zoo's recipe scaled to
`--tokens`, same seed, same batch order) is trained on each and scored by the same code on held-out tokens from
the float32 model (what the zoo's gates and the notebooks read). The same extraction on SmolLM2-135M
(`--second`, at its zoo hook) checks speed and agreement on a Llama-style model. Prints tokens/s, the per-token
cosine between the two extractions, both SAEs' held-out explained variance, and
`RESULT corpus_bf16_speedup=… second_model_speedup=… ev_delta=…` (ev_delta = EV(bfloat16 corpus) -
EV(float32 corpus); goal: |ev_delta| < 0.005).

    .venv/bin/python bench/corpus_dtype.py          # 2,000 texts, 400k tokens: about 8 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saelab import zoo, zoo_catalog  # noqa: E402
from saelab.activation_cache import ShardedTokens  # noqa: E402
from saelab.activations import extract, extract_to_cache  # noqa: E402
from saelab.metrics import core_metrics  # noqa: E402
from saelab.models import load_model, model_name  # noqa: E402
from saelab.train import train_sae  # noqa: E402
from saelab.zoo_spec import SAESpec  # noqa: E402


def both_extractions(model, texts: list[str], hook: str, tmp: Path) -> dict[str, dict]:
    """{"float32" | "bfloat16": {"folder", "tokens/s"}}: `texts` at every catalog hook of `model` (as `make zoo`
    extracts them), with the per-token cosine of the two extractions at `hook` printed."""
    rows = {}
    for dtype, runner in (("float32", model), ("bfloat16", zoo.corpus_model(model))):
        started = time.perf_counter()
        folder = extract_to_cache(runner, texts, zoo_catalog.catalog_hooks(model),
                                  cache=tmp / f"{model_name(model)}-{dtype}", storage_dtype=zoo.STORAGE_DTYPE,
                                  batch_size=zoo.EXTRACT_BATCH, progress=False, dataset="bench corpus dtype")
        seconds = time.perf_counter() - started
        source = ShardedTokens(folder, hook)
        rows[dtype] = {"folder": folder, "tokens/s": source.n_tokens / seconds}
        print(f"{model_name(model)} {dtype:8s} {source.n_tokens:,} tokens in {seconds:5.1f}s "
              f"({source.n_tokens / seconds:,.0f} tokens/s)", flush=True)
    exact, rounded = (torch.cat([c.float() for c in ShardedTokens(rows[d]["folder"], hook)]) for d in rows)
    cosine = torch.nn.functional.cosine_similarity(exact, rounded, dim=1)
    print(f"  per-token cosine, bfloat16 vs float32 forward: median {cosine.median():.5f}, min {cosine.min():.4f}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--hook", default="blocks.6.hook_resid_post")
    parser.add_argument("--tokens", type=int, default=400_000)
    parser.add_argument("--second", default=zoo_catalog.SECOND_MODEL)
    args = parser.parse_args()
    texts = zoo.training_texts(smoke=False)[: args.n]
    spec = SAESpec(args.hook, n_tokens=args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model()
        if zoo.corpus_forward_dtype(model) != "bfloat16":
            print("this machine extracts the corpus in float32 (no fast bfloat16): nothing to compare")
            return 0
        rows = both_extractions(model, texts, args.hook, Path(tmp))
        heldout = extract(model, zoo.heldout_texts(smoke=False), args.hook, "none", progress=False).tensor
        for dtype, row in rows.items():
            source = ShardedTokens(row["folder"], args.hook)
            sae = train_sae(source, spec.sae_config(source.d_in), spec.train_config(), progress=False)
            row["EV"] = core_metrics(sae, heldout, progress=False)["explained_variance"]
            print(f"  SAE on the {dtype} corpus: held-out EV {row['EV']:.4f}", flush=True)
        second = load_model(args.second)
        second_hook = f"blocks.{zoo_catalog.block_at(second, zoo_catalog.SECOND_MODEL_DEPTH)}.hook_resid_post"
        second_rows = both_extractions(second, texts, second_hook, Path(tmp))
    speedup = rows["bfloat16"]["tokens/s"] / rows["float32"]["tokens/s"]
    second_speedup = second_rows["bfloat16"]["tokens/s"] / second_rows["float32"]["tokens/s"]
    print(f"RESULT corpus_bf16_speedup={speedup:.2f} second_model_speedup={second_speedup:.2f} "
          f"ev_delta={rows['bfloat16']['EV'] - rows['float32']['EV']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
