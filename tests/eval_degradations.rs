//! Pairwise accuracy of originals over degraded copies, overall and per kind.

use calm::eval::degradations::{ScoredPair, pairwise_accuracy};

#[test]
fn counts_strict_wins_overall_and_per_kind() {
    let p = |kind, original, degraded| ScoredPair {
        kind,
        original,
        degraded,
    };
    let pairs = [
        p("blur", 1.0, 0.5),
        p("blur", 0.2, 0.4),
        p("noise", 0.3, 0.3),
        p("noise", 0.9, -1.0),
        p("tilt", 2.0, 1.0),
    ];
    let r = pairwise_accuracy(&pairs).expect("pairs");
    assert_eq!(r.pairs, 5);
    assert!((r.pairwise_accuracy - 3.0 / 5.0).abs() < 1e-12);
    assert_eq!(r.per_kind["blur"], 0.5);
    assert_eq!(r.per_kind["noise"], 0.5, "a tie is a miss");
    assert_eq!(r.per_kind["tilt"], 1.0);
    let json = serde_json::to_value(&r).expect("json");
    assert!(json.get("pairwise_accuracy").is_some() && json.get("per_kind").is_some());
    assert!(pairwise_accuracy(&[]).is_none());
}
