//! `evaluate scores` and `evaluate captions` as a user runs them: files in, JSON out, equal to
//! scipy's and pycocoevalcap's numbers (tests/fixtures/metrics, from
//! scripts/metrics/make_metric_fixtures.py); unmatched images reported; bad files refused in one
//! line. `evaluate task` is tested with a fine-tuned run in tests/finetune.rs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

const EVALUATE: &str = env!("CARGO_BIN_EXE_evaluate");

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn evaluate(args: &[&str]) -> Output {
    std::process::Command::new(EVALUATE)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("evaluate runs")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "evaluate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn close(what: &str, ours: &Value, theirs: &Value, tol: f64) {
    let (a, b) = (
        ours.as_f64()
            .unwrap_or_else(|| panic!("{what}: ours is {ours}")),
        theirs.as_f64().expect("reference"),
    );
    assert!((a - b).abs() <= tol, "{what}: ours {a}, reference {b}");
}

#[test]
fn scores_from_csv_files_equal_scipy_with_ties_and_report_unmatched_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scores = fixture("scores.json");
    let mut checked = 0;
    for case in scores["cases"].as_array().expect("cases") {
        let (pred, gt) = (floats(&case["pred"]), floats(&case["gt"]));
        // Predictions name images by path and extension, the ground truth by bare name, in
        // another order; one image on each side has no partner.
        let mut p = String::from("image,score\n");
        for (i, x) in pred.iter().enumerate() {
            p.push_str(&format!("photos/img_{i:04}.jpg,{x:?}\n"));
        }
        p.push_str("photos/extra.jpg,5.0\n");
        let mut g = String::from("image,score\n");
        for (i, y) in gt.iter().enumerate().rev() {
            g.push_str(&format!("img_{i:04},{y:?}\n"));
        }
        g.push_str("missing_prediction,5.0\n");
        let (pp, gp) = (dir.path().join("pred.csv"), dir.path().join("gt.csv"));
        std::fs::write(&pp, p).expect("write");
        std::fs::write(&gp, g).expect("write");
        let out = evaluate(&[
            "scores",
            "--pred",
            pp.to_str().expect("utf-8"),
            "--gt",
            gp.to_str().expect("utf-8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let report = json_of(&out);
        let name = case["name"].as_str().expect("name");
        assert_eq!(report["n"], pred.len(), "{name}");
        for key in ["srcc", "plcc", "krcc"] {
            close(&format!("{name} {key}"), &report[key], &case[key], 1e-9);
        }
        for key in ["acc", "mae", "rmse"] {
            close(&format!("{name} {key}"), &report[key], &case[key], 1e-12);
        }
        if case["plcc_logistic"].is_f64() && case["logistic_well_conditioned"] == true {
            close(
                &format!("{name} plcc_logistic"),
                &report["plcc_logistic"],
                &case["plcc_logistic"],
                1e-9,
            );
        }
        assert!(report.get("emd1").is_none(), "no distributions, no EMD");
        assert!(
            stderr.contains("1 predictions without ground truth: photos/extra.jpg")
                && stderr
                    .contains("1 ground-truth images without a prediction: missing_prediction"),
            "{stderr}"
        );
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn distributions_give_the_emds_of_a_direct_computation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scores = fixture("scores.json");
    for case in scores["distributions"].as_array().expect("distributions") {
        let table = |side: &str| {
            let mut t = String::from("image,p1,p2,p3,p4,p5,p6,p7,p8,p9,p10\n");
            for (i, d) in case[side].as_array().expect("dists").iter().enumerate() {
                let d: Vec<String> = floats(d).iter().map(|x| format!("{x:?}")).collect();
                t.push_str(&format!("{i}.jpg,{}\n", d.join(",")));
            }
            t
        };
        let (pp, gp) = (dir.path().join("pred.csv"), dir.path().join("gt.csv"));
        std::fs::write(&pp, table("pred")).expect("write");
        std::fs::write(&gp, table("gt")).expect("write");
        let args = [
            "scores",
            "--pred",
            pp.to_str().expect("utf-8"),
            "--gt",
            gp.to_str().expect("utf-8"),
        ];
        let out = evaluate(&args);
        let name = case["name"].as_str().expect("name");
        if case["pred"].as_array().expect("dists").len() < 3 {
            assert!(!out.status.success(), "{name}: fewer than 3 images");
            continue;
        }
        let report = json_of(&out);
        close(
            &format!("{name} emd1"),
            &report["emd1"],
            &case["emd1"],
            1e-12,
        );
        close(
            &format!("{name} emd2"),
            &report["emd2"],
            &case["emd2"],
            1e-12,
        );
        // Without a score column, each side's score is its distribution's mean.
        let (mp, mg) = (floats(&case["mean_pred"]), floats(&case["mean_gt"]));
        let mae = mp.iter().zip(&mg).map(|(a, b)| (a - b).abs()).sum::<f64>() / mp.len() as f64;
        assert!(
            (report["mae"].as_f64().expect("mae") - mae).abs() < 1e-12,
            "{name}"
        );
    }
}

#[test]
fn ava_txt_is_read_as_ground_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ava = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/AVA.txt");
    let text = std::fs::read_to_string(&ava).expect("AVA.txt");
    // The predictions are the vote means themselves, so every metric is perfect.
    let mut pred = String::from("image,score\n");
    let mut means = Vec::new();
    for line in text.lines() {
        let f: Vec<f64> = line
            .split_whitespace()
            .map(|x| x.parse().expect("int"))
            .collect();
        let votes = &f[2..12];
        let n: f64 = votes.iter().sum();
        let mean = votes
            .iter()
            .zip(1..)
            .map(|(v, s)| v * f64::from(s))
            .sum::<f64>()
            / n;
        means.push(mean);
        pred.push_str(&format!("images/{}.jpg,{mean:?}\n", f[1]));
    }
    let pp = dir.path().join("pred.csv");
    std::fs::write(&pp, pred).expect("write");
    let report = json_of(&evaluate(&[
        "scores",
        "--pred",
        pp.to_str().expect("utf-8"),
        "--gt",
        ava.to_str().expect("utf-8"),
    ]));
    assert_eq!(report["n"], means.len());
    for key in ["srcc", "plcc", "krcc", "acc"] {
        close(key, &report[key], &Value::from(1.0), 1e-12);
    }
    close("mae", &report["mae"], &Value::from(0.0), 1e-12);
}

#[test]
fn captions_from_raw_json_equal_pycocoevalcap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let captions = fixture("captions.json");
    let mut pred: BTreeMap<String, Value> =
        serde_json::from_value(captions["pred"].clone()).expect("pred");
    let mut refs: BTreeMap<String, Value> =
        serde_json::from_value(captions["refs"].clone()).expect("refs");
    assert!(pred.len() >= 50 && refs.values().all(|r| r.as_array().map(Vec::len) == Some(5)));
    // One prediction without references and one referenced image without a prediction are
    // reported and left out, as coco-caption scores only the images it is given.
    pred.insert("stray.jpg".into(), Value::from("A stray caption."));
    refs.insert(
        "unpredicted.jpg".into(),
        serde_json::json!(["Nobody captioned this."]),
    );
    let (pp, rp) = (dir.path().join("pred.json"), dir.path().join("refs.json"));
    std::fs::write(&pp, serde_json::to_string(&pred).expect("json")).expect("write");
    std::fs::write(&rp, serde_json::to_string(&refs).expect("json")).expect("write");
    let out = evaluate(&[
        "captions",
        "--pred",
        pp.to_str().expect("utf-8"),
        "--refs",
        rp.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = json_of(&out);
    let expected = &captions["scores"];
    for key in ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"] {
        close(key, &report["scores"][key], &expected[key], 1e-6);
    }
    // Exact and stem matching only: below METEOR 1.5 by the gap the module documents.
    let meteor = report["scores"]["meteor"].as_f64().expect("meteor");
    let gap = expected["meteor"].as_f64().expect("meteor") - meteor;
    assert!((0.0..0.01).contains(&gap), "METEOR gap {gap}");
    assert_eq!(report["per_image"].as_object().map(|m| m.len()), Some(60));
    assert!(
        stderr.contains("1 predictions without references: stray.jpg")
            && stderr.contains("1 referenced images without a prediction: unpredicted.jpg"),
        "{stderr}"
    );
}

#[test]
fn bad_inputs_are_one_line_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    let good = write("good.csv", "image,score\na,1\nb,2\nc,3\nd,4\n");
    let cases = [
        (write("nocol.csv", "name,score\na,1\n"), "no `image` column"),
        (
            write("nine.csv", "image,p1,p2\na,1,2\n"),
            "of the ten columns",
        ),
        (
            write("twice.csv", "image,score\na.jpg,1\nx/a.png,2\n"),
            "appears twice",
        ),
        (write("nan.csv", "image,score\na,1\nb,NaN\n"), "line 3"),
        (write("two.csv", "image,score\na,1\nb,2\n"), "at least 3"),
    ];
    for (path, message) in &cases {
        let out = evaluate(&["scores", "--pred", path, "--gt", &good]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("evaluate: error:") && l.contains(message)),
            "{message}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Constant predictions: the correlations are undefined (null) with a warning, the rest
    // is reported.
    let flat = write("flat.csv", "image,score\na,5\nb,5\nc,5\nd,5\n");
    let out = evaluate(&["scores", "--pred", &flat, "--gt", &good]);
    let report = json_of(&out);
    assert!(
        report["srcc"].is_null() && report["plcc"].is_null(),
        "{report}"
    );
    assert_eq!(report["mae"].as_f64(), Some(2.5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}
