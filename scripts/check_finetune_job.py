#!/usr/bin/env python3
"""Checks the built-in fine-tuning job from files alone: `infer score`'s CSV on the held-out
photos and their degraded copies (RUN/held_out/images.txt), paired by RUN/held_out/pairs.csv.

Always required: the CSV has infer's header, its pairwise accuracy agrees with the one the run
put in its summary.json, and fine-tuning taught the ranking (at least 0.70, and 0.15 above the
figure before fine-tuning), which catches a broken pipeline. Issue #7's bars are printed, and
required with --require-bar: each original above its copy in at least 85% of pairs, and
comments and suggestions that name the defect of more than half of the described copies. The
built-in job meets them with no margin to spare (README, built-in job), so CI prints them
rather than failing on a pair. Standard library only.

    cargo run --release --bin infer -- score --checkpoint RUN \
        --list RUN/held_out/images.txt --output RUN/held_out_scores.csv
    python3 scripts/check_finetune_job.py [--require-bar] RUN
"""
import csv
import json
import os
import sys
from collections import defaultdict

# Always required: a taught ranking. Before fine-tuning the model ranks near chance (0.3 to
# 0.65 over the runs in the README).
FLOOR = 0.70
GAIN = 0.15
# Issue #7's bars, required with --require-bar: the ranking, and "names the defect in most
# cases" for comments and suggestions.
BAR = 0.85
NAMING = 0.5


def main(run: str, require_bar: bool) -> int:
    with open(os.path.join(run, "held_out_scores.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    header = ["image", "score", "score_numeric", "score_levels", "score_distribution", "score_regression"]
    if not rows or list(rows[0].keys()) != header:
        print("unexpected CSV header", file=sys.stderr)
        return 1
    # pairs.csv names files within held_out/; the CSV has them as infer was given them.
    score = {os.path.basename(r["image"]): float(r["score"]) for r in rows}
    right, total = 0, 0
    per_kind = defaultdict(lambda: [0, 0])
    with open(os.path.join(run, "held_out", "pairs.csv"), newline="") as f:
        pairs = list(csv.DictReader(f))
    for p in pairs:
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
    # Each readout of `infer score`, recomputed from the CSV's columns (issue #20, item 1).
    for column in ["score_levels", "score_numeric", "score_distribution", "score_regression"]:
        values = {os.path.basename(r["image"]): r[column] for r in rows}
        if all(v == "" for v in values.values()):
            continue
        value = lambda name: float(values[name]) if values[name] != "" else float("nan")
        hits = sum(value(p["original"]) > value(p["degraded"]) for p in pairs)
        print(f"  readout {column[6:]:13s} {hits / len(pairs):.3f}")
    if "score_gap" in held:
        print(
            f"  originals score {held['originals_mean_score']:.2f} "
            f"(spread {held['originals_score_spread']:.2f} across them), "
            f"{held['score_gap']:.2f} above their most degraded copies"
        )
    learned = accuracy >= FLOOR and accuracy >= held["before_pairwise_accuracy"] + GAIN
    meets_bar = accuracy >= BAR
    # Four printed decimals may tie scores the summary told apart: allow one pair.
    agrees = abs(accuracy - held["pairwise_accuracy"]) <= 1.0 / total + 1e-9
    if not learned:
        print(
            f"fine-tuning did not teach the ranking: need >= {FLOOR} and "
            f"{GAIN} above the figure before fine-tuning",
            file=sys.stderr,
        )
    naming = min(held["comments_naming_defect"], held["suggestions_naming_defect"])
    meets_bar = meets_bar and naming > NAMING
    if meets_bar:
        print(
            f"issue #7's bars hold: ranking {accuracy:.4f} >= {BAR}, "
            f"defect named in {naming:.1%} > {NAMING:.0%} of copies (the lower of the two)"
        )
    else:
        print(
            f"issue #7's bars do not hold: ranking {accuracy:.4f} (bar {BAR}), defect named "
            f"in {naming:.1%} of copies (bar: more than {NAMING:.0%})",
            file=sys.stderr,
        )
    if not agrees:
        print("the CSV's figure disagrees with summary.json", file=sys.stderr)
    ok = learned and agrees and (meets_bar or not require_bar)
    return 0 if ok else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    require = "--require-bar" in args
    args = [a for a in args if a != "--require-bar"]
    if len(args) != 1:
        sys.exit(__doc__)
    sys.exit(main(args[0], require))
