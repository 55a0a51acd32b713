//! Tracking: signed tokens, link rewriting, and the rules telling machines
//! from people.
//!
//! # Layout
//!
//! - [`token`]: the signed, stateless token in every tracking URL
//!   (`/t/o/TOKEN`, `/t/c/TOKEN`, `/u/TOKEN`), with key rotation.
//! - [`machine`]: the one place deciding that an open or a click was made by
//!   a machine (privacy proxy, link scanner, bot).
//!
//! Everything here is pure: no I/O, no clock, no global state. The HTTP
//! endpoints that use it live apart.

pub mod machine;
pub mod token;

pub use machine::{classify_click, classify_open, ClickRules, HttpMethod, RequestContext, Verdict};
pub use token::{SignerConfigError, TokenError, TokenKind, TokenSigner, TrackingToken};
