//! ROUGE-L: Lin, "ROUGE: a package for automatic evaluation of summaries" (ACL 2004 workshop),
//! as pycocoevalcap's `Rouge` computes it.

use super::{CaptionError, MetricScores, check_corpus, mean};

fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L (beta = 1.2) on tokenised text, as pycocoevalcap's `Rouge`: words split on single
/// spaces, the best precision and the best recall over the references taken separately; the corpus
/// score is the mean over images.
pub fn rouge_l<C: AsRef<str>, S: AsRef<str>, R: AsRef<[S]>>(
    candidates: &[C],
    references: &[R],
) -> Result<MetricScores, CaptionError> {
    check_corpus(candidates, references)?;
    const BETA: f64 = 1.2;
    let per_image: Vec<f64> = candidates
        .iter()
        .zip(references)
        .map(|(candidate, refs)| {
            let c: Vec<&str> = candidate.as_ref().split(' ').collect();
            let (mut best_p, mut best_r) = (0.0f64, 0.0f64);
            for r in refs.as_ref() {
                let r: Vec<&str> = r.as_ref().split(' ').collect();
                let lcs = lcs_len(&r, &c) as f64;
                best_p = best_p.max(lcs / c.len() as f64);
                best_r = best_r.max(lcs / r.len() as f64);
            }
            if best_p != 0.0 && best_r != 0.0 {
                (1.0 + BETA * BETA) * best_p * best_r / (best_r + BETA * BETA * best_p)
            } else {
                0.0
            }
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
    fn rouge_l_by_hand() {
        // LCS 2: P = 2/3, R = 1/2, F = 2.44 P R / (R + 1.44 P).
        let s = rouge_l(&["a b c"], &[vec!["a c d e"]]).unwrap();
        let (p, r) = (2.0 / 3.0, 0.5);
        assert!(close(s.corpus, 2.44 * p * r / (r + 1.44 * p)));
        // Best precision and best recall come from different references.
        let s = rouge_l(&["a b"], &[vec!["a b c d e f", "a x"]]).unwrap();
        let (p, r) = (1.0, 0.5);
        assert!(close(s.corpus, 2.44 * p * r / (r + 1.44 * p)));
        assert_eq!(rouge_l(&["a"], &[vec!["b"]]).unwrap().corpus, 0.0);
    }
}
