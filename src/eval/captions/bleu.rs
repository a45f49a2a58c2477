//! BLEU: Papineni, Roukos, Ward and Zhu, "BLEU: a method for automatic evaluation of machine
//! translation" (ACL 2002), as pycocoevalcap's `Bleu(4)` computes it (the module notes list its
//! choices).

use std::collections::HashMap;

use serde::Serialize;

use super::{CaptionError, check_corpus, ngram_counts, py_split};

/// BLEU-1..4 of a corpus and of each image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScores {
    pub corpus: [f64; 4],
    pub per_image: Vec<[f64; 4]>,
}

#[derive(Default, Clone, Copy)]
struct BleuCounts {
    test_len: f64,
    ref_len: f64,
    guess: [f64; 4],
    correct: [f64; 4],
}

impl BleuCounts {
    fn scores(&self) -> [f64; 4] {
        const TINY: f64 = 1e-15;
        const SMALL: f64 = 1e-9;
        let mut out = [0.0; 4];
        let mut product = 1.0;
        for (k, score) in out.iter_mut().enumerate() {
            product *= (self.correct[k] + TINY) / (self.guess[k] + SMALL);
            *score = product.powf(1.0 / (k as f64 + 1.0));
        }
        let ratio = (self.test_len + TINY) / (self.ref_len + SMALL);
        if ratio < 1.0 {
            let penalty = (1.0 - 1.0 / ratio).exp();
            for score in &mut out {
                *score *= penalty;
            }
        }
        out
    }
}

/// BLEU-1..4 on tokenised text (words split on whitespace), one candidate and its references per
/// image, as pycocoevalcap's `Bleu(4)` with the "closest" reference length: the corpus score comes
/// from the counts summed over images.
pub fn bleu<C: AsRef<str>, S: AsRef<str>, R: AsRef<[S]>>(
    candidates: &[C],
    references: &[R],
) -> Result<BleuScores, CaptionError> {
    check_corpus(candidates, references)?;
    let mut total = BleuCounts::default();
    let mut per_image = Vec::with_capacity(candidates.len());
    for (candidate, refs) in candidates.iter().zip(references) {
        let words = py_split(candidate.as_ref());
        let mut max_ref: HashMap<Vec<&str>, usize> = HashMap::new();
        let mut ref_lens = Vec::new();
        for r in refs.as_ref() {
            let ref_words = py_split(r.as_ref());
            ref_lens.push(ref_words.len());
            for (gram, count) in ngram_counts(&ref_words) {
                let entry = max_ref.entry(gram).or_insert(0);
                *entry = (*entry).max(count);
            }
        }
        let test_len = words.len();
        // Closest reference length, the shorter one on a tie.
        let ref_len = ref_lens
            .iter()
            .min_by_key(|&&l| (l.abs_diff(test_len), l))
            .copied()
            .unwrap_or(0);
        let mut counts = BleuCounts {
            test_len: test_len as f64,
            ref_len: ref_len as f64,
            ..BleuCounts::default()
        };
        for k in 0..4 {
            counts.guess[k] = test_len.saturating_sub(k) as f64;
        }
        for (gram, count) in ngram_counts(&words) {
            let clipped = count.min(max_ref.get(&gram).copied().unwrap_or(0));
            counts.correct[gram.len() - 1] += clipped as f64;
        }
        per_image.push(counts.scores());
        total.test_len += counts.test_len;
        total.ref_len += counts.ref_len;
        for k in 0..4 {
            total.guess[k] += counts.guess[k];
            total.correct[k] += counts.correct[k];
        }
    }
    Ok(BleuScores {
        corpus: total.scores(),
        per_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::captions::close;

    #[test]
    fn bleu_by_hand() {
        // p1 = 2/4, p2 = 1/3, no trigram: BLEU-2 = sqrt(1/6), equal lengths so no penalty.
        let s = bleu(&["a b c d"], &[vec!["a b e f"]]).unwrap();
        assert!(close(s.corpus[0], 0.5));
        assert!(close(s.corpus[1], (0.5f64 / 3.0).sqrt()));
        assert!(s.corpus[2] < 1e-4);
        // Two words against a four-word reference: brevity penalty exp(1 - 4/2).
        let s = bleu(&["a b"], &[vec!["a b c d"]]).unwrap();
        assert!(close(s.corpus[0], (-1.0f64).exp()));
        // Closest length breaks the 2-vs-4 tie (candidate of 3) towards the shorter: no penalty.
        let s = bleu(&["a b c"], &[vec!["a b", "a b c d"]]).unwrap();
        assert!(close(s.corpus[0], 1.0));
        // The corpus score sums the counts; it is not the mean of the images.
        let s = bleu(&["a b", "x y"], &[vec!["a b"], vec!["a b"]]).unwrap();
        assert!(close(s.corpus[0], 0.5));
        assert!(close(s.per_image[0][0], 1.0) && s.per_image[1][0] < 1e-9);
    }
}
