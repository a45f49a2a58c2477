//! The learning-rate schedule equals transformers' cosine schedules with warm-up, step by step
//! (fixture from scripts/fixtures/make_schedule_fixture.py).

use calm::train::schedule::ScheduleConfig;

#[derive(serde::Deserialize)]
struct Case {
    peak_lr: f64,
    warmup_steps: usize,
    total_steps: usize,
    min_lr_ratio: f64,
    lr: Vec<f64>,
}

#[test]
fn every_step_equals_transformers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schedule/cosine_with_warmup.json");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let schedule = ScheduleConfig {
            peak_lr: case.peak_lr,
            warmup_steps: case.warmup_steps,
            min_lr_ratio: case.min_lr_ratio,
        };
        assert_eq!(case.lr.len(), case.total_steps);
        for (step, want) in case.lr.iter().enumerate() {
            let got = schedule.lr_at(step, case.total_steps);
            assert!(
                (got - want).abs() <= 1e-12 + 1e-9 * want.abs(),
                "step {step}: {got} vs {want}"
            );
        }
    }
}
