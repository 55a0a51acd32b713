//! What an SMTP reply (or its absence) means for a message.
//!
//! 2xx delivered; 4xx or a network error deferred; 5xx bounced. A `421`, or
//! a 4xx whose text asks to slow down, also slows the destination down.

use crate::events::SmtpReply;

/// The verdict on one delivery attempt of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The remote took responsibility.
    Delivered(SmtpReply),
    /// Try again later. `slowdown` asks the destination's throttle to back off.
    Deferred {
        /// The reply, or a network error as code 0.
        reply: SmtpReply,
        /// The remote asked us to slow down.
        slowdown: bool,
    },
    /// Permanent failure.
    Bounced(SmtpReply),
}

impl Outcome {
    /// Decides from a reply.
    pub fn from_reply(reply: SmtpReply) -> Outcome {
        match reply.code {
            200..=299 => Outcome::Delivered(reply),
            500..=599 => Outcome::Bounced(reply),
            400..=499 => {
                let slowdown = reply.code == 421 || asks_to_slow_down(&reply.text);
                Outcome::Deferred { reply, slowdown }
            }
            // 1xx, 3xx where a completion was expected, or nonsense: the
            // remote misbehaves; try again later.
            _ => Outcome::Deferred {
                reply,
                slowdown: false,
            },
        }
    }

    /// A network-level failure (connect, TLS, timeout, hang-up, garbage).
    pub fn network(text: impl Into<String>) -> Outcome {
        Outcome::Deferred {
            reply: network_reply(text),
            slowdown: false,
        }
    }

    /// The class label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "2xx",
            Outcome::Bounced(_) => "5xx",
            Outcome::Deferred { reply, .. } if reply.code == 0 => "network",
            Outcome::Deferred { .. } => "4xx",
        }
    }
}

/// A reply standing for a network error.
pub fn network_reply(text: impl Into<String>) -> SmtpReply {
    SmtpReply {
        code: 0,
        enhanced: None,
        text: text.into(),
    }
}

/// Converts mail-send's reply, keeping the enhanced status code when the
/// remote sent one.
pub fn from_response(r: &smtp_proto::Response<String>) -> SmtpReply {
    let enhanced = if r.esc[0] != 0 {
        Some(format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]))
    } else {
        None
    };
    let mut text = r.message.trim().replace(['\r', '\n'], " ");
    if let Some(e) = &enhanced {
        if let Some(rest) = text.strip_prefix(e.as_str()) {
            text = rest.trim_start().to_string();
        }
    }
    text.truncate(512);
    SmtpReply {
        code: r.code,
        enhanced,
        text,
    }
}

/// Words remotes use to say "too fast".
fn asks_to_slow_down(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "slow down",
        "too many",
        "rate limit",
        "ratelimit",
        "rate-limit",
        "throttl",
        "too fast",
        "try again later",
        "exceeded",
        "4.7.28",
    ]
    .iter()
    .any(|w| t.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, text: &str) -> SmtpReply {
        SmtpReply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    #[test]
    fn reply_classes_decide() {
        assert!(matches!(
            Outcome::from_reply(r(250, "ok")),
            Outcome::Delivered(_)
        ));
        assert!(matches!(
            Outcome::from_reply(r(550, "no such user")),
            Outcome::Bounced(_)
        ));
        assert_eq!(
            Outcome::from_reply(r(451, "local error")),
            Outcome::Deferred {
                reply: r(451, "local error"),
                slowdown: false
            }
        );
        assert!(matches!(
            Outcome::from_reply(r(421, "bye")),
            Outcome::Deferred { slowdown: true, .. }
        ));
        assert!(matches!(
            Outcome::from_reply(r(450, "4.7.0 Too many messages, slow down")),
            Outcome::Deferred { slowdown: true, .. }
        ));
        assert!(matches!(
            Outcome::from_reply(r(354, "go on")),
            Outcome::Deferred {
                slowdown: false,
                ..
            }
        ));
        assert_eq!(Outcome::network("reset").class(), "network");
    }

    #[test]
    fn enhanced_status_is_kept_and_stripped_from_text() {
        let resp = smtp_proto::Response {
            code: 550,
            esc: [5, 1, 1],
            message: "5.1.1 no such user".to_string(),
        };
        let reply = from_response(&resp);
        assert_eq!(reply.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(reply.text, "no such user");
    }
}
