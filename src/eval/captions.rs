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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use serde::Serialize;
use serde::ser::SerializeStruct;

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
// PTB tokeniser (Stanford CoreNLP 3.4.1 PTBLexer, as pycocoevalcap runs it)
// ---------------------------------------------------------------------------------------------

/// The tokens pycocoevalcap deletes after tokenising.
const PTB_PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// A regular expression over characters. Matching returns every end position, so that a rule can
/// take its longest match and a sequence can continue from each of them (JFlex semantics).
#[derive(Clone)]
enum Re {
    /// A literal matched without regard to case (JFlex `%caseless`).
    Lit(&'static str),
    /// A character class; JFlex's `%caseless` leaves classes case-sensitive.
    Class(fn(char) -> bool),
    /// One character, case-sensitive (a one-character class).
    Char(char),
    Seq(Vec<Re>),
    Alt(Vec<Re>),
    Rep(Box<Re>, usize, usize),
}

const MANY: usize = usize::MAX;

fn lit(s: &'static str) -> Re {
    Re::Lit(s)
}
fn cls(f: fn(char) -> bool) -> Re {
    Re::Class(f)
}
fn seq(items: Vec<Re>) -> Re {
    Re::Seq(items)
}
fn alt(items: Vec<Re>) -> Re {
    Re::Alt(items)
}
fn rep(r: Re, min: usize, max: usize) -> Re {
    Re::Rep(Box::new(r), min, max)
}
fn opt(r: Re) -> Re {
    rep(r, 0, 1)
}
fn star(r: Re) -> Re {
    rep(r, 0, MANY)
}
fn plus(r: Re) -> Re {
    rep(r, 1, MANY)
}
fn lits(words: &[&'static str]) -> Re {
    alt(words.iter().map(|w| lit(w)).collect())
}

fn caseless_eq(text: char, pattern: char) -> bool {
    // The patterns' literals are ASCII; JFlex matches a literal's upper and lower case forms.
    text == pattern
        || (pattern.is_ascii() && text.is_ascii() && text.eq_ignore_ascii_case(&pattern))
}

fn sort_dedup(v: &mut Vec<usize>) {
    v.sort_unstable();
    v.dedup();
}

impl Re {
    fn ends(&self, text: &[char], from: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        match self {
            Re::Lit(s) => {
                for &p in from {
                    let mut q = p;
                    let mut ok = true;
                    for l in s.chars() {
                        if q < text.len() && caseless_eq(text[q], l) {
                            q += 1;
                        } else {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        out.push(q);
                    }
                }
            }
            Re::Class(f) => {
                for &p in from {
                    if p < text.len() && f(text[p]) {
                        out.push(p + 1);
                    }
                }
            }
            Re::Char(c) => {
                for &p in from {
                    if p < text.len() && text[p] == *c {
                        out.push(p + 1);
                    }
                }
            }
            Re::Seq(items) => {
                let mut cur = from.to_vec();
                for item in items {
                    if cur.is_empty() {
                        break;
                    }
                    cur = item.ends(text, &cur);
                }
                out = cur;
            }
            Re::Alt(items) => {
                for item in items {
                    out.extend(item.ends(text, from));
                }
            }
            Re::Rep(inner, min, max) => {
                // A position reached again after more repetitions can go no further than it
                // already did, so only new positions are carried on (this also ends the loop).
                let mut seen: Vec<usize> = Vec::new();
                let mut cur = from.to_vec();
                if *min == 0 {
                    out.extend(&cur);
                    seen.extend(&cur);
                }
                let mut n = 0;
                while !cur.is_empty() && n < *max {
                    cur = inner.ends(text, &cur);
                    n += 1;
                    if n >= *min {
                        cur.retain(|p| !seen.contains(p));
                        seen.extend(&cur);
                        out.extend(&cur);
                    }
                }
            }
        }
        sort_dedup(&mut out);
        out
    }
}

/// What a rule does with its match (the lexer's actions under the options pycocoevalcap uses).
#[derive(Clone, Copy)]
enum Action {
    Keep,
    Const(&'static str),
    SoftHyphens,
    Quote {
        left: bool,
    },
    Ellipsis,
    Amp,
    Nbsp,
    Phone,
    Smiley,
    Currency,
    Fraction,
    Hyphens,
    /// Return all but the last `n` characters, which are lexed again.
    PushBack(usize),
    Acronym,
    /// Return the abbreviation with its period, then lex the period again as a token of its own.
    AbbrevPeriod,
    Skip,
    Newline,
}

struct Rule {
    re: Re,
    trail: Option<Re>,
    action: Action,
}

fn rule(re: Re, action: Action) -> Rule {
    Rule {
        re,
        trail: None,
        action,
    }
}
fn rule_ctx(re: Re, trail: Re, action: Action) -> Rule {
    Rule {
        re,
        trail: Some(trail),
        action,
    }
}

impl Rule {
    /// (end of the match including trailing context, end of the token), longest first.
    fn longest(&self, text: &[char], pos: usize) -> Option<(usize, usize)> {
        let ends = self.re.ends(text, &[pos]);
        match &self.trail {
            None => ends.into_iter().rfind(|&e| e > pos).map(|e| (e, e)),
            Some(trail) => {
                let mut best: Option<(usize, usize)> = None;
                for e in ends.into_iter().filter(|&e| e > pos) {
                    if let Some(&t) = trail.ends(text, &[e]).last()
                        && best.is_none_or(|(bt, be)| t > bt || (t == bt && e > be))
                    {
                        best = Some((t, e));
                    }
                }
                best
            }
        }
    }
}

fn is_java_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

fn is_java_digit(c: char) -> bool {
    if c.is_ascii_digit() {
        return true;
    }
    const ZEROS: [u32; 34] = [
        0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xE50,
        0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
        0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xAA50, 0xABF0, 0xFF10,
    ];
    let u = c as u32;
    ZEROS.iter().any(|&z| u >= z && u < z + 10)
}

/// `[:letter:]` plus the marks and letters the 3.4.1 lexer adds to its LETTER macro.
fn is_lexer_letter(c: char) -> bool {
    is_java_letter(c)
        || matches!(c,
            '\u{00AD}' | '\u{0237}'..='\u{024F}' | '\u{02C2}'..='\u{02C5}' | '\u{02D2}'..='\u{02DF}'
            | '\u{02E5}'..='\u{02FF}' | '\u{0300}'..='\u{036F}' | '\u{0370}'..='\u{037D}'
            | '\u{0384}' | '\u{0385}' | '\u{03CF}' | '\u{03F6}' | '\u{03FC}'..='\u{03FF}'
            | '\u{0483}'..='\u{0487}' | '\u{04CF}' | '\u{04F6}'..='\u{04FF}' | '\u{0510}'..='\u{0525}'
            | '\u{055A}'..='\u{055F}' | '\u{0591}'..='\u{05BD}' | '\u{05BF}' | '\u{05C1}' | '\u{05C2}'
            | '\u{05C4}' | '\u{05C5}' | '\u{05C7}' | '\u{0615}'..='\u{061A}' | '\u{063B}'..='\u{063F}'
            | '\u{064B}'..='\u{065E}' | '\u{0670}' | '\u{06D6}'..='\u{06EF}' | '\u{06FA}'..='\u{06FF}'
            | '\u{070F}' | '\u{0711}' | '\u{0730}'..='\u{074F}' | '\u{0750}'..='\u{077F}'
            | '\u{07A6}'..='\u{07B1}' | '\u{07CA}'..='\u{07F5}' | '\u{07FA}' | '\u{0900}'..='\u{0903}'
            | '\u{093C}' | '\u{093E}'..='\u{094E}' | '\u{0951}'..='\u{0955}' | '\u{0962}'..='\u{0963}'
            | '\u{0981}'..='\u{0983}' | '\u{09BC}'..='\u{09C4}' | '\u{09C7}' | '\u{09C8}'
            | '\u{09CB}'..='\u{09CD}' | '\u{09D7}' | '\u{09E2}' | '\u{09E3}' | '\u{0A01}'..='\u{0A03}'
            | '\u{0A3C}' | '\u{0A3E}'..='\u{0A4F}' | '\u{0A81}'..='\u{0A83}' | '\u{0ABC}'..='\u{0ACF}'
            | '\u{0B82}' | '\u{0BBE}'..='\u{0BC2}' | '\u{0BC6}'..='\u{0BC8}' | '\u{0BCA}'..='\u{0BCD}'
            | '\u{0C01}'..='\u{0C03}' | '\u{0C3E}'..='\u{0C56}' | '\u{0D3E}'..='\u{0D44}'
            | '\u{0D46}'..='\u{0D48}' | '\u{0E30}'..='\u{0E3A}' | '\u{0E47}'..='\u{0E4E}'
            | '\u{0EB1}'..='\u{0EBC}' | '\u{0EC8}'..='\u{0ECD}')
}

fn ch(c: char) -> Re {
    Re::Char(c)
}

// The lexer's macros, one function each, named after them.

fn m_space() -> Re {
    cls(|c| {
        matches!(
            c,
            ' ' | '\t' | '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{3000}'
        )
    })
}
fn m_newline() -> Re {
    alt(vec![
        seq(vec![opt(ch('\r')), ch('\n')]),
        cls(|c| {
            matches!(
                c,
                '\r' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}' | '\u{85}'
            )
        }),
    ])
}
fn m_spacenl() -> Re {
    alt(vec![m_space(), m_newline()])
}
fn m_sgml() -> Re {
    let name_rest = || {
        star(cls(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-')
        }))
    };
    let alpha = || cls(|c| c.is_ascii_alphabetic());
    let spaces = || star(ch(' '));
    let declaration = seq(vec![
        cls(|c| c == '!' || c == '?'),
        cls(|c| c.is_ascii_alphabetic() || c == '-'),
        star(cls(|c| !matches!(c, '>' | '\r' | '\n'))),
    ]);
    let value = alt(vec![
        seq(vec![ch('\''), star(cls(|c| c != '\'')), ch('\'')]),
        seq(vec![ch('"'), star(cls(|c| c != '"')), ch('"')]),
    ]);
    let attribute = alt(vec![
        seq(vec![alpha(), name_rest()]),
        seq(vec![
            alpha(),
            name_rest(),
            spaces(),
            ch('='),
            spaces(),
            value,
        ]),
    ]);
    let open = seq(vec![
        alpha(),
        name_rest(),
        star(seq(vec![plus(ch(' ')), attribute])),
        spaces(),
        opt(ch('/')),
    ]);
    let close = seq(vec![ch('/'), alpha(), name_rest()]);
    seq(vec![
        ch('<'),
        alt(vec![declaration, open, close]),
        spaces(),
        ch('>'),
    ])
}
fn m_sentend() -> Re {
    seq(vec![
        m_spacenl(),
        alt(vec![m_spacenl(), cls(|c| c.is_uppercase()), m_sgml()]),
    ])
}
fn m_digit() -> Re {
    cls(is_java_digit)
}
fn m_splet() -> Re {
    seq(vec![
        ch('&'),
        cls(|c| "aeiouAEIOU".contains(c)),
        lits(&["acute", "grave", "uml"]),
        ch(';'),
    ])
}
fn m_letter() -> Re {
    alt(vec![cls(is_lexer_letter), m_splet()])
}
fn m_letter_or_digit() -> Re {
    alt(vec![
        cls(|c| is_lexer_letter(c) || is_java_digit(c)),
        m_splet(),
    ])
}
fn m_word() -> Re {
    seq(vec![
        m_letter(),
        star(m_letter_or_digit()),
        star(seq(vec![
            cls(|c| matches!(c, '.' | '!' | '?')),
            m_letter(),
            star(m_letter_or_digit()),
        ])),
    ])
}
fn m_num() -> Re {
    alt(vec![
        plus(m_digit()),
        seq(vec![
            star(m_digit()),
            plus(seq(vec![
                cls(|c| matches!(c, '.' | ':' | ',' | '\u{AD}' | '\u{66B}' | '\u{66C}')),
                plus(m_digit()),
            ])),
        ]),
    ])
}
fn m_apos() -> Re {
    alt(vec![
        cls(|c| matches!(c, '\'' | '\u{92}' | '\u{2019}')),
        lit("&apos;"),
    ])
}
fn m_aposetc() -> Re {
    alt(vec![
        m_apos(),
        cls(|c| matches!(c, '`' | '\u{91}' | '\u{2018}' | '\u{201B}')),
    ])
}
fn m_jletter() -> Re {
    cls(is_java_letter)
}
fn m_jletdig() -> Re {
    cls(|c| is_java_letter(c) || is_java_digit(c))
}
fn m_hyphen() -> Re {
    cls(|c| matches!(c, '-' | '_' | '\u{58A}' | '\u{2010}' | '\u{2011}'))
}
fn m_thing() -> Re {
    let prefix = || {
        opt(seq(vec![
            cls(|c| "dDoOlL".contains(c)),
            m_aposetc(),
            m_jletdig(),
        ]))
    };
    seq(vec![
        prefix(),
        plus(m_jletdig()),
        star(seq(vec![m_hyphen(), prefix(), plus(m_jletdig())])),
    ])
}
fn m_spamp() -> Re {
    lit("&amp;")
}
fn m_thinga() -> Re {
    let upper = || plus(cls(|c| c.is_ascii_uppercase()));
    seq(vec![
        upper(),
        plus(seq(vec![
            alt(vec![cls(|c| c == '+' || c == '&'), m_spamp()]),
            upper(),
        ])),
    ])
}
fn m_thing3() -> Re {
    let alnum = || plus(cls(|c| c.is_ascii_alphanumeric()));
    let hyphenated = || {
        rep(
            seq(vec![ch('-'), plus(cls(|c| c.is_ascii_alphabetic()))]),
            0,
            2,
        )
    };
    seq(vec![
        alnum(),
        hyphenated(),
        rep(
            seq(vec![opt(ch('\\')), ch('/'), alnum(), hyphenated()]),
            1,
            2,
        ),
    ])
}
fn m_acro(more: usize) -> Re {
    let alpha = || cls(|c| c.is_ascii_alphabetic());
    alt(vec![
        seq(vec![alpha(), rep(seq(vec![ch('.'), alpha()]), more, MANY)]),
        seq(vec![
            lits(&["Canada", "Sino", "Korean", "EU", "Japan", "non"]),
            lit("-U.S"),
        ]),
        seq(vec![lit("U.S.-"), lits(&["U.K", "U.S.S.R"])]),
    ])
}
fn m_hthing() -> Re {
    seq(vec![
        cls(|c| c.is_ascii_alphanumeric()),
        star(cls(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | '\u{AD}')
        })),
        plus(seq(vec![
            ch('-'),
            alt(vec![
                plus(cls(|c| c.is_ascii_alphanumeric() || c == '\u{AD}')),
                seq(vec![m_acro(1), ch('.')]),
            ]),
        ])),
    ])
}
fn m_redaux() -> Re {
    seq(vec![
        m_apos(),
        alt(vec![
            cls(|c| "msdMSD".contains(c)),
            lits(&["re", "ve", "ll"]),
        ]),
    ])
}
fn m_sword() -> Re {
    seq(vec![
        star(cls(|c| c.is_ascii_alphabetic() || c == '\u{AD}')),
        cls(|c| c.is_ascii_alphabetic() && c != 'n' && c != 'N'),
        star(ch('\u{AD}')),
    ])
}
fn m_sredaux() -> Re {
    seq(vec![lit("n"), m_aposetc(), lit("t")])
}
fn m_apoword() -> Re {
    alt(vec![
        seq(vec![m_apos(), lit("n"), opt(m_apos())]),
        seq(vec![cls(|c| "lLdDjJ".contains(c)), m_apos()]),
        seq(vec![lits(&["Dunkin", "somethin", "ol"]), m_apos()]),
        seq(vec![m_apos(), lit("em")]),
        seq(vec![
            cls(|c| matches!(c, 'A'..='H' | 'J'..='X' | 'Z' | 'n')),
            m_aposetc(),
            m_jletter(),
            m_jletter(),
            star(m_jletter()),
        ]),
        seq(vec![m_apos(), cls(|c| matches!(c, '2'..='9')), lit("0s")]),
        seq(vec![m_apos(), lit("til"), opt(lit("l"))]),
        seq(vec![
            m_jletter(),
            star(m_jletter()),
            cls(|c| "aeiouyAEIOUY".contains(c)),
            m_aposetc(),
            cls(|c| "aeiou".contains(c) || c.is_ascii_uppercase()),
            star(m_jletter()),
        ]),
        seq(vec![m_apos(), lit("cause")]),
        seq(vec![lit("cont'd"), opt(ch('.'))]),
        lits(&[
            "'twas",
            "nor'easter",
            "c'mon",
            "e'er",
            "s'mores",
            "ev'ry",
            "li'l",
            "nat'l",
        ]),
        seq(vec![lit("O"), m_aposetc(), lit("o")]),
    ])
}
fn not_in(c: char, set: &str) -> bool {
    !set.contains(c)
}
fn m_fullurl() -> Re {
    seq(vec![
        lit("http"),
        opt(lit("s")),
        lit("://"),
        plus(cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|(){}"))),
        cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|.!?(){},-")),
    ])
}
fn m_likelyurl() -> Re {
    let www = seq(vec![
        lit("www."),
        plus(seq(vec![
            plus(cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|.!?(){},"))),
            ch('.'),
        ])),
        rep(cls(|c| c.is_ascii_alphabetic()), 2, 4),
    ]);
    // `,-_` in the lexer's class is a range (',' to '_'), which excludes digits and capitals.
    let domain = seq(vec![
        plus(seq(vec![
            plus(cls(|c| {
                not_in(c, " \t\n\u{0C}\r\"`'<>|.!?(){}$") && !(','..='_').contains(&c)
            })),
            ch('.'),
        ])),
        lits(&["com", "net", "org", "edu"]),
    ]);
    seq(vec![
        alt(vec![www, domain]),
        opt(seq(vec![
            ch('/'),
            plus(cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|()"))),
            cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|.!?(){},-")),
        ])),
    ])
}
fn m_email() -> Re {
    let part = || plus(cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|(){}.\u{A0}")));
    seq(vec![
        opt(alt(vec![lit("&lt;"), ch('<')])),
        cls(|c| c.is_ascii_alphanumeric()),
        star(cls(|c| not_in(c, " \t\n\u{0C}\r\"<>|()\u{A0}{}"))),
        ch('@'),
        star(seq(vec![part(), ch('.')])),
        part(),
        opt(alt(vec![lit("&gt;"), ch('>')])),
    ])
}
fn m_twitter() -> Re {
    alt(vec![
        seq(vec![
            ch('@'),
            cls(|c| c.is_ascii_alphabetic() || c == '_'),
            star(cls(|c| c.is_ascii_alphanumeric() || c == '_')),
        ]),
        seq(vec![ch('#'), plus(m_letter())]),
    ])
}
fn m_abbrev1() -> Re {
    let first = ch;
    seq(vec![
        alt(vec![
            lits(&[
                "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
            ]),
            lits(&["Mon", "Tue", "Tues", "Wed", "Thu", "Thurs", "Fri"]),
            lits(&[
                "Ala", "Ariz", "Calif", "Colo", "Conn", "Ct", "Dak", "Fla", "Ga", "Ind", "Kan",
                "Kans", "Ky", "Md", "Mich", "Minn", "Mo", "Mont", "Neb", "Nev", "Okla", "Penn",
                "Tenn", "Va", "Vt", "Wis", "Wisc", "Wyo",
            ]),
            // The states written with a bracketed capital only match when capitalised.
            seq(vec![first('A'), lits(&["z", "rk"])]),
            seq(vec![first('D'), lit("el")]),
            seq(vec![first('I'), lit("ll")]),
            seq(vec![first('L'), lit("a")]),
            seq(vec![first('M'), lits(&["ass", "iss"])]),
            seq(vec![first('O'), lit("re")]),
            seq(vec![first('P'), lit("a")]),
            seq(vec![first('T'), lit("ex")]),
            seq(vec![first('W'), lit("ash")]),
            lits(&[
                "Inc", "Co", "Cos", "Corp", "Ltd", "Plc", "Rt", "Bancorp", "Bhd", "Assn", "Univ",
                "Intl", "Sys",
            ]),
            seq(vec![
                lit("P"),
                opt(lit("p")),
                lit("t"),
                cls(|c| c == 'y' || c == 'e'),
                opt(lit("s")),
            ]),
            lits(&["tel", "est", "ext", "sq"]),
            lits(&["Jr", "Sr", "Bros", "Ed.D", "Ph.D", "Blvd", "Rd", "Esq"]),
            lits(&["etc", "al", "seq", "Bldg"]),
        ]),
        ch('.'),
    ])
}
fn m_abbrev4() -> Re {
    alt(vec![
        lits(&[
            "Mr", "Mrs", "Ms", "Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps", "Atty",
            "Attys", "Lt", "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt",
            "Cpl", "Pvt", "Capt", "St", "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr",
            "Comdr", "Pfc", "Spc", "Supt", "Supts", "Det", "Mt", "Ft", "Adj", "Adv", "Asst",
            "Assoc", "Ens", "Insp", "Mlle", "Mme", "Msgr", "Sfc",
        ]),
        seq(vec![ch('M'), lit("iss")]),
        lits(&[
            "vs", "Alex", "Wm", "Jos", "Cie", "a.k.a", "cf", "TREAS", "Ph", "Invt", "Elec", "Natl",
            "Dept",
        ]),
        seq(vec![lit("M"), cls(|c| c == 'f' || c == 't'), lit("g")]),
        m_acro(0),
    ])
}
fn m_phone() -> Re {
    let d = |min, max| rep(cls(|c| c.is_ascii_digit()), min, max);
    let sep = || cls(|c| matches!(c, '-' | ' ' | '\u{A0}'));
    let plusses = || opt(seq(vec![ch('+'), opt(ch('+'))]));
    alt(vec![
        seq(vec![
            alt(vec![
                seq(vec![
                    ch('('),
                    d(2, 3),
                    ch(')'),
                    opt(cls(|c| c == ' ' || c == '\u{A0}')),
                ]),
                seq(vec![
                    plusses(),
                    opt(seq(vec![d(2, 4), sep()])),
                    d(2, 4),
                    sep(),
                ]),
            ]),
            d(3, 4),
            opt(sep()),
            d(3, 5),
        ]),
        seq(vec![
            opt(seq(vec![plusses(), d(2, 4), ch('.')])),
            d(2, 4),
            ch('.'),
            d(3, 4),
            ch('.'),
            d(3, 5),
        ]),
    ])
}
fn m_insentp() -> Re {
    cls(|c| matches!(c, ',' | ';' | ':' | '\u{3001}'))
}
fn m_dblquot() -> Re {
    alt(vec![ch('"'), lit("&quot;")])
}
fn m_tbspec() -> Re {
    let amp = || alt(vec![ch('&'), m_spamp()]);
    alt(vec![
        seq(vec![
            ch('-'),
            lits(&["RRB", "LRB", "RCB", "LCB", "RSB", "LSB"]),
            ch('-'),
        ]),
        lits(&["C.D.s", "pro-", "anti-"]),
        seq(vec![lit("S"), amp(), lit("P-500")]),
        seq(vec![lit("S"), amp(), lit("Ls")]),
        seq(vec![lit("Cap"), m_apos(), lit("n")]),
        seq(vec![lit("c"), m_apos(), lit("est")]),
    ])
}
fn m_asiansmiley() -> Re {
    let a = || cls(|c| "^x=~<>".contains(c));
    let b = || cls(|c| "-^x=~<>'".contains(c));
    alt(vec![
        seq(vec![a(), lit(".[^x=~<>]")]),
        seq(vec![b(), ch('_'), b()]),
        seq(vec![
            ch('('),
            b(),
            opt(cls(|c| c == '_' || c == '.')),
            b(),
            ch(')'),
        ]),
        seq(vec![
            ch('('),
            cls(|c| "^x=~<>'".contains(c)),
            ch('-'),
            cls(|c| "^x=~<>'`".contains(c)),
            ch(')'),
        ]),
    ])
}
fn is_miscsymbol(c: char) -> bool {
    matches!(c,
        '+' | '%' | '&' | '~' | '^' | '|' | '\\' | '\u{A6}' | '\u{A7}' | '\u{A8}' | '\u{A9}'
        | '\u{AC}' | '\u{AE}' | '\u{AF}' | '\u{B0}'..='\u{BA}' | '\u{D7}' | '\u{F7}' | '\u{387}'
        | '\u{5BE}' | '\u{5C0}' | '\u{5C3}' | '\u{5C6}' | '\u{5F3}' | '\u{5F4}'
        | '\u{600}'..='\u{603}' | '\u{606}'..='\u{60A}' | '\u{60C}' | '\u{614}' | '\u{61B}'
        | '\u{61E}' | '\u{66A}' | '\u{66D}' | '\u{703}'..='\u{70D}' | '\u{7F6}'..='\u{7F8}'
        | '\u{964}' | '\u{965}' | '\u{E4F}' | '\u{1FBD}' | '\u{2016}' | '\u{2017}'
        | '\u{2020}'..='\u{2023}' | '\u{2030}'..='\u{2038}' | '\u{203B}' | '\u{203E}'..='\u{2042}'
        | '\u{2044}' | '\u{207A}'..='\u{207F}' | '\u{208A}'..='\u{208E}' | '\u{2100}'..='\u{214F}'
        | '\u{2190}'..='\u{21FF}' | '\u{2200}'..='\u{2BFF}' | '\u{3012}' | '\u{30FB}'
        | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}'
        | '\u{FF5B}'..='\u{FF65}')
}

/// The lexer's rules in the order of the 3.4.1 specification (ties go to the earlier rule).
static PTB_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use Action::*;
    let not_ascii_letter = || cls(|c| !c.is_ascii_alphabetic());
    // Capitalised (a class) first letter, caseless rest, as the lexer writes `[T]he`.
    let followers = [
        "About",
        "According",
        "Additionally",
        "After",
        "An",
        "A",
        "As",
        "At",
        "But",
        "Earlier",
        "He",
        "Her",
        "Here",
        "However",
        "If",
        "In",
        "It",
        "Last",
        "Many",
        "More",
        "Mr.",
        "Ms.",
        "Now",
        "Once",
        "One",
        "Other",
        "Our",
        "She",
        "Since",
        "So",
        "Some",
        "Such",
        "That",
        "The",
        "Their",
        "Then",
        "There",
        "These",
        "They",
        "This",
        "We",
        "When",
        "While",
        "What",
        "Yet",
        "You",
    ];
    let mut follower_res: Vec<Re> = followers
        .iter()
        .map(|&w| {
            let first = w.chars().next().unwrap_or('A');
            seq(vec![ch(first), lit(&w[first.len_utf8()..])])
        })
        .collect();
    follower_res.push(m_sgml());
    let acronym_followers = alt(follower_res);
    vec![
        rule(seq(vec![lit("c"), ch('+'), ch('+')]), Keep),
        rule(seq(vec![lits(&["c", "f"]), ch('#')]), Keep),
        rule(lit("cannot"), PushBack(3)),
        rule(lit("'twas"), PushBack(3)),
        rule(lit("'tis"), PushBack(2)),
        rule(
            lits(&["gonna", "gotta", "lemme", "gimme", "wanna"]),
            PushBack(2),
        ),
        rule(m_sgml(), Nbsp),
        rule(
            alt(vec![
                seq(vec![ch('&'), lits(&["MD", "mdash", "ndash"]), ch(';')]),
                cls(|c| {
                    matches!(
                        c,
                        '\u{96}' | '\u{97}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
                    )
                }),
            ]),
            Const("--"),
        ),
        rule(m_spamp(), Amp),
        rule(
            seq(vec![
                ch('&'),
                alt(vec![
                    lits(&["HT", "TL", "UR", "LR", "QC", "QL", "QR", "odq", "cdq"]),
                    seq(vec![ch('#'), plus(cls(|c| c.is_ascii_digit()))]),
                ]),
                ch(';'),
            ]),
            Keep,
        ),
        rule_ctx(m_word(), m_redaux(), SoftHyphens),
        rule_ctx(m_sword(), m_sredaux(), SoftHyphens),
        rule(m_word(), SoftHyphens),
        rule(m_apoword(), Keep),
        rule_ctx(seq(vec![lit("y"), m_apos()]), m_jletter(), Keep),
        rule(m_fullurl(), Keep),
        rule(m_likelyurl(), Keep),
        rule(m_email(), Keep),
        rule(m_twitter(), Keep),
        rule_ctx(m_redaux(), not_ascii_letter(), Quote { left: false }),
        rule_ctx(m_sredaux(), not_ascii_letter(), Quote { left: false }),
        rule(
            seq(vec![
                rep(m_digit(), 1, 2),
                cls(|c| c == '-' || c == '/'),
                rep(m_digit(), 1, 2),
                cls(|c| c == '-' || c == '/'),
                rep(m_digit(), 2, 4),
            ]),
            Keep,
        ),
        rule(
            seq(vec![opt(cls(|c| c == '-' || c == '+')), m_num()]),
            SoftHyphens,
        ),
        rule(
            seq(vec![
                opt(cls(|c| {
                    matches!(c, '\u{207A}' | '\u{207B}' | '\u{208A}' | '\u{208B}')
                })),
                alt(vec![
                    plus(cls(|c| {
                        matches!(
                            c,
                            '\u{2070}' | '\u{B9}' | '\u{B2}' | '\u{B3}' | '\u{2074}'..='\u{2079}'
                        )
                    })),
                    plus(cls(|c| matches!(c, '\u{2080}'..='\u{2089}'))),
                ]),
            ]),
            Keep,
        ),
        rule(
            seq(vec![
                opt(seq(vec![
                    rep(m_digit(), 1, 4),
                    cls(|c| matches!(c, '-' | ' ' | '\u{A0}')),
                ])),
                rep(m_digit(), 1, 4),
                alt(vec![seq(vec![opt(ch('\\')), ch('/')]), ch('\u{2044}')]),
                rep(m_digit(), 1, 4),
            ]),
            Nbsp,
        ),
        rule(
            cls(|c| matches!(c, '\u{BC}' | '\u{BD}' | '\u{BE}' | '\u{2153}'..='\u{215E}')),
            Fraction,
        ),
        rule(m_tbspec(), Amp),
        rule(m_thing3(), Keep),
        rule(
            alt(vec![
                seq(vec![star(cls(|c| c.is_ascii_uppercase())), ch('$')]),
                ch('#'),
            ]),
            Keep,
        ),
        rule(
            cls(|c| {
                matches!(
                    c,
                    '\u{A2}'
                        | '\u{A3}'
                        | '\u{A4}'
                        | '\u{A5}'
                        | '\u{80}'
                        | '\u{20A0}'
                        | '\u{20AC}'
                        | '\u{60B}'
                        | '\u{E3F}'
                        | '\u{20A4}'
                        | '\u{FFE0}'
                        | '\u{FFE1}'
                        | '\u{FFE5}'
                        | '\u{FFE6}'
                )
            }),
            Currency,
        ),
        rule_ctx(
            seq(vec![m_acro(0), ch('.')]),
            seq(vec![plus(m_spacenl()), acronym_followers, m_spacenl()]),
            Acronym,
        ),
        rule_ctx(
            seq(vec![
                lits(&[
                    "ca", "fig", "figs", "prop", "no", "nos", "art", "bldg", "pp", "op",
                ]),
                ch('.'),
            ]),
            seq(vec![opt(m_spacenl()), cls(is_java_digit)]),
            Keep,
        ),
        rule_ctx(
            seq(vec![
                alt(vec![
                    seq(vec![lit("pt"), cls(|c| "eyEY".contains(c))]),
                    lit("co"),
                ]),
                ch('.'),
            ]),
            seq(vec![m_space(), lits(&["ltd", "lim"])]),
            Keep,
        ),
        rule_ctx(m_abbrev1(), m_sentend(), AbbrevPeriod),
        rule_ctx(m_abbrev1(), rep(cls(|_| true), 2, 2), Keep),
        rule(m_abbrev1(), AbbrevPeriod),
        rule(seq(vec![m_abbrev4(), ch('.')]), Keep),
        rule_ctx(m_abbrev4(), m_space(), Keep),
        rule_ctx(m_acro(0), m_spacenl(), Keep),
        rule_ctx(
            seq(vec![
                m_apos(),
                cls(|c| c.is_ascii_digit()),
                cls(|c| c.is_ascii_digit()),
            ]),
            m_spacenl(),
            Keep,
        ),
        rule_ctx(
            seq(vec![
                plus(m_letter_or_digit()),
                star(seq(vec![ch('.'), plus(m_letter_or_digit())])),
                ch('.'),
                lits(&[
                    "bat", "bmp", "c", "class", "cgi", "cpp", "dll", "doc", "docx", "exe", "gif",
                    "gz", "h", "htm", "html", "jar", "java", "jpeg", "jpg", "mov", "mp3", "pdf",
                    "php", "pl", "png", "ppt", "ps", "py", "sql", "tar", "txt", "wav", "x", "xml",
                    "zip",
                ]),
            ]),
            alt(vec![
                m_spacenl(),
                cls(|c| matches!(c, '.' | '?' | '!' | ',')),
            ]),
            Keep,
        ),
        rule_ctx(seq(vec![m_word(), ch('.')]), m_insentp(), SoftHyphens),
        rule(m_phone(), Phone),
        rule_ctx(
            m_dblquot(),
            cls(|c| c.is_ascii_alphanumeric() || c == '$'),
            Quote { left: true },
        ),
        rule(m_dblquot(), Quote { left: false }),
        rule(ch('\u{7F}'), Skip),
        rule(alt(vec![ch('<'), lit("&lt;")]), Const("<")),
        rule(alt(vec![ch('>'), lit("&gt;")]), Const(">")),
        rule_ctx(
            seq(vec![
                opt(cls(|c| c == '<' || c == '>')),
                cls(|c| matches!(c, ':' | ';' | '=')),
                opt(cls(|c| matches!(c, '-' | 'o' | '*' | '\''))),
                cls(|c| "()DPdpO\\{@|[]".contains(c)),
            ]),
            cls(|c| !c.is_ascii_alphanumeric()),
            Smiley,
        ),
        rule(m_asiansmiley(), Smiley),
        rule(ch('{'), Const("-LCB-")),
        rule(ch('}'), Const("-RCB-")),
        rule(ch('['), Const("-LSB-")),
        rule(ch(']'), Const("-RSB-")),
        rule(ch('('), Const("-LRB-")),
        rule(ch(')'), Const("-RRB-")),
        rule(plus(ch('-')), Hyphens),
        rule(
            alt(vec![
                rep(ch('.'), 3, 5),
                seq(vec![
                    rep(seq(vec![ch('.'), cls(|c| c == ' ' || c == '\u{A0}')]), 2, 4),
                    ch('.'),
                ]),
                cls(|c| c == '\u{85}' || c == '\u{2026}'),
            ]),
            Ellipsis,
        ),
        rule(alt(vec![plus(ch('@')), plus(ch('#')), plus(ch('_'))]), Keep),
        rule(alt(vec![plus(ch('*')), rep(lit("\\*"), 1, 3)]), Keep),
        rule(m_insentp(), Keep),
        rule(plus(cls(|c| c == '?' || c == '!')), Keep),
        rule(
            cls(|c| {
                matches!(
                    c,
                    '.' | '\u{A1}'
                        | '\u{BF}'
                        | '\u{37E}'
                        | '\u{589}'
                        | '\u{61F}'
                        | '\u{6D4}'
                        | '\u{700}'..='\u{702}' | '\u{7FA}' | '\u{3002}'
                )
            }),
            Keep,
        ),
        rule(ch('='), Keep),
        rule(ch('/'), Keep),
        rule_ctx(seq(vec![m_hthing(), ch('.')]), m_insentp(), SoftHyphens),
        rule(m_hthing(), SoftHyphens),
        rule_ctx(seq(vec![m_thing(), ch('.')]), m_insentp(), Keep),
        rule(m_thing(), Keep),
        rule_ctx(seq(vec![m_thinga(), ch('.')]), m_insentp(), Amp),
        rule(m_thinga(), Amp),
        rule_ctx(
            ch('\''),
            seq(vec![
                cls(|c| c.is_ascii_alphabetic()),
                cls(|c| !matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{A0}')),
            ]),
            Quote { left: true },
        ),
        rule(m_redaux(), Quote { left: false }),
        rule(m_sredaux(), Quote { left: false }),
        rule(
            alt(vec![
                m_apos(),
                lit("''"),
                rep(
                    cls(|c| {
                        matches!(
                            c,
                            '`' | '\u{2018}'
                                | '\u{2019}'
                                | '\u{201A}'
                                | '\u{201B}'
                                | '\u{201C}'
                                | '\u{201D}'
                                | '\u{91}'
                                | '\u{92}'
                                | '\u{93}'
                                | '\u{94}'
                                | '\u{201E}'
                                | '\u{201F}'
                                | '\u{2039}'
                                | '\u{203A}'
                                | '\u{AB}'
                                | '\u{BB}'
                        )
                    }),
                    1,
                    2,
                ),
            ]),
            Quote { left: false },
        ),
        rule(lits(&["<<", ">>"]), Keep),
        rule(cls(is_miscsymbol), Keep),
        rule(
            alt(vec![
                ch('\0'),
                plus(m_space()),
                cls(|c| matches!(c, '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}')),
            ]),
            Skip,
        ),
        rule(m_newline(), Newline),
        rule(lit("&nbsp;"), Skip),
        // Anything else is untokenisable: the lexer deletes it (its default, "firstDelete").
        rule(cls(|c| c != '\n'), Skip),
    ]
});

fn latex_quotes(tok: &str, left: bool) -> String {
    let (single, double) = if left { ("`", "``") } else { ("'", "''") };
    let s = tok.replace("&apos;", single).replace('\'', single);
    let s = s.replace("&quot;", double).replace('"', double);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            _ => out.push(c),
        }
    }
    out
}

fn replace_amp_entity(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if lower[i..].starts_with("&amp;") {
            out.push('&');
            i += 5;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn normalize_parens(s: &str) -> String {
    s.replace('(', "-LRB-").replace(')', "-RRB-")
}

enum Lexeme {
    Token(String),
    Newline,
}

/// Runs the lexer over `text`, returning its tokens (before lower-casing) and line breaks.
fn ptb_lex(text: &[char]) -> Vec<Lexeme> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, r) in PTB_RULES.iter().enumerate() {
            if let Some((total, end)) = r.longest(text, pos)
                && best.is_none_or(|(bt, _, _)| total > bt)
            {
                best = Some((total, end, i));
            }
        }
        let Some((_, end, i)) = best else {
            // Only '\n' escapes the catch-all rule, and the newline rule takes it; never reached.
            pos += 1;
            continue;
        };
        let action = PTB_RULES[i].action;
        let matched: String = text[pos..end].iter().collect();
        let mut next = end;
        let token = match action {
            Action::Keep => Some(matched),
            Action::Const(s) => Some(s.to_string()),
            Action::SoftHyphens => {
                let t: String = matched.chars().filter(|&c| c != '\u{AD}').collect();
                Some(if t.is_empty() { "-".to_string() } else { t })
            }
            Action::Quote { left } => Some(latex_quotes(&matched, left)),
            Action::Ellipsis => Some("...".to_string()),
            Action::Amp => Some(replace_amp_entity(&matched)),
            Action::Nbsp => Some(matched.replace(' ', "\u{A0}")),
            Action::Phone => Some(normalize_parens(&matched.replace(' ', "\u{A0}"))),
            Action::Smiley => Some(normalize_parens(&matched)),
            Action::Currency => Some(
                matched
                    .replace('\u{A2}', "cents")
                    .replace('\u{A3}', "#")
                    .replace(['\u{80}', '\u{A4}', '\u{20A0}', '\u{20AC}'], "$"),
            ),
            Action::Fraction => Some(
                matched
                    .replace('\u{BC}', "1/4")
                    .replace('\u{BD}', "1/2")
                    .replace('\u{BE}', "3/4")
                    .replace('\u{2153}', "1/3")
                    .replace('\u{2154}', "2/3"),
            ),
            Action::Hyphens => {
                let n = end - pos;
                Some(if (3..=4).contains(&n) {
                    "--".to_string()
                } else {
                    matched
                })
            }
            Action::PushBack(n) => {
                next = end.saturating_sub(n).max(pos + 1);
                Some(text[pos..next].iter().collect())
            }
            Action::Acronym => {
                let mut e = end;
                while e > pos && matches!(text[e - 1], ' ' | '\t' | '\n'..='\r' | '\u{85}') {
                    e -= 1;
                }
                if e - pos == 2 {
                    next = pos + 1;
                } else {
                    next = e.saturating_sub(1).max(pos + 1);
                }
                Some(if e - pos == 2 {
                    text[pos..pos + 1].iter().collect()
                } else {
                    text[pos..e].iter().collect()
                })
            }
            Action::AbbrevPeriod => {
                next = end.saturating_sub(1).max(pos + 1);
                Some(matched)
            }
            Action::Skip => None,
            Action::Newline => {
                out.push(Lexeme::Newline);
                None
            }
        };
        if let Some(t) = token {
            out.push(Lexeme::Token(t));
        }
        pos = next.max(pos + 1);
    }
    out
}

/// Python's `str.isspace()`, which `str.split()` and `str.rstrip()` use.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}')
}

/// Python's `str.split()` with no argument.
fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|w| !w.is_empty()).collect()
}

/// Tokenises captions exactly as pycocoevalcap's `PTBTokenizer.tokenize` does for one call:
/// each caption's newlines become spaces, the captions are joined by newlines into one text for
/// Stanford's lexer (so a rule's look-ahead may reach into the next caption, as there), every
/// token is lower-cased, and the punctuation tokens are dropped. One string per caption, tokens
/// separated by single spaces.
pub fn ptb_tokenize_batch<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let mut text: Vec<char> = Vec::new();
    for (i, caption) in captions.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.extend(caption.as_ref().chars().map(|c| match c {
            '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}' => ' ',
            c => c,
        }));
    }
    // Written out as the Java program writes it: tokens joined by spaces, a newline per line.
    let mut written = String::new();
    let mut begin_line = true;
    for lexeme in ptb_lex(&text) {
        match lexeme {
            Lexeme::Newline => {
                written.push('\n');
                begin_line = true;
            }
            Lexeme::Token(t) => {
                if !begin_line {
                    written.push(' ');
                }
                begin_line = false;
                written.push_str(&t.to_lowercase());
            }
        }
    }
    let mut lines: Vec<String> = written
        .split('\n')
        .take(captions.len())
        .map(|line| {
            line.trim_end_matches(is_py_space)
                .split(' ')
                .filter(|w| !PTB_PUNCTUATION.contains(w))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.resize(captions.len(), String::new());
    lines
}

/// Tokenises one caption as pycocoevalcap does (see [`ptb_tokenize_batch`]), as if it were the
/// only caption of its call.
pub fn ptb_tokenize(raw: &str) -> String {
    ptb_tokenize_batch(&[raw]).pop().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Splitting tokenised text
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// BLEU
// ---------------------------------------------------------------------------------------------

/// BLEU-1..4 of a corpus and of each image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScores {
    pub corpus: [f64; 4],
    pub per_image: Vec<[f64; 4]>,
}

/// Scores and per-image scores of one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
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

// ---------------------------------------------------------------------------------------------
// ROUGE-L
// ---------------------------------------------------------------------------------------------

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

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

// ---------------------------------------------------------------------------------------------
// CIDEr-D
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Snowball English (Porter2) stemmer, the version METEOR 1.5 ships
// ---------------------------------------------------------------------------------------------

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

/// A "short syllable" ends at `end` (exclusive): non-vowel, vowel, non-vowel other than w, x, Y;
/// or vowel, non-vowel at the very start of the word.
fn short_syllable_ends_at(w: &[char], end: usize) -> bool {
    if end >= 3
        && !matches!(
            w[end - 1],
            'a' | 'e' | 'i' | 'o' | 'u' | 'y' | 'w' | 'x' | 'Y'
        )
        && is_vowel(w[end - 2])
        && !is_vowel(w[end - 3])
    {
        return true;
    }
    end == 2 && !is_vowel(w[1]) && is_vowel(w[0])
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    w.len() >= n && w[w.len() - n..].iter().copied().eq(suffix.chars())
}

/// The longest of `suffixes` that `w` ends with (Snowball's `among`), with its index.
fn longest_suffix(w: &[char], suffixes: &[&str]) -> Option<(usize, usize)> {
    suffixes
        .iter()
        .enumerate()
        .filter(|(_, s)| ends_with(w, s))
        .max_by_key(|(_, s)| s.chars().count())
        .map(|(i, s)| (i, w.len() - s.chars().count()))
}

fn replace_tail(w: &mut Vec<char>, start: usize, with: &str) {
    w.truncate(start);
    w.extend(with.chars());
}

/// Stems an English word with the Snowball English ("Porter2") algorithm as in the 2006-era
/// `englishStemmer` that METEOR 1.5 uses. Expects lower-case input.
pub fn snowball_english_stem(word: &str) -> String {
    const EXCEPTIONS: [(&str, &str); 18] = [
        ("skis", "ski"),
        ("skies", "sky"),
        ("dying", "die"),
        ("lying", "lie"),
        ("tying", "tie"),
        ("idly", "idl"),
        ("gently", "gentl"),
        ("ugly", "ugli"),
        ("early", "earli"),
        ("only", "onli"),
        ("singly", "singl"),
        ("sky", "sky"),
        ("news", "news"),
        ("howe", "howe"),
        ("atlas", "atlas"),
        ("cosmos", "cosmos"),
        ("bias", "bias"),
        ("andes", "andes"),
    ];
    if let Some((_, stem)) = EXCEPTIONS.iter().find(|(w, _)| *w == word) {
        return (*stem).to_string();
    }
    let mut w: Vec<char> = word.chars().collect();
    if w.len() < 3 {
        return word.to_string();
    }

    // Prelude: a leading apostrophe goes; consonant-like y's become Y.
    if w[0] == '\'' {
        w.remove(0);
    }
    let mut y_found = false;
    for i in 0..w.len() {
        if w[i] == 'y' && (i == 0 || is_vowel(w[i - 1])) {
            w[i] = 'Y';
            y_found = true;
        }
    }

    // Regions: R1 after the first non-vowel following a vowel (or after gener/commun/arsen),
    // R2 the same inside R1.
    let after_vc = |w: &[char], from: usize| -> usize {
        let mut i = from;
        while i < w.len() && !is_vowel(w[i]) {
            i += 1;
        }
        while i < w.len() && is_vowel(w[i]) {
            i += 1;
        }
        if i < w.len() { i + 1 } else { w.len() }
    };
    let p1 = ["gener", "commun", "arsen"]
        .iter()
        .find(|p| w.iter().copied().take(p.len()).eq(p.chars()))
        .map(|p| p.len())
        .unwrap_or_else(|| after_vc(&w, 0));
    let p2 = after_vc(&w, p1.min(w.len()));

    // Step 1a.
    if let Some((_, start)) = longest_suffix(&w, &["'", "'s'", "'s"]) {
        w.truncate(start);
    }
    if let Some((i, start)) = longest_suffix(&w, &["sses", "ied", "ies", "s", "ss", "us"]) {
        match i {
            0 => replace_tail(&mut w, start, "ss"),
            1 | 2 => replace_tail(&mut w, start, if start >= 2 { "i" } else { "ie" }),
            3 if start >= 2 && w[..start - 1].iter().any(|&c| is_vowel(c)) => w.truncate(start),
            _ => {}
        }
    }

    let invariant = [
        "inning", "outing", "canning", "herring", "earring", "proceed", "exceed", "succeed",
    ];
    if !invariant.iter().any(|x| w.iter().copied().eq(x.chars())) {
        step_1b(&mut w, p1);
        // Step 1c.
        let n = w.len();
        if n >= 3 && matches!(w[n - 1], 'y' | 'Y') && !is_vowel(w[n - 2]) {
            w[n - 1] = 'i';
        }
        step_2(&mut w, p1);
        step_3(&mut w, p1, p2);
        step_4(&mut w, p2);
        step_5(&mut w, p1, p2);
    }

    w.into_iter()
        .map(|c| if y_found && c == 'Y' { 'y' } else { c })
        .collect()
}

fn step_1b(w: &mut Vec<char>, p1: usize) {
    let Some((i, start)) = longest_suffix(w, &["eed", "eedly", "ed", "edly", "ing", "ingly"])
    else {
        return;
    };
    if i < 2 {
        if start >= p1 {
            replace_tail(w, start, "ee");
        }
        return;
    }
    if !w[..start].iter().any(|&c| is_vowel(c)) {
        return;
    }
    w.truncate(start);
    let doubles = ["bb", "dd", "ff", "gg", "mm", "nn", "pp", "rr", "tt"];
    if ["at", "bl", "iz"].iter().any(|s| ends_with(w, s)) {
        w.push('e');
    } else if doubles.iter().any(|s| ends_with(w, s)) {
        w.pop();
    } else if w.len() == p1 && short_syllable_ends_at(w, w.len()) {
        w.push('e');
    }
}

fn step_2(w: &mut Vec<char>, p1: usize) {
    const SUFFIXES: [(&str, &str); 24] = [
        ("anci", "ance"),
        ("enci", "ence"),
        ("ogi", "og"),
        ("li", ""),
        ("bli", "ble"),
        ("abli", "able"),
        ("alli", "al"),
        ("fulli", "ful"),
        ("lessli", "less"),
        ("ousli", "ous"),
        ("entli", "ent"),
        ("aliti", "al"),
        ("biliti", "ble"),
        ("iviti", "ive"),
        ("tional", "tion"),
        ("ational", "ate"),
        ("alism", "al"),
        ("ation", "ate"),
        ("ization", "ize"),
        ("izer", "ize"),
        ("ator", "ate"),
        ("iveness", "ive"),
        ("fulness", "ful"),
        ("ousness", "ous"),
    ];
    let names: Vec<&str> = SUFFIXES.iter().map(|(s, _)| *s).collect();
    let Some((i, start)) = longest_suffix(w, &names) else {
        return;
    };
    if start < p1 {
        return;
    }
    match SUFFIXES[i].0 {
        "ogi" => {
            if start >= 1 && w[start - 1] == 'l' {
                replace_tail(w, start, "og");
            }
        }
        "li" => {
            if start >= 1 && "cdeghkmnrt".contains(w[start - 1]) {
                w.truncate(start);
            }
        }
        _ => replace_tail(w, start, SUFFIXES[i].1),
    }
}

fn step_3(w: &mut Vec<char>, p1: usize, p2: usize) {
    const SUFFIXES: [(&str, &str); 9] = [
        ("icate", "ic"),
        ("ative", ""),
        ("alize", "al"),
        ("iciti", "ic"),
        ("ical", "ic"),
        ("tional", "tion"),
        ("ational", "ate"),
        ("ful", ""),
        ("ness", ""),
    ];
    let names: Vec<&str> = SUFFIXES.iter().map(|(s, _)| *s).collect();
    let Some((i, start)) = longest_suffix(w, &names) else {
        return;
    };
    if start < p1 || (SUFFIXES[i].0 == "ative" && start < p2) {
        return;
    }
    replace_tail(w, start, SUFFIXES[i].1);
}

fn step_4(w: &mut Vec<char>, p2: usize) {
    const SUFFIXES: [&str; 18] = [
        "ic", "ance", "ence", "able", "ible", "ate", "ive", "ize", "iti", "al", "ism", "ion", "er",
        "ous", "ant", "ent", "ment", "ement",
    ];
    let Some((i, start)) = longest_suffix(w, &SUFFIXES) else {
        return;
    };
    if start < p2 {
        return;
    }
    if SUFFIXES[i] == "ion" && !(start >= 1 && matches!(w[start - 1], 's' | 't')) {
        return;
    }
    w.truncate(start);
}

fn step_5(w: &mut Vec<char>, p1: usize, p2: usize) {
    let n = w.len();
    if n == 0 {
        return;
    }
    let start = n - 1;
    let delete = match w[start] {
        'e' => start >= p2 || (start >= p1 && !short_syllable_ends_at(w, start)),
        'l' => start >= p2 && start >= 1 && w[start - 1] == 'l',
        _ => false,
    };
    if delete {
        w.truncate(start);
    }
}

// ---------------------------------------------------------------------------------------------
// METEOR (exact and stem stages of METEOR 1.5)
// ---------------------------------------------------------------------------------------------

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

/// Checks that predictions and references name the same images, each with references.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ptb_splits_contractions_and_drops_punctuation() {
        assert_eq!(
            ptb_tokenize("Don't over-sharpen it."),
            "do n't over-sharpen it"
        );
        assert_eq!(
            ptb_tokenize("The photographer's use of colour (too grey)..."),
            "the photographer 's use of colour -lrb- too grey -rrb-"
        );
        assert_eq!(
            ptb_tokenize("\"Great shot!\" -- he said"),
            "great shot he said"
        );
        assert_eq!(
            ptb_tokenize("I can't, it's 1/250s at f/2.8"),
            "i ca n't it 's 1/250s at f/2 .8"
        );
        assert_eq!(ptb_tokenize("“Curly” quotes — and …"), "curly quotes and");
        assert_eq!(ptb_tokenize("Cannot wanna"), "can not wan na");
        assert_eq!(ptb_tokenize("$100, 50% off!!!"), "$ 100 50 % off !!!");
    }

    #[test]
    fn ptb_lookahead_reaches_the_next_caption_in_a_batch() {
        // "etc." before a capitalised word gets a second period (then dropped); a smiley needs a
        // character after it, which the last line of the file lacks.
        assert_eq!(
            ptb_tokenize_batch(&["Trees, rocks etc.", "The end :)", "x"]),
            vec!["trees rocks etc.", "the end :-rrb-", "x"]
        );
        // At the end of the file it is `:` and `-rrb-`, and the `:` is dropped.
        assert_eq!(ptb_tokenize("The end :)"), "the end -rrb-");
        assert_eq!(ptb_tokenize_batch::<&str>(&[]), Vec::<String>::new());
        assert_eq!(ptb_tokenize(""), "");
    }

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

    #[test]
    fn snowball_stems() {
        for (w, s) in [
            ("colours", "colour"),
            ("focusing", "focus"),
            ("hoping", "hope"),
            ("skies", "sky"),
            ("generously", "generous"),
            ("sharpened", "sharpen"),
            ("oversaturated", "oversatur"),
            ("blurry", "blurri"),
            ("by", "by"),
        ] {
            assert_eq!(snowball_english_stem(w), s, "{w}");
        }
    }

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
