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

/// Training's simulated raters (`data::raters::SimulatedRaters`): each conversation shows 2 to
/// `max_shots` rated training photos and asks for one more, all rated by one drawn taste.
#[test]
fn simulated_rater_conversations_rate_every_photo_by_one_drawn_taste() {
    use calm::data::BadImagePolicy;
    use calm::data::instruct::{SampleImage, Task, prompts};
    use calm::data::raters::{SimulatedRaters, SimulatedRatersConfig};
    use calm::data::tasks::TaskBuilder;
    use calm::model::chat::Role;

    let dir = tempfile::tempdir().expect("tmp");
    let mut paths = Vec::new();
    for i in 0..12u8 {
        let path = dir.path().join(format!("p{i}.png"));
        let colour = [20 * i, 200 - 15 * i, 10 + 10 * i];
        RgbImage::from_pixel(24, 16, Rgb(colour))
            .save(&path)
            .expect("png");
        paths.push(path);
    }
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not a png").expect("write");
    paths.push(broken.clone());
    let config = SimulatedRatersConfig {
        max_shots: 4,
        max_attributes: 2,
    };
    let raters =
        SimulatedRaters::new(config.clone(), &paths, BadImagePolicy::Skip).expect("raters");
    assert_eq!(raters.len(), 12, "the unreadable photo is left out");
    assert!(
        raters.skipped[0].contains("broken.png"),
        "{:?}",
        raters.skipped
    );
    let mut ratings_seen = std::collections::BTreeSet::new();
    let mut answers_to_one_query = std::collections::BTreeSet::new();
    for seed in 0..40u64 {
        let s = raters.sample(3, seed).expect("sample");
        assert_eq!(s.task, Task::Personalized);
        let n = s.images.len();
        assert!(
            (3..=5).contains(&n),
            "{n} images: 2 to 4 shots and the query"
        );
        assert_eq!(s.turns.len(), 2 * n);
        let mut shown = std::collections::BTreeSet::new();
        for (image, pair) in s.images.iter().zip(s.turns.chunks(2)) {
            let SampleImage::Path(p) = image else {
                panic!("a path")
            };
            assert!(shown.insert(p.clone()), "a photo shown twice");
            assert_ne!(p, &broken);
            assert_eq!(pair[0], (Role::User, prompts::PERSONAL_EXAMPLE.to_string()));
            assert_eq!(pair[1].0, Role::Assistant);
            let r: u8 = pair[1].1.parse().expect("a whole rating");
            assert!((1..=5).contains(&r));
            ratings_seen.insert(r);
        }
        // The query, last, is the photo the index names.
        assert!(matches!(s.images.last(), Some(SampleImage::Path(p)) if p == &paths[3]));
        answers_to_one_query.insert(s.turns.last().expect("turn").1.clone());
        let again = raters.sample(3, seed).expect("again");
        let sources = |x: &calm::data::instruct::InstructSample| -> Vec<std::path::PathBuf> {
            x.images.iter().map(|i| i.source().to_path_buf()).collect()
        };
        assert_eq!(
            (&s.turns, sources(&s)),
            (&again.turns, sources(&again)),
            "a function of the seed"
        );
    }
    assert_eq!(ratings_seen.len(), 5, "{ratings_seen:?}");
    // The same photo gets different ratings from different raters: only the examples tell
    // which rater is asking.
    assert!(answers_to_one_query.len() >= 3, "{answers_to_one_query:?}");
    let Err(fail) = SimulatedRaters::new(config.clone(), &paths, BadImagePolicy::Fail) else {
        panic!("the broken photo stops it")
    };
    assert!(fail.to_string().contains("broken.png"), "{fail}");
    // Fewer photos than max_shots + 2: fewer shots, never all the photos in one conversation.
    let few =
        SimulatedRaters::new(config.clone(), &paths[..4], BadImagePolicy::Skip).expect("4 photos");
    for seed in 0..10 {
        assert!(few.sample(0, seed).expect("sample").images.len() <= 3);
    }
    let Err(too_few) = SimulatedRaters::new(config, &paths[..2], BadImagePolicy::Skip) else {
        panic!("too few")
    };
    assert!(too_few.to_string().contains("2 readable"), "{too_few}");
}
