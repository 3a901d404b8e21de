"""`make zoo`: train every SAE the notebooks use (saelab.zoo_catalog), once; print the zoo table and the timings.

Idempotent and resumable: SAEs already in saelab's cache load in seconds, a killed run keeps its finished SAEs and
continues the one it was training from its last checkpoint, and the corpus extraction resumes shard by shard.
Full mode unless SAELAB_SMOKE=1. Writes the table to `<out>/zoo.md` (default reports/zoo.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saelab import zoo  # noqa: E402
from saelab.config import smoke_mode  # noqa: E402
from saelab.io import atomic_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma-3-270m", "smollm2-135m"])
    parser.add_argument("--notebooks", nargs="+", default=list(zoo.NOTEBOOKS),
                        help="build only the SAEs these notebooks load (default: all of them)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    started = time.perf_counter()
    frame = zoo.build(args.models, notebooks=args.notebooks)
    minutes = (time.perf_counter() - started) / 60
    training = frame["minutes"].sum() if "minutes" in frame else 0.0
    by_architecture = frame.groupby("architecture")["minutes"].sum().round(1).to_dict() if "minutes" in frame else {}
    summary = (f"zoo ({'smoke' if smoke_mode() else 'full'} mode): {len(frame)} SAEs, "
               f"{(frame['gate'] == 'pass').sum()} pass their gate; this run {minutes:.1f} min. "
               f"Training time recorded with the SAEs: {training:.1f} min ({by_architecture}); the rest of a build "
               f"from nothing is extraction and held-out scoring. This run's wall-clock minutes by model and phase: "
               f"{frame.attrs.get('phase_minutes', {})}.")
    print(frame.to_string())
    print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "zoo.md") as tmp:
        tmp.write_text(f"# The SAE zoo\n\n{summary}\n\n```\n{frame.to_string()}\n```\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
