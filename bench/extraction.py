"""Benchmark: pooled activation extraction with `saelab.extract` against plain Hugging Face forwards.

Same texts (the first `--n` texts of `load_task("tweet-sentiment").train`, whose order is the task's seeded,
stratified split, seed 0), same weights, same layer, same pooling (mean over real tokens, BOS excluded):

  (a) saelab.extract(model, texts, f"blocks.{L}.hook_resid_post", pooling="mean", batch_size=32, cache=None):
      batches texts of similar length together and stops after block L.
  (b) the MOSAIC-style naive way: batches of 32 in the given order, tokenizer padding, the full model with
      output_hidden_states=True (all layers, plus logits over the 262k vocabulary), hidden_states[L + 1].
  (c) plain transformers truncated after block L: the same naive batches, but a forward hook on
      `model.layers[L]` raises a private exception carrying the block output, so nothing after L runs.
      This is about the best plain transformers code does without sorting by length.

(b) and (c) run on a freshly loaded, unwrapped transformers model of the same weights (default attention): the
honest stand-in for "plain transformers code". With `--hf bridge` they run on `model.original_model` instead,
the transformers model inside the TransformerLens bridge, which the bridge switches to eager attention and wraps
block by block, so it is slower and flatters (a).

The pooled vectors of (a), (b) and (c) must agree (max |diff| / row norm below 1e-3) or no RESULT is printed.

Each method runs in its own subprocess (`--only a|b|c`): load the model, warm up on one small batch, then record
the resident set size (VmRSS) as the baseline, reset the kernel's peak-RSS mark (/proc/self/clear_refs, which
also resets getrusage's ru_maxrss), run the method once, and read the peak (VmHWM). "Peak RSS increase" is peak
minus baseline: the extra memory the method needs on top of the loaded model. Timings use torch's default threads.

    .venv/bin/python bench/extraction.py                 # 512 tweets, layer 6, gemma-3-270m
    .venv/bin/python bench/extraction.py --n 64 --hf bridge
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

METHODS = {"a": "saelab.extract (sorted, stops at L)", "b": "HF full forward, output_hidden_states",
           "c": "HF truncated at L (hook raises)"}
TOLERANCE = 1e-3


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark measures memory on Linux only)")


class _Stop(Exception):
    """Raised by the forward hook on block L to end the forward there, carrying the block's output."""

    def __init__(self, output):
        super().__init__()
        self.output = output


def _raise_output(module, args, output):  # forward hook on block L
    raise _Stop(output[0] if isinstance(output, tuple) else output)


@torch.no_grad()
def naive_pooled(hf_model, tokenizer, texts, layer, batch_size, truncate, progress=True):
    """(b) / (c): batches in the given order, tokenizer padding, mean over the attention mask without BOS."""
    handle = hf_model.model.layers[layer].register_forward_hook(_raise_output) if truncate else None
    rows = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="truncated" if truncate else "full forward",
                          unit="batch", disable=not progress):
            enc = tokenizer(texts[start:start + batch_size], padding=True, return_tensors="pt")
            if truncate:
                try:
                    hf_model(**enc)
                    raise RuntimeError("the forward hook on the layer did not fire")
                except _Stop as stop:
                    hidden = stop.output
            else:
                hidden = hf_model(**enc, output_hidden_states=True).hidden_states[layer + 1]
            keep = (enc["attention_mask"].bool() & (enc["input_ids"] != tokenizer.bos_token_id)).unsqueeze(-1)
            rows.append((hidden * keep).sum(1) / keep.sum(1))
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(rows).float()


def _plain_hf(name: str):
    """The same weights as a fresh transformers model, not wrapped by the bridge."""
    from saelab.models import EMBEDDED_MODELS, load_embedded

    if name in EMBEDDED_MODELS:
        return load_embedded(EMBEDDED_MODELS[name])[:2]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(name)


def run_one(args) -> dict:
    """Child process: load, warm up, measure one method; the pooled vectors go to `args.out`."""
    import saelab

    texts = saelab.load_task("tweet-sentiment").train.texts[: args.n]
    if args.only == "a" or args.hf == "bridge":
        bridge = saelab.load_model(args.model)
        hf_model, tokenizer = bridge.original_model, bridge.tokenizer
    else:
        hf_model, tokenizer = _plain_hf(args.model)
    hook = f"blocks.{args.layer}.hook_resid_post"
    if args.only == "a":
        def method(batch, progress=True):
            return saelab.extract(bridge, batch, hook, pooling="mean", batch_size=args.batch_size, cache=None,
                                  progress=progress).tensor
    else:
        def method(batch, progress=True):
            return naive_pooled(hf_model, tokenizer, batch, args.layer, args.batch_size, args.only == "c", progress)
    n_tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])  # real tokens, BOS included

    print(f"[{args.only}] warm-up, then {len(texts)} texts: {METHODS[args.only]}", file=sys.stderr, flush=True)
    method(texts[:8], progress=False)
    gc.collect()
    baseline_kb = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
    started = time.perf_counter()
    vectors = method(texts)
    wall = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    if args.out:
        torch.save(vectors, args.out)
    return {"method": args.only, "n": len(texts), "n_tokens": n_tokens, "wall_s": wall,
            "peak_increase_mb": (peak_kb - baseline_kb) / 1024, "baseline_mb": baseline_kb / 1024}


def max_relative_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest |x - y| in a row, relative to that row's norm in x, over all rows."""
    return ((x - y).abs().amax(1) / x.norm(dim=1)).max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--n", type=int, default=512, help="first N texts of tweet-sentiment's train split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hf", choices=["bridge", "plain"], default="plain",
                        help="(b)/(c) on the bridge's original_model, or on a fresh unwrapped transformers model")
    parser.add_argument("--only", choices=sorted(METHODS), help="run one method in this process (used internally)")
    parser.add_argument("--out", help="where --only saves its pooled vectors")
    args = parser.parse_args()

    if args.only:
        print("WORKER " + json.dumps(run_one(args)), flush=True)
        return

    print(f"Extraction benchmark: {args.model}, layer {args.layer}, {args.n} tweets, batch size {args.batch_size}, "
          f"(b)/(c) on the {args.hf} HF model, torch threads {torch.get_num_threads()}")
    results, vectors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in METHODS:
            out = Path(tmp) / f"{key}.pt"
            cmd = [sys.executable, __file__, "--only", key, "--out", str(out), "--model", args.model,
                   "--layer", str(args.layer), "--n", str(args.n), "--batch-size", str(args.batch_size),
                   "--hf", args.hf]
            proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)  # bars go to stderr
            lines = [line for line in proc.stdout.splitlines() if line.startswith("WORKER ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"method ({key}) failed (exit code {proc.returncode}):\n{proc.stdout}")
            results[key] = json.loads(lines[-1][len("WORKER "):])
            vectors[key] = torch.load(out)
            r = results[key]
            print(f"({key}) {r['n'] / r['wall_s']:.1f} sentences/s, peak RSS +{r['peak_increase_mb']:.0f} MB")

    print("\nSame pooled vectors? (max |diff| / row norm, over all texts)")
    ok = True
    for other in "bc":
        diff = max_relative_diff(vectors["a"], vectors[other]) if vectors["a"].shape == vectors[other].shape else 1.0
        ok &= (same := diff < TOLERANCE)
        print(f"  (a) vs ({other}): {diff:.2e}  {'OK' if same else 'MISMATCH'}")
    print(f"\nMeasured {args.n} tweets, {results['a']['n_tokens']} real tokens (BOS included); "
          "peak RSS increase = VmHWM during the run minus VmRSS after loading and warm-up.\n")
    print("| method | sentences/s | tokens/s (real tokens) | peak RSS increase (MB) | wall s |")
    print("|---|---:|---:|---:|---:|")
    for key, r in results.items():
        print(f"| ({key}) {METHODS[key]} | {r['n'] / r['wall_s']:.1f} | {r['n_tokens'] / r['wall_s']:.0f} | "
              f"{r['peak_increase_mb']:.0f} | {r['wall_s']:.1f} |")
    if not ok:
        sys.exit("\nThe methods disagree on the pooled vectors: the timings compare different results. No RESULT.")
    speed = {k: r["n"] / r["wall_s"] for k, r in results.items()}
    print(f"\nRESULT extract_vs_full_forward={speed['a'] / speed['b']:.2f} "
          f"extract_vs_truncated={speed['a'] / speed['c']:.2f}")


if __name__ == "__main__":
    main()
