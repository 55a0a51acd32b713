//! `facteur classify FILE...`: the server's classifier, for people and
//! tests. One JSON line per file on standard output.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::classify::{classify, Classification, Kind};

/// Classifies each file and prints one JSON line per file. A file that
/// cannot be read prints a line with an `error` field; the command then
/// fails at the end, after every file has been tried.
pub fn run_classify(files: &[PathBuf]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for file in files {
        let line = match std::fs::read(file) {
            Ok(raw) => report(file, &classify(&raw)),
            Err(e) => {
                failed += 1;
                json!({ "file": file.display().to_string(), "error": e.to_string() }).to_string()
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if failed > 0 {
        anyhow::bail!("{failed} of {} files could not be read", files.len());
    }
    Ok(())
}

/// One recipient in a JSON line.
#[derive(Serialize)]
struct RecipientLine<'a> {
    recipient: &'a str,
    status: Option<&'a str>,
    replycode: Option<u16>,
    permanent: Option<bool>,
    hard: Option<bool>,
    reason: &'a str,
}

/// The JSON line for one file, fields in a fixed order.
#[derive(Serialize)]
struct FileLine<'a> {
    file: String,
    kind: Kind,
    recipients: Vec<RecipientLine<'a>>,
    recipient: Option<&'a str>,
    status: Option<&'a str>,
    permanent: Option<bool>,
    hard: Option<bool>,
    reason: Option<&'a str>,
    feedback_type: Option<&'a str>,
    original_message_id: Option<&'a str>,
}

/// The JSON line for one classified file.
pub fn report(file: &Path, c: &Classification) -> String {
    let first = c.first();
    let line = FileLine {
        file: file.display().to_string(),
        kind: c.kind,
        recipients: c
            .recipients
            .iter()
            .map(|r| RecipientLine {
                recipient: &r.recipient,
                status: r.status.as_deref(),
                replycode: r.replycode,
                permanent: r.permanent,
                hard: r.hard,
                reason: &r.reason,
            })
            .collect(),
        recipient: first.map(|r| r.recipient.as_str()),
        status: first.and_then(|r| r.status.as_deref()),
        permanent: first.and_then(|r| r.permanent),
        hard: first.and_then(|r| r.hard),
        reason: first.map(|r| r.reason.as_str()),
        feedback_type: c.feedback_type.as_deref(),
        original_message_id: c.original_message_id.as_deref(),
    };
    serde_json::to_string(&line).unwrap_or_else(|e| {
        json!({ "file": file.display().to_string(), "error": e.to_string() }).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fields() {
        let c = classify(b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
        let line = report(Path::new("x.eml"), &c);
        assert!(
            line.starts_with(r#"{"file":"x.eml","kind":"human""#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "human");
        assert_eq!(v["file"], "x.eml");
        assert!(v["recipient"].is_null());
        assert!(v["recipients"].as_array().unwrap().is_empty());
    }

    #[test]
    fn unreadable_file_fails_at_the_end() {
        let missing = PathBuf::from("/nonexistent/facteur-classify-test.eml");
        assert!(run_classify(&[missing]).is_err());
    }
}
