//! The transfer encoding of a text part, chosen and applied in one place.
//!
//! A part that is plain ASCII with lines of at most 998 bytes (RFC 5322
//! §2.1.1) goes as `7bit`, its line ends made CRLF: the receiving MTA and
//! every client read it as it is. Anything else (UTF-8, a longer line, a
//! bare CR, a NUL) goes as `quoted-printable` (RFC 2045 §6.7) with lines of
//! at most 76 characters. Both are plain ASCII on the wire, so the message
//! never needs the server's 8BITMIME.
//!
//! mail-builder would make the same kind of choice, but it weighs base64
//! against quoted-printable by encoding the part once to measure it and
//! writes byte by byte; composing is the costliest step of a delivery, so
//! this module does it in one pass over the text.

/// The longest line allowed in a message, without its CRLF (RFC 5322).
const MAX_LINE: usize = 998;

/// The longest quoted-printable line, soft line break `=` included.
const QP_LINE: usize = 76;

/// A text part ready to be written: its `Content-Transfer-Encoding` and
/// the encoded text, with CRLF line ends.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    /// `7bit` or `quoted-printable`.
    pub transfer_encoding: &'static str,
    /// The encoded text (ASCII).
    pub text: String,
}

/// Encodes a text part for the wire.
pub fn encode_text(text: &str) -> Encoded {
    if fits_7bit(text.as_bytes()) {
        Encoded {
            transfer_encoding: "7bit",
            text: crlf(text),
        }
    } else {
        Encoded {
            transfer_encoding: "quoted-printable",
            text: quoted_printable(text.as_bytes()),
        }
    }
}

/// ASCII without NUL or bare CR, and no line over [`MAX_LINE`].
fn fits_7bit(bytes: &[u8]) -> bool {
    if !bytes.is_ascii() || memchr::memchr(0, bytes).is_some() {
        return false;
    }
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len())) {
        let mut line = &bytes[start..nl];
        // The CR of a CRLF; one ending the text is a bare CR.
        if nl < bytes.len() {
            line = line.strip_suffix(b"\r").unwrap_or(line);
        }
        if line.len() > MAX_LINE || memchr::memchr(b'\r', line).is_some() {
            return false;
        }
        start = nl + 1;
    }
    true
}

/// The text with every line ending in CRLF (a lone LF gains its CR).
fn crlf(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 2);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', bytes) {
        let line = &text[start..nl];
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push_str("\r\n");
        start = nl + 1;
    }
    out.push_str(&text[start..]);
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Quoted-printable with CRLF hard line breaks (an LF, or a CRLF, of the
/// text) and soft breaks keeping lines within [`QP_LINE`] characters.
fn quoted_printable(bytes: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + bytes.len() / 8 + 16);
    let mut start = 0;
    let mut lines = memchr::memchr_iter(b'\n', bytes).peekable();
    loop {
        let (end, last) = match lines.next() {
            Some(nl) => (nl, false),
            None => (bytes.len(), true),
        };
        let mut line = &bytes[start..end];
        if !last {
            line = line.strip_suffix(b"\r").unwrap_or(line);
        }
        qp_line(line, &mut out);
        if last {
            break;
        }
        out.extend_from_slice(b"\r\n");
        start = end + 1;
    }
    // Only ASCII was written.
    String::from_utf8(out).expect("quoted-printable is ASCII")
}

/// Bytes that quoted-printable leaves as they are (white space only when
/// it does not end a line).
const LITERAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 33;
    while b <= 126 {
        t[b] = b != b'=' as usize;
        b += 1;
    }
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t
};

/// One line of text, without its line break. Runs of literal bytes are
/// copied whole, cut by soft line breaks.
fn qp_line(line: &[u8], out: &mut Vec<u8>) {
    let n = line.len();
    // White space ending a line would be lost in transit: it is encoded.
    let literal_end = if matches!(line.last(), Some(b' ' | b'\t')) {
        n - 1
    } else {
        n
    };
    let mut width = 0;
    let mut i = 0;
    while i < n {
        if i < literal_end && LITERAL[line[i] as usize] {
            let run = line[i..literal_end]
                .iter()
                .position(|&b| !LITERAL[b as usize])
                .unwrap_or(literal_end - i);
            let j = i + run;
            while i < j {
                // A soft break `=` must fit after a character that does not
                // end the line; the line's last one may use the last column.
                let take = if j == n && j - i <= QP_LINE - width {
                    j - i
                } else {
                    (j - i).min(QP_LINE - 1 - width)
                };
                if take == 0 {
                    out.extend_from_slice(b"=\r\n");
                    width = 0;
                    continue;
                }
                out.extend_from_slice(&line[i..i + take]);
                width += take;
                i += take;
            }
        } else {
            let b = line[i];
            let limit = if i + 1 == n { QP_LINE } else { QP_LINE - 1 };
            if width + 3 > limit {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            width += 3;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes quoted-printable the way mail-parser does, to check that
    /// what goes out is what was meant.
    fn decoded(e: &Encoded) -> String {
        let raw = format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n\r\n{}",
            e.transfer_encoding, e.text
        );
        let msg = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses");
        msg.body_text(0).expect("a text body").into_owned()
    }

    fn lines_ok(e: &Encoded, max: usize) {
        for line in e.text.split("\r\n") {
            assert!(line.len() <= max, "line of {}: {line:?}", line.len());
            assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
        }
        assert!(e.text.is_ascii());
    }

    #[test]
    fn ascii_with_short_lines_goes_as_7bit_with_crlf() {
        let e = encode_text("<p>Hello</p>\n<p>there</p>\r\nend");
        assert_eq!(e.transfer_encoding, "7bit");
        assert_eq!(e.text, "<p>Hello</p>\r\n<p>there</p>\r\nend");
        let long = "x".repeat(998);
        assert_eq!(encode_text(&long).transfer_encoding, "7bit");
    }

    #[test]
    fn long_lines_utf8_bare_cr_and_nul_go_as_quoted_printable() {
        for text in [
            "x".repeat(999),
            "Caf\u{e9} cr\u{e8}me, 20 \u{20ac}".to_string(),
            "a\rb".to_string(),
            "a\0b".to_string(),
        ] {
            let e = encode_text(&text);
            assert_eq!(e.transfer_encoding, "quoted-printable", "{text:?}");
            lines_ok(&e, QP_LINE);
        }
    }

    #[test]
    fn encoded_text_round_trips() {
        let samples = [
            "Caf\u{e9} = cr\u{e8}me \nsecond line \t\nthird".to_string(),
            format!(
                "<a href=\"https://example.com/{}\">\u{e9}</a>",
                "p".repeat(300)
            ),
            "\u{1F600}".repeat(40),
            "trailing space \r\n".to_string(),
            "=".repeat(200),
            format!("{}\u{e9}", "a".repeat(74)),
        ];
        for text in samples {
            let e = encode_text(&text);
            let max = if e.transfer_encoding == "7bit" {
                MAX_LINE
            } else {
                QP_LINE
            };
            lines_ok(&e, max);
            let want = text.replace("\r\n", "\n").replace('\n', "\r\n");
            assert_eq!(decoded(&e), want, "{text:?}");
        }
    }

    #[test]
    fn white_space_at_a_line_end_is_encoded() {
        let e = quoted_printable("a \nb\t".as_bytes());
        assert_eq!(e, "a=20\r\nb=09");
    }

    proptest::proptest! {
        #[test]
        fn any_text_round_trips(text in "(?s)[ -~\t\r\n\u{e0}-\u{ff}\u{1F600}=]{0,400}") {
            let e = encode_text(&text);
            let max = if e.transfer_encoding == "7bit" { MAX_LINE } else { QP_LINE };
            lines_ok(&e, max);
            // A bare CR has no line break of its own to become: it is kept
            // as an encoded byte.
            let want = text.replace("\r\n", "\n").replace('\n', "\r\n");
            proptest::prop_assert_eq!(decoded(&e), want);
        }
    }
}
