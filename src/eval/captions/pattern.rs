//! Regular expressions over characters with the matching semantics of JFlex (Klein, Rowe and
//! Décamps, "JFlex User's Manual"), the scanner generator Stanford's `PTBLexer` is written for:
//! a rule takes its longest match, trailing context included, and `%caseless` literals ignore case
//! where character classes do not. [`super::ptb_rules`] writes the lexer's rules with them.

/// A regular expression over characters. Matching returns every end position, so that a rule can
/// take its longest match and a sequence can continue from each of them (JFlex semantics).
#[derive(Clone)]
pub(super) enum Re {
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

pub(super) const MANY: usize = usize::MAX;

pub(super) fn lit(s: &'static str) -> Re {
    Re::Lit(s)
}
pub(super) fn cls(f: fn(char) -> bool) -> Re {
    Re::Class(f)
}
pub(super) fn seq(items: Vec<Re>) -> Re {
    Re::Seq(items)
}
pub(super) fn alt(items: Vec<Re>) -> Re {
    Re::Alt(items)
}
pub(super) fn rep(r: Re, min: usize, max: usize) -> Re {
    Re::Rep(Box::new(r), min, max)
}
pub(super) fn opt(r: Re) -> Re {
    rep(r, 0, 1)
}
pub(super) fn star(r: Re) -> Re {
    rep(r, 0, MANY)
}
pub(super) fn plus(r: Re) -> Re {
    rep(r, 1, MANY)
}
pub(super) fn lits(words: &[&'static str]) -> Re {
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

pub(super) fn ch(c: char) -> Re {
    Re::Char(c)
}

impl Re {
    pub(super) fn ends(&self, text: &[char], from: &[usize]) -> Vec<usize> {
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
