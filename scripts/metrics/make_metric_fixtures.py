"""Reference values for calm's score and captioning metrics (issue #8), computed with
scipy.stats / scipy.optimize (SRCC, PLCC, KRCC, the VQEG 4-parameter logistic fit) and with
the coco-caption toolkit as packaged on PyPI, pycocoevalcap (PTBTokenizer, Bleu(4), Rouge(),
Cider(), Meteor() = METEOR 1.5). EMD, MAE, RMSE and binary accuracy are direct numpy
computations.

Writes four JSON files (sorted keys, floats as Python repr, nothing rounded):

    scores.json         SRCC / PLCC / PLCC after the logistic fit / KRCC / ACC / MAE / RMSE,
                        EMD (r=1, r=2) on 10-bin distributions
    captions.json       60 images x 5 references + 1 candidate: raw text, PTB-tokenized text,
                        corpus and per-image BLEU-1..4, ROUGE-L, CIDEr-D, METEOR
    ptb_tokenizer.json  tricky single sentences and what PTBTokenizer makes of them
    meteor.json         METEOR 1.5 segment statistics and scores (full matcher, and restricted
                        to exact+stem and exact) on the caption set and on pairs that isolate
                        the matcher stages

Run (needs Java on PATH; pycocoevalcap calls the jars it ships):

    python3 -m venv /tmp/metricsenv
    /tmp/metricsenv/bin/pip install -r scripts/metrics/requirements.txt
    /tmp/metricsenv/bin/python scripts/metrics/make_metric_fixtures.py [tests/fixtures/metrics]

The output is deterministic (fixed seeds); running it twice gives identical bytes.
"""

import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import threading
import warnings
import zipfile
from importlib.metadata import version
from pathlib import Path

# Java 17 takes its default charset from the locale; PTBTokenizer reads a UTF-8 temp file.
os.environ["LC_ALL"] = "C.UTF-8"
os.environ["LANG"] = "C.UTF-8"

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.optimize import OptimizeWarning, curve_fit  # noqa: E402

import pycocoevalcap.eval  # noqa: E402
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.bleu.bleu_scorer import BleuScorer  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.meteor.meteor import Meteor  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer  # noqa: E402

PKG_DIR = Path(pycocoevalcap.eval.__file__).resolve().parent
METEOR_JAR = PKG_DIR / "meteor" / "meteor-1.5.jar"
CORENLP_JAR = PKG_DIR / "tokenizer" / "stanford-corenlp-3.4.1.jar"


def java_version():
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return out.splitlines()[0].strip() if out else "unknown"


GENERATOR = (
    f"scripts/metrics/make_metric_fixtures.py; python {sys.version.split()[0]}, "
    f"numpy {np.__version__}, scipy {scipy.__version__}, pycocoevalcap {version('pycocoevalcap')}, "
    f"{java_version()}"
)


def f(x):
    """A plain Python float (numpy scalars are not JSON)."""
    return float(x)


def write_json(path, obj):
    text = json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


# ----------------------------------------------------------------------------------------
# Score metrics
# ----------------------------------------------------------------------------------------

LOGISTIC_MAXFEV = 10000


def logistic4(x, b1, b2, b3, b4):
    # VQEG 4-parameter logistic: b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)).
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def logistic_fit(pred, gt):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    init = [np.max(gt), np.min(gt), np.mean(pred), np.std(pred) / 4.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        params, _ = curve_fit(logistic4, pred, gt, p0=init, maxfev=LOGISTIC_MAXFEV)
    fitted = logistic4(pred, *params)
    sse = float(np.sum((fitted - gt) ** 2))
    plcc = stats.pearsonr(fitted, gt).statistic
    return [f(v) for v in init], [f(v) for v in params], f(plcc), sse, [f(v) for v in fitted]


def score_case(name, pred, gt, note):
    pred = [float(v) for v in pred]
    gt = [float(v) for v in gt]
    p = np.asarray(pred)
    g = np.asarray(gt)
    case = {
        "name": name,
        "note": note,
        "n": len(pred),
        "pred": pred,
        "gt": gt,
        "srcc": f(stats.spearmanr(p, g).statistic),
        "plcc": f(stats.pearsonr(p, g).statistic),
        "krcc": f(stats.kendalltau(p, g).statistic),
        "acc": f(np.mean((p > 5.0) == (g > 5.0))),
        "acc_ge": f(np.mean((p >= 5.0) == (g >= 5.0))),
        "mae": f(np.mean(np.abs(p - g))),
        "rmse": f(np.sqrt(np.mean((p - g) ** 2))),
    }
    if len(pred) >= 4:
        init, params, plcc_l, sse, fitted = logistic_fit(p, g)
        spread = float(np.max(g) - np.min(g))
        stable = all(np.min(g) - spread <= b <= np.max(g) + spread for b in params[:2])
        case.update(
            logistic_well_conditioned=bool(stable),
            logistic_init=init,
            logistic_params=params,
            plcc_logistic=plcc_l,
            logistic_sse=sse,
            logistic_fitted=fitted,
        )
    else:
        # curve_fit's Levenberg-Marquardt needs at least as many points as parameters.
        case.update(logistic_well_conditioned=False, logistic_init=None, logistic_params=None,
                    plcc_logistic=None, logistic_sse=None, logistic_fitted=None)
    return case


def score_cases():
    rng = np.random.default_rng(20261122)
    cases = []

    # Many ties in both: MOS on a half-point grid, predictions rounded to half points.
    gt = np.round(rng.uniform(1.0, 10.0, 40) * 2) / 2
    pred = np.round((gt + rng.normal(0, 1.2, 40)) * 2) / 2
    cases.append(score_case("ties_half_points", pred, gt,
                            "pred and gt on a 0.5 grid: many ties in both"))

    # Integer ratings 1..5 in both (heavy ties, like a 5-point ACR scale).
    gt = rng.integers(1, 6, 30).astype(float)
    pred = np.clip(np.round(gt + rng.normal(0, 0.9, 30)), 1, 5)
    cases.append(score_case("ties_integers", pred, gt, "integer scores 1..5 in both"))

    # Ties only in gt.
    gt = np.round(rng.uniform(2.0, 8.0, 25))
    pred = np.round(gt + rng.normal(0, 0.7, 25), 3)
    cases.append(score_case("ties_gt_only", pred, gt, "integer gt, continuous pred"))

    # No ties.
    gt = np.round(rng.uniform(1.0, 9.0, 25), 4)
    pred = np.round(0.8 * gt + 1.0 + rng.normal(0, 0.8, 25), 4)
    assert len(set(gt)) == 25 and len(set(pred)) == 25
    cases.append(score_case("no_ties", pred, gt, "continuous, all values distinct"))

    # Negative correlation.
    gt = np.round(rng.uniform(3.0, 8.0, 20), 3)
    pred = np.round(11.0 - gt + rng.normal(0, 0.6, 20), 3)
    cases.append(score_case("negative", pred, gt, "pred decreases with gt"))

    # Smallest sizes.
    cases.append(score_case("n3", [2.5, 1.0, 4.0], [3.0, 1.5, 2.0],
                            "n=3: no logistic fit (fewer points than parameters)"))
    cases.append(score_case("n3_ties", [5.0, 5.0, 6.0], [4.0, 6.0, 6.0],
                            "n=3 with a tie in each"))
    cases.append(score_case("n4", [1.0, 2.0, 3.5, 3.0], [1.5, 2.5, 4.0, 4.5],
                            "n=4: smallest size with a logistic fit"))

    # n = 200, nonlinear (sigmoidal) relation: the logistic fit raises PLCC.
    x = rng.uniform(0.0, 1.0, 200)
    gt = np.round(1.0 + 9.0 / (1.0 + np.exp(-(x - 0.5) / 0.12)) + rng.normal(0, 0.5, 200), 3)
    pred = np.round(x, 4)
    cases.append(score_case("n200_sigmoid", pred, gt, "n=200, gt a noisy sigmoid of pred"))

    # n = 200, linear with some ties from rounding to 0.1.
    gt = np.round(rng.normal(5.4, 0.75, 200), 1)
    pred = np.round(gt * 0.7 + 1.6 + rng.normal(0, 0.45, 200), 1)
    cases.append(score_case("n200_ties_tenths", pred, gt, "n=200, both rounded to 0.1"))

    # AVA-like: integer MOS around 5 (some exactly 5.0), predictions on a 0.5 grid incl. 5.0.
    gt = np.clip(np.round(rng.normal(5.2, 1.1, 60)), 2, 8)
    pred = np.clip(np.round((0.6 * gt + 2.1 + rng.normal(0, 0.6, 60)) * 2) / 2, 1, 10)
    assert np.sum(gt == 5.0) >= 5 and np.sum(pred == 5.0) >= 3
    cases.append(score_case("ava_integer_mos", pred, gt,
                            "AVA-like MOS around 5 with exact 5.0 values in both (acc vs acc_ge differ)"))

    # Monotone but nonlinear: SRCC = KRCC = 1, PLCC < 1.
    gt = np.round(np.linspace(1.0, 9.0, 15), 6)
    pred = np.round(np.exp(gt / 2.0), 6)
    cases.append(score_case("monotone_exp", pred, gt, "pred = exp(gt/2): rank metrics are exactly 1"))

    return cases


def emd(p, q, r):
    """NIMA's EMD per image: (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r), p and q normalised first."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    d = np.abs(np.cumsum(p) - np.cumsum(q))
    return float(np.mean(d ** r) ** (1.0 / r))


def dist_case(name, pred, gt, note):
    pred = [[float(v) for v in row] for row in pred]
    gt = [[float(v) for v in row] for row in gt]
    bins = np.arange(1, 11, dtype=np.float64)
    e1 = [emd(p, q, 1) for p, q in zip(pred, gt)]
    e2 = [emd(p, q, 2) for p, q in zip(pred, gt)]
    mean = lambda rows: [float(np.sum(np.asarray(r) / np.sum(r) * bins)) for r in rows]  # noqa: E731
    return {
        "name": name,
        "note": note,
        "pred": pred,
        "gt": gt,
        "emd1": float(np.mean(e1)),
        "emd2": float(np.mean(e2)),
        "emd1_per_image": e1,
        "emd2_per_image": e2,
        "mean_pred": mean(pred),
        "mean_gt": mean(gt),
    }


def distribution_cases():
    rng = np.random.default_rng(8)
    out = []

    def softmax_rows(n):
        z = rng.normal(0, 1.0, (n, 10))
        e = np.exp(z)
        return np.round(e / e.sum(axis=1, keepdims=True), 6)

    def vote_rows(n, total=(60, 260)):
        rows = []
        for _ in range(n):
            centre = rng.uniform(3.5, 7.0)
            votes = rng.integers(*total)
            draws = np.clip(np.round(rng.normal(centre, 1.4, votes)), 1, 10).astype(int)
            rows.append(np.bincount(draws - 1, minlength=10).astype(float))
        return np.array(rows)

    pred = softmax_rows(8)
    gt = vote_rows(8)
    out.append(dist_case("softmax_vs_votes", pred, gt,
                         "pred sums to 1 (up to rounding), gt are raw AVA-like vote counts with zeros"))

    pred = vote_rows(6, (20, 40))
    gt = vote_rows(6, (20, 40))
    out.append(dist_case("votes_vs_votes", pred, gt, "both raw counts, many zero bins"))

    one_lo = [1.0] + [0.0] * 9
    one_hi = [0.0] * 9 + [1.0]
    mid = [0.0] * 4 + [0.5, 0.5] + [0.0] * 4
    out.append(dist_case("one_hot_extremes", [one_lo, one_hi, mid], [one_hi, one_lo, mid],
                         "bin 1 vs bin 10 (emd1 = 0.9), and an identical pair (emd = 0)"))

    same = softmax_rows(3)
    out.append(dist_case("identical", same, same * 3.0, "gt = 3 x pred: identical after normalising"))
    return out


# ----------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------

SUBJECTS = [
    # (subject, plural detail, subject-specific comments)
    ("dog", "eyes", ["Cute dog, but the tail is cut off.", "Those eyes! Lovely pet portrait."]),
    ("cat", "whiskers", ["The cat's expression is priceless.", "Nice catchlights in the eyes."]),
    ("old man", "wrinkles", ["Great character study; every wrinkle tells a story.",
                             "Would love to see this in black & white."]),
    ("sunset", "clouds", ["Colours of the sunset are stunning, but it's a bit cliche.",
                          "The sun is too bright in the frame."]),
    ("bridge", "cables", ["Strong geometry: the cables lead the eye nicely.",
                          "A long exposure on the water would smooth it out."]),
    ("flower", "petals", ["Lovely macro, the petals are razor sharp.", "The dew drops are a nice touch!"]),
    ("lighthouse", "rocks", ["Classic lighthouse shot... seen it many times.",
                             "The crashing waves add drama."]),
    ("girl", "eyes", ["Beautiful portrait, her eyes are captivating.",
                      "The skin tones look a bit too orange."]),
    ("skyline", "lights", ["Nice blue-hour timing; the city lights glow.",
                           "Verticals are converging, correct the perspective."]),
    ("waterfall", "rocks", ["Silky water - what shutter speed, 2 seconds?",
                            "The rocks in the foreground anchor the frame."]),
    ("bird", "feathers", ["Great action shot, the bird's wings are frozen perfectly.",
                          "Feathers are a little soft; maybe motion blur?"]),
    ("car", "wheels", ["Cool reflections on the paint.", "The car's wheels are cut off at the bottom."]),
    ("lake", "reflections", ["Mirror-like reflection, very calm and peaceful.",
                             "The lake's reflection is beautiful, but the sky is dull."]),
    ("musician", "hands", ["Great street moment, you can almost hear the music.",
                           "His hands are blurred; 1/60s was too slow."]),
    ("horse", "legs", ["The horse's mane catches the backlight beautifully.", "Legs are cut off - a pity."]),
    ("beach", "waves", ["Relaxing scene; the waves are nicely timed.", "The horizon is crooked (again!)."]),
    ("rose", "petals", ["A red rose on black... simple but effective.",
                        "Too much post-processing on the petals."]),
    ("train", "tracks", ["The tracks create great leading lines.", "Nice motion blur on the train."]),
    ("forest path", "trees", ["The path invites the viewer in.", "Light rays through the trees are magical!"]),
    ("church", "windows", ["The stained-glass windows glow beautifully.",
                           "Interior is too dark; bracket and blend next time."]),
]

PRAISE = [
    "Nice use of the rule of thirds, but the horizon is tilted!",
    "Love the colours here - the {s} really pops against the background.",
    "Great colors and a very clean composition.",
    "Beautiful light on the {s}; the warm tones work well.",
    "Wonderful capture! The {s}'s {d} are tack sharp.",
    "Very well focused, and the bokeh is lovely.",
    "Excellent timing... this one is a keeper.",
    "I like how the leading lines draw my eye to the {s}.",
    "Superb exposure (not an easy scene to meter).",
    "This made me smile :) great mood.",
    "Strong image. The colour palette is subtle but effective.",
    "Gorgeous! Did you use a polarizer? The sky is so deep.",
    "Fantastic detail in the {d}; well done.",
    "Simple, clean and well executed - top 10 for me.",
    "Meets the challenge well: 7/10 from me.",
    "The composition is great and the colours are well balanced.",
]

CRITIQUE = [
    "Too dark... try a longer exposure.",
    "The focus is a bit soft on the {s}'s {d}.",
    "Focusing seems off: the background is sharper than the {s}.",
    "I'd crop a little off the left side; there's too much empty space.",
    "Shame about the blown-out sky (maybe use a grad ND filter?).",
    "Shot at 1/250s and f/2.8? The depth of field is too shallow for this.",
    "Don't center the {s}; it makes the frame feel static.",
    "The horizon isn't level - it bugs me.",
    "A bit oversaturated for my taste; the colours look unnatural.",
    "Noisy in the shadows. What ISO was this, 3200?",
    "The white balance is off, everything looks \"blue\".",
    "Needs more contrast; it's rather flat.",
    "Distracting background... a wider aperture would have helped.",
    "The photographer's choice of a low angle doesn't quite work here.",
    "Why so much vignetting?? It's heavy-handed.",
    "Not sure about the processing, the HDR look is overdone.",
    "Slightly out of focus, unfortunately.",
    "The {s} is cut off at the edge; give it room to breathe!",
    "Doesn't really fit the challenge, IMO.",
    "Exposure looks about 1.5 stops too bright.",
]

CANDIDATES = [
    "The {s} is in focus and the colours are nice.",
    "nice composition, but the image is too dark",
    "Great shot of the {s}! Love the colors.",
    "The focus is soft and the background is distracting.",
    "Good light, good colour, well focused.",
    "I like the composition but the horizon is tilted.",
    "Too bright; the sky is blown out.",
    "Beautiful photo.",
    "A photo of the {s} on a sunny day.",
    "Interesting subject matter, yet the execution lacks punch.",
    "The colors are oversaturated and the {s} is not sharp.",
    "Nice exposure, the {d} are well exposed.",
    "Composed well; I'd crop the left side though.",
    "the {s} is too small in the frame",
    "Lovely colours and lighting!",
    "Focus is on the background, not on the {s}.",
]

# image index -> a very short candidate
SHORT_CANDIDATES = {13: "Nice!", 29: "Too dark.", 50: "Great shot!", 55: "Wow"}


def fill(template, subject, detail):
    return template.replace("{s}", subject).replace("{d}", detail)


def caption_set():
    rng = random.Random(2026_11_22)
    refs, pred = {}, {}
    images = []
    for rep in range(3):
        for subject, detail, own in SUBJECTS:
            images.append((subject, detail, own))
    for idx, (subject, detail, own) in enumerate(images):
        img = f"img_{idx:03d}.jpg"
        pool = [fill(t, subject, detail) for t in PRAISE + CRITIQUE] + own
        chosen = []
        while len(chosen) < 5:
            k = rng.choice([1, 1, 2])
            parts = rng.sample(pool, k)
            text = " ".join(parts)
            if text not in chosen:
                chosen.append(text)
        refs[img] = chosen
        r = rng.random()
        if idx in (7, 41):
            pred[img] = chosen[2]  # identical to a reference
        elif idx in SHORT_CANDIDATES:
            pred[img] = SHORT_CANDIDATES[idx]
        elif r < 0.25:
            a, b = rng.sample(CANDIDATES, 2)
            pred[img] = fill(a, subject, detail) + " " + fill(b, subject, detail)
        else:
            pred[img] = fill(rng.choice(CANDIDATES), subject, detail)
    return pred, refs


def tokenize(d):
    tok = PTBTokenizer()
    with contextlib.redirect_stdout(io.StringIO()):
        return tok.tokenize(d)


def bleu_details(gts, res):
    scorer = BleuScorer(n=4)
    for img in gts:
        scorer += (res[img][0], gts[img])
    scorer.compute_score(option="closest", verbose=0)
    guess = [0] * 4
    correct = [0] * 4
    per_image = {}
    for img, comps in zip(gts, scorer.ctest):
        testlen = comps["testlen"]
        reflen = min((abs(l - testlen), l) for l in comps["reflen"])[1]
        per_image[img] = {"testlen": testlen, "reflen_closest": reflen,
                          "reflens": list(comps["reflen"]),
                          "guess": list(comps["guess"]), "correct": list(comps["correct"])}
        for k in range(4):
            guess[k] += comps["guess"][k]
            correct[k] += comps["correct"][k]
    return {"testlen": scorer._testlen, "reflen": scorer._reflen, "guess": guess,
            "correct": correct, "per_image": per_image}


def caption_fixture(meteor_full):
    pred_raw, refs_raw = caption_set()
    imgs = sorted(pred_raw)
    gts = tokenize({i: [{"caption": c} for c in refs_raw[i]] for i in imgs})
    res = tokenize({i: [{"caption": pred_raw[i]}] for i in imgs})

    with contextlib.redirect_stdout(io.StringIO()):
        bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    meteor, meteor_per = meteor_full.compute_score(gts, res)

    per_image = {f"bleu{k + 1}": {i: f(v) for i, v in zip(imgs, bleu_per[k])} for k in range(4)}
    per_image["rouge_l"] = {i: f(v) for i, v in zip(imgs, rouge_per)}
    per_image["cider"] = {i: f(v) for i, v in zip(imgs, cider_per)}
    per_image["meteor"] = {i: f(v) for i, v in zip(imgs, meteor_per)}

    fixture = {
        "generator": GENERATOR,
        "note": ("Scores are what pycocoevalcap's Bleu(4), Rouge(), Cider(), Meteor() return on "
                 "tokenized_pred / tokenized_refs (the PTBTokenizer output of pred / refs; refs and "
                 "pred tokenized in two separate calls, as COCOEvalCap does). Images in sorted key order."),
        "pred": {i: pred_raw[i] for i in imgs},
        "refs": {i: refs_raw[i] for i in imgs},
        "tokenized_pred": {i: res[i][0] for i in imgs},
        "tokenized_refs": {i: gts[i] for i in imgs},
        "scores": {
            "bleu1": f(bleu[0]), "bleu2": f(bleu[1]), "bleu3": f(bleu[2]), "bleu4": f(bleu[3]),
            "rouge_l": f(rouge), "cider": f(cider), "meteor": f(meteor),
        },
        "per_image": per_image,
        "bleu_info": bleu_details(gts, res),
        "cider_info": {"n": 4, "sigma": 6.0, "num_images": len(imgs),
                       "ref_len": f(np.log(float(len(imgs))))},
    }
    return fixture, gts, res


# ----------------------------------------------------------------------------------------
# PTB tokenizer
# ----------------------------------------------------------------------------------------

PTB_CASES = [
    "Don't over-sharpen it.",
    "The photographer's choice of lens...",
    'He said "wow" and left.',
    "Shot at 1/250s, f/2.8, ISO 100.",
    "Focal length: 50mm; exposure 0.5 sec.",
    "Check www.example.com/photos for more!",
    "See http://flickr.com/photos/abc?id=3 please",
    "It's a 3.5-star shot (IMO).",
    "WOW!!! AMAZING COLOURS!!!",
    "Too dark... try a longer exposure.",
    "Wait.... what?",
    "multiple   spaces   here",
    "tabs\tbetween\twords",
    "I can't, won't, and shouldn't.",
    "They're the kids' toys.",
    "Unicode apostrophe: don\u2019t and photographer\u2019s",
    "Curly quotes \u201clike this\u201d here",
    "Em dash\u2014like this\u2014and en dash \u2013 too",
    "Brackets [square] and {curly} and <angle>",
    "Price $5.00 & 50% off #hashtag @user",
    "e.g. this, i.e. that, etc. and Mr. Smith",
    "The U.S. photographer's shot.",
    "Rating: 7/10 - not bad :)",
    "A 16:9 crop would've been better.",
    "'Single quotes' around words",
    "``Already PTB'' quotes",
    "cannot gonna gotta wanna",
    "Hyphen-ated well-known state-of-the-art",
    "Numbers 1,000,000 and 3.14159 and -5 and +3",
    "Ellipsis \u2026 unicode",
    "Semi;colon:colon,comma.period!bang?question",
    "Trailing spaces   ",
    "  Leading spaces",
    "ALL CAPS SENTENCE WITH I'M AND DON'T",
    "ol' rock 'n' roll '90s",
    "Hmm... 1.5 stops over-exposed?!",
    "a/b testing and either/or",
    "Exposure +0.7EV, 24-70mm f/2.8L",
    "--double dash-- and - single -",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "*stars* and _underscores_ and ~tilde~",
    "(Parenthesised sentence.)",
    "Nice!",
    "",
]


def ptb_raw(lines):
    """The Stanford tokenizer's own output, before pycocoevalcap drops punctuation tokens."""
    import tempfile

    with tempfile.NamedTemporaryFile(delete=False, dir=CORENLP_JAR.parent) as tmp:
        tmp.write("\n".join(s.replace("\n", " ") for s in lines).encode())
    try:
        out = subprocess.run(
            ["java", "-cp", CORENLP_JAR.name, "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", os.path.basename(tmp.name)],
            cwd=CORENLP_JAR.parent, capture_output=True, check=True).stdout.decode()
    finally:
        os.remove(tmp.name)
    return out.split("\n")


def ptb_fixture():
    # Each sentence twice: inside a batch (followed by another line, as almost every caption
    # is when pycocoevalcap tokenizes a whole set) and alone (at the end of the file).
    # The Stanford lexer treats a few tokens differently at end of file (":)" below).
    batch_in = {f"c{i:02d}": [{"caption": s}] for i, s in enumerate(PTB_CASES)}
    batch_in["zz_end"] = [{"caption": "end"}]
    batch = tokenize(batch_in)
    batch_raw = ptb_raw(PTB_CASES + ["end"])
    cases = []
    for i, s in enumerate(PTB_CASES):
        cases.append({
            "raw": s,
            "tokenized": batch[f"c{i:02d}"][0],
            "stanford_output": batch_raw[i].rstrip(),
            "tokenized_at_eof": tokenize({"x": [{"caption": s}]})["x"][0],
            "stanford_output_at_eof": ptb_raw([s])[0].rstrip(),
        })
    return {
        "generator": GENERATOR,
        "command": ["java", "-cp", "stanford-corenlp-3.4.1.jar",
                    "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", "<file>"],
        "punctuation_removed": list(PUNCTUATIONS),
        "note": ("tokenized = what PTBTokenizer().tokenize returns for raw when raw is one line of a "
                 "batch followed by another line; tokenized_at_eof = the same for raw tokenized alone "
                 "(last line of the file). stanford_output(_at_eof) = the jar's output line before "
                 "pycocoevalcap drops the tokens in punctuation_removed (whole-token, case-sensitive "
                 "match, so the lower-cased -lrb- / -rrb- / -lsb- ... survive). Run with a UTF-8 locale."),
        "cases": cases,
    }


# ----------------------------------------------------------------------------------------
# METEOR
# ----------------------------------------------------------------------------------------

METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.2, 0.6, 0.75


class MeteorRunner:
    """pycocoevalcap's Meteor protocol (SCORE lines, then one EVAL line) with extra jar flags,
    keeping each segment's sufficient statistics."""

    def __init__(self, extra_args=()):
        self.cmd = ["java", "-jar", "-Xmx2G", METEOR_JAR.name, "-", "-", "-stdio", "-l", "en",
                    "-norm", *extra_args]
        self.p = subprocess.Popen(self.cmd, cwd=METEOR_JAR.parent, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lock = threading.Lock()

    def _line(self, s):
        self.p.stdin.write((s + "\n").encode())
        self.p.stdin.flush()
        return self.p.stdout.readline().decode().strip()

    def run(self, gts, res):
        stats_lines, seg = {}, {}
        eval_line = "EVAL"
        for i in gts:
            hyp = res[i][0].replace("|||", "").replace("  ", " ")
            st = self._line(" ||| ".join(("SCORE", " ||| ".join(gts[i]), hyp)))
            stats_lines[i] = st
            eval_line += f" ||| {st}"
        self.p.stdin.write((eval_line + "\n").encode())
        self.p.stdin.flush()
        for i in gts:
            seg[i] = float(self.p.stdout.readline().strip())
        total = float(self.p.stdout.readline().strip())
        return total, seg, stats_lines

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def meteor_from_stats(st, weights, aggregate_of=None):
    """METEOR 1.5's computeMetrics on a 23-number statistics line (or on the sum of several,
    summed as MeteorStats.addStats does)."""

    def parse(line):
        v = [float(x) for x in line.split()]
        assert len(v) == 23, line
        return v

    if aggregate_of is not None:
        rows = [parse(x) for x in aggregate_of]
        v = [0.0] * 23
        for r in rows:
            perfect = (sum(r[4:20:2]) == r[0] and sum(r[5:20:2]) == r[1] and r[20] == 1.0)
            for k in range(23):
                if k == 20 and perfect:
                    continue  # addStats skips the chunk of a perfect segment
                v[k] += r[k]
    else:
        v = parse(st)
    tlen, rlen, tfun, rfun = v[0:4]
    stages = [v[4 + 4 * s: 8 + 4 * s] for s in range(4)]  # tc, rc, tf, rf
    chunks, twm, rwm = v[20], v[21], v[22]
    d = METEOR_DELTA
    with np.errstate(all="ignore"):
        t_len_w = np.float64(d * (tlen - tfun) + (1.0 - d) * tfun)
        r_len_w = np.float64(d * (rlen - rfun) + (1.0 - d) * rfun)
        tw = np.float64(0.0)
        rw = np.float64(0.0)
        for s, w in enumerate(weights):
            tw += stages[s][0] * w * d
        for s, w in enumerate(weights):
            rw += stages[s][1] * w * d
        for s, w in enumerate(weights):
            tw += stages[s][2] * w * (1.0 - d)
        for s, w in enumerate(weights):
            rw += stages[s][3] * w * (1.0 - d)
        prec = tw / t_len_w
        rec = rw / r_len_w
        fmean = np.float64(1.0) / (((1.0 - METEOR_ALPHA) / prec) + (METEOR_ALPHA / rec))
        t_tot = sum(st_[0] + st_[2] for st_ in stages)
        r_tot = sum(st_[1] + st_[3] for st_ in stages)
        if t_tot == tlen and r_tot == rlen and chunks == 1.0:
            frag = np.float64(0.0)
        else:
            frag = np.float64(chunks) / ((twm + rwm) / 2.0)
        pen = METEOR_GAMMA * np.power(frag, METEOR_BETA)
        score = fmean * (1.0 - pen)
    if np.isnan(score):
        return 0.0
    return float(max(score, 0.0))


METEOR_CONFIGS = {
    # name: (extra jar args, module weights)
    "full": ([], [1.0, 0.6, 0.8, 0.6]),
    "exact_stem": (["-m", "exact stem", "-w", "1.0 0.6"], [1.0, 0.6]),
    "exact": (["-m", "exact", "-w", "1.0"], [1.0]),
}

METEOR_PAIRS = [
    # (stage it is meant to exercise, candidate, reference) -- already lower-cased/tokenized
    ("exact", "the horizon is tilted", "the horizon is tilted"),
    ("exact", "nice colours and sharp focus", "sharp focus and nice colours"),
    ("exact", "the sky is blown out", "the sky is completely blown out"),
    ("exact", "great shot", "great shot of the bridge"),
    ("exact", "the the the the", "the cat sat on the mat"),
    ("stem", "the colours are vivid", "the colour is vivid"),
    ("stem", "nice focusing on the eyes", "nice focus on the eyes"),
    ("stem", "focused shot", "focus shot"),
    ("stem", "the shot is focused", "the shot is in focus"),
    ("stem", "the exposure looks good", "the exposures look good"),
    ("stem", "sharpened too much", "too much sharpening"),
    ("stem", "lovely lighting", "lovely lights"),
    ("stem", "the birds are flying", "the bird is flying"),
    ("stem", "colours", "colour"),
    ("synonym", "a big picture of a dog", "a large photo of a dog"),
    ("synonym", "the picture is nice", "the photo is nice"),
    ("synonym", "big dog", "large dog"),
    ("synonym", "the image is blurry", "the picture is blurred"),
    ("synonym", "quick shutter speed", "fast shutter speed"),
    ("synonym", "large photo", "big picture"),
    ("paraphrase", "the photo is out of focus", "the picture is not sharp"),
    ("paraphrase", "in my opinion it is too bright", "i think it is overexposed"),
    ("paraphrase", "well done", "good job"),
    ("paraphrase", "focusing on the subject", "focused on the subject"),
    ("paraphrase", "a lot of noise in the shadows", "plenty of noise in the shadows"),
    ("normalizer", "do n't center the subject", "don't center the subject"),
    ("normalizer", "1/250s at f/2 .8", "1/250s and f/2.8"),
    ("normalizer", "-lrb- maybe -rrb- a grad nd filter", "maybe a grad nd filter"),
    ("normalizer", "over-exposed sky", "overexposed sky"),
    ("short", "nice", "beautiful composition and lovely colours"),
]


def meteor_fixture(cap_gts, cap_res, runners, official):
    out = {
        "generator": GENERATOR,
        "command": ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"],
        "eval_id": "meteor-1.5-wo-en-norm-0.85_0.2_0.6_0.75-ex_st_sy_pa-1.0_0.6_0.8_0.6",
        "parameters": {"alpha": METEOR_ALPHA, "beta": METEOR_BETA, "gamma": METEOR_GAMMA,
                       "delta": METEOR_DELTA},
        "configs": {k: {"extra_args": v[0], "module_weights": v[1]} for k, v in METEOR_CONFIGS.items()},
        "function_words": zipfile.ZipFile(METEOR_JAR).read("function/english.words").decode().split("\n"),
        "stats_layout": ("23 numbers: test_len ref_len test_function_words ref_function_words, then for "
                         "each of 4 stages (exact, stem, synonym, paraphrase): test_content ref_content "
                         "test_function ref_function matches, then chunks test_word_matches "
                         "ref_word_matches"),
        "note": ("captions.full.score / .segments equal pycocoevalcap Meteor().compute_score on "
                 "captions.json's tokenized text; score is the jar's EVAL result on the summed "
                 "statistics, not the mean of the segment scores (mean_of_segments is given for "
                 "comparison). exact_stem and exact are the same jar restricted with -m/-w: what an "
                 "implementation with only those matchers (and the same normalizer and aligner) "
                 "should reproduce."),
    }
    max_dev = 0.0

    def check(total, seg, stats_lines, weights):
        nonlocal max_dev
        for i in seg:
            mine = meteor_from_stats(stats_lines[i], weights)
            max_dev = max(max_dev, abs(mine - seg[i]))
        mine_total = meteor_from_stats(None, weights, aggregate_of=list(stats_lines.values()))
        max_dev = max(max_dev, abs(mine_total - total))

    # Caption set.
    captions = {}
    official_total, official_seg = official.compute_score(cap_gts, cap_res)
    for name, runner in runners.items():
        total, seg, st = runner.run(cap_gts, cap_res)
        check(total, seg, st, METEOR_CONFIGS[name][1])
        if name == "full":
            assert total == official_total and list(seg.values()) == list(official_seg), \
                "runner disagrees with pycocoevalcap's Meteor"
        captions[name] = {"score": total, "segments": seg, "stats": st,
                          "mean_of_segments": f(np.mean(list(seg.values())))}
    out["captions"] = captions

    # Stage-isolating pairs, each its own segment with one reference.
    gts = {f"pair_{k:02d}": [ref] for k, (_, _, ref) in enumerate(METEOR_PAIRS)}
    res = {f"pair_{k:02d}": [cand] for k, (_, cand, _) in enumerate(METEOR_PAIRS)}
    pairs = []
    per_config = {}
    for name, runner in runners.items():
        total, seg, st = runner.run(gts, res)
        check(total, seg, st, METEOR_CONFIGS[name][1])
        per_config[name] = (total, seg, st)
    off_total, off_seg = official.compute_score(gts, res)
    assert off_total == per_config["full"][0] and list(off_seg) == list(per_config["full"][1].values())
    for k, (stage, cand, ref) in enumerate(METEOR_PAIRS):
        key = f"pair_{k:02d}"
        pairs.append({
            "id": key, "stage": stage, "candidate": cand, "reference": ref,
            **{f"{name}_score": per_config[name][1][key] for name in runners},
            **{f"{name}_stats": per_config[name][2][key] for name in runners},
        })
    out["pairs"] = pairs
    out["pairs_aggregate"] = {name: per_config[name][0] for name in runners}
    out["python_recomputation_max_abs_dev"] = max_dev
    return out


# ----------------------------------------------------------------------------------------


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/metrics")
    out.mkdir(parents=True, exist_ok=True)

    write_json(out / "scores.json", {
        "generator": GENERATOR,
        "srcc": "scipy.stats.spearmanr(pred, gt).statistic (ties get average ranks)",
        "plcc": "scipy.stats.pearsonr(pred, gt).statistic",
        "krcc": "scipy.stats.kendalltau(pred, gt).statistic (variant 'b', scipy's default)",
        "acc_rule": ("acc = mean((pred > 5.0) == (gt > 5.0)): an image is 'high' iff its mean score is "
                     "strictly above 5 (TANet's AVA evaluation: np.where(score <= 5.00, 0, 1)); acc_ge "
                     "uses >= 5.0 instead, which some repositories use"),
        "mae": "mean(|pred - gt|) on the raw predictions",
        "rmse": "sqrt(mean((pred - gt)^2)) on the raw predictions",
        "logistic": ("f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2 fitted by "
                     f"scipy.optimize.curve_fit(f, pred, gt, p0=logistic_init, maxfev={LOGISTIC_MAXFEV}) "
                     "(Levenberg-Marquardt); plcc_logistic = pearsonr(f(pred), gt); logistic_sse = "
                     "sum((f(pred) - gt)^2) at the fitted parameters; null when n < 4. "
                     "logistic_well_conditioned is false where the fitted b1 or b2 lies more than "
                     "max(gt) - min(gt) outside [min(gt), max(gt)]: there the least-squares surface "
                     "is flat and another optimiser may stop elsewhere (compare the SSE, not the "
                     "parameters)"),
        "logistic_init": ("[max(gt), min(gt), mean(pred), std(pred) / 4] with the population std "
                          "(ddof=0), as pyiqa's fit_curve (chaofengc/IQA-PyTorch, "
                          "pyiqa/metrics/correlation_coefficient.py); pyiqa writes exp(-(x - b3) / b4) "
                          "without the |b4| of the VQEG form and leaves maxfev at scipy's default"),
        "logistic_maxfev": LOGISTIC_MAXFEV,
        "emd": ("per image: p, q normalised to sum 1; emd_r = (mean over the 10 bins of "
                "|cumsum(p) - cumsum(q)|^r)^(1/r) (NIMA); emd1 / emd2 = mean over images"),
        "mean_score": "sum_k p_k * k over bins k = 1..10 after normalising",
        "cases": score_cases(),
        "distributions": distribution_cases(),
    })

    write_json(out / "ptb_tokenizer.json", ptb_fixture())

    runners = {name: MeteorRunner(args) for name, (args, _) in METEOR_CONFIGS.items()}
    official = Meteor()
    try:
        captions, gts, res = caption_fixture(official)
        write_json(out / "captions.json", captions)
        write_json(out / "meteor.json", meteor_fixture(gts, res, runners, official))
    finally:
        for r in runners.values():
            r.close()


if __name__ == "__main__":
    main()
