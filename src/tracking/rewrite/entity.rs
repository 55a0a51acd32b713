//! Character references in attribute values: decoding an `href` the way a
//! browser does (HTML tokenizer, "character reference in attribute value"),
//! and escaping a new value.
//!
//! The full table of named references has 2,231 entries; a URL uses a
//! handful. This module knows every *legacy* name (the 106 that browsers
//! decode even without a `;`), which is enough to decode any reference not
//! ended by `;` exactly as a browser does, and a set of the common names
//! ended by `;`. For `&name;` with a name it does not know, it cannot tell
//! whether a browser would decode it, so [`decode_attribute`] returns `None`
//! and the caller leaves that link alone rather than guess.

use std::borrow::Cow;

/// The 96 names of U+00A0 to U+00FF, in code point order: all of them are
/// legacy names, decoded with or without `;`.
const LATIN1: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

/// The other legacy names, decoded with or without `;`.
const LEGACY_OTHER: [(&str, char); 10] = [
    ("amp", '&'),
    ("AMP", '&'),
    ("lt", '<'),
    ("LT", '<'),
    ("gt", '>'),
    ("GT", '>'),
    ("quot", '"'),
    ("QUOT", '"'),
    ("COPY", '©'),
    ("REG", '®'),
];

/// Names known here that are decoded only when ended by `;`.
const WITH_SEMICOLON: [(&str, char); 44] = [
    ("apos", '\''),
    ("sol", '/'),
    ("bsol", '\\'),
    ("quest", '?'),
    ("equals", '='),
    ("num", '#'),
    ("percnt", '%'),
    ("colon", ':'),
    ("semi", ';'),
    ("comma", ','),
    ("period", '.'),
    ("lpar", '('),
    ("rpar", ')'),
    ("plus", '+'),
    ("excl", '!'),
    ("dollar", '$'),
    ("commat", '@'),
    ("lowbar", '_'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lbrack", '['),
    ("rbrack", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
    ("lbrace", '{'),
    ("rbrace", '}'),
    ("verbar", '|'),
    ("vert", '|'),
    ("ast", '*'),
    ("midast", '*'),
    ("grave", '`'),
    ("Hat", '^'),
    ("Tab", '\t'),
    ("NewLine", '\n'),
    ("ndash", '\u{2013}'),
    ("mdash", '\u{2014}'),
    ("lsquo", '\u{2018}'),
    ("rsquo", '\u{2019}'),
    ("ldquo", '\u{201C}'),
    ("rdquo", '\u{201D}'),
    ("bull", '\u{2022}'),
    ("hellip", '\u{2026}'),
    ("euro", '\u{20AC}'),
    ("trade", '\u{2122}'),
];

/// The character of a legacy name (decoded with or without `;`).
fn legacy(name: &str) -> Option<char> {
    if let Some(i) = LATIN1.iter().position(|n| *n == name) {
        return char::from_u32(0xA0 + i as u32);
    }
    LEGACY_OTHER
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
}

/// The character of `&name;`, if this module knows the name.
fn with_semicolon(name: &str) -> Option<char> {
    legacy(name).or_else(|| {
        WITH_SEMICOLON
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    })
}

/// Decodes the character references of a raw attribute value, as a browser
/// does. `None` when the value holds `&name;` with a name this module does
/// not know (see the module doc).
pub(super) fn decode_attribute(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('&') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let (decoded, consumed) = if let Some(num) = after.strip_prefix('#') {
            match numeric(num) {
                Some((c, used)) => (Some(c), 1 + used),
                None => (None, 0),
            }
        } else {
            named(after)?
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push('&'),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// A named reference after its `&`: the character and the bytes consumed,
/// `(None, 0)` when the `&` is literal, `None` when unknown.
fn named(after: &str) -> Option<(Option<char>, usize)> {
    let len = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
    if len == 0 {
        return Some((None, 0));
    }
    let name = &after[..len];
    match after.as_bytes().get(len) {
        Some(b';') => with_semicolon(name).map(|c| (Some(c), len + 1)),
        // Without `;`, only a legacy name matching the whole run decodes (a
        // shorter match is followed by an alphanumeric), and not before `=`.
        Some(b'=') => Some((None, 0)),
        _ => match legacy(name) {
            Some(c) => Some((Some(c), len)),
            None => Some((None, 0)),
        },
    }
}

/// A numeric reference after its `&#`: the character and the bytes consumed,
/// `None` when there are no digits (the `&` is then literal).
fn numeric(after_hash: &str) -> Option<(char, usize)> {
    let (digits_at, radix) = match after_hash.as_bytes().first() {
        Some(b'x' | b'X') => (1, 16),
        _ => (0, 10),
    };
    let digits = &after_hash[digits_at..];
    let len = digits
        .bytes()
        .take_while(|b| (*b as char).is_digit(radix))
        .count();
    if len == 0 {
        return None;
    }
    let value = digits[..len].bytes().fold(0u32, |acc, b| {
        let d = (b as char).to_digit(radix).expect("checked digit");
        acc.saturating_mul(radix).saturating_add(d).min(0x11_0000)
    });
    let semicolon = usize::from(digits.as_bytes().get(len) == Some(&b';'));
    Some((numeric_char(value), digits_at + len + semicolon))
}

/// The character of a numeric reference, with the replacements of the HTML
/// standard (NUL, surrogates, out of range, and the C1 range read as
/// windows-1252).
fn numeric_char(value: u32) -> char {
    const C1: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    let value = match value {
        0x80..=0x9F => C1[(value - 0x80) as usize],
        v => v,
    };
    match value {
        0 => char::REPLACEMENT_CHARACTER,
        v => char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER),
    }
}

/// Escapes a value for a double-quoted attribute.
pub(super) fn escape_attribute(value: &str) -> Cow<'_, str> {
    if !value.contains(['&', '"']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.replace('&', "&amp;").replace('"', "&quot;"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(raw: &str) -> Option<String> {
        decode_attribute(raw).map(Cow::into_owned)
    }

    #[test]
    fn query_strings_stay_as_written() {
        assert_eq!(dec("?a=1&b=2").unwrap(), "?a=1&b=2");
        assert_eq!(dec("?a=1&copy=2&reg=3").unwrap(), "?a=1&copy=2&reg=3");
        assert_eq!(dec("?a=1&amp=2").unwrap(), "?a=1&amp=2");
        assert_eq!(dec("?a&notx").unwrap(), "?a&notx");
        assert_eq!(dec("a & b &").unwrap(), "a & b &");
    }

    #[test]
    fn references_decode_as_in_a_browser() {
        assert_eq!(dec("?a=1&amp;b=2").unwrap(), "?a=1&b=2");
        assert_eq!(dec("?a=1&AMP;b=2").unwrap(), "?a=1&b=2");
        assert_eq!(dec("&quot;x&quot;").unwrap(), "\"x\"");
        assert_eq!(dec("&eacute;t&eacute;").unwrap(), "été");
        assert_eq!(dec("&amp b").unwrap(), "& b");
        assert_eq!(dec("&not_x").unwrap(), "¬_x");
        assert_eq!(dec("&sol;&quest;&equals;").unwrap(), "/?=");
        assert_eq!(dec("&#38;&#x26;&#X26").unwrap(), "&&&");
        assert_eq!(dec("&#233;&#xE9;").unwrap(), "éé");
        assert_eq!(dec("&#0;&#x110000;&#xD800;").unwrap(), "\u{FFFD}".repeat(3));
        assert_eq!(dec("&#128;&#x9F;").unwrap(), "€Ÿ");
        assert_eq!(dec("&#99999999999999999999;").unwrap(), "\u{FFFD}");
        assert_eq!(dec("&#;&#x;&#xg").unwrap(), "&#;&#x;&#xg");
    }

    #[test]
    fn unknown_names_with_semicolon_are_refused() {
        assert_eq!(dec("&notin;"), None);
        assert_eq!(dec("?a=1&b;"), None);
    }

    #[test]
    fn escaping_round_trips() {
        for v in ["plain", "a&b", "say \"hi\"", "&amp;", "&#x26;"] {
            assert_eq!(dec(&escape_attribute(v)).unwrap(), v);
        }
    }
}
