"""Benchmark: training a TopK SAE with saelab against SAELens' trainer, on the same cached activations.

Data: Gemma 3 270M `blocks.6.hook_resid_post` token activations (BOS left out) of the first `--n-texts` tweets of
`load_task("tweet-sentiment").train`, extracted once by `saelab.extract(..., pooling="none", cache=True)`; a
held-out set from the first `--n-eval` tweets of the test split, extracted the same way.

Both trainers get the same recipe: TopK, d_in 640, d_sae 4096, k 32, batch 4096, `--steps` steps, Adam with lr
4e-4 (saelab's default for 4096 latents), betas (0.9, 0.999), linear warm-up over 5% of the steps and linear decay
to 0 over the last 20%, fp32, seed 0, inputs scaled to an average norm of sqrt(d_in) estimated on 16,384 rows
(`normalize_activations="expected_average_only_in"`, folded into the weights at the end: Gemma's residual stream
has norms in the thousands); and the same batches in the same order (SAELens' data provider yields the rows of
saelab's seeded `BatchStream`; its norm estimate reads the first 4 of them). Otherwise each keeps its defaults:

  saelab   `train_sae`: geometric-median b_dec, unit-norm decoder rows, AuxK (1/32), sparse TopK backward.
  SAELens  `SAETrainer` + `TopKTrainingSAE` (6.54): rescale_acts_by_decoder_norm, AuxK (coefficient 1), dense
           backward. Its own initialisation (b_dec zero, decoder rows of norm 0.1) is tuned for long runs and
           costs it most of a short one on Gemma's residual stream (a large shared offset), so by default it
           starts as saelab does: decoder rows of norm 1 (`decoder_init_norm=1.0`, W_enc = W_dec^T) and b_dec at
           the geometric median of 16,384 scaled rows (computed inside its timed region).
           `--saelens-init default` keeps SAELens' own (held-out EV about -4.9 after 60 steps here).
           SAELens' `use_sparse_activations` option is not used: its backward fails on CPU with torch 2.13
           (NotImplementedError: aten::view on the SparseCPU backend).

Each trainer runs in its own subprocess (`--only saelab|saelens`). Measured there:
  tokens/s      steps x batch / wall time of the whole training call (building the SAE and trainer, any
                initialisation, every step); "steady" excludes the first 3 steps.
  peak memory   peak RSS (VmHWM) minus the RSS just before training; the peak mark is reset first
                (/proc/self/clear_refs), so this is the extra memory training needs.
Then the SAELens SAE is saved with `save_inference_model` and read back by `saelab.SAE.load` (checked against
SAELens' own forward pass), and both SAEs are scored by `saelab.metrics.core_metrics` on the held-out activations:
explained variance and L0 are measured by the same code. Timings use torch's default threads; on a shared machine
they are noisy.

    .venv/bin/python bench/training.py                  # 4000 tweets (~125k tokens), 60 steps
    .venv/bin/python bench/training.py --steps 20 --n-texts 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HOOK = "blocks.6.hook_resid_post"
D_SAE, K, BATCH, LR, SEED = 4096, 32, 4096, 4e-4, 0


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark measures memory on Linux only)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def prepare(n_texts: int, n_eval: int) -> tuple[str, str]:
    """Extract (or reuse from saelab's cache) the train and held-out token activations; return their folders."""
    import saelab

    task = saelab.load_task("tweet-sentiment")
    model = saelab.load_model()
    folders = []
    for texts, name in ((task.train.texts[:n_texts], "train"), (task.test.texts[:n_eval], "held-out")):
        acts = saelab.extract(model, texts, HOOK, pooling="none", cache=True, dataset=f"tweet-sentiment-{name}")
        print(f"{name}: {len(texts)} tweets, {acts.meta['n_tokens'] - len(texts):,} tokens, cache {acts.folder}",
              file=sys.stderr)
        folders.append(str(acts.folder))
    return folders[0], folders[1]


def run_one(which: str, train_folder: str, eval_folder: str, steps: int, saelens_init: str) -> dict:
    """Train one SAE in this process; return its speed, memory and held-out metrics."""
    from saelab.activation_cache import ShardedTokens
    from saelab.activations import load_activations
    from saelab.metrics import core_metrics
    from saelab.sae import SAE, SAEConfig
    from saelab.train import TrainConfig, geometric_median, train_sae
    from saelab.train_data import BatchStream

    source = ShardedTokens(train_folder, HOOK)
    warmup, decay = max(1, steps // 20), int(0.2 * steps)
    stamps: list[float] = []
    if which == "saelens":
        import sae_lens
        from sae_lens.config import SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

        def provider():
            stream = BatchStream(source, BATCH, seed=SEED)  # the batches saelab's train_sae draws
            while True:
                yield stream.next().acts
    baseline_kb = _status_kb("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    if which == "saelab":
        cfg = SAEConfig(d_in=source.d_in, d_sae=D_SAE, architecture="topk", k=K,
                        normalize_activations="expected_average_only_in")
        tcfg = TrainConfig(n_steps=steps, batch_size=BATCH, lr=LR, warmup_steps=warmup, decay="linear",
                           decay_fraction=decay / steps, seed=SEED)
        sae = train_sae(source, cfg, tcfg, progress=False, callback=lambda *a: stamps.append(time.perf_counter()))
    else:
        torch.manual_seed(SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trained = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
                d_in=source.d_in, d_sae=D_SAE, k=K,
                normalize_activations="expected_average_only_in",
                decoder_init_norm=1.0 if saelens_init == "saelab" else 0.1))
            trainer = SAETrainer(SAETrainerConfig(
                total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=LR, lr_end=LR,
                lr_warm_up_steps=warmup, lr_decay_steps=decay, adam_beta1=0.9, adam_beta2=0.999,
                n_batches_for_norm_estimate=16384 // BATCH), trained, provider())
            original_step = trainer._train_step

            def timed_step(*args, **kwargs):
                out = original_step(*args, **kwargs)
                stamps.append(time.perf_counter())
                return out

            trainer._train_step = timed_step
            if saelens_init == "saelab":  # b_dec as saelab's train_sae sets it, on the scaled rows
                sample = BatchStream(source, 16384, seed=SEED + 1).take(16384).acts
                scale = source.d_in ** 0.5 / float(sample.norm(dim=1).mean())
                with torch.no_grad():
                    trained.b_dec.copy_(geometric_median(sample * scale))
            trainer.fit()
    elapsed = time.perf_counter() - started
    peak_mb = (_status_kb("VmHWM") - baseline_kb) / 1024
    if which == "saelens":  # read back with saelab, so that both SAEs are scored by the same code
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trained.save_inference_model(tmp)
            sae = SAE.load(tmp)
            theirs = sae_lens.SAE.load_from_disk(tmp, device="cpu")
        probe = source.chunk(0)[:256]
        with torch.no_grad():
            gap = float(((theirs(probe) - sae(probe)).norm(dim=1) / probe.norm(dim=1)).max())
        assert gap < 1e-4, f"the SAELens SAE read back by saelab differs from SAELens' own (relative gap {gap:.2g})"
    held_out = load_activations(eval_folder).tensor
    metrics = core_metrics(sae, held_out, progress=False)
    steady = (len(stamps) - 3) * BATCH / (stamps[-1] - stamps[2]) if len(stamps) > 4 else float("nan")
    return {"which": which, "tokens_per_s": steps * BATCH / elapsed, "steady_tokens_per_s": steady,
            "seconds": elapsed, "peak_mb": peak_mb, "explained_variance": metrics["explained_variance"],
            "l0": metrics["l0"], "n_eval_tokens": metrics["n_tokens"], "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps of 4096 tokens (default 60)")
    parser.add_argument("--n-texts", type=int, default=4000, help="tweets whose tokens train both SAEs")
    parser.add_argument("--n-eval", type=int, default=500, help="held-out tweets for explained variance and L0")
    parser.add_argument("--saelens-init", choices=["saelab", "default"], default="saelab",
                        help="SAELens' initialisation: saelab's (default) or its own (b_dec 0, decoder norm 0.1)")
    parser.add_argument("--only", choices=["saelab", "saelens"], help=argparse.SUPPRESS)
    parser.add_argument("--folders", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 5:
        parser.error("--steps must be at least 5")
    if args.only:
        print(json.dumps(run_one(args.only, *args.folders, args.steps, args.saelens_init)))
        return
    folders = prepare(args.n_texts, args.n_eval)
    results = {}
    for which in ("saelab", "saelens"):
        command = [sys.executable, __file__, "--only", which, "--folders", *folders, "--steps", str(args.steps)]
        command += ["--saelens-init", args.saelens_init]
        print(f"training with {which} ({args.steps} steps x {BATCH} tokens)...", file=sys.stderr, flush=True)
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[which] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, theirs = results["saelab"], results["saelens"]
    print(f"\nTopK SAE, d_in 640 -> d_sae {D_SAE}, k {K}, batch {BATCH}, {args.steps} steps, lr {LR}, SAELens init "
          f"{args.saelens_init}, "
          f"{ours['threads']} torch threads; held-out: {ours['n_eval_tokens']:,} tokens")
    print(f"{'trainer':<10}{'tokens/s':>10}{'steady tok/s':>14}{'seconds':>9}{'peak MB':>9}{'EV':>8}{'L0':>7}")
    for name, r in (("saelab", ours), ("SAELens", theirs)):
        print(f"{name:<10}{r['tokens_per_s']:>10,.0f}{r['steady_tokens_per_s']:>14,.0f}{r['seconds']:>9.1f}"
              f"{r['peak_mb']:>9,.0f}{r['explained_variance']:>8.3f}{r['l0']:>7.1f}")
    speed = ours["tokens_per_s"] / theirs["tokens_per_s"]
    print(f"RESULT train_speed_vs_saelens={speed:.2f} "
          f"ev_delta={ours['explained_variance'] - theirs['explained_variance']:.3f}")


if __name__ == "__main__":
    main()
