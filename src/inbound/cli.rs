//! `facteur classify FILE...`: the server's classifier, for people and
//! tests. One JSON line per file on standard output.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::classify::{classify, Classification};

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
                json!({ "file": file.display().to_string(), "error": e.to_string() })
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

/// The JSON line for one classified file.
pub fn report(file: &Path, c: &Classification) -> Value {
    let recipients: Vec<Value> = c
        .recipients
        .iter()
        .map(|r| {
            json!({
                "recipient": r.recipient,
                "status": r.status,
                "replycode": r.replycode,
                "permanent": r.permanent,
                "hard": r.hard,
                "reason": r.reason,
            })
        })
        .collect();
    let first = c.first();
    json!({
        "file": file.display().to_string(),
        "kind": c.kind,
        "recipients": recipients,
        "recipient": first.map(|r| &r.recipient),
        "status": first.and_then(|r| r.status.as_ref()),
        "permanent": first.and_then(|r| r.permanent),
        "hard": first.and_then(|r| r.hard),
        "reason": first.map(|r| &r.reason),
        "feedback_type": c.feedback_type,
        "original_message_id": c.original_message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fields() {
        let c = classify(b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
        let v = report(Path::new("x.eml"), &c);
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
