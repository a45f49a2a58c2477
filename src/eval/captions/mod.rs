//! Captioning metrics as the coco-caption toolkit (`pycocoevalcap`, the Python port of
//! `tylin/coco-caption`) computes them: its PTB tokenisation, BLEU-1..4, METEOR, ROUGE-L and
//! CIDEr-D. The facts follow that toolkit and the papers behind it:
//!
//! * BLEU: Papineni, Roukos, Ward and Zhu, "BLEU: a method for automatic evaluation of machine
//!   translation" (ACL 2002), with the toolkit's choices: the "closest" reference length (ties to
//!   the shorter), `tiny = 1e-15` added to the clipped counts and `small = 1e-9` to the guesses,
//!   and the corpus score from counts summed over images (not a mean of per-image scores).
//! * ROUGE-L: Lin, "ROUGE: a package for automatic evaluation of summaries" (2004): the longest
//!   common subsequence against each reference, the best precision and the best recall taken
//!   separately over the references, combined with beta = 1.2; the corpus score is the mean.
//! * CIDEr-D: Vedantam, Zitnick and Parikh, "CIDEr: Consensus-based image description evaluation"
//!   (CVPR 2015): 1- to 4-gram TF-IDF vectors whose document frequencies come from the references
//!   of the evaluated set itself (`log(number of images)` as the reference length), the candidate
//!   clipped to the reference (`min(vec, vec_ref) * vec_ref`), the Gaussian length penalty with
//!   sigma = 6, averaged over n and over the references and multiplied by 10. As in the toolkit,
//!   "length" in the penalty is the number of bigrams of a sentence.
//! * METEOR: Denkowski and Lavie, "Meteor Universal: language specific translation evaluation for
//!   any target language" (WMT 2014), i.e. METEOR 1.5 as run by the toolkit (`-l en -norm`).
//!   See [`meteor`] for what is and is not reproduced.
//!
//! # Tokenisation
//!
//! The toolkit lower-cases and tokenises every caption with Stanford CoreNLP 3.4.1's
//! `PTBTokenizer -preserveLines -lowerCase` (all captions of a call joined by newlines into one
//! file) and then drops the tokens in its punctuation list (`''`, `'`, ` `` `, `` ` ``, `.`, `?`,
//! `!`, `,`, `:`, `-`, `--`, `...`, `;` and the upper-case `-LRB-` family, which after
//! lower-casing never matches, so `(` and `)` survive as `-lrb-`/`-rrb-`). [`ptb_tokenize`]
//! reproduces that lexer: its rules (version 3.4.1, default options: PTB3 escaping without
//! Americanisation or slash escaping, assimilations split) are written here as patterns matched the
//! way JFlex matches them (longest match including trailing context, earliest rule on ties,
//! `%caseless` literals but case-sensitive character classes). So "don't" gives `do n't`,
//! "photographer's" gives `photographer 's`, quotes become ` `` `/`''` (then dropped), brackets
//! `-lrb-`/`-rrb-`/`-lsb-`/..., `1/250s`, `iso-100` and `black-and-white` stay whole, and, as in
//! Stanford's output, `f/2.8` becomes `f/2 .8` and "etc." before a capitalised word `etc. .`.
//!
//! Its output equals the toolkit's on all 360 captions and 44 tricky sentences of
//! `tests/fixtures/metrics/`, and equalled the 3.4.1 jar's on 8,100 generated photo comments and
//! 6,000 random character strings when this was written. Where it may still differ:
//! * Character classes: `[:letter:]` is Rust's alphabetic-and-not-numeric, `[:digit:]` the ASCII
//!   digits plus the common Unicode decimal-digit blocks, and a supplementary-plane character (an
//!   emoji) is one character here where the Java lexer sees two UTF-16 units; all of them are
//!   deleted as untokenisable in both, but a length rule counting UTF-16 units could differ.
//! * Line breaks other than `\n` inside one caption (`\r`, U+2028, ...) are read as spaces here;
//!   pycocoevalcap only replaces `\n`, so the Java lexer would start a new line there and the
//!   toolkit's captions would shift by one (a bug of the toolkit not reproduced).
//! * A rule's trailing context may look past the end of a caption into the next one, as in the
//!   toolkit, only through [`ptb_tokenize_batch`], which joins captions as the toolkit does;
//!   [`ptb_tokenize`] tokenises one caption as if it were the last line of the file.
//! * The three-character "Asian smiley" alternative of the lexer that can never match as written
//!   (a typo in the 3.4.1 source) is kept as written.
//!
//! # Whitespace
//!
//! BLEU and CIDEr split tokenised text on any Unicode whitespace (Python's `str.split()`), ROUGE-L
//! on the single space only (`str.split(" ")`), as the toolkit does; this matters for tokens that
//! contain a non-breaking space (Stanford joins "2 1/2" or phone numbers with U+00A0).
//!
//! # METEOR
//!
//! What is reproduced of METEOR 1.5 as the toolkit runs it (`-l en -norm`, the default "rank"
//! task: alpha 0.85, beta 0.2, gamma 0.6, delta 0.75):
//! * its `-norm` normaliser (Moses-style: symbols split off, `n't` -> `n 't`, `'s` -> `' s`,
//!   hyphens between alphanumerics split, sentence-final dots split except after its non-breaking
//!   prefixes, dotted acronyms undotted), then lower-casing;
//! * the exact stage (weight 1.0) and the stem stage (weight 0.6) with the Snowball English
//!   stemmer of the version METEOR bundles, written here ([`snowball_english_stem`]; identical to
//!   the jar's stemmer on the 88,515 words of its WordNet files);
//! * its 93 English function words and the content/function weighting (delta);
//! * its aligner: one-to-one matches nothing else overlaps are fixed, the rest is a beam search
//!   (width 40) ranking partial alignments by the weighted match count, then fewer chunks, then
//!   distance. The jar keeps that count in an `int`, so a single 0.5-weighted stem match adds
//!   nothing to it and is dropped when it would open a chunk; this is reproduced, as is the jar's
//!   bookkeeping of the distance tie-break;
//! * the best reference by segment score (the first on ties), and the corpus score from the
//!   statistics summed over images (a segment matched whole in one chunk adds no chunk), not the
//!   mean of the segment scores.
//!
//! Not implemented: the synonym stage (WordNet synsets, weight 0.8) and the paraphrase stage (the
//! paraphrase table, weight 0.6), whose data (about 6 MB and 60 MB) is not shipped here; nor
//! METEOR's other languages, tasks and character-level mode.
//!
//! How far that is from METEOR 1.5, measured (`tests/caption_metrics.rs`):
//! * Against the jar restricted to these stages (`-m "exact stem" -w "1.0 0.6"`) the statistics
//!   are identical on the 60 fixture images and 30 stage pairs (and were on 12,000 randomised
//!   candidate/reference sets, raw punctuated text included, when this was written).
//! * Against the full METEOR 1.5 on `tests/fixtures/metrics/captions.json` (60 AVA-style
//!   critiques, 5 references each): corpus 0.10047 vs 0.10790 (-0.0074, -6.9 %); per image mean
//!   absolute difference 0.0139, largest 0.075, Pearson correlation 0.993; 30 of the 60 images
//!   differ and 4 of those score higher here (with more stages a non-exact match found twice is no
//!   longer fixed, and the search can drop it).
//! * On 30 pairs built to isolate the stages: corpus 0.311 vs 0.397. The gap is synonyms
//!   (picture/photo, big/large), paraphrases (well done/good job) and inflections that only
//!   WordNet's base forms join (is/are).

mod bleu;
mod cider;
mod meteor;
mod pattern;
mod ptb_rules;
mod rouge;
mod stem;
mod tokenize;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde::ser::SerializeStruct;

pub use bleu::{BleuScores, bleu};
pub use cider::cider_d;
pub use meteor::{MeteorStats, meteor, meteor_segment_stats};
pub use rouge::rouge_l;
pub use stem::snowball_english_stem;
pub use tokenize::{ptb_tokenize, ptb_tokenize_batch};

/// What can make a set of captions impossible to score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaptionError {
    #[error("no images to evaluate")]
    Empty,
    #[error("image {0}: no reference captions")]
    NoReferences(String),
    #[error("image {0}: a prediction but no references")]
    PredictionWithoutReferences(String),
    #[error("image {0}: references but no prediction")]
    MissingPrediction(String),
    #[error(
        "image {image}: a caption of {words} words; captions may have at most {MAX_CAPTION_WORDS} (ROUGE-L and METEOR's alignment grow with the square of the length)"
    )]
    TooLong { image: String, words: usize },
    #[error("{predictions} predictions but {references} reference lists")]
    LengthMismatch {
        predictions: usize,
        references: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Shared by the metrics: splitting tokenised text, n-grams, checks, results
// ---------------------------------------------------------------------------------------------

/// Python's `str.isspace()`, which `str.split()` and `str.rstrip()` use.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}')
}

/// Python's `str.split()` with no argument.
fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|w| !w.is_empty()).collect()
}

/// The n-gram counts of a sentence for n = 1..=4, keyed by the n-gram's words.
fn ngram_counts<'a>(words: &[&'a str]) -> HashMap<Vec<&'a str>, usize> {
    let mut counts = HashMap::new();
    for n in 1..=4 {
        for gram in words.windows(n) {
            *counts.entry(gram.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// Checks that candidates and references pair up and every image has a reference.
fn check_corpus<C: AsRef<str>, S: AsRef<str>, R: AsRef<[S]>>(
    candidates: &[C],
    references: &[R],
) -> Result<(), CaptionError> {
    if candidates.len() != references.len() {
        return Err(CaptionError::LengthMismatch {
            predictions: candidates.len(),
            references: references.len(),
        });
    }
    if candidates.is_empty() {
        return Err(CaptionError::Empty);
    }
    if let Some(i) = references.iter().position(|r| r.as_ref().is_empty()) {
        return Err(CaptionError::NoReferences(format!("#{i}")));
    }
    Ok(())
}

/// Scores and per-image scores of one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluating a set of captions
// ---------------------------------------------------------------------------------------------

/// The toolkit's scores for a set of captions (or for one image of it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CaptionScores {
    /// BLEU-1..4.
    pub bleu: [f64; 4],
    /// METEOR with exact and stem matching (see [`meteor`]).
    pub meteor: f64,
    pub rouge_l: f64,
    /// CIDEr-D.
    pub cider: f64,
}

impl Serialize for CaptionScores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CaptionScores", 7)?;
        s.serialize_field("bleu1", &self.bleu[0])?;
        s.serialize_field("bleu2", &self.bleu[1])?;
        s.serialize_field("bleu3", &self.bleu[2])?;
        s.serialize_field("bleu4", &self.bleu[3])?;
        s.serialize_field("meteor", &self.meteor)?;
        s.serialize_field("rouge_l", &self.rouge_l)?;
        s.serialize_field("cider", &self.cider)?;
        s.end()
    }
}

/// Corpus scores and each image's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionEvaluation {
    pub scores: CaptionScores,
    pub per_image: BTreeMap<String, CaptionScores>,
}

/// The most words (split on whitespace) of one caption: real ones have tens.
pub const MAX_CAPTION_WORDS: usize = 1_000;

fn check_lengths(
    pred: &BTreeMap<String, String>,
    refs: &BTreeMap<String, Vec<String>>,
) -> Result<(), CaptionError> {
    let captions = pred.iter().chain(
        refs.iter()
            .flat_map(|(image, r)| r.iter().map(move |c| (image, c))),
    );
    for (image, caption) in captions {
        let words = caption.split_whitespace().count();
        if words > MAX_CAPTION_WORDS {
            return Err(CaptionError::TooLong {
                image: image.clone(),
                words,
            });
        }
    }
    Ok(())
}

/// Checks that predictions and references name the same images, each with references.
fn check_images<P, R: AsRef<[String]>>(
    pred: &BTreeMap<String, P>,
    refs: &BTreeMap<String, R>,
) -> Result<(), CaptionError> {
    if pred.is_empty() && refs.is_empty() {
        return Err(CaptionError::Empty);
    }
    if let Some(img) = pred.keys().find(|k| !refs.contains_key(*k)) {
        return Err(CaptionError::PredictionWithoutReferences(img.clone()));
    }
    if let Some(img) = refs.keys().find(|k| !pred.contains_key(*k)) {
        return Err(CaptionError::MissingPrediction(img.clone()));
    }
    if let Some((img, _)) = refs.iter().find(|(_, r)| r.as_ref().is_empty()) {
        return Err(CaptionError::NoReferences(img.clone()));
    }
    Ok(())
}

/// Scores raw captions as pycocoevalcap's `COCOEvalCap.evaluate` does (without SPICE): the
/// references and the predictions are PTB-tokenised in two calls, images in key order, then
/// BLEU-1..4, METEOR (exact and stem matching only), ROUGE-L and CIDEr-D are computed on the
/// tokens. One prediction per image; every image needs at least one reference.
pub fn evaluate_captions(
    pred: &BTreeMap<String, String>,
    refs: &BTreeMap<String, Vec<String>>,
) -> Result<CaptionEvaluation, CaptionError> {
    check_images(pred, refs)?;
    check_lengths(pred, refs)?;
    let flat_refs: Vec<&str> = refs.values().flatten().map(String::as_str).collect();
    let mut tokenized_refs = ptb_tokenize_batch(&flat_refs).into_iter();
    let refs_tok: BTreeMap<String, Vec<String>> = refs
        .iter()
        .map(|(img, r)| (img.clone(), tokenized_refs.by_ref().take(r.len()).collect()))
        .collect();
    let preds: Vec<&str> = pred.values().map(String::as_str).collect();
    let pred_tok: BTreeMap<String, String> = pred
        .keys()
        .cloned()
        .zip(ptb_tokenize_batch(&preds))
        .collect();
    evaluate_tokenized(&pred_tok, &refs_tok)
}

/// Scores captions that are already tokenised (pycocoevalcap's scorers on `gts`/`res`).
pub fn evaluate_tokenized(
    pred: &BTreeMap<String, String>,
    refs: &BTreeMap<String, Vec<String>>,
) -> Result<CaptionEvaluation, CaptionError> {
    check_images(pred, refs)?;
    check_lengths(pred, refs)?;
    let candidates: Vec<&String> = pred.values().collect();
    let references: Vec<&Vec<String>> = refs.values().collect();
    let b = bleu(&candidates, &references)?;
    let m = meteor(&candidates, &references)?;
    let r = rouge_l(&candidates, &references)?;
    let c = cider_d(&candidates, &references)?;
    let per_image = pred
        .keys()
        .enumerate()
        .map(|(i, img)| {
            let scores = CaptionScores {
                bleu: b.per_image[i],
                meteor: m.per_image[i],
                rouge_l: r.per_image[i],
                cider: c.per_image[i],
            };
            (img.clone(), scores)
        })
        .collect();
    Ok(CaptionEvaluation {
        scores: CaptionScores {
            bleu: b.corpus,
            meteor: m.corpus,
            rouge_l: r.corpus,
            cider: c.corpus,
        },
        per_image,
    })
}

/// Equal to within rounding: the tests of every caption metric compare with figures worked
/// by hand.
#[cfg(test)]
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_checks_its_inputs() {
        let pred: BTreeMap<String, String> = [("a".to_string(), "x".to_string())].into();
        let refs: BTreeMap<String, Vec<String>> = [("a".to_string(), vec!["x".to_string()])].into();
        assert!(evaluate_captions(&pred, &refs).is_ok());
        assert_eq!(
            evaluate_captions(&BTreeMap::new(), &BTreeMap::new()),
            Err(CaptionError::Empty)
        );
        let no_refs: BTreeMap<String, Vec<String>> = [("a".to_string(), vec![])].into();
        assert_eq!(
            evaluate_captions(&pred, &no_refs),
            Err(CaptionError::NoReferences("a".into()))
        );
        let other: BTreeMap<String, Vec<String>> =
            [("b".to_string(), vec!["x".to_string()])].into();
        assert_eq!(
            evaluate_captions(&pred, &other),
            Err(CaptionError::PredictionWithoutReferences("a".into()))
        );
        let mut more = refs.clone();
        more.insert("b".into(), vec!["y".into()]);
        assert_eq!(
            evaluate_captions(&pred, &more),
            Err(CaptionError::MissingPrediction("b".into()))
        );
        assert!(matches!(
            bleu(&["a"], &[vec!["a"], vec!["b"]]),
            Err(CaptionError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn scores_serialise_with_flat_keys() {
        let scores = CaptionScores {
            bleu: [0.1, 0.2, 0.3, 0.4],
            meteor: 0.5,
            rouge_l: 0.6,
            cider: 0.7,
        };
        let v = serde_json::to_value(scores).unwrap();
        for (k, x) in [
            ("bleu1", 0.1),
            ("bleu2", 0.2),
            ("bleu3", 0.3),
            ("bleu4", 0.4),
            ("meteor", 0.5),
            ("rouge_l", 0.6),
            ("cider", 0.7),
        ] {
            assert_eq!(v[k], x);
        }
    }
}
