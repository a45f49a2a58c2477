#!/usr/bin/env python3
"""Checks the built-in fine-tuning job against issue #7's bar, from files alone: `infer score`'s
CSV on the held-out photos and their degraded copies (RUN/held_out/images.txt), paired by
RUN/held_out/pairs.csv, must rank each original above its copy in at least 85% of pairs; the
figure must agree with the one the run put in its summary.json. Standard library only.

    cargo run --release --bin infer -- score --checkpoint RUN \
        --list RUN/held_out/images.txt --output RUN/held_out_scores.csv
    python3 scripts/check_finetune_job.py RUN
"""
import csv
import json
import os
import sys
from collections import defaultdict


def main(run: str) -> int:
    with open(os.path.join(run, "held_out_scores.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or list(rows[0].keys()) != ["image", "score", "score_numeric", "score_levels"]:
        print("unexpected CSV header", file=sys.stderr)
        return 1
    # pairs.csv names files within held_out/; the CSV has them as infer was given them.
    score = {os.path.basename(r["image"]): float(r["score"]) for r in rows}
    right, total = 0, 0
    per_kind = defaultdict(lambda: [0, 0])
    with open(os.path.join(run, "held_out", "pairs.csv"), newline="") as f:
        for p in csv.DictReader(f):
            ok = score[p["original"]] > score[p["degraded"]]
            right += ok
            total += 1
            per_kind[p["kind"]][0] += ok
            per_kind[p["kind"]][1] += 1
    accuracy = right / total
    with open(os.path.join(run, "summary.json")) as f:
        held = json.load(f)["held_out"]
    print(
        f"infer score: pairwise accuracy {accuracy:.4f} over {total} pairs "
        f"(summary {held['pairwise_accuracy']:.4f}, before fine-tuning "
        f"{held['before_pairwise_accuracy']:.4f}); comments name the defect in "
        f"{held['comments_naming_defect']:.0%}, suggestions in {held['suggestions_naming_defect']:.0%}"
    )
    for kind, (r, n) in sorted(per_kind.items()):
        print(f"  {kind:14s} {r / n:.3f}")
    ok = accuracy >= 0.85
    # Four printed decimals may tie scores the summary told apart: allow one pair.
    agrees = abs(accuracy - held["pairwise_accuracy"]) <= 1.0 / total + 1e-9
    if not ok:
        print("below the bar: need >= 0.85", file=sys.stderr)
    if not agrees:
        print("the CSV's figure disagrees with summary.json", file=sys.stderr)
    return 0 if ok and agrees else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
