//! The score heads (issue #20, item 1): NIMA's EMD against a direct f64 computation of its
//! definition, the targets made from votes and from one score, and the heads' readouts.

use burn::tensor::{Device, Tensor, TensorData};
use calm::data::instruct::ScoreTarget;
use calm::model::score_head::{SCORE_BINS, ScoreHead, emd_loss};

/// sqrt(mean_k (CDF_p(k) - CDF_q(k))^2), NIMA's eq. 1 with r = 2, in f64.
fn emd_reference(p: &[f64], q: &[f64]) -> f64 {
    let (mut cp, mut cq, mut sum) = (0.0, 0.0, 0.0);
    for (a, b) in p.iter().zip(q) {
        cp += a;
        cq += b;
        sum += (cp - cq) * (cp - cq);
    }
    (sum / p.len() as f64).sqrt()
}

#[test]
fn emd_matches_its_definition_and_is_zero_only_at_the_target() {
    let device = Device::flex();
    let logits: Vec<f32> = (0..3 * SCORE_BINS)
        .map(|i| ((i * 7919) % 13) as f32 * 0.3 - 1.5)
        .collect();
    let targets: Vec<ScoreTarget> = [2.0, 5.5, 9.2]
        .iter()
        .map(|&m| ScoreTarget::from_score(m, 1.0))
        .collect();
    let target: Vec<f32> = targets.iter().flat_map(|t| t.distribution).collect();
    let loss: Vec<f32> = emd_loss(
        Tensor::<2>::from_data(TensorData::new(logits.clone(), [3, SCORE_BINS]), &device),
        Tensor::<2>::from_data(TensorData::new(target.clone(), [3, SCORE_BINS]), &device),
    )
    .into_data()
    .iter::<f32>()
    .collect();
    for (row, value) in loss.iter().enumerate() {
        let l = &logits[row * SCORE_BINS..(row + 1) * SCORE_BINS];
        let max = l.iter().copied().fold(f32::MIN, f32::max);
        let e: Vec<f64> = l.iter().map(|&x| f64::from(x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|x| x / z).collect();
        let q: Vec<f64> = target[row * SCORE_BINS..(row + 1) * SCORE_BINS]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let expected = emd_reference(&p, &q);
        assert!(
            (f64::from(*value) - expected).abs() < 1e-5,
            "row {row}: {value} vs {expected}"
        );
        assert!(expected > 0.01, "the test needs distributions apart");
    }
    // Logits whose softmax is the target give (almost) zero.
    let exact: Vec<f32> = target.iter().map(|&p| p.max(1e-30).ln()).collect();
    let zero: Vec<f32> = emd_loss(
        Tensor::<2>::from_data(TensorData::new(exact, [3, SCORE_BINS]), &device),
        Tensor::<2>::from_data(TensorData::new(target, [3, SCORE_BINS]), &device),
    )
    .into_data()
    .iter::<f32>()
    .collect();
    assert!(zero.iter().all(|&z| z < 1e-3), "{zero:?}");
}

#[test]
fn targets_from_one_score_keep_its_mean_and_sum_to_one() {
    for mean in [3.0, 4.25, 5.5, 7.5, 8.0] {
        let t = ScoreTarget::from_score(mean, 1.0);
        let total: f64 = t.distribution.iter().map(|&p| f64::from(p)).sum();
        assert!((total - 1.0).abs() < 1e-5, "{mean}: sums to {total}");
        let expected: f64 = t
            .distribution
            .iter()
            .enumerate()
            .map(|(k, &p)| (k + 1) as f64 * f64::from(p))
            .sum();
        // Away from the ends the discretised normal keeps the mean.
        assert!((expected - mean).abs() < 0.02, "{mean}: {expected}");
        assert_eq!(t.mean, mean);
    }
    // Narrower spread, more mass on the nearest bin.
    let narrow = ScoreTarget::from_score(6.0, 0.5).distribution[5];
    let wide = ScoreTarget::from_score(6.0, 2.0).distribution[5];
    assert!(narrow > 0.6 && wide < 0.25, "{narrow} {wide}");
}

#[test]
fn targets_from_votes_normalise_and_refuse_empty_or_negative_votes() {
    let mut votes = [0.0; SCORE_BINS];
    votes[4] = 3.0;
    votes[6] = 1.0;
    let t = ScoreTarget::from_votes(votes).expect("votes");
    assert!((t.mean - (5.0 * 3.0 + 7.0) / 4.0).abs() < 1e-12);
    assert!((t.distribution[4] - 0.75).abs() < 1e-7);
    assert!(ScoreTarget::from_votes([0.0; SCORE_BINS]).is_none());
    votes[0] = -1.0;
    assert!(ScoreTarget::from_votes(votes).is_none());
    votes[0] = f64::NAN;
    assert!(ScoreTarget::from_votes(votes).is_none());
}

#[test]
fn readouts_are_the_distributions_expectation_and_the_regression_on_1_to_10() {
    let device = Device::flex();
    let head = ScoreHead::new(4, &device);
    let hidden = Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [2, 4]),
        &device,
    );
    let out = head.forward(hidden);
    assert_eq!(out.logits.dims(), [2, SCORE_BINS]);
    assert_eq!(out.standardised.dims(), [2]);
    let scores = out.scores();
    let logits: Vec<f32> = out.logits.into_data().iter::<f32>().collect();
    let raw: Vec<f32> = out.standardised.into_data().iter::<f32>().collect();
    for (row, (expected, regressed)) in scores.iter().enumerate() {
        let l = &logits[row * SCORE_BINS..(row + 1) * SCORE_BINS];
        let e: Vec<f64> = l.iter().map(|&x| f64::from(x).exp()).collect();
        let z: f64 = e.iter().sum();
        let mean: f64 = e
            .iter()
            .enumerate()
            .map(|(k, x)| (k + 1) as f64 * x / z)
            .sum();
        assert!((expected - mean).abs() < 1e-5, "{expected} vs {mean}");
        assert!((1.0..=10.0).contains(expected));
        assert!((regressed - (5.5 + 4.5 * f64::from(raw[row]))).abs() < 1e-9);
    }
}
