"""calm against its references, side by side in one run on the same inputs and weights
(issue #24). Each program, calm's examples and the reference scripts alike, prints lines
`bench {"workload": ..., "unit": ..., "value": ...}`; this joins them by workload and prints
one line per workload with both figures and their ratio (above 1: calm is faster), or with
--json one JSON array of objects with the keys workload, unit, calm, reference, ratio.

    python3 scripts/bench/compare.py [--json] [--quick] [--only GROUP ...]

scripts/bench/compare.sh builds the examples and the reference environment first. Run it with
nothing else on the machine: before each program this samples the CPUs for a second and warns
when something else is using them (a concurrent build halves some figures on 2 cores)."""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "target" / "release" / "examples"
BENCH = ROOT / "scripts" / "bench"

# The workloads in the order they are printed, and their reference.
ROWS = [
    ("transformer_train_step", "PyTorch"),
    ("vit_b16_forward", "PyTorch"),
    ("efficientnet_lite0_forward", "PyTorch"),
    ("minilm_forward", "PyTorch"),
    ("smollm2_f32_prefill", "PyTorch"),
    ("smollm2_f32_decode", "PyTorch"),
    ("smollm2_q4_1_prefill", "llama.cpp"),
    ("smollm2_q4_1_decode", "llama.cpp"),
]


def groups(python, quick):
    """Each group: (name, calm's command, the references' commands)."""
    steps, iters = ("10", "2") if quick else ("30", "5")
    lm = ["128", "64", "1" if quick else "3"]
    return [
        ("transformer", [EXAMPLES / "backend_step", "cpu", steps],
         [[python, BENCH / "transformer_step_torch.py", steps]]),
        ("vit", [EXAMPLES / "vit_b16", "cpu", iters],
         [[python, BENCH / "vit_b16_torch.py", iters]]),
        ("encoders", [EXAMPLES / "encoders_bench", iters],
         [[python, BENCH / "encoders_torch.py", iters]]),
        ("smollm2", [EXAMPLES / "smollm2_bench", *lm],
         [[python, BENCH / "smollm2_torch.py", *lm],
          [python, BENCH / "smollm2_llamacpp.py", *lm]]),
    ]


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields), idle


def busy_fraction(seconds=1.0):
    """The share of the CPUs something else used over `seconds` (this process sleeps)."""
    try:
        total0, idle0 = cpu_times()
        time.sleep(seconds)
        total1, idle1 = cpu_times()
    except OSError:
        return 0.0
    total = total1 - total0
    return 0.0 if total <= 0 else 1.0 - (idle1 - idle0) / total


def run(command, threads):
    """The bench lines of `command`, by workload; its other output goes to stderr."""
    program = " ".join(Path(str(c)).name for c in command[:2])
    busy = busy_fraction()
    if busy > 0.2:
        print(f"WARNING: the machine is busy ({busy:.0%} of its CPUs in use before {program}): "
              "the figures are not comparable", file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        out = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"FAILED: {' '.join(map(str, command))}: {e}", file=sys.stderr)
        return {}
    found = {}
    for line in out.stdout.splitlines():
        if line.startswith("bench "):
            record = json.loads(line[len("bench "):])
            found[record["workload"]] = record
        else:
            print(f"  {line}", file=sys.stderr)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        print(f"FAILED ({out.returncode}): {' '.join(map(str, command))}\n{tail}",
              file=sys.stderr)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test)")
    parser.add_argument("--only", nargs="+", metavar="GROUP",
                        help="transformer, vit, encoders, smollm2 (default: all)")
    parser.add_argument("--python", default=os.environ.get("PYTHON", sys.executable),
                        help="the interpreter with scripts/bench/requirements.txt")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    print(f"{model}, {threads} threads for every program", file=sys.stderr)
    calm, reference = {}, {}
    for name, own, references in groups(args.python, args.quick):
        if args.only and name not in args.only:
            continue
        calm.update(run(own, threads))
        for command in references:
            reference.update(run(command, threads))
    rows = []
    for workload, who in ROWS:
        c, r = calm.get(workload), reference.get(workload)
        if c is None and r is None:
            continue
        unit = (c or r)["unit"]
        cv = c["value"] if c else None
        rv = r["value"] if r else None
        ratio = cv / rv if cv and rv else None
        rows.append({"workload": workload, "unit": unit, "calm": cv, "reference": rv,
                     "ratio": ratio, "_who": who})
    if args.json:
        print(json.dumps([{k: v for k, v in row.items() if not k.startswith("_")}
                          for row in rows], indent=2))
        return
    show = lambda v: "-" if v is None else f"{v:.2f}"
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        print(f"{row['workload']:<27} calm {show(row['calm']):>8}   {row['_who']:<9} "
              f"{show(row['reference']):>8}  {row['unit']:<11}  ratio {ratio}")


if __name__ == "__main__":
    main()
