//! The Snowball English ("Porter2") stemmer (Porter, "Snowball: a language for stemming
//! algorithms", 2001), in the version METEOR 1.5 ships, since its stem stage matches two words when
//! the jar's stemmer gives them one stem.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
