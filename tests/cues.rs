//! Text cues: they say what the measured attributes and the applied degradation say, at the
//! right level, in varied wording fixed by a seed.

use std::collections::BTreeSet;

use calm::data::attributes::{LowAttributes, MiddleAttributes};
use calm::data::cues::cues;
use calm::data::degrade::{Degradation, Level};

fn ordinary() -> (LowAttributes, MiddleAttributes) {
    (
        LowAttributes {
            exposure: 0.45,
            contrast: 0.2,
            saturation: 0.4,
            colourfulness: 0.16,
            sharpness: 0.005,
            noise: 0.004,
            colour_temperature: 0.05,
            blockiness: 0.1,
        },
        MiddleAttributes {
            thirds_distance: 0.13,
            symmetry: 0.85,
            horizon_tilt: 0.2,
            simplicity: 0.5,
            depth_of_field: 0.2,
            border_energy: 0.27,
        },
    )
}

#[test]
fn a_dark_muted_photo_is_described_as_such_and_not_faulted() {
    let (mut low, middle) = ordinary();
    low.exposure = 0.1;
    low.saturation = 0.05;
    let texts: BTreeSet<String> = (0..20)
        .map(|s| cues(&low, &middle, None, None, s).low)
        .collect();
    for t in &texts {
        let dark = ["dark", "low-key", "dim"].iter().any(|w| t.contains(w));
        // An original is described; the words of a degradation are kept for degraded copies.
        assert_eq!(calm::eval::tasks::states_defect(t), None, "{t}");
        let muted = ["muted", "monochrome", "subdued"]
            .iter()
            .any(|w| t.contains(w));
        assert!(dark && muted && t.ends_with('.'), "{t}");
    }
    assert!(texts.len() >= 4, "varied wording: {texts:?}");
}

#[test]
fn an_ordinary_photo_gets_the_neutral_cues() {
    let (low, middle) = ordinary();
    let c = cues(&low, &middle, None, None, 3);
    assert!(
        ["well exposed", "balanced exposure", "cleanly exposed"]
            .iter()
            .any(|w| c.low.contains(w)),
        "{}",
        c.low
    );
    assert!(
        !c.middle.contains("tilted") && !c.middle.contains("cluttered"),
        "{}",
        c.middle
    );
}

#[test]
fn each_degradation_is_named_at_its_level_first() {
    let (low, middle) = ordinary();
    let words = |kind: Degradation| -> &'static [&'static str] {
        match kind {
            Degradation::Blur => &["blur", "focus"],
            Degradation::Noise => &["nois", "grain"],
            Degradation::Jpeg => &["compress", "JPEG"],
            Degradation::Overexposure => &["overexposed", "blown", "bright"],
            Degradation::Underexposure => &["underexposed", "dark"],
            Degradation::Desaturation => &["colour"],
            Degradation::Tilt => &["tilted", "level", "leans"],
            Degradation::BadCrop => &["crop", "cuts through"],
            Degradation::Brighter => &["bright", "blown", "bleached"],
            Degradation::LowContrast => &["contrast", "flat"],
            Degradation::GaussianBlur => &["blur", "focus", "sharpness"],
            Degradation::ColourCast => &["cast", "tint", "white balance"],
            Degradation::Vignette => &["corners", "vignetting", "edges"],
            Degradation::Rotation => &["rotated", "crooked", "level"],
        }
    };
    for kind in Degradation::ALL.into_iter().chain(Degradation::SHIFTED) {
        let original = cues(&low, &middle, None, None, 5);
        for seed in 0..6 {
            let c = cues(&low, &middle, Some(kind), None, seed);
            let at_level = match kind.level() {
                Level::Low => &c.low,
                _ => &c.middle,
            };
            assert!(
                words(kind).iter().any(|w| at_level.contains(w)),
                "{kind:?}: {at_level}"
            );
            assert!(
                words(kind).iter().any(|w| c.high.contains(w)),
                "{kind:?}: {}",
                c.high
            );
            assert_ne!(c.high, original.high);
        }
    }
}

#[test]
fn a_caption_is_the_high_level_cue_and_seeds_fix_the_wording() {
    let (low, middle) = ordinary();
    let c = cues(
        &low,
        &middle,
        Some(Degradation::Blur),
        Some(" A dog on a beach. "),
        1,
    );
    assert_eq!(c.high, "A dog on a beach.");
    assert_eq!(
        cues(&low, &middle, Some(Degradation::Noise), None, 9),
        cues(&low, &middle, Some(Degradation::Noise), None, 9)
    );
}

#[test]
fn at_most_three_statements_and_a_proper_list() {
    let (mut low, middle) = ordinary();
    low.exposure = 0.1;
    low.contrast = 0.05;
    low.saturation = 0.05;
    low.noise = 0.03;
    let c = cues(&low, &middle, Some(Degradation::Blur), None, 2).low;
    assert_eq!(c.matches(" and ").count(), 1, "{c}");
    assert_eq!(c.matches(", ").count(), 1, "{c}");
    assert!(
        ["blur", "focus"].iter().any(|w| c.contains(w)),
        "the degradation comes first: {c}"
    );
}

/// An original's comment in fine-tuning: one wording per look, never a degradation's words.
#[test]
fn an_originals_plain_description_has_one_wording_and_states_no_defect() {
    use calm::data::cues::plain_description;
    use calm::eval::tasks::states_defect;
    let (low, _) = ordinary();
    assert_eq!(
        plain_description(&low),
        "The photo is well exposed with natural colours."
    );
    let mut dark = low;
    dark.exposure = 0.1;
    dark.saturation = 0.05;
    assert_eq!(
        plain_description(&dark),
        "The photo is dark and has muted colours."
    );
    for exposure in [0.1, 0.45, 0.9] {
        for contrast in [0.05, 0.2, 0.4] {
            for sharpness in [0.0005, 0.005, 0.05] {
                for noise in [0.004, 0.03] {
                    let a = LowAttributes {
                        exposure,
                        contrast,
                        sharpness,
                        noise,
                        ..low
                    };
                    let text = plain_description(&a);
                    assert_eq!(states_defect(&text), None, "{text}");
                    assert!(text.starts_with("The photo ") && text.ends_with('.'));
                }
            }
        }
    }
}
