"""The on-disk activation cache: one safetensors file per shard, and a manifest written after each shard.

`saelab.extract(..., cache=...)` fills a folder through `extract_cached`; `saelab.load_activations` reads it back
(`read_cache`), and `ShardedTokens` streams a token-level cache to the SAE trainer one shard at a time. A manifest is
checked to have the layout written here (`read_manifest`), and every shard carries its checksum.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from saelab.io import read_json, save_tensors, sha256_file, write_json

MANIFEST = "manifest.json"


def extract_cached(run: Callable[[list[str], int], dict], hooks: list[str], texts, shards, folder: Path, meta: dict,
                   bar) -> None:
    """Fill the cache folder for one extraction: keep the intact shards a previous call wrote (same inputs), compute
    the rest with `run(texts, first_index)` (a shard's per-text results), writing the manifest after each shard."""
    manifest = valid_manifest(folder, meta)
    done: dict = manifest["shards"]
    todo = []
    for number, shard in enumerate(shards):
        entry = done.get(str(number))
        if entry and shard_intact(folder, entry):
            bar.update(len(shard))
        else:
            if entry:
                warnings.warn(f"Activation cache shard {entry['file']} in {folder} is corrupt; recomputing it.",
                              stacklevel=2)
                done.pop(str(number))
            todo.append((number, shard))
    for number, shard in todo:
        part = run([texts[i] for i in shard], shard.start)
        tensors = concat_parts([part], hooks)
        stats = tensors.pop("_stats")
        file = f"shard_{number:05d}.safetensors"
        save_tensors(tensors, folder / file)
        done[str(number)] = {"file": file, "sha256": sha256_file(folder / file), **stats}
        manifest["complete"] = len(done) == len(shards)
        write_json(folder / MANIFEST, manifest)  # progress survives an interruption here
        bar.update(len(shard))
    if not manifest["complete"]:
        manifest["complete"] = True
        write_json(folder / MANIFEST, manifest)


def valid_manifest(folder: Path, meta: dict) -> dict:
    """The folder's manifest when it belongs to this exact extraction; otherwise a fresh one (old shards dropped)."""
    path = folder / MANIFEST
    fresh = {"meta": meta, "shards": {}, "complete": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        return fresh
    try:
        manifest = read_manifest(folder)
        same = manifest["meta"]["cache_key"] == meta["cache_key"]
    except (ValueError, KeyError, OSError):
        warnings.warn(f"Activation cache manifest {path} is unreadable; rebuilding the cache.", stacklevel=2)
        same, manifest = False, None
    if manifest is not None and not same:
        warnings.warn(
            f"Activation cache {folder} was made for different inputs (model, hooks, options or texts); rebuilding it.",
            stacklevel=2
        )
    if not same:
        for old in folder.glob("shard_*.safetensors"):
            old.unlink()
        return fresh
    return manifest


def shard_intact(folder: Path, entry: dict) -> bool:
    path = folder / entry["file"]
    return path.exists() and sha256_file(path) == entry["sha256"]


def read_manifest(folder: Path) -> dict:
    """A cache folder's manifest, checked to have the layout `extract` writes; a ValueError that names what is wrong
    (a manifest edited by hand, or half-written by another program) otherwise."""
    path = folder / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"No activation cache at {folder} (no {MANIFEST}); run saelab.extract(..., cache=...).")
    rebuild = "delete the folder, or call extract() again to rebuild it"
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"The activation cache manifest {path} is not valid JSON ({err}); {rebuild}.") from None
    problem = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("meta"), dict) \
            or not isinstance(manifest.get("shards"), dict):
        problem = "it lacks 'meta' or 'shards'"
    else:
        missing = [k for k in ("hooks", "pooling", "cache_key") if k not in manifest["meta"]]
        needed = ("file", "sha256", "missing", "n_truncated", "n_tokens")
        bad = {k: [n for n in needed if n not in e] if isinstance(e, dict) else list(needed)
               for k, e in manifest["shards"].items()}
        bad = {k: lacks for k, lacks in bad.items() if lacks}
        if missing:
            problem = f"its meta lacks {missing}"
        elif bad:
            number, lacks = next(iter(bad.items()))
            problem = f"its entry for shard {number} lacks {lacks}"
        elif not all(k.isdigit() for k in manifest["shards"]):
            problem = f"its shard numbers {sorted(manifest['shards'])} are not all numbers"
    if problem:
        raise ValueError(f"The activation cache manifest {path} is damaged: {problem}; {rebuild}.")
    return manifest


def read_cache(folder: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a complete cache folder; with `verify`, every shard's checksum is checked first."""
    manifest = read_manifest(folder)
    if not manifest["shards"]:
        raise ValueError(f"The activation cache at {folder} lists no shards; call extract() again to rebuild it.")
    if not manifest.get("complete"):
        raise ValueError(f"The activation cache at {folder} is incomplete; call extract() again to resume it.")
    entries = [manifest["shards"][k] for k in sorted(manifest["shards"], key=int)]
    if verify:
        bad = [e["file"] for e in entries if not shard_intact(folder, e)]
        if bad:
            raise ValueError(f"Corrupt or missing shard(s) in {folder}: {bad}; call extract() again to rebuild.")
    meta = dict(manifest["meta"])
    parts = [read_shard(folder / e["file"]) for e in entries]
    tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    meta["missing"] = [i for e in entries for i in e["missing"]]
    meta["n_truncated"] = sum(e["n_truncated"] for e in entries)
    meta["n_tokens"] = sum(e["n_tokens"] for e in entries)
    return tensors, meta


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict


class ShardedTokens:
    """Token-level activations of one hook read shard by shard from a cache folder (never all in RAM).

    It is the chunked source the SAE trainer streams from (a `saelab.train_data.TokenSource`): ``len()`` shards,
    ``chunk(i)`` loads shard i; `hook_name`, `model_name` and `metadata` (from the manifest) go into the SAE's config;
    `n_tokens` counts the rows of all shards.
    It is saelab's one reader of safetensors token shards.
    """

    def __init__(self, folder: str | Path, hook: str):
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if not manifest["shards"]:
            raise ValueError(f"The activation cache at {self.folder} lists no shards; call extract() again to "
                             "rebuild it.")
        if manifest["meta"]["pooling"] != "none":
            raise ValueError(f"ShardedTokens needs a token-level extraction, but {self.folder} holds "
                             f"{manifest['meta']['pooling']!r}-pooled rows: extract with pooling='none'.")
        if hook not in manifest["meta"]["hooks"]:
            raise ValueError(f"Hook '{hook}' is not in this cache; it has {manifest['meta']['hooks']}: pass one of "
                             "them, or extract that hook.")
        self.meta = manifest["meta"]
        # what the SAE trainer records about its data (saelab.train_data.TokenSource)
        self.hook_name, self.model_name = hook, self.meta["model"]
        self.metadata = {k: self.meta[k] for k in ("model", "model_fingerprint", "dataset", "dataset_fingerprint",
                                                    "n_texts", "include_bos", "max_length", "saelab_version")}
        self.metadata["hook"] = hook
        self.files = [self.folder / manifest["shards"][k]["file"] for k in sorted(manifest["shards"], key=int)]
        self.metadata["storage_dtype"] = self.meta.get("storage_dtype", "float32")
        rows = []
        for file in self.files:  # shapes only: no tensor is read
            with safe_open(str(file), framework="pt") as handle:
                rows.append(handle.get_slice(hook).get_shape())
        self.d_in, self.n_tokens = rows[0][1], sum(shape[0] for shape in rows)

    def __len__(self) -> int:
        return len(self.files)

    def chunk(self, i: int) -> torch.Tensor:
        with safe_open(str(self.files[i]), framework="pt") as handle:
            return handle.get_tensor(self.hook_name)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self.chunk(i) for i in range(len(self)))


def concat_parts(parts: list[dict], hooks: list[str]) -> dict:
    """Join shard results (lists of per-text tensors) into one dict of tensors."""
    stack = torch.cat if parts and parts[0][hooks[0]] and parts[0][hooks[0]][0].dim() == 2 else torch.stack
    out = {h: stack([t for p in parts for t in p[h]]) for h in hooks}
    out["lengths"] = torch.tensor([n for p in parts for n in p["_lengths"]], dtype=torch.long)
    out["token_ids"] = torch.cat([t for p in parts for t in p["_token_ids"]])
    out["_stats"] = {
        "missing": [i for p in parts for i in p["_missing"]],
        "n_truncated": sum(p["_n_truncated"] for p in parts),
        "n_tokens": sum(p["_n_tokens"] for p in parts),
    }
    return out


__all__ = [
    "MANIFEST",
    "ShardedTokens",
    "concat_parts",
    "extract_cached",
    "read_cache",
    "read_manifest",
    "read_shard",
    "shard_intact",
    "valid_manifest",
]
