"""Benchmark: batched generation throughput with and without an active steering hook, in one run.

Both arms call `saelab.steering.generate` on the same prompts, greedy, in batches of `--batch-size`, with
`min_new_tokens = max_new_tokens` so that every row generates exactly `--tokens` tokens whatever it says:

  plain    no hook
  steered  a steering hook on blocks.{L}.hook_resid_post adding one vector per prompt, at every position (prompt
           and generated tokens). The vectors are 10 x the top activation x the decoder row of `--batch-size`
           random live latents of a TopK SAE from `saelab.get_sae` (d_sae 4096, k 32; trained once and cached),
           so the intervention is the one the steering notebook evaluates. Both run on the plain Hugging Face
           twin of the bridge (`saelab.hf_twin`), as `generate` does for residual-stream hooks.
  bridge   `steered` through the TransformerLens bridge: a no-op observer on blocks.0.hook_resid_pre makes
           `generate` take the bridge's route, as it would before saelab.hf_twin (the peer of the twin).
  fast     `steered` on the twin in `hf_twin.fast_dtype` (bfloat16 where this machine multiplies it fast; the
           arm is skipped where that is the model's own dtype), as notebook 06 generates.

The prompts are the first `--n` tweets of `load_task("tweet-sentiment").test` (held-out texts), cut to their first
12 words. The arms alternate (plain, steered, plain, ...) `--repeats` times after one warm-up batch each, and each
arm's tokens/s is total generated tokens / total wall time over its repeats, so slow phases of a shared machine
hit every arm alike. The ratio steered/plain is the cost of steering (goal: at least 0.9); bridge/steered and
fast/bridge are what the twin and bfloat16 gain. Timings use torch's default threads.

    .venv/bin/python bench/steering.py                         # 32 prompts x 32 tokens, 3 repeats per arm
    .venv/bin/python bench/steering.py --n 8 --tokens 8 --repeats 1 --sae random   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch


def _prompts(n: int) -> list[str]:
    import saelab

    texts = saelab.load_task("tweet-sentiment").test.texts[:n]
    return [" ".join(t.split()[:12]) for t in texts]


def _vectors(model, hook: str, n: int, which: str, seed: int) -> torch.Tensor:
    """n steering vectors: real SAE latents (alpha 10 x top activation x decoder row), or random directions of
    the same typical norm (`--sae random`, no training needed)."""
    import saelab
    from saelab import steering

    generator = torch.Generator().manual_seed(seed)
    if which == "random":
        _, cache = model.run_with_cache("From my experience, the weather", names_filter=lambda name: name == hook)
        norm = float(cache[hook][0, 1:].norm(dim=-1).mean())
        directions = torch.randn(n, model.cfg.d_model, generator=generator)
        return 10 * norm * directions / directions.norm(dim=-1, keepdim=True)
    sae = saelab.get_sae(model, hook, "topk", k=32, d_sae=4096, progress=False)
    records = saelab.latent_records(model, sae, _prompts(64), progress=False)
    alive = records.latents[records.fire_count > 0]
    chosen = alive[torch.randperm(len(alive), generator=generator)[:n]].tolist()
    chosen = (chosen * n)[:n]
    return steering.steering_vectors(sae, chosen, steering.DEFAULT_ALPHA, records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--n", type=int, default=32, help="prompts (the first N held-out tweets)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per arm")
    parser.add_argument("--sae", choices=["zoo", "random"], default="zoo",
                        help="steering vectors from a zoo TopK SAE (default) or random directions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import saelab
    from saelab import hf_twin, steering

    torch.set_grad_enabled(False)
    model = saelab.load_model(args.model)
    hook = f"blocks.{args.layer}.hook_resid_post"
    prompts = _prompts(args.n)
    vectors = _vectors(model, hook, len(prompts), args.sae, args.seed)
    steered = {"hook": hook, "vectors": vectors}
    arms = {"plain": {}, "steered": steered, "bridge": steered}
    fast = hf_twin.fast_dtype(model)
    if fast is not None:
        arms["fast"] = {**steered, "forward_dtype": fast}

    def observe(activation, hook):
        return None

    def run(arm: str) -> tuple[float, int, list]:
        route = model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", observe)]) if arm == "bridge" \
            else contextlib.nullcontext()
        started = time.perf_counter()
        with route:
            out = steering.generate(model, prompts, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                    batch_size=args.batch_size, **arms[arm])
        return time.perf_counter() - started, sum(len(g.ids) for g in out), out

    for arm in arms:  # warm-up: one small batch per arm (builds the twins)
        steering.generate(model, prompts[:2], max_new_tokens=2,
                          **{k: (v[:2] if k == "vectors" else v) for k, v in arms[arm].items()})
    seconds = {arm: 0.0 for arm in arms}
    tokens = {arm: 0 for arm in arms}
    outputs = {}
    for repeat in range(args.repeats):
        for arm in arms:
            dt, n, outputs[arm] = run(arm)
            seconds[arm] += dt
            tokens[arm] += n
            print(f"repeat {repeat + 1} {arm:<8} {n} tokens in {dt:6.2f}s = {n / dt:6.1f} tokens/s", flush=True)
    changed = sum(p.ids != s.ids for p, s in zip(outputs["plain"], outputs["steered"]))
    print(f"\n{args.model}, {hook}, {len(prompts)} prompts x {args.tokens} tokens, batch {args.batch_size}, "
          f"{args.repeats} repeats per arm, torch threads {torch.get_num_threads()}")
    print(f"steering changed {changed} of {len(prompts)} continuations "
          f"(mean vector norm {float(vectors.norm(dim=-1).mean()):.1f})")
    speed = {arm: tokens[arm] / seconds[arm] for arm in arms}
    for arm in arms:
        print(f"{arm:<8} {speed[arm]:7.1f} tokens/s")
    if changed == 0:
        raise SystemExit("The steering vectors changed no continuation: the hook did not act. No RESULT.")
    same = sum(a.ids == b.ids for a, b in zip(outputs["steered"], outputs["bridge"]))
    print(f"the twin and the bridge generated the same tokens for {same} of {len(prompts)} prompts")
    if "fast" in arms:
        same = sum(a.ids == b.ids for a, b in zip(outputs["steered"], outputs["fast"]))
        own = str(next(model.parameters()).dtype).removeprefix("torch.")
        print(f"{fast} and {own} generated the same tokens for {same} of {len(prompts)} prompts")
    fast_ratio = f" fast_vs_bridge={speed['fast'] / speed['bridge']:.3f}" if "fast" in arms else ""
    print(f"\nRESULT steered_vs_plain={speed['steered'] / speed['plain']:.3f} "
          f"twin_vs_bridge={speed['steered'] / speed['bridge']:.3f}{fast_ratio}")


if __name__ == "__main__":
    main()
