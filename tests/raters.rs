//! The simulated raters of `evaluate raters` (issue #20, item 3): their tastes and ratings.

use std::sync::Arc;

use calm::eval::raters::{bright_colourful_taste, ratings};
use image::{Rgb, RgbImage};

fn flat(colour: [u8; 3]) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_pixel(32, 32, Rgb(colour)))
}

#[test]
fn the_bright_colourful_taste_orders_bright_saturated_above_dark_grey() {
    let images = [
        flat([20, 20, 20]),    // dark, grey
        flat([230, 60, 40]),   // bright-ish, colourful
        flat([128, 128, 128]), // mid grey
        flat([250, 250, 250]), // brightest, grey
    ];
    let taste = bright_colourful_taste(&images);
    assert!(taste[0] < taste[2] && taste[2] < taste[3], "{taste:?}");
    assert!(taste[1] > taste[2], "{taste:?}");
    // Standardised: the two standardised terms each sum to zero.
    assert!(taste.iter().sum::<f64>().abs() < 1e-9, "{taste:?}");
}

#[test]
fn ratings_split_the_ranking_into_five_equal_levels() {
    let taste: Vec<f64> = (0..10).map(|i| f64::from(9 - i)).collect();
    let r = ratings(&taste);
    assert_eq!(r, vec![5.0, 5.0, 4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0]);
    assert_eq!(ratings(&[0.3]), vec![1.0]);
    assert!(ratings(&[]).is_empty());
}
