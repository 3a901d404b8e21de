"""Benchmark: training TopK, ReLU and JumpReLU SAEs with saelab against SAELens' trainer, on the same activations.

Data: Gemma 3 270M `blocks.6.hook_resid_post` token activations (BOS left out) of the first `--n-texts` tweets of
`load_task("tweet-sentiment").train`, extracted once by `saelab.extract(..., pooling="none", cache=True)`; a
held-out set from the first `--n-eval` tweets of the test split, extracted the same way.

Three architectures, each trained by both trainers with the same recipe: d_in 640, d_sae 4096, batch 4096, `--steps`
steps, Adam with betas (0.9, 0.999), linear warm-up over 5% of the steps and linear decay to 0 over the last 20%,
fp32, seed 0, inputs scaled to an average norm of sqrt(d_in) (`normalize_activations="expected_average_only_in"`,
folded into the weights at the end: Gemma's residual stream has norms in the thousands):

  topk      k 32, lr 4e-4 (saelab's default for 4096 latents)
  relu      L1 coefficient 0.3 on sum_j z_j ||W_dec[j]|| (the same penalty in both), lr 2e-3 (the zoo's recipe)
  jumprelu  L0 coefficient 1.0 (step-function penalty, straight-through threshold gradient, bandwidth 0.05),
            initial threshold 0.5, lr 2e-3 (the zoo's recipe)

Both see the same batches in the same order (SAELens' data provider yields the rows of saelab's seeded
`BatchStream`) and, by default (`--saelens-init saelab`), start from the same point: SAELens' SAE gets saelab's
initial weights (unit-norm decoder rows, W_enc = W_dec^T, b_enc 0, JumpReLU thresholds 0.5), b_dec at the geometric
median and the input scale estimated on the same 16,384 rows saelab's `train_sae` uses (computed inside SAELens' timed
region; its own norm estimate, which would consume the first 4 batches, is skipped). Sparsity is matched by giving
both the same L1 / L0 coefficient on the same penalty; the table reports both held-out L0s. Otherwise each keeps its
defaults:

  saelab   `train_sae`: unit-norm decoder rows (gradient projected, rows renormalised), AuxK (1/32, topk only),
           sparse backward (TopK always; ReLU / JumpReLU once at most 20% of the (token, latent) pairs are active,
           before that a dense step without the input gradient), gradient norm clipping at 1. Each architecture runs
           twice: as the zoo trains it (the (token, latent) pairs chosen from a bfloat16 encoder product where
           `fast_selection_dtype` finds the CPU fast at it, values in float32) and with float32 selection
           (`<arch>_float32_selection_speed_vs_saelens`).
  SAELens  `SAETrainer` (6.54) with `TopKTrainingSAE` (rescale_acts_by_decoder_norm, AuxK coefficient 1 after 1000
           steps without firing, so never in a short run), `StandardTrainingSAE` or `JumpReLUTrainingSAE`; gradient
           norm clipping at 1; dense backward. SAELens' `use_sparse_activations` option is not used: its backward
           fails on CPU with torch 2.13 (NotImplementedError: aten::view on the SparseCPU backend).
           `--saelens-init default` keeps SAELens' own initialisation (b_dec 0, decoder rows of norm 0.1, its own
           norm estimate): tuned for long runs, it costs SAELens most of a short one on Gemma's residual stream
           (TopK held-out EV about -4.9 after 60 steps).

Each (architecture, trainer) runs in its own subprocess (`--only saelab|saelab-fp32|saelens --arch ...`).
Measured there:
  tokens/s      steps x batch / wall time of the whole training call (building the SAE and trainer, any
                initialisation, every step); "steady" excludes the first 3 steps. "tok/CPU-s" divides by the
                process's CPU time instead (all its threads): less sensitive to other jobs on a shared machine.
  peak memory   peak RSS (VmHWM) minus the RSS just before training; the peak mark is reset first
                (/proc/self/clear_refs), so this is the extra memory training needs.
Then the SAELens SAE is saved with `save_inference_model` and read back by `saelab.SAE.load` (checked against
SAELens' own forward pass), and both SAEs are scored by `saelab.metrics.core_metrics` on the held-out activations:
explained variance and L0 are measured by the same code. Timings use torch's default threads; on a shared machine
they are noisy.

    .venv/bin/python bench/training.py                           # 4000 tweets (~125k tokens), 60 steps, 3 archs
    .venv/bin/python bench/training.py --quick                   # 10 steps each: a smoke check of the harness
    .venv/bin/python bench/training.py --archs topk --steps 20 --n-texts 1000
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
D_SAE, BATCH, SEED = 4096, 4096, 0
#: per architecture: learning rate and the SAE options both trainers get
RECIPES: dict[str, dict] = {
    "topk": {"lr": 4e-4, "k": 32},
    "relu": {"lr": 2e-3, "l1_coefficient": 0.3},
    "jumprelu": {"lr": 2e-3, "l0_coefficient": 1.0, "jumprelu_init_threshold": 0.5, "jumprelu_bandwidth": 0.05},
}
ARCHS = tuple(RECIPES)
#: saelab as the zoo trains (pairs chosen in bfloat16 where the CPU is fast at it), saelab with float32 selection,
#: SAELens
TRAINERS = ("saelab", "saelab-fp32", "saelens")


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


def _saelens_sae(arch: str, d_in: int, init: str):
    """SAELens' training SAE for `arch` with the recipe's options."""
    import sae_lens

    recipe = {key: value for key, value in RECIPES[arch].items() if key != "lr"}
    common = {"d_in": d_in, "d_sae": D_SAE, "normalize_activations": "expected_average_only_in",
              "decoder_init_norm": 1.0 if init == "saelab" else 0.1}
    if arch == "topk":
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(**common, **recipe))
    if arch == "relu":
        return sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(**common, **recipe))
    return sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(**common, **recipe))


def run_one(which: str, arch: str, train_folder: str, eval_folder: str, steps: int, saelens_init: str) -> dict:
    """Train one SAE in this process; return its speed, memory and held-out metrics."""
    from saelab.activation_cache import ShardedTokens
    from saelab.activations import load_activations
    from saelab.metrics import core_metrics
    from saelab.sae import SAE, SAEConfig
    from saelab.train import TrainConfig, fast_selection_dtype, geometric_median, train_sae
    from saelab.train_data import BatchStream, derive_seed

    source = ShardedTokens(train_folder, HOOK)
    recipe = dict(RECIPES[arch])
    lr = recipe.pop("lr")
    cfg = SAEConfig(d_in=source.d_in, d_sae=D_SAE, architecture=arch, normalize_activations="expected_average_only_in",
                    **recipe)
    warmup, decay = max(1, steps // 20), int(0.2 * steps)
    selection = fast_selection_dtype() if which == "saelab" else "float32"
    tcfg = TrainConfig(n_steps=steps, batch_size=BATCH, lr=lr, warmup_steps=warmup, decay="linear",
                       decay_fraction=decay / steps, seed=SEED, selection_dtype=selection)
    stamps: list[float] = []
    if which == "saelens":
        from sae_lens.config import SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

        def provider():
            stream = BatchStream(source, BATCH, seed=SEED)  # the batches saelab's train_sae draws
            while True:
                yield stream.next().acts
    baseline_kb = _status_kb("VmRSS")
    _reset_peak()
    started, cpu_started = time.perf_counter(), time.process_time()
    if which.startswith("saelab"):
        sae = train_sae(source, cfg, tcfg, progress=False, callback=lambda *a: stamps.append(time.perf_counter()))
    else:
        torch.manual_seed(SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trained = _saelens_sae(arch, source.d_in, saelens_init)
            trainer = SAETrainer(SAETrainerConfig(
                total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=lr, lr_end=lr,
                lr_warm_up_steps=warmup, lr_decay_steps=decay, adam_beta1=0.9, adam_beta2=0.999,
                n_batches_for_norm_estimate=16384 // BATCH), trained, provider())
            original_step = trainer._train_step

            def timed_step(*args, **kwargs):
                out = original_step(*args, **kwargs)
                stamps.append(time.perf_counter())
                return out

            trainer._train_step = timed_step
            if saelens_init == "saelab":  # start where saelab's train_sae starts (see the module docstring)
                start = SAE(cfg, seed=SEED)  # saelab's initial weights
                sample = BatchStream(source, tcfg.init_samples, seed=derive_seed(SEED, 7)).take(
                    tcfg.init_samples, within_epoch=True).acts  # the rows train_sae initialises from
                scale = source.d_in ** 0.5 / float(sample.norm(dim=1).mean())
                trainer.activation_scaler.scaling_factor = scale
                with torch.no_grad():
                    for name in ("W_enc", "W_dec", "b_enc") + (("threshold",) if arch == "jumprelu" else ()):
                        getattr(trained, name).copy_(getattr(start, name))
                    trained.b_dec.copy_(geometric_median(sample * scale))
            trainer.fit()
    elapsed, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = (_status_kb("VmHWM") - baseline_kb) / 1024
    if which == "saelens":  # read back with saelab, so that both SAEs are scored by the same code
        import sae_lens

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
    return {"which": which, "arch": arch, "lr": lr, "selection": selection, "tokens_per_s": steps * BATCH / elapsed,
            "steady_tokens_per_s": steady, "seconds": elapsed, "cpu_seconds": cpu_seconds, "peak_mb": peak_mb,
            "explained_variance": metrics["explained_variance"], "l0": metrics["l0"],
            "n_eval_tokens": metrics["n_tokens"], "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps of 4096 tokens (default 60)")
    parser.add_argument("--quick", action="store_true", help="10 steps per SAE: checks the harness, not the speed")
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated subset of {','.join(ARCHS)}")
    parser.add_argument("--n-texts", type=int, default=4000, help="tweets whose tokens train both SAEs")
    parser.add_argument("--n-eval", type=int, default=500, help="held-out tweets for explained variance and L0")
    parser.add_argument("--saelens-init", choices=["saelab", "default"], default="saelab",
                        help="SAELens' initialisation: saelab's (default) or its own (b_dec 0, decoder norm 0.1)")
    parser.add_argument("--only", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--arch", choices=ARCHS, help=argparse.SUPPRESS)
    parser.add_argument("--folders", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = 10 if args.quick else args.steps
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if steps < 5:
        parser.error("--steps must be at least 5")
    if not archs or set(archs) - set(ARCHS):
        parser.error(f"--archs must name some of {', '.join(ARCHS)}, got {args.archs!r}")
    if args.only:
        print(json.dumps(run_one(args.only, args.arch, *args.folders, steps, args.saelens_init)))
        return
    folders = prepare(args.n_texts, args.n_eval)
    results: dict[tuple[str, str], dict] = {}
    for arch in archs:
        for which in TRAINERS:
            command = [sys.executable, __file__, "--only", which, "--arch", arch, "--folders", *folders,
                       "--steps", str(steps), "--saelens-init", args.saelens_init]
            print(f"training {arch} with {which} ({steps} steps x {BATCH} tokens)...", file=sys.stderr, flush=True)
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results[arch, which] = json.loads(done.stdout.strip().splitlines()[-1])
    first = next(iter(results.values()))
    print(f"\nSAEs d_in 640 -> d_sae {D_SAE}, batch {BATCH}, {steps} steps, SAELens init {args.saelens_init}, "
          f"{first['threads']} torch threads; held-out: {first['n_eval_tokens']:,} tokens")
    print(f"{'architecture':<13}{'trainer':<22}{'lr':>8}{'tokens/s':>10}{'steady tok/s':>14}{'seconds':>9}"
          f"{'tok/CPU-s':>11}{'peak MB':>9}{'EV':>8}{'L0':>8}")
    for (arch, which), r in results.items():
        name = "SAELens" if which == "saelens" else f"saelab ({r['selection']} sel.)"
        print(f"{arch:<13}{name:<22}{r['lr']:>8.0e}{r['tokens_per_s']:>10,.0f}{r['steady_tokens_per_s']:>14,.0f}"
              f"{r['seconds']:>9.1f}{steps * BATCH / r['cpu_seconds']:>11,.0f}{r['peak_mb']:>9,.0f}"
              f"{r['explained_variance']:>8.3f}{r['l0']:>8.1f}")
    fields = []
    for arch in archs:
        ours, theirs = results[arch, "saelab"], results[arch, "saelens"]
        prefix = "train" if arch == "topk" else arch
        fields.append(f"{prefix}_speed_vs_saelens={ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}")
        fields.append(f"{'' if arch == 'topk' else arch + '_'}ev_delta="
                      f"{ours['explained_variance'] - theirs['explained_variance']:.3f}")
    for arch in archs:
        ours, theirs = results[arch, "saelab-fp32"], results[arch, "saelens"]
        fields.append(f"{arch}_float32_selection_speed_vs_saelens="
                      f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}")
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
