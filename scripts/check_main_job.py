#!/usr/bin/env python3
"""Checks the main job's summary.json against issue #5's bar: on the held-back photos, the
pretrained checkpoint's pairwise accuracy is at least 0.85 and at least 0.2 above the random
initialisation. From the run's metrics.jsonl it also checks, per loss, the largest ratio of a
logged value to the median of its earlier values after the warm-up: issue #20 asks for at most
5 (the bounded attribute targets of `data::selfsup` keep it under 2). Standard library only.

    python3 scripts/check_main_job.py runs/pretrain/<run>/summary.json
"""
import json
import os
import statistics
import sys

SPIKE_RATIO = 5.0


def warmup_steps(run):
    """pretrain.schedule.warmup_steps from the run's resolved config (no YAML parser needed:
    the first `warmup_steps:` after the top-level `pretrain:` line)."""
    in_pretrain = False
    with open(os.path.join(run, "config.resolved.yaml")) as f:
        for line in f:
            if line and not line[0].isspace():
                in_pretrain = line.startswith("pretrain:")
            elif in_pretrain and line.strip().startswith("warmup_steps:"):
                return int(line.split(":", 1)[1])
    raise SystemExit("no pretrain.schedule.warmup_steps in config.resolved.yaml")


def spikes(run):
    """The worst ratio of a loss to the median of its earlier values, per loss, after the
    warm-up; prints them and returns whether every one stays within SPIKE_RATIO."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    warmup = warmup_steps(run)
    series = {"loss": [r["loss"] for r in rows]}
    for name in rows[0]["losses"]:
        series[name] = [r["losses"][name] for r in rows]
    ok = True
    for name, values in sorted(series.items()):
        worst, at = 0.0, None
        for i, row in enumerate(rows):
            if row["step"] <= warmup or i == 0:
                continue
            median = statistics.median(values[:i])
            ratio = values[i] / median if median > 0 else 0.0
            if ratio > worst:
                worst, at = ratio, row["step"]
        flag = "" if worst <= SPIKE_RATIO else f"  <- above {SPIKE_RATIO:g}x"
        print(f"  loss {name:12s} at most {worst:6.2f}x its running median (step {at}){flag}")
        ok = ok and worst <= SPIKE_RATIO
    return ok


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
    if not spikes(os.path.dirname(os.path.abspath(path))):
        print(
            f"unstable: a loss spiked above {SPIKE_RATIO:g}x its running median after warm-up",
            file=sys.stderr,
        )
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
