//! The pretraining losses on cases small enough to compute by hand.

use burn::tensor::{Device, Tensor, TensorData};
use calm::train::losses::{attribute_regression, itc, margin_ranking};

fn t3(v: Vec<f32>, shape: [usize; 3]) -> Tensor<3> {
    Tensor::from_data(TensorData::new(v, shape), &Device::flex())
}

fn t2(v: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), &Device::flex())
}

fn t1(v: Vec<f32>) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), &Device::flex())
}

fn close(a: Tensor<1>, b: f64) {
    let a = a.into_scalar::<f32>() as f64;
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
}

#[test]
fn itc_takes_the_best_query_and_averages_both_directions() {
    // Image 0's queries point along x and y, image 1's both along x; text 0 is x, text 1 is y.
    // sim = [[1, 1], [1, 0]]; at temperature 0.5 the logits are [[2, 2], [2, 0]] (symmetric),
    // so both directions give (ln 2 + ln(1 + e^2)) / 2.
    let queries = vec![1., 0., 0., 1., 1., 0., 1., 0.];
    let texts = vec![1., 0., 0., 1.];
    let want = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
    close(
        itc(
            t3(queries.clone(), [2, 2, 2]),
            t2(texts.clone(), [2, 2]),
            0.5,
        ),
        want,
    );
    // Lengths do not matter: features are normalised first.
    let scaled: Vec<f32> = queries.iter().map(|v| v * 3.0).collect();
    let texts_scaled: Vec<f32> = texts.iter().map(|v| v * 0.2).collect();
    close(
        itc(t3(scaled, [2, 2, 2]), t2(texts_scaled, [2, 2]), 0.5),
        want,
    );
}

#[test]
fn itc_is_lower_for_matched_pairs_than_for_swapped_ones() {
    // Image i's queries along text i's direction, against the same with texts swapped.
    let queries = t3(vec![1., 0., 1., 0.1, 0., 1., 0.1, 1.], [2, 2, 2]);
    let matched = itc(queries.clone(), t2(vec![1., 0., 0., 1.], [2, 2]), 0.07);
    let swapped = itc(queries, t2(vec![0., 1., 1., 0.], [2, 2]), 0.07);
    assert!(matched.into_scalar::<f32>() < swapped.into_scalar::<f32>());
}

#[test]
fn attribute_regression_is_the_mean_squared_error() {
    let pred = t2(vec![1., 2., 3., 4.], [2, 2]);
    let measured = t2(vec![1., 0., 0., 4.], [2, 2]);
    close(
        attribute_regression(pred, measured),
        (0.0 + 4.0 + 9.0 + 0.0) / 4.0,
    );
}

#[test]
fn margin_ranking_counts_only_pairs_inside_the_margin() {
    // Differences original - degraded: 0.5 (beyond the margin), -0.2, 0.0.
    let loss = margin_ranking(t1(vec![1.0, 0.2, 0.5]), t1(vec![0.5, 0.4, 0.5]), 0.1);
    close(loss, (0.0 + 0.3 + 0.1) / 3.0);
}

#[test]
fn every_loss_backpropagates() {
    let device = Device::flex().autodiff();
    let q = Tensor::<3>::from_data(
        TensorData::new(vec![1f32, 0.2, 0.3, 1., 0.5, 0.1, 0.9, 0.4], [2, 2, 2]),
        &device,
    )
    .require_grad();
    let texts = Tensor::<2>::from_data(TensorData::new(vec![1f32, 0., 0., 1.], [2, 2]), &device);
    let scores =
        Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.3], [2]), &device).require_grad();
    let degraded = Tensor::<1>::from_data(TensorData::new(vec![0.2f32, 0.0], [2]), &device);
    let loss = itc(q.clone(), texts.clone(), 0.1)
        + margin_ranking(scores.clone(), degraded, 0.5)
        + attribute_regression(q.clone().reshape([2, 4]), Tensor::zeros([2, 4], &device));
    let grads = loss.backward();
    for g in [
        q.grad(&grads)
            .expect("queries")
            .abs()
            .sum()
            .into_scalar::<f32>(),
        scores
            .grad(&grads)
            .expect("scores")
            .abs()
            .sum()
            .into_scalar::<f32>(),
    ] {
        assert!(g > 1e-3, "gradient {g}");
    }
}
