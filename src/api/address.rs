//! Address syntax (RFC 5321 §4.1.2), with internationalised domains
//! accepted and turned into their ASCII (punycode) form.

/// A checked address: local part and ASCII domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Local part as given.
    pub local: String,
    /// Domain in ASCII (IDNA), lowercase.
    pub domain: String,
}

impl Address {
    /// `local@domain` with the ASCII domain.
    pub fn to_ascii(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// Parses and checks an address; the error says what is wrong.
pub fn parse(addr: &str) -> Result<Address, String> {
    if addr.len() > 320 {
        return Err("address is longer than 320 characters".into());
    }
    if addr.chars().any(|c| c.is_control()) {
        return Err("address contains control characters".into());
    }
    let (local, domain) = addr.rsplit_once('@').ok_or("address has no '@'")?;
    check_local(local)?;
    let domain = check_domain(domain)?;
    Ok(Address {
        local: local.to_string(),
        domain,
    })
}

fn check_local(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("local part is empty".into());
    }
    if local.len() > 64 {
        return Err("local part is longer than 64 octets".into());
    }
    if local.starts_with('"') && local.ends_with('"') && local.len() >= 2 {
        let inner = &local[1..local.len() - 1];
        let mut escaped = false;
        for c in inner.chars() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return Err("unescaped quote in quoted local part".into());
            }
        }
        return if escaped {
            Err("quoted local part ends with a backslash".into())
        } else {
            Ok(())
        };
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("local part has an empty dot-separated atom".into());
        }
        if let Some(c) = atom.chars().find(|c| !is_atext(*c)) {
            return Err(format!("local part contains '{}'", c.escape_debug()));
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty() {
        return Err("domain is empty".into());
    }
    if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = lit.strip_prefix("IPv6:").unwrap_or(lit);
        return ip
            .parse::<std::net::IpAddr>()
            .map(|_| domain.to_string())
            .map_err(|_| format!("'{domain}' is not a valid address literal"));
    }
    let ascii =
        idna::domain_to_ascii(domain).map_err(|_| format!("'{domain}' is not a valid domain"))?;
    if ascii.len() > 253 {
        return Err("domain is longer than 253 characters".into());
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("'{domain}' is not a fully qualified domain"));
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("'{domain}' has an empty or overlong label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "'{domain}' has a label starting or ending with '-'"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "'{domain}' contains characters not allowed in a domain"
            ));
        }
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses_pass() {
        for a in [
            "a@b.test",
            "first.last+tag@sub.example.com",
            "\"john doe\"@x.test",
            "u@[127.0.0.1]",
            "ü@exämple.test",
        ] {
            assert!(parse(a).is_ok(), "{a}: {:?}", parse(a));
        }
        assert_eq!(
            parse("a@Exämple.test").unwrap().domain,
            "xn--exmple-cua.test"
        );
    }

    #[test]
    fn bad_addresses_fail_with_a_reason() {
        for a in [
            "",
            "plain",
            "@x.test",
            "a@",
            "a..b@x.test",
            ".a@x.test",
            "a@x",
            "a@-x.test",
            "a b@x.test",
            "a@x_y.test",
            "a@x.test\r\nBcc: z@z.test",
        ] {
            assert!(parse(a).is_err(), "{a} should fail");
        }
        let long = format!("{}@x.test", "a".repeat(65));
        assert!(parse(&long).unwrap_err().contains("64"));
    }
}
