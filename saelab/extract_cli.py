"""Extract token activations to a sharded store from the command line, on one process or many (torchrun).

    python -m saelab.extract_cli --hook blocks.6.hook_resid_post --texts corpus.txt --out acts/
    torchrun --nproc_per_node 8 -m saelab.extract_cli --model google/gemma-2-2b --hook blocks.12.hook_resid_post \\
        --texts corpus.jsonl --out /shared/acts --storage-dtype bfloat16

Texts: a .txt file (one text per line), a .jsonl file (a "text" field per line), or `--zoo-corpus` (the zoo's
offline training corpus). Under torchrun every rank loads the model onto its own device, extracts its share of the
shards and writes them; rank 0 writes the manifest (`saelab.activation_store.extract_store`). Rerunning the same
command resumes an interrupted extraction, with any number of ranks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from saelab.activation_store import FORMATS, extract_store
from saelab.activations import STORAGE_DTYPES
from saelab.models import load_model
from saelab.process_group import close, init, rank, world_size
from saelab.zoo import CORPUS_NAME, training_texts


def read_texts(path: str | Path) -> list[str]:
    """The texts of a .txt (one per non-empty line) or .jsonl file (the "text" field of each line)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"--texts {str(path)!r}: no such file (give a .txt with one text per line, or a .jsonl)")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in lines]
        if not all(isinstance(row, dict) and isinstance(row.get("text"), str) for row in rows):
            raise SystemExit(f"{path}: every line of a .jsonl must be an object with a string 'text' field")
        return [row["text"] for row in rows]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m saelab.extract_cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="a saelab.load_model name (default: the embedded model, or SAELAB_MODEL)")
    parser.add_argument("--hook", required=True, action="append", help="a hook name; repeat for several hooks")
    texts = parser.add_mutually_exclusive_group(required=True)
    texts.add_argument("--texts", help="a .txt (one text per line) or .jsonl file")
    texts.add_argument("--zoo-corpus", action="store_true", help="the zoo's offline training corpus")
    parser.add_argument("--out", required=True, help="the store's folder (created; resumed when it exists)")
    parser.add_argument("--format", choices=FORMATS, default="hf",
                        help="hf: a Hugging Face dataset per shard; safetensors: saelab's activation cache")
    parser.add_argument("--dataset", help="a name recorded in the manifest (default: the texts' file name)")
    parser.add_argument("--shard-size", type=int, default=2048, help="texts per shard")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--max-length", type=int, default=512, help="tokens kept per text")
    parser.add_argument("--storage-dtype", choices=sorted(STORAGE_DTYPES), default="float32")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)


    device = init()
    try:
        if args.zoo_corpus:

            texts, dataset = training_texts(), args.dataset or CORPUS_NAME
        else:
            texts, dataset = read_texts(args.texts), args.dataset or Path(args.texts).name
        model = load_model(args.model, device=device)
        folder = extract_store(model, texts, args.hook, args.out, fmt=args.format, batch_size=args.batch_size,
                               max_length=args.max_length, shard_size=args.shard_size, dataset=dataset,
                               storage_dtype=args.storage_dtype, progress=not args.no_progress)
        if rank() == 0:
            print(f"{len(texts)} texts at {args.hook} -> {folder} ({world_size()} rank(s))")
    finally:
        close()


__all__ = ["main", "read_texts"]

if __name__ == "__main__":
    main()
