//! Text cues: sentences generated from the measured pseudo-attributes and the applied
//! degradation, one per MFAM level, which the frozen text encoder embeds as targets for each
//! Q-Former's contrastive alignment (docs/design.md §2). Several wordings per statement, so
//! that alignment learns the meaning rather than one string; the wording is a function of a
//! seed, so a sample's cues can be made again.
//!
//! The thresholds are ours, set near the 10th and 90th percentiles of the attributes over the
//! sample photos (`data/samples`), so that ordinary photos get the neutral cue.

use super::attributes::{LowAttributes, MiddleAttributes};
use super::degrade::{Degradation, Level, SplitMix};

/// One cue per level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cues {
    pub low: String,
    pub middle: String,
    pub high: String,
}

const OPENERS: [&str; 4] = ["The photo", "The shot", "This image", "The picture"];

/// Wordings of one statement; each completes "The photo ...".
type Phrase = &'static [&'static str];

/// Wordings of a degradation's defect, the plainest first.
pub(crate) fn degradation_phrase(kind: Degradation) -> Phrase {
    match kind {
        Degradation::Blur => &["is blurred", "is out of focus", "looks soft and blurry"],
        Degradation::Noise => &["is noisy", "is full of grain", "shows heavy noise"],
        Degradation::Jpeg => &[
            "shows compression artefacts",
            "has blocky JPEG artefacts",
            "looks heavily compressed",
        ],
        Degradation::Overexposure => &[
            "is overexposed",
            "has blown-out highlights",
            "is far too bright",
        ],
        Degradation::Underexposure => &["is underexposed", "is too dark", "looks murky and dark"],
        Degradation::Desaturation => &[
            "has washed-out colours",
            "looks drained of colour",
            "has dull, faded colours",
        ],
        Degradation::Tilt => &["has a tilted horizon", "is not level", "leans to one side"],
        Degradation::BadCrop => &[
            "is badly cropped",
            "cuts through its subject at the frame",
            "has an awkward, off-balance crop",
        ],
        Degradation::Brighter => &[
            "is far too bright",
            "has blown-out highlights",
            "looks bleached by too much light",
        ],
        Degradation::LowContrast => &[
            "looks flat and low in contrast",
            "has washed-out contrast",
            "looks hazy and flat",
        ],
        Degradation::GaussianBlur => &["is blurred", "is soft and out of focus", "lacks sharpness"],
        Degradation::ColourCast => &[
            "has a colour cast",
            "has an unnatural colour tint",
            "has an off white balance",
        ],
        Degradation::Vignette => &[
            "has dark corners",
            "shows heavy vignetting",
            "darkens towards its edges",
        ],
        Degradation::Rotation => &[
            "is rotated, with empty corners",
            "is crooked",
            "is turned off level",
        ],
    }
}

fn low_phrases(a: &LowAttributes) -> Vec<Phrase> {
    let mut p: Vec<Phrase> = Vec::new();
    // A dark or bright photo is described, not faulted: "underexposed" and "overexposed"
    // are the words of a degradation (`degradation_phrase`), and an original that was taught
    // them would be scored and commented on as a degraded copy.
    if a.exposure < 0.25 {
        p.push(&["is dark", "is low-key", "is dimly lit"]);
    } else if a.exposure > 0.7 {
        p.push(&["is very bright", "is high-key", "is bright and airy"]);
    }
    if a.contrast < 0.1 {
        p.push(&["has flat, low contrast", "lacks contrast", "looks flat"]);
    } else if a.contrast > 0.27 {
        p.push(&["has strong contrast", "is punchy and contrasty"]);
    }
    if a.saturation < 0.15 {
        p.push(&[
            "has muted colours",
            "is nearly monochrome",
            "has subdued colours",
        ]);
    } else if a.saturation > 0.7 {
        p.push(&[
            "has vivid colours",
            "is richly saturated",
            "has bold, saturated colours",
        ]);
    }
    if a.sharpness < 0.001 {
        p.push(&["is soft", "lacks fine detail"]);
    } else if a.sharpness > 0.02 {
        p.push(&["is crisp and detailed", "has sharp detail"]);
    }
    if a.noise > 0.015 {
        p.push(&["is grainy", "shows visible noise"]);
    }
    if a.colour_temperature > 0.25 {
        p.push(&["has warm tones", "has a warm colour cast"]);
    } else if a.colour_temperature < -0.1 {
        p.push(&["has cool tones", "has a cool, bluish cast"]);
    }
    if a.blockiness > 0.5 {
        p.push(&["shows compression artefacts", "looks blocky"]);
    }
    p
}

fn middle_phrases(a: &MiddleAttributes) -> Vec<Phrase> {
    let mut p: Vec<Phrase> = Vec::new();
    if a.border_energy > 0.33 {
        p.push(&["is cramped at the edges", "crowds the frame's edges"]);
    } else if a.thirds_distance < 0.09 {
        p.push(&[
            "places its subject on a third",
            "follows the rule of thirds",
        ]);
    }
    if a.symmetry > 0.95 {
        p.push(&["is symmetric", "has a balanced, symmetric layout"]);
    }
    if a.horizon_tilt.abs() > 3.0 {
        p.push(&["has a tilted horizon", "is not level"]);
    }
    if a.simplicity > 0.75 {
        p.push(&[
            "is simple and uncluttered",
            "has a clean, minimal composition",
        ]);
    } else if a.simplicity < 0.25 {
        p.push(&["is busy and cluttered", "has a crowded composition"]);
    }
    if a.depth_of_field > 1.0 {
        p.push(&[
            "has a sharp subject against a soft background",
            "uses a shallow depth of field",
        ]);
    }
    p
}

const NEUTRAL_LOW: Phrase = &[
    "is well exposed with natural colours",
    "has balanced exposure and colour",
    "is cleanly exposed and sharp",
];
const NEUTRAL_MIDDLE: Phrase = &[
    "has an ordinary, balanced composition",
    "is conventionally framed",
    "has a plain, steady composition",
];

/// At most this many statements a sentence, the first ones kept (degradations come first).
const MAX_PHRASES: usize = 3;

/// "The photo is dark, has muted colours and is grainy." from the chosen wordings.
fn sentence(phrases: &[Phrase], rng: &mut SplitMix) -> String {
    let opener = OPENERS[(rng.next() % OPENERS.len() as u64) as usize];
    let chosen: Vec<&str> = phrases
        .iter()
        .take(MAX_PHRASES)
        .map(|p| p[(rng.next() % p.len() as u64) as usize])
        .collect();
    join(opener, &chosen)
}

fn join(opener: &str, chosen: &[&str]) -> String {
    let body = match chosen {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    };
    format!("{opener} {body}.")
}

/// The low-level description of an original in its plainest wording: "The photo" and the
/// first wording of each statement, "The photo is dark and has muted colours." Fine-tuning
/// teaches this as an original's comment, one sentence per look, as it teaches a copy's
/// defect in one wording: with the cues' varied wording the few originals a run shows were
/// too few to learn it from (measured: every held-out original was given a defect).
pub fn plain_description(low: &LowAttributes) -> String {
    let mut phrases = low_phrases(low);
    if phrases.is_empty() {
        phrases.push(NEUTRAL_LOW);
    }
    let chosen: Vec<&str> = phrases
        .iter()
        .take(MAX_PHRASES)
        .filter_map(|p| p.first().copied())
        .collect();
    join(OPENERS[0], &chosen)
}

/// The three cues of one image. `degradation` is the one applied to make it (none for an
/// original); `caption`, when the dataset has one, is the high-level cue, else the cue states
/// the overall verdict the degradations imply.
pub fn cues(
    low: &LowAttributes,
    middle: &MiddleAttributes,
    degradation: Option<Degradation>,
    caption: Option<&str>,
    seed: u64,
) -> Cues {
    let mut rng = SplitMix(seed);
    let mut low_p = Vec::new();
    let mut middle_p = Vec::new();
    if let Some(kind) = degradation {
        match kind.level() {
            Level::Low => low_p.push(degradation_phrase(kind)),
            Level::Middle | Level::High => middle_p.push(degradation_phrase(kind)),
        }
    }
    low_p.extend(low_phrases(low));
    middle_p.extend(middle_phrases(middle));
    if low_p.is_empty() {
        low_p.push(NEUTRAL_LOW);
    }
    if middle_p.is_empty() {
        middle_p.push(NEUTRAL_MIDDLE);
    }
    let high = match (caption, degradation) {
        (Some(c), _) => c.trim().to_string(),
        (None, None) => {
            let v: Phrase = &[
                "is an intact, carefully taken photograph",
                "is a clean photograph as the photographer made it",
            ];
            sentence(&[v], &mut rng)
        }
        (None, Some(kind)) => {
            let v: Phrase = &[
                "is a damaged copy of a photograph",
                "is a spoiled version of a better photograph",
            ];
            sentence(&[v, degradation_phrase(kind)], &mut rng)
        }
    };
    Cues {
        low: sentence(&low_p, &mut rng),
        middle: sentence(&middle_p, &mut rng),
        high,
    }
}
