//! Received mail, as the test sinks stored it, and DKIM with dkimpy.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

/// One message as an SMTP sink received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Envelope sender (MAIL FROM), without angle brackets.
    pub from: String,
    /// Envelope recipients (RCPT TO), without angle brackets.
    pub rcpt: Vec<String>,
    /// The message with CRLF line ends, as sent after DATA (dot-unstuffed).
    pub raw: Vec<u8>,
    /// The file the sink stored it in.
    pub file: PathBuf,
}

impl Received {
    /// The message parsed by mail-parser (panics if it cannot be parsed).
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("{} is not a message", self.file.display()))
    }

    /// The first header `name` (any case), unfolded and trimmed, undecoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let parsed = self.parsed();
        let raw = parsed.header_raw(name)?;
        Some(unfold(raw))
    }

    /// Every header name, in order, as written.
    pub fn header_names(&self) -> Vec<String> {
        self.parsed()
            .headers()
            .iter()
            .map(|h| h.name().to_string())
            .collect()
    }

    /// The decoded Subject.
    pub fn subject(&self) -> Option<String> {
        self.parsed().subject().map(str::to_string)
    }

    /// The decoded text/plain body, if any.
    pub fn text(&self) -> Option<String> {
        let parsed = self.parsed();
        parsed
            .text_body
            .iter()
            .find_map(|&i| match &parsed.parts.get(i as usize)?.body {
                mail_parser::PartType::Text(text) => Some(text.to_string()),
                _ => None,
            })
    }

    /// The decoded text/html body, if any.
    pub fn html(&self) -> Option<String> {
        let parsed = self.parsed();
        parsed
            .html_body
            .iter()
            .find_map(|&i| match &parsed.parts.get(i as usize)?.body {
                mail_parser::PartType::Html(html) => Some(html.to_string()),
                _ => None,
            })
    }

    /// The `X-Facteur-Id` header.
    pub fn facteur_id(&self) -> Option<String> {
        self.header("X-Facteur-Id")
    }
}

/// Joins folded header lines and trims.
fn unfold(raw: &str) -> String {
    raw.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns bare LF line ends into CRLF (CRLF stays as it is).
pub fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 40);
    let mut previous = 0u8;
    for &b in text {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

/// A DKIM key made with `openssl genpkey`.
pub struct DkimKey {
    /// The PKCS#8 PEM private key file.
    pub private_key_file: PathBuf,
    /// The DNS TXT record to publish: `v=DKIM1; k=...; p=...`.
    pub txt: String,
}

/// Runs openssl with `args` then `path`, and returns its standard output.
fn openssl(args: &[&str], path: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl DkimKey {
    /// Generates a key with `genpkey` options `algorithm` into `dir/name`;
    /// returns the key file and its public key (DER SubjectPublicKeyInfo).
    fn generate(dir: &Path, name: &str, algorithm: &[&str]) -> (PathBuf, Vec<u8>) {
        let private_key_file = dir.join(name);
        let mut args = vec!["genpkey"];
        args.extend_from_slice(algorithm);
        args.push("-out");
        openssl(&args, &private_key_file);
        let der = openssl(
            &["pkey", "-pubout", "-outform", "DER", "-in"],
            &private_key_file,
        );
        (private_key_file, der)
    }

    /// Generates an Ed25519 key into `dir/dkim-ed25519.pem`.
    pub fn ed25519(dir: &Path) -> DkimKey {
        let (private_key_file, der) =
            DkimKey::generate(dir, "dkim-ed25519.pem", &["-algorithm", "ed25519"]);
        // A DER SubjectPublicKeyInfo for Ed25519 ends with the 32-byte key,
        // which is what DKIM publishes (RFC 8463).
        assert!(der.len() >= 32, "short Ed25519 public key");
        let public = base64::engine::general_purpose::STANDARD.encode(&der[der.len() - 32..]);
        DkimKey {
            private_key_file,
            txt: format!("v=DKIM1; k=ed25519; p={public}"),
        }
    }

    /// Generates a 2048-bit RSA key into `dir/dkim-rsa.pem`.
    pub fn rsa(dir: &Path) -> DkimKey {
        let algorithm = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
        let (private_key_file, der) = DkimKey::generate(dir, "dkim-rsa.pem", &algorithm);
        // RSA keys publish the whole SubjectPublicKeyInfo (RFC 6376).
        let public = base64::engine::general_purpose::STANDARD.encode(&der);
        DkimKey {
            private_key_file,
            txt: format!("v=DKIM1; k=rsa; p={public}"),
        }
    }
}

/// Verifies the DKIM signature of `raw` with dkimpy; the only DNS record it
/// may see is `txt` at `txt_name` (e.g. `s1._domainkey.brand.test`), so the
/// signature's `d=` and `s=` are checked too. Err carries dkimpy's account.
pub fn dkim_verify(raw: &[u8], txt_name: &str, txt: &str) -> Result<(), String> {
    const SCRIPT: &str = r#"
import logging, sys, dkim
name, txt = sys.argv[1].rstrip(".").lower(), sys.argv[2]
asked = []
def dnsfunc(qname, timeout=5):
    q = qname.decode() if isinstance(qname, bytes) else qname
    asked.append(q)
    return txt.encode() if q.rstrip(".").lower() == name else None
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
message = sys.stdin.buffer.read()
ok = dkim.verify(message, logger=logging.getLogger("dkim"), dnsfunc=dnsfunc)
print("asked", asked, file=sys.stderr)
sys.exit(0 if ok else 1)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, txt_name, txt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run python3: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(raw)
        .map_err(|e| format!("write to dkimpy: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for dkimpy: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dkimpy: signature does not verify\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
