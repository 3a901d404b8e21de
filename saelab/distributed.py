"""SAE training on several processes (GPUs or hosts) through torch.distributed, launched by torchrun.

Two modes, as sparsify has them:

* data parallel (`train_ddp`): every rank trains the same SAE on its rows of every batch and the gradients are
  averaged over ranks before each step. Every rank reads the same global batch (`BatchStream`, a function of the
  seed and the step) and keeps its 1/N slice, so the run sees exactly the batches of a single-process run.
* one SAE per rank (`train_zoo`): the zoo's SAEs are dealt round-robin to the ranks, each trains its own with
  `zoo.get_saes` (checkpointed as always), and every rank returns them all.

    torchrun --nproc_per_node 8 -m saelab.distributed train --store acts/ --hook blocks.6.hook_resid_post \\
        --d-sae 16384 --k 32 --tokens 50_000_000 --out sae/

Checkpoints are per rank (`<checkpoint_dir>/rank_<r>`); on resume the ranks agree on the newest step all of them
have, so a run killed at any moment continues in step. Without torchrun (no process group) everything here is the
single-process code path: rank 0 of 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from saelab import zoo, zoo_catalog
from saelab.activation_cache import MANIFEST, ShardedTokens
from saelab.activation_store import FORMAT, StoreTokens
from saelab.checkpoints import find_checkpoints, read_checkpoint
from saelab.io import read_json
from saelab.models import load_model
from saelab.process_group import active, barrier, close, init, rank, world_size
from saelab.sae import SAEConfig
from saelab.train import TrainConfig, train_sae

# ------------------------------------------------------------------------------------------------------------------
# Data parallel training
# ------------------------------------------------------------------------------------------------------------------


class GradSync:
    """What `train_sae(..., sync=)` calls so that N ranks train one SAE as one process would on the whole batch.

    Not torch's DistributedDataParallel: its reducer hooks into the wrapped module's forward (`prepare_for_backward`)
    and expects every parameter it tracks to receive its gradient in each backward. The trainer's fast path never
    calls the module's forward (`train_sparse.train_forward` runs custom autograd functions on the weights, the
    sparse TopK backward) and some parameters get no gradient in some steps (JumpReLU's threshold when no token is
    near it), so DDP would fail or need `find_unused_parameters`, which walks the graph from the forward's outputs.
    One all-reduce of all gradients flattened into one buffer after the backward is what DDP's bucketing does at
    the end; the overlap of communication with the backward that DDP adds matters little for an SAE, whose
    backward is two sparse products.

    Each rank's loss is a mean over its batch_size / N rows, so the mean of the ranks' gradients is the gradient of
    the loss over the whole batch: TopK and JumpReLU match a single-process run up to float summation order (tested;
    ReLU by the same argument).
    BatchTopK picks its top k x rows per rank (not over the whole batch), and AuxK normalises by each rank's
    residual variance: those two match only approximately.
    """

    def __init__(self, group: Any = None):
        self.group = group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)

    def local(self, batch):
        """This rank's contiguous slice of a global batch (`saelab.train_data.Batch`)."""
        n = len(batch) // self.size
        rows = slice(self.rank * n, (self.rank + 1) * n)
        return type(batch)(batch.acts[rows], {k: v[rows] for k, v in batch.side.items()})

    @torch.no_grad()
    def start(self, sae: torch.nn.Module) -> None:
        """Every rank from rank 0's parameters and buffers (as DDP does when it wraps a module)."""
        for tensor in [*sae.parameters(), *sae.buffers()]:
            dist.broadcast(tensor.data, src=0, group=self.group)

    @torch.no_grad()
    def grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients over ranks in one all-reduce. A parameter keeps no gradient (Adam skips it) only
        if it has none on every rank, as in a single process that sees the whole batch."""
        ref = params[0]
        has = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        flat = torch.cat([has] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                  for p in params])
        dist.all_reduce(flat, group=self.group)
        offset = len(params)
        for i, p in enumerate(params):
            n = p.numel()
            p.grad = None if flat[i] == 0 else flat[offset: offset + n].view_as(p).div(self.size)
            offset += n

    @torch.no_grad()
    def after_step(self, sae: torch.nn.Module, fired_ids: torch.Tensor) -> torch.Tensor:
        """The ids of the latents that fired on any rank (dead-latent bookkeeping sees the whole batch), and the
        floating buffers (BatchTopK's threshold) averaged over ranks so every rank keeps the same SAE."""
        fired = torch.zeros(sae.cfg.d_sae, dtype=torch.int32, device=fired_ids.device)
        fired[fired_ids] = 1
        dist.all_reduce(fired, op=dist.ReduceOp.MAX, group=self.group)
        for buffer in sae.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, group=self.group)
                buffer /= self.size
        return fired.nonzero().squeeze(1)


def _agree_on_checkpoint(folder: Path) -> None:
    """Keep in each rank's checkpoint folder only what every rank can resume from: the newest step that all ranks
    have complete and intact (a kill can land between two ranks' saves); newer ones are removed."""

    steps = [int(p.name.split("_")[1]) for p in find_checkpoints(folder) if read_checkpoint(p) is not None]
    everyone: list[list[int]] = [[] for _ in range(world_size())]
    dist.all_gather_object(everyone, steps)
    common = set(everyone[0]).intersection(*everyone[1:])
    newest = max(common, default=-1)
    for path in find_checkpoints(folder):
        if int(path.name.split("_")[1]) > newest:
            shutil.rmtree(path, ignore_errors=True)


def train_ddp(source, cfg, train_cfg, *, resume: bool = False, **kwargs: Any):
    """`saelab.train_sae` data-parallel over the ranks of the running process group (torchrun); the same call
    single-process without one. Every rank passes the same source and configs and gets the same SAE back.

    `train_cfg.batch_size` is the global batch (each rank trains on batch_size / N rows of it) and must divide by
    the number of ranks. Checkpoints go to `<checkpoint_dir>/rank_<r>`; with `resume`, every rank continues from
    the newest step all ranks saved. `kwargs` go to `train_sae` (callback, progress, ...): an extra loss is
    refused, as its side modules would need their own synchronisation.
    """

    if not active():
        return train_sae(source, cfg, train_cfg, resume=resume, **kwargs)
    if kwargs.get("extra_loss") is not None or kwargs.get("extra_modules"):
        raise ValueError("train_ddp does not train an extra loss or extra modules: train those single-process")
    size, me = world_size(), rank()
    if train_cfg.batch_size % size:
        raise ValueError(f"batch_size={train_cfg.batch_size} does not divide into {size} ranks: pick a multiple "
                         f"of {size} (it is the global batch; each rank trains on batch_size / {size} rows)")
    if train_cfg.checkpoint_every or resume:
        if not train_cfg.checkpoint_dir:
            raise ValueError("under torchrun give train_cfg.checkpoint_dir (a folder every rank can reach): "
                             "each rank checkpoints into <checkpoint_dir>/rank_<r>")
        folder = Path(train_cfg.checkpoint_dir) / f"rank_{me}"
        train_cfg = dataclasses.replace(train_cfg, checkpoint_dir=str(folder))
        if resume:
            _agree_on_checkpoint(folder)
    kwargs.setdefault("progress", me == 0)
    return train_sae(source, cfg, train_cfg, resume=resume, sync=GradSync(), **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# One SAE per rank
# ------------------------------------------------------------------------------------------------------------------


def share(items: Sequence[Any], r: int | None = None, n: int | None = None) -> list[Any]:
    """Rank r's round-robin share of `items` (items r, r + n, r + 2n, ...)."""
    r, n = rank() if r is None else r, world_size() if n is None else n
    return list(items)[r::n]


def train_zoo(model, specs, *, texts: Sequence[str] | None = None, corpus_name: str | None = None,
              smoke: bool | None = None, progress: bool = True) -> dict[Any, Any]:
    """`zoo.get_saes(model, specs, ...)` with the SAEs to train dealt out to the ranks (round-robin), so N ranks
    train N SAEs at a time; every rank returns all of them. Each SAE trains and checkpoints as in a single process
    (a killed build resumes, per SAE, on whichever rank gets it next time). Rank 0 first extracts every corpus and
    held-out cache the ranks will read, so no two ranks ever write one cache folder."""

    named = dict(specs) if isinstance(specs, Mapping) else {spec: spec for spec in specs}
    options = {"texts": texts, "corpus_name": corpus_name, "smoke": smoke}
    order = sorted(named, key=str)
    if rank() == 0:
        _extract_for_ranks(model, [[named[n] for n in share(order, r)] for r in range(world_size())], progress,
                           **options)
    barrier()
    mine = share(order)
    if mine:
        zoo.get_saes(model, {name: named[name] for name in mine}, **options, progress=progress and rank() == 0)
    barrier()
    return zoo.get_saes(model, named, **options, progress=False)  # all cached now: loads them


def _extract_for_ranks(model, shares: list[list[Any]], progress: bool, texts, corpus_name, smoke) -> None:
    """The token caches `zoo.get_saes` will extract on each rank for its share (the same choice of corpus folder
    and hooks), written here by rank 0 alone: two ranks extracting into one folder could read each other's
    half-written manifest."""

    smoke = zoo.smoke_mode() if smoke is None else smoke
    corpus = zoo.resolve_corpus(model, texts, corpus_name, smoke)[1]
    for specs in shares:
        actual = [spec.scaled_for_smoke() if smoke else spec for spec in specs]
        keys = [zoo.spec_key(model, spec, corpus) for spec in actual]
        needed = {s.hook for s, k in zip(actual, keys) if zoo.load_if_trained(zoo.sae_folder(model, s, k), k) is None}
        if needed:
            hooks = zoo.training_tokens(model, texts, corpus_name, needed, smoke, progress)[1]
            zoo.Heldout(model, hooks, smoke, progress)


# ------------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------------


def _source(store: str, hook: str):

    manifest = Path(store) / MANIFEST
    if not manifest.exists():
        raise SystemExit(f"{store} has no {MANIFEST}: extract into it first (python -m saelab.extract_cli)")
    is_hf = read_json(manifest).get("meta", {}).get("format") == FORMAT
    return StoreTokens(store, hook) if is_hf else ShardedTokens(store, hook)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m saelab.distributed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one SAE data-parallel from an activation store or cache")
    train.add_argument("--store", required=True, help="folder written by saelab.extract_cli (either format)")
    train.add_argument("--hook", required=True)
    train.add_argument("--out", required=True, help="folder for the trained SAE (written by rank 0)")
    train.add_argument("--architecture", default="topk")
    train.add_argument("--d-sae", type=int, default=4096)
    train.add_argument("--k", type=int, default=32)
    train.add_argument("--steps", type=int, help="training steps (or --tokens)")
    train.add_argument("--tokens", type=int)
    train.add_argument("--batch-size", type=int, default=4096, help="the global batch, over all ranks")
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-dir")
    train.add_argument("--checkpoint-every", type=int)
    train.add_argument("--resume", action="store_true")
    train.add_argument("--no-aux-k", action="store_true", help="aux_k_coefficient=0 (exact DDP equality)")
    zoo_cmd = sub.add_parser("zoo", help="train a notebook's zoo SAEs, one SAE per rank")
    zoo_cmd.add_argument("--model", default=None, help="a saelab.load_model name (default: the embedded model)")
    zoo_cmd.add_argument("--notebook", required=True, help="e.g. 05: the SAEs zoo_catalog.notebook_specs lists")
    zoo_cmd.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    device = init()
    try:
        if args.command == "train":

            source = _source(args.store, args.hook)
            k = args.k if args.architecture in ("topk", "batchtopk") else None
            cfg = SAEConfig(d_in=source.d_in, d_sae=args.d_sae, architecture=args.architecture, k=k)
            tcfg = TrainConfig(n_steps=args.steps, n_tokens=args.tokens, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, device=device, checkpoint_dir=args.checkpoint_dir,
                               checkpoint_every=args.checkpoint_every,
                               aux_k_coefficient=0.0 if args.no_aux_k else None)
            sae = train_ddp(source, cfg, tcfg, resume=args.resume)
            if rank() == 0:
                print(f"saved {sae.save(args.out)}")
        else:

            model = load_model(args.model, device=device)
            saes = train_zoo(model, zoo_catalog.notebook_specs(model, args.notebook), smoke=args.smoke or None)
            if rank() == 0:
                print(f"{len(saes)} SAEs ready in saelab's cache")
    finally:
        close()


__all__ = ["GradSync", "active", "barrier", "close", "init", "main", "rank", "share", "train_ddp", "train_zoo",
           "world_size"]

if __name__ == "__main__":
    main()
