//! Signed tracking tokens: the `TOKEN` in `/t/o/TOKEN`, `/t/c/TOKEN` and
//! `/u/TOKEN`.
//!
//! A token is stateless: everything the endpoint needs (which message, which
//! recipient, what happened, and for a click where to send the browser) is in
//! the token, and an HMAC-SHA256 makes it impossible to change or forge
//! without the key. In particular a click token carries the destination URL
//! inside the signed payload, so the click endpoint can only ever redirect to
//! a URL that was in the message: there is no open redirect.
//!
//! # Wire format
//!
//! The token is the base64url encoding, without padding, of:
//!
//! ```text
//! kid:u8 | body | mac[16]
//! body = kind:u8 | id_len:u8 | message_id | rcpt_len:u16be | recipient
//!        [ | url_len:u16be | url ]          (present iff kind has bit 0x80)
//! mac  = HMAC-SHA256(key[kid], DOMAIN || kid || body), truncated to 16 bytes
//! ```
//!
//! `kind` is 0 (open), 1 (click) or 2 (unsubscribe), with bit `0x80` set
//! when a URL follows. The `kid` names the key, so that several keys may be
//! valid at once while keys are rotated: signing always uses the current key,
//! verification uses whichever key the token names. `DOMAIN` separates these
//! MACs from any other use of the same key.
//!
//! Verification refuses, before doing any work, a token longer than
//! [`MAX_TOKEN_LEN`]; then it checks the MAC (in constant time) before it
//! parses a single field of the body.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token, in characters, that [`TokenSigner::verify`] looks at.
/// Longer input is refused as [`TokenError::Malformed`] without decoding it,
/// and [`TokenSigner::sign`] refuses to make a token that would exceed it.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Length of the truncated MAC at the end of a token, in bytes.
const MAC_LEN: usize = 16;

/// Shortest key accepted by [`TokenSigner::new`], in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// Domain separation prefix of every MAC: a key shared with another use
/// (say, webhook signatures) cannot be made to sign a tracking token.
const DOMAIN: &[u8] = b"facteur/tracking-token/v1\0";

/// Bit of the kind byte telling that a URL follows the recipient.
const HAS_URL: u8 = 0x80;

/// What a token records when its URL is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// The open pixel, `/t/o/TOKEN`.
    Open,
    /// A tracked link, `/t/c/TOKEN`; the token carries the destination.
    Click,
    /// The unsubscribe page and RFC 8058 one-click POST, `/u/TOKEN`.
    Unsubscribe,
}

impl TokenKind {
    fn code(self) -> u8 {
        match self {
            TokenKind::Open => 0,
            TokenKind::Click => 1,
            TokenKind::Unsubscribe => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TokenKind::Open),
            1 => Some(TokenKind::Click),
            2 => Some(TokenKind::Unsubscribe),
            _ => None,
        }
    }
}

/// The content of a tracking token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingToken {
    /// What the token records.
    pub kind: TokenKind,
    /// The message the token was made for (a ULID or UUID string; at most
    /// 255 bytes).
    pub message_id: String,
    /// The recipient address the message was sent to.
    pub recipient: String,
    /// For a click, the destination: the original URL of the link, the only
    /// place the click endpoint may redirect to.
    pub url: Option<String>,
}

/// Why a token was refused (or, for [`TokenError::TooLong`], not made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token: too long, not base64url, too short, or a body that does
    /// not parse.
    #[error("malformed tracking token")]
    Malformed,
    /// The token names a key id this signer does not hold (a retired key, or
    /// a forgery).
    #[error("tracking token signed with an unknown key")]
    UnknownKey,
    /// The MAC does not match: the token was changed or forged.
    #[error("tracking token has a bad signature")]
    BadSignature,
    /// Signing only: the fields would make a token longer than
    /// [`MAX_TOKEN_LEN`] (a very long URL), or a field is longer than its
    /// length prefix allows. The caller should leave such a link untracked.
    #[error("tracking token would be too long")]
    TooLong,
}

/// Why a [`TokenSigner`] could not be built from its keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerConfigError {
    /// The current key id is not among the keys.
    #[error("current tracking key id {0} is not among the configured keys")]
    CurrentKeyMissing(u8),
    /// Two keys share one id.
    #[error("tracking key id {0} is configured twice")]
    DuplicateKeyId(u8),
    /// A key is too short to be a secret.
    #[error("tracking key {kid} is {len} bytes long; at least {min} are required", min = MIN_KEY_LEN)]
    KeyTooShort {
        /// The id of the short key.
        kid: u8,
        /// Its length in bytes.
        len: usize,
    },
}

/// Signs and verifies tracking tokens with a set of keys, one of which is
/// current.
///
/// Rotation: add the new key, make it current, and keep the old one for as
/// long as old messages' links should keep working.
#[derive(Clone)]
pub struct TokenSigner {
    /// The keyed MAC state per key id, keyed once here so that each token
    /// costs only a clone of the state.
    keys: Vec<(u8, HmacSha256)>,
    /// Key id used to sign new tokens.
    current_kid: u8,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let kids: Vec<u8> = self.keys.iter().map(|(kid, _)| *kid).collect();
        f.debug_struct("TokenSigner")
            .field("kids", &kids)
            .field("current_kid", &self.current_kid)
            .finish()
    }
}

impl TokenSigner {
    /// A signer holding `keys` (key id, secret), signing with `current_kid`.
    pub fn new(keys: Vec<(u8, Vec<u8>)>, current_kid: u8) -> Result<Self, SignerConfigError> {
        let mut macs: Vec<(u8, HmacSha256)> = Vec::with_capacity(keys.len());
        for (kid, secret) in keys {
            if macs.iter().any(|(k, _)| *k == kid) {
                return Err(SignerConfigError::DuplicateKeyId(kid));
            }
            if secret.len() < MIN_KEY_LEN {
                return Err(SignerConfigError::KeyTooShort {
                    kid,
                    len: secret.len(),
                });
            }
            let mac = HmacSha256::new_from_slice(&secret).expect("HMAC accepts keys of any length");
            macs.push((kid, mac));
        }
        if !macs.iter().any(|(k, _)| *k == current_kid) {
            return Err(SignerConfigError::CurrentKeyMissing(current_kid));
        }
        Ok(TokenSigner {
            keys: macs,
            current_kid,
        })
    }

    /// The key id new tokens are signed with.
    pub fn current_kid(&self) -> u8 {
        self.current_kid
    }

    fn key(&self, kid: u8) -> Option<&HmacSha256> {
        self.keys.iter().find(|(k, _)| *k == kid).map(|(_, m)| m)
    }

    /// Signs `token` with the current key.
    ///
    /// Fails only with [`TokenError::TooLong`]: a message id over 255 bytes,
    /// a recipient or URL over 65,535 bytes, or a token that would be longer
    /// than [`MAX_TOKEN_LEN`] characters.
    pub fn sign(&self, token: &TrackingToken) -> Result<String, TokenError> {
        let mut bytes = Vec::with_capacity(
            1 + 1
                + 1
                + token.message_id.len()
                + 2
                + token.recipient.len()
                + token.url.as_ref().map_or(0, |u| 2 + u.len())
                + MAC_LEN,
        );
        bytes.push(self.current_kid);
        encode_body(token, &mut bytes)?;
        // Unpadded base64 turns n bytes into ceil(4n/3) characters.
        if ((bytes.len() + MAC_LEN) * 4).div_ceil(3) > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut mac = self
            .key(self.current_kid)
            .expect("current key checked in new")
            .clone();
        mac.update(DOMAIN);
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        Ok(URL_SAFE_NO_PAD.encode(&bytes))
    }

    /// Verifies a token and returns its content.
    ///
    /// Any change to any character of a token signed by this signer is
    /// refused; the MAC is compared in constant time.
    pub fn verify(&self, token: &str) -> Result<TrackingToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        // kid, kind, id_len, rcpt_len (2) and the MAC at least.
        if bytes.len() < 1 + 1 + 1 + 2 + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.key(signed[0]).ok_or(TokenError::UnknownKey)?.clone();
        mac.update(DOMAIN);
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::BadSignature)?;
        decode_body(&signed[1..]).ok_or(TokenError::Malformed)
    }
}

/// Appends the body (see the module doc) of `token` to `out`.
fn encode_body(token: &TrackingToken, out: &mut Vec<u8>) -> Result<(), TokenError> {
    let flag = if token.url.is_some() { HAS_URL } else { 0 };
    out.push(token.kind.code() | flag);
    let id_len = u8::try_from(token.message_id.len()).map_err(|_| TokenError::TooLong)?;
    out.push(id_len);
    out.extend_from_slice(token.message_id.as_bytes());
    push_u16_prefixed(out, &token.recipient)?;
    if let Some(url) = &token.url {
        push_u16_prefixed(out, url)?;
    }
    Ok(())
}

fn push_u16_prefixed(out: &mut Vec<u8>, field: &str) -> Result<(), TokenError> {
    let len = u16::try_from(field.len()).map_err(|_| TokenError::TooLong)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field.as_bytes());
    Ok(())
}

/// Parses a body whose MAC has been verified; `None` if it does not parse,
/// including when bytes are left over.
fn decode_body(body: &[u8]) -> Option<TrackingToken> {
    let mut reader = Reader(body);
    let kind_byte = reader.take(1)?[0];
    let kind = TokenKind::from_code(kind_byte & !HAS_URL)?;
    let id_len = usize::from(reader.take(1)?[0]);
    let message_id = reader.string(id_len)?;
    let rcpt_len = reader.u16()?;
    let recipient = reader.string(rcpt_len)?;
    let url = if kind_byte & HAS_URL != 0 {
        let url_len = reader.u16()?;
        Some(reader.string(url_len)?)
    } else {
        None
    };
    if !reader.0.is_empty() {
        return None;
    }
    Some(TrackingToken {
        kind,
        message_id,
        recipient,
        url,
    })
}

/// A cursor over the body bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn string(&mut self, n: usize) -> Option<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY_A: &[u8] = b"0123456789abcdef-key-a";
    const KEY_B: &[u8] = b"fedcba9876543210-key-b";

    fn signer() -> TokenSigner {
        TokenSigner::new(vec![(1, KEY_A.to_vec())], 1).unwrap()
    }

    fn click() -> TrackingToken {
        TrackingToken {
            kind: TokenKind::Click,
            message_id: "01HZY3K7Q8W9E2R4T6Y8U0I2O4".into(),
            recipient: "jane.doe@example.com".into(),
            url: Some("https://shop.example.com/sale?utm_source=mail&x=é".into()),
        }
    }

    #[test]
    fn round_trip_each_kind() {
        let s = signer();
        for kind in [TokenKind::Open, TokenKind::Click, TokenKind::Unsubscribe] {
            let mut t = click();
            t.kind = kind;
            if kind != TokenKind::Click {
                t.url = None;
            }
            let tok = s.sign(&t).unwrap();
            assert!(tok
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(s.verify(&tok).unwrap(), t);
        }
    }

    #[test]
    fn open_token_is_compact() {
        let mut t = click();
        t.kind = TokenKind::Open;
        t.url = None;
        // 26-char ULID, 20-char address: 1+1+1+26+2+20+16 = 67 bytes.
        assert_eq!(signer().sign(&t).unwrap().len(), 90);
    }

    #[test]
    fn truncated_or_extended_token_is_refused() {
        let s = signer();
        let tok = s.sign(&click()).unwrap();
        for n in 0..tok.len() {
            assert!(s.verify(&tok[..n]).is_err(), "prefix of {n} chars accepted");
        }
        assert!(s.verify(&format!("{tok}A")).is_err());
        assert!(s.verify(&format!("{tok}AAAA")).is_err());
        assert_eq!(s.verify(""), Err(TokenError::Malformed));
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let s = signer();
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for t in [
            click(),
            TrackingToken {
                url: None,
                ..click()
            },
        ] {
            // Lengths 0, 1 and 2 mod 3: tokens ending in a partial group.
            for extra in ["", "x", "xy"] {
                let t = TrackingToken {
                    recipient: format!("{}{extra}", t.recipient),
                    ..t.clone()
                };
                let tok = s.sign(&t).unwrap();
                for i in 0..tok.len() {
                    for &c in ALPHABET.iter().filter(|&&c| c != tok.as_bytes()[i]) {
                        let mut changed = tok.clone().into_bytes();
                        changed[i] = c;
                        let changed = String::from_utf8(changed).unwrap();
                        assert!(s.verify(&changed).is_err(), "{changed} accepted");
                    }
                }
            }
        }
    }

    #[test]
    fn padded_or_non_url_safe_token_is_malformed() {
        let s = signer();
        let tok = s.sign(&click()).unwrap();
        assert_eq!(s.verify(&format!("{tok}=")), Err(TokenError::Malformed));
        assert_eq!(s.verify("ab+/cd"), Err(TokenError::Malformed));
        assert_eq!(s.verify("not a token"), Err(TokenError::Malformed));
    }

    #[test]
    fn overlong_token_is_malformed_without_work() {
        let s = signer();
        assert_eq!(
            s.verify(&"A".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn overlong_fields_are_refused_at_signing() {
        let s = signer();
        let mut t = click();
        t.url = Some(format!("https://example.com/{}", "a".repeat(MAX_TOKEN_LEN)));
        assert_eq!(s.sign(&t), Err(TokenError::TooLong));
        let mut t = click();
        t.message_id = "m".repeat(256);
        assert_eq!(s.sign(&t), Err(TokenError::TooLong));
        // The longest URL that fits still round-trips.
        let mut t = click();
        let base = "https://example.com/";
        let mut url = base.to_string();
        loop {
            t.url = Some(format!("{url}a"));
            if s.sign(&t).is_err() {
                break;
            }
            url.push('a');
        }
        t.url = Some(url);
        let tok = s.sign(&t).unwrap();
        assert!(tok.len() <= MAX_TOKEN_LEN && tok.len() > MAX_TOKEN_LEN - 4);
        assert_eq!(s.verify(&tok).unwrap(), t);
    }

    #[test]
    fn token_signed_with_another_key_is_refused() {
        let other = TokenSigner::new(vec![(1, KEY_B.to_vec())], 1).unwrap();
        let tok = other.sign(&click()).unwrap();
        assert_eq!(signer().verify(&tok), Err(TokenError::BadSignature));
        let other_kid = TokenSigner::new(vec![(9, KEY_A.to_vec())], 9).unwrap();
        let tok = other_kid.sign(&click()).unwrap();
        assert_eq!(signer().verify(&tok), Err(TokenError::UnknownKey));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_new_key() {
        let old = signer();
        let old_tok = old.sign(&click()).unwrap();
        let rotated = TokenSigner::new(vec![(1, KEY_A.to_vec()), (2, KEY_B.to_vec())], 2).unwrap();
        assert_eq!(rotated.verify(&old_tok).unwrap(), click());
        let new_tok = rotated.sign(&click()).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&new_tok).unwrap()[0], 2);
        assert_eq!(rotated.verify(&new_tok).unwrap(), click());
        // A node that has not learned the new key yet refuses new tokens.
        assert_eq!(old.verify(&new_tok), Err(TokenError::UnknownKey));
        // Once the old key is retired, old tokens stop working.
        let retired = TokenSigner::new(vec![(2, KEY_B.to_vec())], 2).unwrap();
        assert_eq!(retired.verify(&old_tok), Err(TokenError::UnknownKey));
    }

    #[test]
    fn signer_config_errors() {
        assert_eq!(
            TokenSigner::new(vec![(1, KEY_A.to_vec())], 2).unwrap_err(),
            SignerConfigError::CurrentKeyMissing(2)
        );
        assert_eq!(
            TokenSigner::new(vec![(1, KEY_A.to_vec()), (1, KEY_B.to_vec())], 1).unwrap_err(),
            SignerConfigError::DuplicateKeyId(1)
        );
        assert_eq!(
            TokenSigner::new(vec![(1, b"short".to_vec())], 1).unwrap_err(),
            SignerConfigError::KeyTooShort { kid: 1, len: 5 }
        );
        assert!(!format!("{:?}", signer()).contains("0123456789"));
    }

    #[test]
    fn validly_signed_garbage_body_is_malformed() {
        // Signed with the right key but not a body: trailing bytes.
        let s = signer();
        let mut bytes = vec![1u8];
        encode_body(&click(), &mut bytes).unwrap();
        bytes.push(0);
        let mut mac = s.key(1).unwrap().clone();
        mac.update(DOMAIN);
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(&bytes)),
            Err(TokenError::Malformed)
        );
    }

    fn arb_token() -> impl Strategy<Value = TrackingToken> {
        (
            prop_oneof![
                Just(TokenKind::Open),
                Just(TokenKind::Click),
                Just(TokenKind::Unsubscribe)
            ],
            "[0-9A-Za-z-]{0,64}",
            "\\PC{0,40}@\\PC{0,40}",
            proptest::option::of("\\PC{0,300}"),
        )
            .prop_map(|(kind, message_id, recipient, url)| TrackingToken {
                kind,
                message_id,
                recipient,
                url,
            })
    }

    proptest! {
        #[test]
        fn prop_round_trip(t in arb_token()) {
            let s = signer();
            let tok = s.sign(&t).unwrap();
            prop_assert!(tok.len() <= MAX_TOKEN_LEN);
            prop_assert_eq!(s.verify(&tok).unwrap(), t);
        }

        #[test]
        fn prop_any_changed_char_is_refused(
            t in arb_token(),
            pos in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9_=+/. -]",
        ) {
            let s = signer();
            let tok = s.sign(&t).unwrap();
            let i = pos.index(tok.len());
            let mut changed = tok.clone().into_bytes();
            prop_assume!(changed[i] != replacement.as_bytes()[0]);
            changed[i] = replacement.as_bytes()[0];
            let changed = String::from_utf8(changed).unwrap();
            prop_assert!(s.verify(&changed).is_err(), "accepted {changed} for {tok}");
        }

        #[test]
        fn prop_any_flipped_byte_is_refused(
            t in arb_token(),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let s = signer();
            let tok = s.sign(&t).unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(&tok).unwrap();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(s.verify(&URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        }

        #[test]
        fn prop_arbitrary_input_never_panics(input in "\\PC{0,200}") {
            let _ = signer().verify(&input);
        }
    }
}
