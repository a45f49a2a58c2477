#!/usr/bin/env python3
"""Checks the main job's summary.json against issue #5's bar: on the held-back photos, the
pretrained checkpoint's pairwise accuracy is at least 0.85 and at least 0.2 above the random
initialisation. Standard library only.

    python3 scripts/check_main_job.py runs/pretrain/<run>/summary.json
"""
import json
import sys


def main(path: str) -> int:
    with open(path) as f:
        summary = json.load(f)
    d = summary["degradations"]
    trained, random_init = d["pairwise_accuracy"], d["random_init_pairwise_accuracy"]
    print(
        f"pairwise accuracy {trained:.4f}, random init {random_init:.4f}, "
        f"{d['pairs']} pairs on {len(d['photos'])} held-out photos; "
        f"{summary['steps']} steps in {summary['train_seconds']:.0f} s"
    )
    for kind, acc in sorted(d["per_kind"].items()):
        print(f"  {kind:14s} {acc:.3f} (random init {d['random_init_per_kind'][kind]:.3f})")
    ok = trained >= 0.85 and trained - random_init >= 0.2
    if not ok:
        print("below the bar: need >= 0.85 and >= 0.2 above random init", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
