"""Token activations as a Hugging Face `datasets` dataset on disk, in shards, written by one process or many.

    folder = extract_store(model, texts, "blocks.6.hook_resid_post", "acts/")   # or under torchrun: each rank
    source = StoreTokens(folder, "blocks.6.hook_resid_post")                    # writes its shards, rank 0 the
    sae = train_sae(source, SAEConfig(...), TrainConfig(...))                    # manifest

The folder keeps the guarantees of the safetensors cache (`saelab.activation_cache`), through the same code: the
manifest (`manifest.json`, the same layout, checked by `read_manifest`) records the model's fingerprint, the hooks,
the texts' fingerprint and every shard's sha256; a shard that is missing or corrupt is recomputed, and an interrupted
extraction resumes. Each shard `shard_NNNNN/` is a `datasets.Dataset.save_to_disk` folder with one row per token:
`text_index`, `token_id` and one column per hook (a fixed-size list of d_model values). `open_store` memory-maps
them all as one `datasets.Dataset`; `load_store` gives the same `Activations` as `saelab.load_activations` on the
safetensors cache of the same extraction.

`format="safetensors"` writes that cache instead (the folder `extract_to_cache` writes), also from several ranks.
When to pick which is in docs/design.md ("More than one GPU").
"""

from __future__ import annotations

import contextlib
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from saelab.activation_cache import MANIFEST, concat_parts, read_manifest, shard_intact, valid_manifest
from saelab.activations import Activations, as_activations, plan_extraction
from saelab.config import cache_dir
from saelab.io import atomic_dir, read_json, save_tensors, sha256_file, sha256_text, write_json
from saelab.process_group import barrier, rank, world_size

FORMAT = "hf-datasets"
FORMATS = ("hf", "safetensors")
#: how each storage dtype sits in Arrow (bfloat16, which Arrow lacks, as its raw 16 bits)
_ARROW_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}


@contextlib.contextmanager
def _quiet_datasets():
    """datasets' own progress bars off (one per shard written would drown saelab's), as they were afterwards."""
    import datasets

    was_off = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            datasets.enable_progress_bars()


def store_plan(model, texts: Sequence[str], hook: str | Sequence[str], *, fmt: str = "hf", batch_size: int = 32,
               max_length: int = 512, shard_size: int = 2048, dataset: str | None = None,
               storage_dtype: str = "float32"):
    """(extractor, texts, shards, meta) of a token-level extraction, from `saelab.activations`' own planning: the
    same checks, fingerprints and shards as `extract_to_cache`. The HF format's cache key adds the format, so a
    folder of one format is never taken for the other."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: choose one of {FORMATS}")
    extractor, texts, shards, meta = plan_extraction(model, texts, hook, batch_size=batch_size, max_length=max_length,
                                                     shard_size=shard_size, dataset=dataset,
                                                     storage_dtype=storage_dtype)
    if fmt == "hf":
        meta["format"] = FORMAT
        meta["cache_key"] = sha256_text(meta["cache_key"], FORMAT)
    return extractor, texts, shards, meta


def extract_store(model, texts: Sequence[str], hook: str | Sequence[str], folder: str | Path | None = None, *,
                  fmt: str = "hf", batch_size: int = 32, max_length: int = 512, shard_size: int = 2048,
                  dataset: str | None = None, storage_dtype: str = "float32", progress: bool = True) -> Path:
    """Write the per-token activations of `texts` at `hook`(s) to a sharded store; return its folder.

    Under torch.distributed (torchrun) every rank calls it with the same arguments: rank r extracts shards r, r + N,
    r + 2N, ... (N ranks), and rank 0 writes the manifest once all are on disk; the folder is the one a single
    process writes. Each finished shard leaves a small `shard_NNNNN.json` beside it, so a killed run (any number of
    ranks) resumes with the shards already done. `folder=None` uses saelab's cache, keyed by the extraction.
    fmt: "hf" (a Hugging Face dataset per shard) or "safetensors" (`extract_to_cache`'s folder).
    """
    extractor, texts, shards, meta = store_plan(model, texts, hook, fmt=fmt, batch_size=batch_size,
                                                max_length=max_length, shard_size=shard_size, dataset=dataset,
                                                storage_dtype=storage_dtype)
    key = meta["cache_key"]
    if folder is None:
        folder = cache_dir("activations" if fmt == "safetensors" else "activation-store", key[:24])
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is a file: pass a folder for the activation store")
    me, n_ranks = rank(), world_size()
    if me == 0:
        _reset_if_foreign(folder, meta)
    barrier()
    known = _known_entries(folder, key)
    mine = [(number, shard) for number, shard in enumerate(shards) if number % n_ranks == me]
    bar = tqdm(total=sum(len(s) for _, s in mine), desc=f"extract tokens (rank {me}/{n_ranks})", unit="text",
               disable=not progress or me != 0)
    with bar, _quiet_datasets():
        for number, shard in mine:
            entry = known.get(number)
            if entry is None or not shard_intact(folder, entry):
                part = extractor.run([texts[i] for i in shard], shard.start)
                tensors = concat_parts([part], extractor.hooks)
                stats = tensors.pop("_stats")
                file = _write_shard(folder, number, tensors, extractor.hooks, shard, fmt)
                entry = {"file": file, "sha256": sha256_file(folder / file), **stats,
                         "first_text": shard.start, "n_texts": len(shard)}
                write_json(folder / f"shard_{number:05d}.json", {"cache_key": key, **entry})  # resume point
            bar.update(len(shard))
    barrier()
    if me == 0:
        _write_manifest(folder, meta, len(shards))
    barrier()
    return folder


def _reset_if_foreign(folder: Path, meta: dict) -> None:
    """Rank 0, before any rank writes: keep the folder if it belongs to this extraction, else empty it."""
    manifest = valid_manifest(folder, meta)  # drops old safetensors shards of other inputs
    if not manifest["shards"] and (folder / MANIFEST).exists():  # another extraction's manifest
        for old in [*folder.glob("shard_*"), folder / MANIFEST]:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _known_entries(folder: Path, key: str) -> dict[int, dict]:
    """Shards finished by an earlier run of this same extraction: the manifest's, then the per-shard records."""
    known: dict[int, dict] = {}
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        if manifest["meta"]["cache_key"] == key:
            known.update({int(k): v for k, v in manifest["shards"].items()})
    for record in folder.glob("shard_*.json"):
        entry = read_json(record)
        if entry.pop("cache_key", None) == key:
            known[int(record.stem.split("_")[1])] = entry
    return known


def _write_shard(folder: Path, number: int, tensors: dict[str, torch.Tensor], hooks: list[str], shard: range,
                 fmt: str) -> str:
    """Write one shard atomically; return its data file relative to the folder (what the checksum covers)."""
    if fmt == "safetensors":
        file = f"shard_{number:05d}.safetensors"
        save_tensors(tensors, folder / file)
        return file
    from datasets import Dataset

    lengths = tensors["lengths"]
    columns = {"text_index": pa.array(torch.arange(shard.start, shard.stop).repeat_interleave(lengths).numpy()),
               "token_id": pa.array(tensors["token_ids"].numpy())}
    for hook in hooks:
        x = tensors[hook]
        flat = x.view(torch.int16) if x.dtype == torch.bfloat16 else x
        columns[hook] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1).numpy()), x.shape[1])
    name = f"shard_{number:05d}"
    with atomic_dir(folder / name) as tmp:
        Dataset(pa.table(columns)).save_to_disk(str(tmp), num_shards=1)
    return f"{name}/data-00000-of-00001.arrow"


def _write_manifest(folder: Path, meta: dict, n_shards: int) -> None:
    """Rank 0, after every rank is done: the manifest from the per-shard records (which go once it is complete)."""
    entries = _known_entries(folder, meta["cache_key"])
    missing = [n for n in range(n_shards) if n not in entries or not shard_intact(folder, entries[n])]
    complete = not missing
    manifest = {"meta": meta, "shards": {str(n): entries[n] for n in sorted(entries) if n < n_shards},
                "complete": complete, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(folder / MANIFEST, manifest)
    if not complete:
        raise RuntimeError(f"the activation store {folder} lacks shard(s) {missing[:10]} after every rank finished: "
                           "run the same extraction again to complete it")
    for record in folder.glob("shard_*.json"):
        record.unlink()


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------


def _store_manifest(folder: Path, verify: bool) -> tuple[dict, list[dict]]:
    """A complete HF store's manifest and its shard entries in order, every checksum checked with `verify`."""
    manifest = read_manifest(folder)
    if manifest["meta"].get("format") != FORMAT:
        raise ValueError(f"{folder} is not a Hugging Face activation store (it is a safetensors cache?): open it "
                         "with saelab.load_activations or ShardedTokens")
    if not manifest.get("complete") or not manifest["shards"]:
        raise ValueError(f"the activation store at {folder} is incomplete; run extract_store again to resume it")
    entries = [manifest["shards"][k] for k in sorted(manifest["shards"], key=int)]
    if verify:
        bad = [e["file"] for e in entries if not shard_intact(folder, e)]
        if bad:
            raise ValueError(f"corrupt or missing shard(s) in {folder}: {bad}; run extract_store again to rebuild")
    return manifest, entries


def _column(table: pa.Table, name: str, storage_dtype: str) -> torch.Tensor:
    """A fixed-size-list column as a [rows, width] tensor (zero-copy from the memory-mapped file when it can)."""
    column = table.column(name).combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    with warnings.catch_warnings():  # read-only memory map: the trainer copies it into its window, never writes
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(values.reshape(len(column), column.type.list_size))
    return tensor.view(torch.bfloat16) if storage_dtype == "bfloat16" else tensor


def open_store(folder: str | Path, verify: bool = True):
    """The whole store as one memory-mapped `datasets.Dataset` (rows are tokens), e.g. for `.with_format("torch")`,
    `.filter` or `push_to_hub`. bfloat16 stores hold the raw 16 bits (int16) of each value."""
    from datasets import concatenate_datasets, load_from_disk

    folder = Path(folder)
    _, entries = _store_manifest(folder, verify)
    return concatenate_datasets([load_from_disk(str(folder / Path(e["file"]).parent)) for e in entries])


def load_store(folder: str | Path, verify: bool = True) -> Activations:
    """The store's activations in memory, as `saelab.load_activations` gives them for the safetensors cache:
    `acts[hook]` [n_tokens, d], `lengths` per text, `token_ids`, and the manifest's meta."""
    from datasets import load_from_disk

    folder = Path(folder)
    manifest, entries = _store_manifest(folder, verify)
    meta = dict(manifest["meta"])
    dtype = meta.get("storage_dtype", "float32")
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in [*meta["hooks"], "lengths", "token_ids"]}
    for entry in entries:
        table = load_from_disk(str(folder / Path(entry["file"]).parent)).data.table
        for hook in meta["hooks"]:
            parts[hook].append(_column(table, hook, dtype).clone())
        index = torch.from_numpy(table.column("text_index").to_numpy()) - entry["first_text"]
        parts["lengths"].append(torch.bincount(index, minlength=entry["n_texts"]))
        parts["token_ids"].append(torch.from_numpy(table.column("token_id").to_numpy()).clone())
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    meta["missing"] = [i for e in entries for i in e["missing"]]
    meta["n_truncated"] = sum(e["n_truncated"] for e in entries)
    meta["n_tokens"] = sum(e["n_tokens"] for e in entries)
    return as_activations(tensors, meta["hooks"], "none", meta, folder)


class StoreTokens:
    """One hook's token activations read from an HF store shard by shard: a `saelab.train_data.TokenSource`
    (`len()` shards, `chunk(i)` memory-maps shard i), so `train_sae` streams it as it streams `ShardedTokens`."""

    def __init__(self, folder: str | Path, hook: str, verify: bool = False):
        from datasets import load_from_disk

        self.folder = Path(folder)
        manifest, entries = _store_manifest(self.folder, verify)
        self.meta = manifest["meta"]
        if hook not in self.meta["hooks"]:
            raise ValueError(f"hook {hook!r} is not in the activation store {self.folder}; it has "
                             f"{self.meta['hooks']}: pass one of them, or extract that hook")
        self.hook_name, self.model_name = hook, self.meta["model"]
        self.storage_dtype = self.meta.get("storage_dtype", "float32")
        self.metadata = {k: self.meta[k] for k in ("model", "model_fingerprint", "dataset", "dataset_fingerprint",
                                                    "n_texts", "include_bos", "max_length", "saelab_version")}
        self.metadata.update(hook=hook, storage_dtype=self.storage_dtype, format=FORMAT)
        self.shards = [load_from_disk(str(self.folder / Path(e["file"]).parent)) for e in entries]
        self.d_in = self.shards[0].features[hook].length
        self.n_tokens = sum(len(s) for s in self.shards)

    def __len__(self) -> int:
        return len(self.shards)

    def chunk(self, i: int) -> torch.Tensor:
        return _column(self.shards[i].data.table, self.hook_name, self.storage_dtype)


__all__ = ["FORMAT", "FORMATS", "StoreTokens", "extract_store", "load_store", "open_store", "store_plan"]
