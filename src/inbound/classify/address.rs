//! Finding and cleaning email addresses in free text.

use std::sync::LazyLock;

use regex::Regex;

/// An address in text: a dot-atom or quoted local part, `@`, and a domain
/// (dotless domains are accepted: some reports truncate them).
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)(?:"[^"\s@<>]{1,64}"|[a-z0-9!#$%&'*+/=?^_`{|}~-][a-z0-9!#$%&'*+/=?^_`{|}~.-]{0,127})"#,
        r"@(?:\[[0-9a-f.:]{3,45}\]|[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)*)"
    ))
    .expect("valid regex")
});

/// One address found in a line of text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    /// Byte offset of the first character in the line.
    pub start: usize,
    /// Byte offset just after the address.
    pub end: usize,
    /// The address, cleaned.
    pub address: String,
}

/// Every plausible address in a piece of text, in order.
pub(crate) fn find_all(text: &str) -> Vec<Found> {
    ADDRESS
        .find_iter(text)
        .filter_map(|m| {
            let address = clean(m.as_str())?;
            Some(Found {
                start: m.start(),
                end: m.end(),
                address,
            })
        })
        .collect()
}

/// The first plausible address in a piece of text.
pub(crate) fn first(text: &str) -> Option<String> {
    find_all(text).into_iter().next().map(|f| f.address)
}

/// Strips the dressing reports put around addresses (`<>`, quotes, trailing
/// punctuation) and checks that what is left looks like an address.
pub(crate) fn clean(raw: &str) -> Option<String> {
    let mut s = raw.trim();
    s = s.trim_start_matches(['<', '(', '[', '\'', ' ']);
    s = s.trim_end_matches(['>', ')', ']', '\'', ',', ';', ':', '.', ' ']);
    if s.starts_with('"') && s.ends_with('"') && !s.contains('@') {
        return None;
    }
    let (local, domain) = s.rsplit_once('@')?;
    let local = local.trim_start_matches('.');
    if local.is_empty() || domain.is_empty() || s.len() > 254 || local.len() > 130 {
        return None;
    }
    let quoted = local.starts_with('"') && local.ends_with('"') && local.len() > 1;
    if !quoted && (local.contains("..") || !local.chars().all(is_atom_char)) {
        return None;
    }
    if !domain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
    {
        return None;
    }
    let domain = domain.trim_end_matches(['.', '-']);
    if domain.is_empty() || domain.starts_with(['-', '.']) {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

/// Characters of an unquoted local part (RFC 5322 atext and dots).
fn is_atom_char(c: char) -> bool {
    c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c)
}

/// True when the domain has at least one dot (or is an address literal):
/// a dotless domain is usually a host-internal rewrite.
pub(crate) fn has_full_domain(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.contains('.') || d.starts_with('['))
}

/// The address in an RFC 3464 address field: `rfc822; <user@example.org>`.
pub(crate) fn from_typed(value: &str) -> Option<String> {
    let value = value.trim();
    let rest = match value.split_once(';') {
        Some((kind, rest)) if !kind.contains('@') => rest,
        _ => value,
    };
    let rest = rest.trim().trim_start_matches('<').trim_end_matches('>');
    if let Some(a) = clean(rest).filter(|a| !a.contains(char::is_whitespace)) {
        return Some(a);
    }
    first(rest)
}

/// True for the addresses of mail systems themselves (they are the senders
/// of reports, rarely the subject of one).
pub(crate) fn is_system(address: &str) -> bool {
    let local = address
        .rsplit_once('@')
        .map_or(address, |(l, _)| l)
        .to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon" | "mailer_daemon" | "mailerdaemon" | "postmaster" | "post_master"
    ) || local.starts_with("mailer-daemon")
}

/// Case-insensitive address equality.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_in_dressing() {
        let found = find_all("<a.b@example.org>: host mx said: 550 <c@d.example>... no");
        let addrs: Vec<_> = found.iter().map(|f| f.address.as_str()).collect();
        assert_eq!(addrs, ["a.b@example.org", "c@d.example"]);
    }

    #[test]
    fn typed_address_fields() {
        assert_eq!(
            from_typed("rfc822; <User@Example.org>").as_deref(),
            Some("User@Example.org")
        );
        assert_eq!(
            from_typed("RFC822;user@example.org").as_deref(),
            Some("user@example.org")
        );
        assert_eq!(from_typed("rfc822; "), None);
    }

    #[test]
    fn clean_rejects_non_addresses() {
        assert_eq!(clean("@example.org"), None);
        assert_eq!(clean("user@"), None);
        assert_eq!(clean("<a@b.c>.").as_deref(), Some("a@b.c"));
        assert_eq!(clean("@route.example:a@b"), None);
        assert_eq!(clean("\"a..b\"@b.c").as_deref(), Some("\"a..b\"@b.c"));
    }

    #[test]
    fn system_addresses() {
        assert!(is_system("MAILER-DAEMON@example.org"));
        assert!(is_system("postmaster@example.org"));
        assert!(!is_system("post@example.org"));
    }
}
