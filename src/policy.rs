//! e-CRM policy: decides for each recipient whether a message is sent now,
//! later, or never, and says why.
//!
//! - Suppression: a hard bounce suppresses an address for everything
//!   (`all`); a complaint or an unsubscribe for marketing (every category
//!   but `transactional`) or for one category, as configured.
//! - Uniqueness: the same campaign never reaches a person twice.

use crate::spool::{Spool, SpoolError, Suppression};

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send.
    Send,
    /// Never: the address is suppressed.
    Suppressed(Suppression),
    /// Never: this campaign already went to this address (message id).
    Duplicate(String),
}

/// The suppression scopes that apply to a message of `category`.
pub fn scopes_for(category: &str) -> Vec<String> {
    let mut scopes = vec!["all".to_string()];
    if category != "transactional" {
        scopes.push("marketing".to_string());
        scopes.push(format!("category:{category}"));
    }
    scopes
}

/// Decides for one recipient.
pub fn decide(
    spool: &Spool,
    category: &str,
    campaign: Option<&str>,
    email: &str,
) -> Result<Decision, SpoolError> {
    for scope in scopes_for(category) {
        if let Some(s) = spool.suppression(&scope, email)? {
            return Ok(Decision::Suppressed(s));
        }
    }
    if let Some(c) = campaign {
        if let Some(id) = spool.campaign_sent_to(c, email)? {
            return Ok(Decision::Duplicate(id));
        }
    }
    Ok(Decision::Send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_mail_ignores_marketing_suppressions() {
        assert_eq!(scopes_for("transactional"), vec!["all"]);
        assert_eq!(
            scopes_for("newsletter"),
            vec!["all", "marketing", "category:newsletter"]
        );
    }
}
