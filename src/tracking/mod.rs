//! Tracking: signed tokens, link rewriting, and the rules telling machines
//! from people.
//!
//! # Layout
//!
//! - [`token`]: the signed, stateless token in every tracking URL
//!   (`/t/o/TOKEN`, `/t/c/TOKEN`, `/u/TOKEN`), with key rotation.
//! - [`rewrite`]: rewriting the links of the HTML and plain-text parts to
//!   tracked URLs, and adding the open pixel.
//! - [`machine`]: the one place deciding that an open or a click was made by
//!   a machine (privacy proxy, link scanner, bot).
//!
//! Those three are pure: no I/O, no clock, no global state. The service
//! parts build on them:
//!
//! - [`service`]: [`Tracker`], which compose calls to rewrite links, add the
//!   pixel and the `List-Unsubscribe` URLs of each outgoing message.
//! - [`endpoints`]: the public routes `/t/o/`, `/t/c/`, `/u/` that record
//!   opens, clicks and unsubscribes.
//! - [`unsubscribe`]: suppression and event of an unsubscribe, and
//!   [`unsubscribe_by_message`] for the `mailto:` unsubscribe.
//! - `page`: the pixel and the unsubscribe pages.

pub mod endpoints;
pub mod machine;
mod page;
pub mod rewrite;
pub mod service;
pub mod token;
pub mod unsubscribe;

pub use machine::{classify_click, classify_open, ClickRules, HttpMethod, RequestContext, Verdict};
pub use rewrite::{rewrite_html, rewrite_text, RewriteError, RewriteOptions};
pub use service::Tracker;
pub use token::{SignerConfigError, TokenError, TokenKind, TokenSigner, TrackingToken};
pub use unsubscribe::{unsubscribe_by_message, Unsubscribed};
