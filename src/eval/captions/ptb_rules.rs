//! The rules of Stanford CoreNLP 3.4.1's `PTBLexer.flex` (Manning et al., "The Stanford CoreNLP
//! natural language processing toolkit", ACL 2014), under the options pycocoevalcap runs it with,
//! written as [`super::pattern`] expressions: its macros one function each, then its rules in the
//! specification's order, which JFlex breaks ties by.

use std::sync::LazyLock;

use super::pattern::{MANY, Re, alt, ch, cls, lit, lits, opt, plus, rep, seq, star};

/// What a rule does with its match (the lexer's actions under the options pycocoevalcap uses).
#[derive(Clone, Copy)]
pub(super) enum Action {
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

pub(super) struct Rule {
    re: Re,
    trail: Option<Re>,
    pub(super) action: Action,
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
    pub(super) fn longest(&self, text: &[char], pos: usize) -> Option<(usize, usize)> {
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
pub(super) static PTB_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
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
