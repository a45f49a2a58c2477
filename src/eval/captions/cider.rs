//! CIDEr-D: Vedantam, Zitnick and Parikh, "CIDEr: Consensus-based image description evaluation"
//! (CVPR 2015), as pycocoevalcap's `Cider` computes it.

use std::collections::{HashMap, HashSet};

use super::{CaptionError, MetricScores, check_corpus, mean, ngram_counts, py_split};

/// A sentence's TF-IDF vectors (one map per n), their norms, and its bigram count.
struct TfIdf<'a> {
    vec: [HashMap<Vec<&'a str>, f64>; 4],
    norm: [f64; 4],
    bigrams: f64,
}

fn tf_idf<'a>(
    counts: &HashMap<Vec<&'a str>, usize>,
    df: &HashMap<Vec<&'a str>, f64>,
    log_images: f64,
) -> TfIdf<'a> {
    let mut out = TfIdf {
        vec: Default::default(),
        norm: [0.0; 4],
        bigrams: 0.0,
    };
    for (gram, &tf) in counts {
        let n = gram.len() - 1;
        let doc_freq = df.get(gram).copied().unwrap_or(0.0).max(1.0);
        let v = tf as f64 * (log_images - doc_freq.ln());
        out.norm[n] += v * v;
        out.vec[n].insert(gram.clone(), v);
        if n == 1 {
            out.bigrams += tf as f64;
        }
    }
    for norm in &mut out.norm {
        *norm = norm.sqrt();
    }
    out
}

/// CIDEr-D (n = 1..4, sigma = 6, clipped, x10) on tokenised text (words split on whitespace), as
/// pycocoevalcap's `Cider`: document frequencies and `log(number of images)` come from the
/// references of this very set, so a score depends on the whole set. The corpus score is the mean
/// over images.
pub fn cider_d<C: AsRef<str>, S: AsRef<str>, R: AsRef<[S]>>(
    candidates: &[C],
    references: &[R],
) -> Result<MetricScores, CaptionError> {
    check_corpus(candidates, references)?;
    const SIGMA: f64 = 6.0;
    let ref_counts: Vec<Vec<HashMap<Vec<&str>, usize>>> = references
        .iter()
        .map(|refs| {
            refs.as_ref()
                .iter()
                .map(|r| ngram_counts(&py_split(r.as_ref())))
                .collect()
        })
        .collect();
    let mut df: HashMap<Vec<&str>, f64> = HashMap::new();
    for refs in &ref_counts {
        let grams: HashSet<&Vec<&str>> = refs.iter().flat_map(|r| r.keys()).collect();
        for gram in grams {
            *df.entry(gram.clone()).or_insert(0.0) += 1.0;
        }
    }
    let log_images = (candidates.len() as f64).ln();
    let per_image: Vec<f64> = candidates
        .iter()
        .zip(&ref_counts)
        .map(|(candidate, refs)| {
            let cand = tf_idf(
                &ngram_counts(&py_split(candidate.as_ref())),
                &df,
                log_images,
            );
            let mut sum = [0.0f64; 4];
            for r in refs {
                let reference = tf_idf(r, &df, log_images);
                let delta = cand.bigrams - reference.bigrams;
                let penalty = (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                for (n, total) in sum.iter_mut().enumerate() {
                    let mut val = 0.0;
                    for (gram, &v) in &cand.vec[n] {
                        let vr = reference.vec[n].get(gram).copied().unwrap_or(0.0);
                        val += v.min(vr) * vr;
                    }
                    if cand.norm[n] != 0.0 && reference.norm[n] != 0.0 {
                        val /= cand.norm[n] * reference.norm[n];
                    }
                    *total += val * penalty;
                }
            }
            mean(&sum) / refs.len() as f64 * 10.0
        })
        .collect();
    Ok(MetricScores {
        corpus: mean(&per_image),
        per_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::captions::close;

    #[test]
    fn cider_d_by_hand() {
        // Two images, idf ln 2 for every reference n-gram: the matching image scores
        // 10 * mean(1, 1, 0, 0) = 5, the other 0.
        let s = cider_d(&["a b", "c d"], &[vec!["a b"], vec!["e f"]]).unwrap();
        assert!(close(s.per_image[0], 5.0));
        assert!(close(s.per_image[1], 0.0));
        assert!(close(s.corpus, 2.5));
        // One image: log(1) = 0 weighs every n-gram 0.
        assert_eq!(cider_d(&["a b"], &[vec!["a b"]]).unwrap().corpus, 0.0);
        // The length penalty counts bigrams: 1 vs 7 bigrams, delta 6, exp(-36 / 72).
        let s = cider_d(&["a b", "z"], &[vec!["a b c d e f g h"], vec!["y"]]).unwrap();
        assert!(s.per_image[0] > 0.0 && s.per_image[0] < 5.0 * (-0.5f64).exp());
    }
}
