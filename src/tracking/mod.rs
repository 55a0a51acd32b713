//! Tracking: signed tokens, link rewriting, and the rules telling machines
//! from people.
//!
//! # Layout
//!
//! - [`token`]: the signed, stateless token in every tracking URL
//!   (`/t/o/TOKEN`, `/t/c/TOKEN`, `/u/TOKEN`), with key rotation.
//!
//! Everything here is pure: no I/O, no clock, no global state. The HTTP
//! endpoints that use it live apart.

pub mod token;

pub use token::{SignerConfigError, TokenError, TokenKind, TokenSigner, TrackingToken};
