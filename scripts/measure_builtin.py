#!/usr/bin/env python3
"""Runs the built-in jobs (`pretrain`, then `finetune` from that run) once per seed, then
`evaluate degradations --kinds shifted` (degradations no run trains on) and `evaluate raters`
on the fine-tuned run, and prints each figure as the mean and sample standard deviation over
the seeds, with every seed's value: the figures the README reports (issue #20: a figure is a
mean over seeds, never one run). Then issue #20's bars, each with whether its mean holds.
Standard library only; the release binaries must be built.

    cargo build --release --bin pretrain --bin finetune --bin evaluate
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


def evaluation(args, out):
    """`evaluate ARGS`'s JSON report, kept in OUT (read back when it is there). Only a
    complete report is kept: it is parsed before it is written, and renamed into place."""
    if not os.path.isfile(out):
        command = [os.path.join("target", "release", "evaluate")] + args
        print("+", " ".join(command), flush=True)
        result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        report = json.loads(result.stdout)
        with open(out + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(out + ".tmp", out)
    with open(out) as f:
        return json.load(f)


def figures(pre, fine):
    with open(os.path.join(pre, "summary.json")) as f:
        p = json.load(f)
    with open(os.path.join(fine, "summary.json")) as f:
        h = json.load(f)["held_out"]
    shifted = evaluation(
        ["degradations", "--checkpoint", fine, "--images", os.path.join(pre, "held_out"),
         "--kinds", "shifted"],
        os.path.join(fine, "shifted.json"),
    )
    raters = evaluation(["raters", "--checkpoint", fine], os.path.join(fine, "raters.json"))
    out = {"pretrain ranking": p["degradations"]["pairwise_accuracy"]}
    out["finetune ranking (infer score's default readout)"] = h["pairwise_accuracy"]
    for name, value in sorted(h.get("readout_accuracy", {}).items()):
        out[f"  readout {name}"] = value
    for kind, value in sorted(h["per_kind"].items()):
        out[f"  kind {kind}"] = value
    out["finetune ranking, shifted kinds"] = shifted["pairwise_accuracy"]
    for kind, value in sorted(shifted["per_kind"].items()):
        out[f"  shifted kind {kind}"] = value
    kinds = list(h["per_kind"].values()) + list(shifted["per_kind"].values())
    out["finetune ranking, lowest kind"] = min(kinds)
    out["comments naming the defect"] = h["comments_naming_defect"]
    out["suggestions naming the defect"] = h["suggestions_naming_defect"]
    # Runs made before a figure existed lack it: it is left out of their seed's figures.
    for name, key in [
        ("originals: comments stating no defect", "originals_comments_without_defect"),
        ("originals: suggestions stating no defect", "originals_suggestions_without_defect"),
        ("originals mean score", "originals_mean_score"),
        ("originals score spread", "originals_score_spread"),
        ("score gap", "score_gap"),
    ]:
        if h.get(key) is not None:
            out[name] = h[key]
    out["raters: SRCC with own taste"] = raters["mean_srcc_own"]
    out["raters: SRCC with the other taste"] = raters["mean_srcc_other"]
    out["raters: own minus other"] = raters["mean_srcc_own"] - raters["mean_srcc_other"]
    return out


# Issue #20's bars on the means over seeds: (figure, at least).
BARS = [
    ("pretrain ranking", 0.92),
    ("finetune ranking (infer score's default readout)", 0.90),
    ("finetune ranking, lowest kind", 0.75),
    ("comments naming the defect", 0.70),
    ("suggestions naming the defect", 0.70),
    ("originals: comments stating no defect", 0.70),
    ("originals: suggestions stating no defect", 0.70),
    ("score gap", 1.5),
    ("raters: SRCC with own taste", 0.5),
    ("raters: own minus other", 0.3),
]


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
        run("pretrain", seed, pre, extra)
        run("finetune", seed, fine, extra + ["--set", f"finetune.pretrained={pre}"])
        per_seed[seed] = figures(pre, fine)
    keys = list(next(iter(per_seed.values())))
    print(f"\nmean ± sample std over seeds {', '.join(map(str, args.seeds))}:")
    keys += [k for s in args.seeds for k in per_seed[s] if k not in keys]
    means = {}
    for key in keys:
        # A figure the report could not compute is null (NaN in Rust): left out, and said.
        values = [per_seed[s][key] for s in args.seeds if per_seed[s].get(key) is not None]
        if not values:
            print(f"{key:52s} (no value)")
            continue
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        means[key] = statistics.mean(values)
        each = " / ".join(f"{v:.3f}" for v in values)
        print(f"{key:52s} {means[key]:.3f} ± {spread:.3f}   ({each})")
    print("\nissue #20's bars (on the means):")
    for key, bar in BARS:
        if key not in means:
            print(f"{key:52s} (no value)  bar {bar:g}")
            continue
        verdict = "holds" if means[key] >= bar else "below"
        print(f"{key:52s} {means[key]:.3f}  bar {bar:g}  {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(k): v for k, v in per_seed.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
