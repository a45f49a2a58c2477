#!/usr/bin/env python3
"""Checks what `evaluate task` wrote for the three fixture protocols (tests/fixtures/eval/*.yaml)
with the built-in fine-tuning run: each results directory has its predictions and a
metrics.json with every metric the protocol reports, as numbers. Standard library only.

    for c in ava_scoring ava_captions flickr_aes; do
      cargo run --release --bin evaluate -- task --config tests/fixtures/eval/$c.yaml \
          --checkpoint RUN --output-dir OUT/$c
    done
    python3 scripts/check_eval_task.py OUT
"""
import json
import math
import os
import sys

KEYS = {
    "ava_scoring": ["srcc", "plcc", "plcc_logistic", "krcc", "acc", "mae", "rmse", "n"],
    "ava_captions": ["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"],
    "flickr_aes": ["shots", "srcc", "srcc_std", "raters"],
}
PREDICTIONS = {"ava_scoring": "predictions.csv", "ava_captions": "predictions.json",
               "flickr_aes": "predictions.csv"}


def number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def main(out: str) -> int:
    bad = []
    for protocol, keys in KEYS.items():
        d = os.path.join(out, protocol)
        with open(os.path.join(d, "metrics.json")) as f:
            m = json.load(f)
        if m.get("protocol") != protocol:
            bad.append(f"{protocol}: metrics.json names {m.get('protocol')}")
        metrics = m["metrics"]
        if protocol == "ava_scoring":
            groups = [metrics]
        elif protocol == "ava_captions":
            groups = [metrics["scores"]]
        else:
            groups = metrics["results"]
        for g in groups:
            for k in keys:
                if not number(g.get(k)):
                    bad.append(f"{protocol}: {k} = {g.get(k)!r}")
        if not os.path.getsize(os.path.join(d, PREDICTIONS[protocol])):
            bad.append(f"{protocol}: empty predictions")
        shown = {k: groups[0].get(k) for k in keys}
        print(f"{protocol}: {json.dumps(shown)}")
    for b in bad:
        print(b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
