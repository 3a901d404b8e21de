"""Benchmark: token activations stored as float16 (the zoo's choice) against float32, side by side.

The first `--n` texts of the zoo corpus (`zoo.training_texts()`), Gemma 3 270M, `--hook`: extracted twice with
`saelab.extract_to_cache` (storage_dtype float32 and float16), then the same TopK SAE (4,096 latents, k 32, the
zoo's recipe scaled to `--tokens`, same seed, same batch order) is trained on each and scored by the same code on
held-out tokens kept in float32. Prints the disk footprint, the time to stream every shard once, both SAEs'
held-out explained variance, and `RESULT storage_disk_ratio=… read_speed_ratio=… ev_delta=…` (float16 / float32;
ev_delta = EV(float16) - EV(float32); goal: disk ratio about 0.5, |ev_delta| < 0.005).

    .venv/bin/python bench/storage.py              # 6,000 texts, 400k tokens: about 6 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saelab import zoo  # noqa: E402
from saelab.activation_cache import ShardedTokens  # noqa: E402
from saelab.activations import extract, extract_to_cache  # noqa: E402
from saelab.metrics import core_metrics  # noqa: E402
from saelab.models import load_model  # noqa: E402
from saelab.train import train_sae  # noqa: E402
from saelab.zoo_spec import SAESpec  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--hook", default="blocks.6.hook_resid_post")
    parser.add_argument("--tokens", type=int, default=400_000)
    args = parser.parse_args()
    model = load_model()
    texts = zoo.training_texts(smoke=False)[: args.n]
    heldout = extract(model, zoo.heldout_texts(smoke=False), args.hook, "none", progress=False).tensor
    spec = SAESpec(args.hook, n_tokens=args.tokens)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            folder = extract_to_cache(model, texts, args.hook, cache=Path(tmp) / dtype, storage_dtype=dtype,
                                      dataset="bench storage")
            source = ShardedTokens(folder, args.hook)
            started = time.perf_counter()
            for i in range(len(source)):
                float(source.chunk(i).float().sum())  # forces the read (a float32 shard would stay mapped)
            read_s = time.perf_counter() - started
            sae = train_sae(source, spec.sae_config(source.d_in), spec.train_config(), progress=False)
            ev = core_metrics(sae, heldout, progress=False)["explained_variance"]
            size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
            rows[dtype] = {"MB": size / 2**20, "read s": read_s, "EV": ev}
            print(f"{dtype:8s} {source.n_tokens:,} tokens  {size / 2**20:8.1f} MB  read {read_s:5.2f}s  "
                  f"held-out EV {ev:.4f}", flush=True)
    half, full = rows["float16"], rows["float32"]
    print(f"RESULT storage_disk_ratio={half['MB'] / full['MB']:.3f} read_speed_ratio="
          f"{full['read s'] / half['read s']:.2f} ev_delta={half['EV'] - full['EV']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
