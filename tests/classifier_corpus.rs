//! The inbound classifier against the labelled corpus of real returned mail
//! in `../shared/corpus/dev` (see its README). Skips with a message when the
//! corpus is absent.
//!
//! Figures, each printed with the misses behind it:
//! - kind accuracy over every message;
//! - bounce recipient precision and recall over the rows whose recipients
//!   are labelled (a row labelled as another kind expects no bounce
//!   recipient, so a bounce recipient found in human mail counts against
//!   precision);
//! - permanent-vs-temporary accuracy over bounces with a labelled
//!   `permanent`;
//! - reason accuracy over bounces with a labelled reason.
//!
//! Rows marked `label_unstable` (the source's own labels changed between
//! its versions) weigh half.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use facteur::inbound::classify::{classify, Classification, FailedRecipient, Kind};
use serde_json::Value;

const MIN_KIND: f64 = 0.97;
const MIN_PRECISION: f64 = 0.98;
const MIN_RECALL: f64 = 0.95;
const MIN_PERMANENT: f64 = 0.95;
const MIN_REASON: f64 = 0.80;

/// A weighted tally of hits over trials, with the misses named.
#[derive(Default)]
struct Score {
    hit: f64,
    total: f64,
    misses: Vec<String>,
}

impl Score {
    fn add(&mut self, weight: f64, ok: bool, miss: impl FnOnce() -> String) {
        self.total += weight;
        if ok {
            self.hit += weight;
        } else {
            self.misses.push(miss());
        }
    }

    fn ratio(&self) -> f64 {
        if self.total == 0.0 {
            1.0
        } else {
            self.hit / self.total
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev")
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bounce => "bounce",
        Kind::Feedback => "feedback",
        Kind::Autoreply => "autoreply",
        Kind::Human => "human",
    }
}

fn expected_addresses(row: &Value) -> BTreeSet<String> {
    row["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["recipient"].as_str())
        .map(str::to_lowercase)
        .collect()
}

/// Our recipient that answers for the labelled first recipient: the same
/// address when we found it, else our first.
fn counterpart<'a>(row: &Value, got: &'a Classification) -> Option<&'a FailedRecipient> {
    let want = row["recipient"].as_str().map(str::to_lowercase);
    want.and_then(|w| {
        got.recipients
            .iter()
            .find(|r| r.recipient.to_lowercase() == w)
    })
    .or_else(|| got.first())
}

#[derive(Default)]
struct Figures {
    kind: Score,
    tp: f64,
    predicted: f64,
    expected: f64,
    precision_misses: Vec<String>,
    recall_misses: Vec<String>,
    permanent: Score,
    reason: Score,
}

impl Figures {
    fn precision(&self) -> f64 {
        if self.predicted == 0.0 {
            1.0
        } else {
            self.tp / self.predicted
        }
    }

    fn recall(&self) -> f64 {
        if self.expected == 0.0 {
            1.0
        } else {
            self.tp / self.expected
        }
    }

    fn score_row(&mut self, row: &Value, got: &Classification) {
        let file = row["file"].as_str().unwrap_or("?");
        let weight = if row["label_unstable"].as_bool() == Some(true) {
            0.5
        } else {
            1.0
        };
        let want_kind = row["kind"].as_str().unwrap_or("");
        let got_kind = kind_name(got.kind);
        self.kind.add(weight, want_kind == got_kind, || {
            format!("{file}: kind {got_kind}, expected {want_kind}")
        });
        let is_bounce = want_kind == "bounce";
        if row["recipient_labelled"].as_bool() == Some(true) {
            self.score_recipients(row, got, weight);
        }
        if !is_bounce {
            return;
        }
        let ours = counterpart(row, got);
        if let Some(want) = row["permanent"].as_bool() {
            let have = ours.and_then(|r| r.permanent);
            self.permanent.add(weight, have == Some(want), || {
                format!("{file}: permanent {have:?}, expected {want}")
            });
        }
        if let Some(want) = row["reason"].as_str() {
            let have = ours.map(|r| r.reason.as_str()).unwrap_or("-");
            let diag = ours
                .and_then(|r| r.diagnostic.as_deref())
                .unwrap_or("")
                .chars()
                .take(160)
                .collect::<String>();
            self.reason.add(weight, have == want, || {
                format!("{file}: reason {have}, expected {want} [{diag}]")
            });
        }
    }

    fn score_recipients(&mut self, row: &Value, got: &Classification, weight: f64) {
        let file = row["file"].as_str().unwrap_or("?");
        let want: BTreeSet<String> = if row["kind"] == "bounce" {
            expected_addresses(row)
        } else {
            BTreeSet::new()
        };
        let have: BTreeSet<String> = if got.kind == Kind::Bounce {
            got.recipients
                .iter()
                .map(|r| r.recipient.to_lowercase())
                .collect()
        } else {
            BTreeSet::new()
        };
        let tp = want.intersection(&have).count() as f64;
        self.tp += weight * tp;
        self.predicted += weight * have.len() as f64;
        self.expected += weight * want.len() as f64;
        let extra: Vec<_> = have.difference(&want).collect();
        if !extra.is_empty() {
            self.precision_misses
                .push(format!("{file}: found {extra:?}, expected {want:?}"));
        }
        let missing: Vec<_> = want.difference(&have).collect();
        if !missing.is_empty() {
            self.recall_misses
                .push(format!("{file}: missed {missing:?}, found {have:?}"));
        }
    }
}

fn print_misses(title: &str, misses: &[String]) {
    if misses.is_empty() {
        return;
    }
    println!("--- {title} ({})", misses.len());
    for m in misses {
        println!("  {m}");
    }
}

#[test]
fn classifier_on_labelled_corpus() {
    let dir = corpus_dir();
    let Ok(expected) = std::fs::read_to_string(dir.join("expected.jsonl")) else {
        println!(
            "corpus not found at {}: skipping the corpus test",
            dir.display()
        );
        return;
    };
    let mut figures = Figures::default();
    let mut rows = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).expect("expected.jsonl holds JSON lines");
        let file = row["file"].as_str().expect("every row names its file");
        let raw = std::fs::read(dir.join(file)).expect("every labelled file is there");
        let got = classify(&raw);
        figures.score_row(&row, &got);
        rows += 1;
    }
    print_misses("kind", &figures.kind.misses);
    print_misses("recipient precision", &figures.precision_misses);
    print_misses("recipient recall", &figures.recall_misses);
    print_misses("permanent", &figures.permanent.misses);
    print_misses("reason", &figures.reason.misses);
    println!("rows: {rows}");
    println!("kind accuracy: {:.3}", figures.kind.ratio());
    println!(
        "bounce recipient precision: {:.3} recall: {:.3} (tp {:.1}, found {:.1}, labelled {:.1})",
        figures.precision(),
        figures.recall(),
        figures.tp,
        figures.predicted,
        figures.expected
    );
    println!(
        "permanent accuracy: {:.3} over {:.1}",
        figures.permanent.ratio(),
        figures.permanent.total
    );
    println!(
        "reason accuracy: {:.3} over {:.1}",
        figures.reason.ratio(),
        figures.reason.total
    );
    assert!(figures.kind.ratio() >= MIN_KIND, "kind accuracy too low");
    assert!(
        figures.precision() >= MIN_PRECISION,
        "recipient precision too low"
    );
    assert!(figures.recall() >= MIN_RECALL, "recipient recall too low");
    assert!(
        figures.permanent.ratio() >= MIN_PERMANENT,
        "permanent accuracy too low"
    );
    assert!(
        figures.reason.ratio() >= MIN_REASON,
        "reason accuracy too low"
    );
}
