//! PTB tokenisation as the coco-caption toolkit runs it (Chen et al., "Microsoft COCO Captions:
//! data collection and evaluation server", 2015): pycocoevalcap's `PTBTokenizer`, which runs
//! Stanford CoreNLP 3.4.1's `PTBLexer` ([`super::ptb_rules`]) over all captions of a call at once
//! and drops its punctuation tokens. What is reproduced and where it may still differ: the
//! module notes, "Tokenisation".

use super::is_py_space;
use super::ptb_rules::{Action, PTB_RULES};

/// The tokens pycocoevalcap deletes after tokenising.
const PTB_PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
