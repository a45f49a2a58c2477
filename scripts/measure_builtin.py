#!/usr/bin/env python3
"""Runs the built-in jobs (`pretrain`, then `finetune` from that run) once per seed and prints
each figure of their held-out evaluations as the mean and sample standard deviation over the
seeds, with every seed's value: the figures the README reports (issue #20: a figure is a mean
over seeds, never one run). Standard library only; the release binaries must be built.

    cargo build --release --bin pretrain --bin finetune
    python3 scripts/measure_builtin.py --seeds 42 1 2 --output-dir /tmp/builtin [--json F]

A seed whose runs already finished under --output-dir is read, not run again.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(binary, seed, out, extra):
    summary = os.path.join(out, "summary.json")
    if os.path.isfile(summary):
        return summary
    command = [os.path.join("target", "release", binary), "--set", f"seed={seed}"]
    command += extra + ["--output-dir", out, "--overwrite"]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return summary


def figures(pretrain_summary, finetune_summary):
    with open(pretrain_summary) as f:
        p = json.load(f)
    with open(finetune_summary) as f:
        h = json.load(f)["held_out"]
    out = {"pretrain ranking": p["degradations"]["pairwise_accuracy"]}
    out["finetune ranking (infer score's default readout)"] = h["pairwise_accuracy"]
    for name, value in sorted(h.get("readout_accuracy", {}).items()):
        out[f"  readout {name}"] = value
    for kind, value in sorted(h["per_kind"].items()):
        out[f"  kind {kind}"] = value
    out["comments naming the defect"] = h["comments_naming_defect"]
    out["suggestions naming the defect"] = h["suggestions_naming_defect"]
    for key in ["originals_mean_score", "originals_score_spread", "score_gap"]:
        if key in h:
            out[key.replace("_", " ")] = h[key]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--json", help="also write every seed's figures here")
    parser.add_argument(
        "--set", action="append", default=[], help="a config override for both jobs"
    )
    args = parser.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    per_seed = {}
    for seed in args.seeds:
        pre = os.path.join(args.output_dir, f"pretrain-{seed}")
        fine = os.path.join(args.output_dir, f"finetune-{seed}")
        pre_summary = run("pretrain", seed, pre, extra)
        fine_summary = run(
            "finetune", seed, fine, extra + ["--set", f"finetune.pretrained={pre}"]
        )
        per_seed[seed] = figures(pre_summary, fine_summary)
    keys = list(next(iter(per_seed.values())))
    print(f"\nmean ± sample std over seeds {', '.join(map(str, args.seeds))}:")
    for key in keys:
        values = [per_seed[s][key] for s in args.seeds if key in per_seed[s]]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        each = " / ".join(f"{v:.3f}" for v in values)
        print(f"{key:52s} {statistics.mean(values):.3f} ± {spread:.3f}   ({each})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(k): v for k, v in per_seed.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
