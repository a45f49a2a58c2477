//! METEOR's exact and stem stages: Banerjee and Lavie, "METEOR: an automatic metric for MT
//! evaluation with improved correlation with human judgments" (ACL 2005 workshop), in the version
//! of Denkowski and Lavie, "Meteor Universal: language specific translation evaluation for any
//! target language" (WMT 2014), i.e. METEOR 1.5 as pycocoevalcap runs it (`-l en -norm`), its
//! normaliser after the Moses tokenizer (Koehn et al., ACL 2007). What is reproduced and how far
//! the result is from the full METEOR 1.5: the module notes, "METEOR".

use super::stem::snowball_english_stem;
use super::{CaptionError, MetricScores, check_corpus};

/// METEOR 1.5's English function words (`function/english.words` in its jar).
const METEOR_FUNCTION_WORDS: [&str; 93] = [
    "the", ",", ".", "to", "of", "and", "a", "in", "that", "for", "\"", "is", "on", "'s", "it",
    "with", "was", "as", "said", "at", "he", "by", "be", "from", "have", "has", "are", "his",
    "but", "an", "this", "not", "i", "will", "\u{2019}", "they", ")", "-rrb-", "(", "-lrb-", "who",
    "their", "had", "we", "which", "were", "been", "more", "or", "s", "its", "would", "about",
    "new", "one", "after", "you", ":", "also", "up", "when", "there", "than", "$", "all", "out",
    "her", "people", "she", "year", "two", "-", "can", "if", "last", "first", "\u{201C}", "over",
    "other", "\u{201D}", "into", "some", "what", "so", "--", "no", "time", "years", "could", "?",
    "'t", "\u{2014}", "'",
];

/// METEOR 1.5's English parameters for its default ("rank") task.
const METEOR_ALPHA: f64 = 0.85;
const METEOR_BETA: f64 = 0.2;
const METEOR_GAMMA: f64 = 0.6;
const METEOR_DELTA: f64 = 0.75;
/// Weights of the exact and stem stages in the score.
const METEOR_WEIGHTS: [f64; 2] = [1.0, 0.6];
/// Weights the aligner's search uses (its evaluation setting: 1 for exact, 0.5 otherwise).
const METEOR_SEARCH_WEIGHTS: [f64; 2] = [1.0, 0.5];
const METEOR_BEAM: usize = 40;

fn is_meteor_alpha(c: char) -> bool {
    c.is_ascii_alphabetic()
        || matches!(c,
            '\u{160}' | '\u{17D}' | '\u{161}' | '\u{17E}' | '\u{178}' | '\u{C0}'..='\u{D6}'
            | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{17E}' | '\u{400}'..='\u{4FF}'
            | '\u{500}'..='\u{527}' | '\u{A640}'..='\u{A66E}' | '\u{A67E}'..='\u{A697}'
            | '\u{1D00}'..='\u{1D7F}')
}
fn is_meteor_alnum(c: char) -> bool {
    c.is_ascii_digit() || is_meteor_alpha(c)
}
/// Java's `StringTokenizer` delimiters (and regex `\s` minus vertical tab).
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0C}')
}

/// One left-to-right pass of a three-character pattern `(a)X(b)` with `X` fixed, as Java's
/// `replaceAll` finds non-overlapping matches.
fn replace_triples(
    s: &[char],
    middle: char,
    before: impl Fn(char) -> bool,
    after: impl Fn(char) -> bool,
    replacement: &str,
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        if i + 2 < s.len() && s[i + 1] == middle && before(s[i]) && after(s[i + 2]) {
            out.push(s[i]);
            out.extend(replacement.chars());
            out.push(s[i + 2]);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// METEOR's `-norm` for English with punctuation kept (its Normalizer, after the Moses tokenizer),
/// then lower-cased and split into words.
fn meteor_normalize(line: &str) -> Vec<String> {
    let mut s: Vec<char> = Vec::with_capacity(line.len() + 2);
    s.push(' ');
    for c in line.chars() {
        if is_meteor_alnum(c)
            || matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r')
            || ".'`,-\u{2018}\u{2019}".contains(c)
        {
            s.push(c);
        } else {
            s.extend([' ', c, ' ']);
        }
    }
    s.push(' ');

    // Runs of two or more dots stand alone (METEOR escapes them so that the abbreviation step
    // below leaves them alone; `is_dots` plays that part here).
    let mut t = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == '.' {
            let mut j = i;
            while j < s.len() && s[j] == '.' {
                j += 1;
            }
            if j - i >= 2 {
                t.push(' ');
                t.extend(&s[i..j]);
                t.push(' ');
            } else {
                t.push('.');
            }
            i = j;
        } else {
            t.push(s[i]);
            i += 1;
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let t = replace_triples(&t, ',', |c| !digit(c), |c| !digit(c), " , ");
    let t = replace_triples(&t, ',', digit, |c| !digit(c), " , ");
    let t = replace_triples(&t, ',', |c| !digit(c), digit, " , ");

    let mut q = String::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            '`' | '\u{2018}' | '\u{2019}' => q.push('\''),
            '\u{201C}' | '\u{201D}' => q.push_str(" \" "),
            c => q.push(c),
        }
        i += 1;
    }
    // `''` becomes a double quote only after the single quotes above were normalised.
    let q = q
        .replace("''", " \" ")
        .replace('\u{2013}', "-")
        .replace("--", "-");
    let t: Vec<char> = q.chars().collect();
    let t = replace_triples(
        &t,
        '-',
        |c| is_meteor_alnum(c) || c == '.',
        is_meteor_alnum,
        " ",
    );

    let alpha = is_meteor_alpha;
    let t = replace_triples(&t, '\'', |c| !alpha(c), |c| !alpha(c), " ' ");
    let t = replace_triples(&t, '\'', |c| !alpha(c) && !digit(c), alpha, " ' ");
    let t = replace_triples(&t, '\'', alpha, |c| !alpha(c), " ' ");
    let t = replace_triples(&t, '\'', alpha, alpha, " '");
    let t = replace_triples(&t, '\'', digit, |c| c == 's', " '");

    let text: String = t.into_iter().collect();
    let words: Vec<&str> = text
        .split(is_java_space)
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let is_dots = word.chars().all(|c| c == '.');
        let pre = word.strip_suffix('.');
        let Some(pre) = pre.filter(|_| word.chars().count() > 1 && !is_dots) else {
            out.push((*word).to_string());
            continue;
        };
        let next = words.get(i + 1).and_then(|w| w.chars().next());
        // A dotted acronym loses its dots; a known prefix, or a dot before a lower-case word
        // (or, for numeric-only prefixes, before a number), keeps its dot; any other final dot
        // is split off as the end of a sentence.
        let keeps_dot = match meteor_nonbreaking(pre) {
            Some(false) => true,
            Some(true) => next.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            None => next.is_some_and(|c| c.is_ascii_lowercase()),
        };
        if pre.contains('.') && pre.chars().any(is_meteor_alpha) {
            out.push(word.replace('.', ""));
        } else if keeps_dot {
            out.push((*word).to_string());
        } else {
            out.push(pre.to_string());
            out.push(".".to_string());
        }
    }
    let spaces = |c: char| {
        is_java_space(c)
            || matches!(
                c,
                '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
            )
    };
    out.iter()
        .flat_map(|w| {
            w.split(spaces)
                .filter(|p| !p.is_empty())
                .map(str::to_lowercase)
        })
        .collect::<Vec<_>>()
}

/// METEOR's English non-breaking prefixes (from Moses): `Some(false)` for a prefix that never ends
/// a sentence, `Some(true)` for one that does not before a number.
fn meteor_nonbreaking(prefix: &str) -> Option<bool> {
    const ANY: [&str; 60] = [
        "Adj", "Adm", "Adv", "Asst", "Bart", "Bldg", "Brig", "Bros", "Capt", "Cmdr", "Col",
        "Comdr", "Con", "Corp", "Cpl", "DR", "Dr", "Drs", "Ens", "Gen", "Gov", "Hon", "Hr", "Hosp",
        "Insp", "Lt", "MM", "MR", "MRS", "MS", "Maj", "Messrs", "Mlle", "Mme", "Mr", "Mrs", "Ms",
        "Msgr", "Op", "Ord", "Pfc", "Ph", "Prof", "Pvt", "Rep", "Reps", "Res", "Rev", "Rt", "Sen",
        "Sens", "Sfc", "Sgt", "Sr", "St", "Supt", "Surg", "v", "vs", "rev",
    ];
    const MORE_ANY: [&str; 4] = ["i.e", "e.g", "Nos", "Nr"];
    const NUMERIC_ONLY: [&str; 3] = ["No", "Art", "pp"];
    let mut chars = prefix.chars();
    let single_capital =
        matches!((chars.next(), chars.next()), (Some(c), None) if c.is_ascii_uppercase());
    if single_capital || ANY.contains(&prefix) || MORE_ANY.contains(&prefix) {
        Some(false)
    } else if NUMERIC_ONLY.contains(&prefix) {
        Some(true)
    } else {
        None
    }
}

/// One matched pair: reference word `r` and test word `t`, found by stage `stage` (0 exact,
/// 1 stem).
#[derive(Clone, Copy, Debug)]
struct MeteorMatch {
    r: usize,
    t: usize,
    stage: usize,
}

/// A path of the aligner's beam search (its bookkeeping kept as the jar keeps it: the weighted
/// match count is an integer, so a 0.5-weighted single-word match adds nothing to it).
#[derive(Clone)]
struct Path {
    matches: Vec<Option<MeteorMatch>>,
    test_used: Vec<bool>,
    ref_used: Vec<bool>,
    weighted: i64,
    chunks: i64,
    last_end: Option<usize>,
    distance: i64,
}

impl Path {
    fn key(&self) -> (i64, i64, i64) {
        (-self.weighted, self.chunks, self.distance)
    }
    fn take(&mut self, m: MeteorMatch) {
        // `count += length * weight` on the jar's int field truncates the sum.
        self.weighted = (self.weighted as f64 + METEOR_SEARCH_WEIGHTS[m.stage]) as i64;
        if self.last_end.is_some_and(|e| e != m.t) {
            self.chunks += 1;
        }
        self.last_end = Some(m.t + 1);
    }
}

/// The alignment METEOR 1.5's aligner picks with its exact and stem stages: all candidate
/// matches, the unambiguous ones fixed, the rest chosen by a beam search (beam 40) that prefers
/// more exact matches, then fewer chunks, then a smaller distance.
fn meteor_align(test: &[String], reference: &[String]) -> Vec<Option<MeteorMatch>> {
    let mut candidates: Vec<Vec<MeteorMatch>> = vec![Vec::new(); reference.len()];
    let mut test_cover = vec![0usize; test.len()];
    let mut ref_cover = vec![0usize; reference.len()];
    let identical = test == reference;
    for (j, rw) in reference.iter().enumerate() {
        for (i, tw) in test.iter().enumerate() {
            if tw == rw {
                candidates[j].push(MeteorMatch {
                    r: j,
                    t: i,
                    stage: 0,
                });
                test_cover[i] += 1;
                ref_cover[j] += 1;
            }
        }
    }
    if !identical {
        let test_stems: Vec<String> = test.iter().map(|w| snowball_english_stem(w)).collect();
        let ref_stems: Vec<String> = reference.iter().map(|w| snowball_english_stem(w)).collect();
        for (j, rs) in ref_stems.iter().enumerate() {
            for (i, ts) in test_stems.iter().enumerate() {
                if ts == rs && test[i] != reference[j] {
                    candidates[j].push(MeteorMatch {
                        r: j,
                        t: i,
                        stage: 1,
                    });
                    test_cover[i] += 1;
                    ref_cover[j] += 1;
                }
            }
        }
    }

    let mut start = Path {
        matches: vec![None; reference.len()],
        test_used: vec![false; test.len()],
        ref_used: vec![false; reference.len()],
        weighted: 0,
        chunks: 0,
        last_end: None,
        distance: 0,
    };
    for (j, list) in candidates.iter().enumerate() {
        if let [m] = list.as_slice()
            && ref_cover[j] == 1
            && test_cover[m.t] == 1
        {
            start.matches[j] = Some(*m);
            start.ref_used[j] = true;
            start.test_used[m.t] = true;
        }
    }

    let mut paths = vec![start];
    for (current, options) in candidates.iter().enumerate() {
        paths.sort_by_key(Path::key);
        paths.truncate(METEOR_BEAM);
        let mut next = Vec::with_capacity(paths.len() * 2);
        for mut path in paths {
            if path.ref_used[current] {
                // A fixed match: taken as it comes.
                if let Some(m) = path.matches[current] {
                    path.take(m);
                    path.distance += m.r.abs_diff(m.t) as i64;
                    next.push(path);
                }
                continue;
            }
            for &m in options {
                if path.test_used[m.t] {
                    continue;
                }
                let mut branch = path.clone();
                branch.test_used[m.t] = true;
                branch.ref_used[m.r] = true;
                branch.matches[current] = Some(m);
                branch.take(m);
                next.push(branch);
                // The jar adds the distance to the path being extended, not to the new branch;
                // it only breaks ties, and is kept so the same alignment wins them.
                path.distance += m.r.abs_diff(m.t) as i64;
            }
            if path.last_end.is_some() {
                path.chunks += 1;
                path.last_end = None;
            }
            next.push(path);
        }
        paths = next;
    }
    // The last step closes the open chunk of the paths still in the beam.
    paths.sort_by_key(Path::key);
    paths.truncate(METEOR_BEAM);
    for path in &mut paths {
        if path.last_end.is_some() {
            path.chunks += 1;
        }
    }
    paths.sort_by_key(Path::key);
    paths
        .into_iter()
        .next()
        .map(|p| p.matches)
        .unwrap_or_default()
}

/// METEOR's sufficient statistics for one candidate against one reference (the numbers the jar
/// prints for `SCORE`), with the stages limited to exact (0) and stem (1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MeteorStats {
    pub test_len: f64,
    pub ref_len: f64,
    pub test_function_words: f64,
    pub ref_function_words: f64,
    /// Per stage: test content, reference content, test function, reference function matches.
    pub stage_matches: [[f64; 4]; 2],
    pub chunks: f64,
    pub test_word_matches: f64,
    pub ref_word_matches: f64,
}

impl MeteorStats {
    /// The 23 numbers in the order of the jar's statistics line (synonym and paraphrase stages
    /// zero).
    pub fn jar_fields(&self) -> [f64; 23] {
        let mut f = [0.0; 23];
        f[0] = self.test_len;
        f[1] = self.ref_len;
        f[2] = self.test_function_words;
        f[3] = self.ref_function_words;
        for (s, stage) in self.stage_matches.iter().enumerate() {
            f[4 + 4 * s..8 + 4 * s].copy_from_slice(stage);
        }
        f[20] = self.chunks;
        f[21] = self.test_word_matches;
        f[22] = self.ref_word_matches;
        f
    }

    fn total_matches(&self) -> (f64, f64) {
        let t = self.stage_matches.iter().map(|s| s[0] + s[2]).sum();
        let r = self.stage_matches.iter().map(|s| s[1] + s[3]).sum();
        (t, r)
    }

    fn all_matched_in_one_chunk(&self) -> bool {
        let (t, r) = self.total_matches();
        t == self.test_len && r == self.ref_len && self.chunks == 1.0
    }

    /// The METEOR 1.5 score of these statistics.
    pub fn score(&self) -> f64 {
        let d = METEOR_DELTA;
        let test_weighted_len =
            d * (self.test_len - self.test_function_words) + (1.0 - d) * self.test_function_words;
        let ref_weighted_len =
            d * (self.ref_len - self.ref_function_words) + (1.0 - d) * self.ref_function_words;
        let (mut test_weighted, mut ref_weighted) = (0.0, 0.0);
        for (stage, w) in self.stage_matches.iter().zip(METEOR_WEIGHTS) {
            test_weighted += stage[0] * w * d;
            ref_weighted += stage[1] * w * d;
        }
        for (stage, w) in self.stage_matches.iter().zip(METEOR_WEIGHTS) {
            test_weighted += stage[2] * w * (1.0 - d);
            ref_weighted += stage[3] * w * (1.0 - d);
        }
        let precision = test_weighted / test_weighted_len;
        let recall = ref_weighted / ref_weighted_len;
        let f_mean = 1.0 / ((1.0 - METEOR_ALPHA) / precision + METEOR_ALPHA / recall);
        let frag = if self.all_matched_in_one_chunk() {
            0.0
        } else {
            self.chunks / ((self.test_word_matches + self.ref_word_matches) / 2.0)
        };
        let score = f_mean * (1.0 - METEOR_GAMMA * frag.powf(METEOR_BETA));
        if score.is_nan() { 0.0 } else { score.max(0.0) }
    }

    /// Adds another segment's statistics for the corpus score, as the jar aggregates them: a
    /// segment matched entirely in one chunk adds no chunk.
    fn add(&mut self, other: &MeteorStats) {
        self.test_len += other.test_len;
        self.ref_len += other.ref_len;
        self.test_function_words += other.test_function_words;
        self.ref_function_words += other.ref_function_words;
        for (a, b) in self.stage_matches.iter_mut().zip(&other.stage_matches) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        if !other.all_matched_in_one_chunk() {
            self.chunks += other.chunks;
        }
        self.test_word_matches += other.test_word_matches;
        self.ref_word_matches += other.ref_word_matches;
    }
}

fn meteor_pair_stats(test: &[String], reference: &[String]) -> MeteorStats {
    let function = |w: &String| METEOR_FUNCTION_WORDS.contains(&w.as_str());
    let test_function: Vec<bool> = test.iter().map(function).collect();
    let ref_function: Vec<bool> = reference.iter().map(function).collect();
    let alignment = meteor_align(test, reference);
    let mut stats = MeteorStats {
        test_len: test.len() as f64,
        ref_len: reference.len() as f64,
        test_function_words: test_function.iter().filter(|&&f| f).count() as f64,
        ref_function_words: ref_function.iter().filter(|&&f| f).count() as f64,
        ..MeteorStats::default()
    };
    let mut last_end: Option<usize> = None;
    for slot in &alignment {
        match slot {
            None => {
                if last_end.take().is_some() {
                    stats.chunks += 1.0;
                }
            }
            Some(m) => {
                let stage = &mut stats.stage_matches[m.stage];
                stage[if test_function[m.t] { 2 } else { 0 }] += 1.0;
                stage[if ref_function[m.r] { 3 } else { 1 }] += 1.0;
                if last_end.is_some_and(|e| e != m.t) {
                    stats.chunks += 1.0;
                }
                last_end = Some(m.t + 1);
                stats.test_word_matches += 1.0;
                stats.ref_word_matches += 1.0;
            }
        }
    }
    if last_end.is_some() {
        stats.chunks += 1.0;
    }
    stats
}

/// METEOR's statistics of a candidate against its best reference (highest segment score, the
/// first on ties), on tokenised text that METEOR's own normaliser re-tokenises first, as the jar
/// does under `-norm`.
pub fn meteor_segment_stats<S: AsRef<str>>(candidate: &str, references: &[S]) -> MeteorStats {
    // The toolkit's wrapper strips `|||` (its field separator) and halves double spaces.
    let candidate = candidate.replace("|||", "").replace("  ", " ");
    let test = meteor_normalize(candidate.trim());
    let mut best: Option<(f64, MeteorStats)> = None;
    for r in references {
        let stats = meteor_pair_stats(&test, &meteor_normalize(r.as_ref().trim()));
        let score = stats.score();
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, stats));
        }
    }
    best.map(|(_, s)| s).unwrap_or_default()
}

/// METEOR on tokenised text with exact and stem matching only (see the module notes on how far
/// this is from METEOR 1.5): per image the best reference's score, and the corpus score from the
/// statistics summed over images as the jar's `EVAL` computes it (not the mean of the per-image
/// scores).
pub fn meteor<C: AsRef<str>, S: AsRef<str>, R: AsRef<[S]>>(
    candidates: &[C],
    references: &[R],
) -> Result<MetricScores, CaptionError> {
    check_corpus(candidates, references)?;
    let mut total = MeteorStats::default();
    let mut per_image = Vec::with_capacity(candidates.len());
    for (candidate, refs) in candidates.iter().zip(references) {
        let stats = meteor_segment_stats(candidate.as_ref(), refs.as_ref());
        per_image.push(stats.score());
        total.add(&stats);
    }
    Ok(MetricScores {
        corpus: total.score(),
        per_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::captions::close;

    #[test]
    fn meteor_by_hand() {
        let one = |c: &str, r: &str| meteor(&[c], &[vec![r]]).unwrap().corpus;
        assert!(close(
            one("the horizon is tilted", "the horizon is tilted"),
            1.0
        ));
        // A stem match counts 0.6 and, matching everything in one chunk, has no penalty.
        assert!(close(one("colours", "colour"), 0.6));
        // Two content words swapped: P = R = 1, two chunks over two matches, penalty 0.6.
        assert!(close(one("sky tree", "tree sky"), 0.4));
        assert_eq!(one("sky", "tree"), 0.0);
        // The best reference is kept.
        let s = meteor(&["sky tree"], &[vec!["tree sky", "sky tree"]]).unwrap();
        assert!(close(s.corpus, 1.0));
    }

    #[test]
    fn meteor_normaliser_splits_as_the_jar() {
        assert_eq!(meteor_normalize("do n't"), ["do", "n", "'t"]);
        assert_eq!(
            meteor_normalize("photographer 's"),
            ["photographer", "'", "s"]
        );
        assert_eq!(
            meteor_normalize("over-exposed 1/250s"),
            ["over", "exposed", "1", "/", "250s"]
        );
        assert_eq!(meteor_normalize("u.s. etc."), ["us", "etc", "."]);
    }
}
