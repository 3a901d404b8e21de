"""Two processes under torchrun (gloo, CPU) on the tiny model: extraction, data-parallel training, kill and resume,
one zoo SAE per rank. Each result is compared with the same work done in one process.

The workers are this file run as a script by torchrun (`python -m torch.distributed.run ... test_distributed.py
MODE ...`); each writes what it made under a folder the test then reads.

What matches a single-process run, and how closely (`saelab.distributed.GradSync` says why):
* extraction: bit for bit (the same shards, the same checksums);
* TopK without AuxK and JumpReLU: the same SAE to float summation order (atol 1e-5 on weights of norm ~1);
* TopK with AuxK: close (AuxK normalises by each rank's residual variance): 2.4e-3 here after 20 steps
  of lr 3e-3 (weights move by up to 6e-2), atol 5e-3;
* BatchTopK: not equal (each rank picks its own batch top-k): only that both ranks hold the same SAE.
Every mode checks that the two ranks end with identical weights.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelab.sae import SAE, SAEConfig
from saelab.train import TrainConfig

HOOK = "blocks.1.hook_resid_post"
TEXTS = [f"Line {i}: " + "sparse features in a small model. " * (i % 3 + 1) for i in range(24)]

#: (name, SAE config, train config, atol against one process or None when not comparable)
RUNS = [
    ("topk", SAEConfig(d_in=64, d_sae=96, architecture="topk", k=8), dict(aux_k_coefficient=0.0), 1e-5),
    ("jumprelu", SAEConfig(d_in=64, d_sae=96, architecture="jumprelu"), {}, 1e-5),
    ("topk_auxk", SAEConfig(d_in=64, d_sae=96, architecture="topk", k=8), dict(dead_tokens_threshold=64), 5e-3),
    ("batchtopk", SAEConfig(d_in=64, d_sae=96, architecture="batchtopk", k=8), {}, None),
]


def train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"n_steps": 20, "batch_size": 64, "window_chunks": 2, "lr": 3e-3, **overrides})


def torchrun(*args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    """This file's worker on two ranks (gloo), one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def ran(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def same_weights(a: SAE, b: SAE, atol: float) -> None:
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(tensor, b.state_dict()[name], atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    from saelab.activation_store import extract_store

    folder = tmp_path_factory.mktemp("ddp") / "store"
    return extract_store(tiny, TEXTS, HOOK, folder, shard_size=5, progress=False)


def test_two_rank_extraction_equals_one_process(tmp_path, one_thread):
    from saelab.activation_store import extract_store, load_store
    from saelab.io import read_json
    from saelab.models import load_model

    model = load_model("tiny-gemma3")  # first here: its word tokenizer is trained once and cached for the ranks
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    ran(torchrun("-m", "saelab.extract_cli", "--model", "tiny-gemma3", "--hook", HOOK, "--texts", str(texts),
                 "--out", str(tmp_path / "two"), "--shard-size", "5", "--no-progress"))
    one = extract_store(model, TEXTS, HOOK, tmp_path / "one", shard_size=5, dataset="texts.txt", progress=False)
    a, b = read_json(tmp_path / "two" / "manifest.json"), read_json(one / "manifest.json")
    assert a["meta"] == b["meta"] and a["complete"]
    assert {k: e["sha256"] for k, e in a["shards"].items()} == {k: e["sha256"] for k, e in b["shards"].items()}
    assert torch.equal(load_store(tmp_path / "two").acts[HOOK], load_store(one).acts[HOOK])


def test_ddp_training_matches_one_process(store, tmp_path, one_thread):
    from saelab.activation_store import StoreTokens
    from saelab.train import train_sae

    ran(torchrun(__file__, "train", str(store), str(tmp_path)))
    for name, cfg, overrides, atol in RUNS:
        rank0, rank1 = SAE.load(tmp_path / f"{name}_rank0"), SAE.load(tmp_path / f"{name}_rank1")
        same_weights(rank0, rank1, atol=0)
        if atol is not None:
            single = train_sae(StoreTokens(store, HOOK), cfg, train_config(**overrides), progress=False)
            same_weights(SAE.load(single.save(tmp_path / f"{name}_single")), rank0, atol)


def test_killed_ddp_run_resumes_to_the_same_sae(store, tmp_path, one_thread):
    from saelab.activation_store import StoreTokens
    from saelab.checkpoints import find_checkpoints
    from saelab.train import train_sae

    ckpt = tmp_path / "ckpt"
    killed = torchrun(__file__, "resume", str(store), str(tmp_path), "--kill-at", "13")
    assert killed.returncode != 0 and not (tmp_path / "resumed_rank0").exists()
    assert [p.name for p in find_checkpoints(ckpt / "rank_1")] == ["step_000000010", "step_000000005"]
    # a kill between the ranks' saves: rank 0 has step 10, rank 1 only step 5; they must agree on step 5
    shutil.rmtree(find_checkpoints(ckpt / "rank_1")[0])
    ran(torchrun(__file__, "resume", str(store), str(tmp_path), "--resume"))
    assert "resume=True" not in (tmp_path / "log_rank0").read_text(), "it resumed rather than starting afresh"
    name, cfg, overrides, atol = RUNS[0]
    single = train_sae(StoreTokens(store, HOOK), cfg, train_config(**overrides), progress=False)
    resumed = SAE.load(tmp_path / "resumed_rank0")
    same_weights(resumed, SAE.load(tmp_path / "resumed_rank1"), atol=0)
    same_weights(SAE.load(single.save(tmp_path / "single")), resumed, atol)


ZOO_SPECS = {"topk": dict(architecture="topk", d_sae=256, k=8),
             "jumprelu": dict(architecture="jumprelu", d_sae=256, k=None)}


def zoo_saes(model) -> dict:
    """The zoo's SAEs of ZOO_SPECS on TEXTS (smoke sizes: 32 latents, 20 steps of 512 tokens)."""
    from saelab import distributed
    from saelab.zoo_spec import SAESpec

    specs = {name: SAESpec(HOOK, **fields) for name, fields in ZOO_SPECS.items()}
    return distributed.train_zoo(model, specs, texts=TEXTS, corpus_name="test lines", smoke=True, progress=False)


def test_zoo_sae_per_rank_equals_one_process(tiny, tmp_path, monkeypatch, one_thread):
    ran(torchrun(__file__, "zoo", "-", str(tmp_path), env={"SAELAB_CACHE_DIR": str(tmp_path / "two")}))
    log = {rank: (tmp_path / f"zoo_rank{rank}").read_text().split() for rank in (0, 1)}
    assert sorted(log[0] + log[1]) == sorted(ZOO_SPECS), "each rank trains one of the two SAEs"
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path / "one"))
    single = zoo_saes(tiny)
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path / "two"))
    both = zoo_saes(tiny)  # loaded from the cache the two ranks filled: nothing is trained here
    for name in ZOO_SPECS:
        assert both[name].cfg.metadata["zoo_key"] == single[name].cfg.metadata["zoo_key"]
        same_weights(both[name], single[name], atol=1e-5)


def worker(argv: list[str]) -> None:
    """Run under torchrun: `train` (every run of RUNS data-parallel) or `resume` (a checkpointed TopK run that
    rank 1 kills with SIGKILL at step --kill-at, or that resumes with --resume)."""
    import warnings

    from saelab import distributed
    from saelab.activation_store import StoreTokens

    mode, store, out = argv[0], argv[1], Path(argv[2])
    distributed.init()
    me = distributed.rank()
    if mode == "zoo":
        from saelab import zoo
        from saelab.models import tiny_model

        trained, train_one = [], zoo._train_one

        def recorded(model, spec, *args):  # which SAEs this rank trains
            trained.append(spec.architecture)
            return train_one(model, spec, *args)

        zoo._train_one = recorded
        zoo_saes(tiny_model(seed=0))
        (out / f"zoo_rank{me}").write_text(" ".join(trained))
        distributed.close()
        return
    source = StoreTokens(store, HOOK)
    if mode == "train":
        for name, cfg, overrides, _ in RUNS:
            sae = distributed.train_ddp(source, cfg, train_config(**overrides))
            sae.save(out / f"{name}_rank{me}")
    else:
        kill_at = int(argv[argv.index("--kill-at") + 1]) if "--kill-at" in argv else None

        def kill(step: int, sae: SAE, metrics: dict) -> None:
            if step == kill_at and me == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        _, cfg, overrides, _ = RUNS[0]
        tcfg = train_config(**overrides, checkpoint_every=5, checkpoint_dir=str(out / "ckpt"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sae = distributed.train_ddp(source, cfg, tcfg, resume="--resume" in argv, callback=kill)
        (out / f"log_rank{me}").write_text("\n".join(str(w.message) for w in caught))
        sae.save(out / f"resumed_rank{me}")
    distributed.close()


if __name__ == "__main__":
    worker(sys.argv[1:])
