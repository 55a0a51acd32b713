//! The sled spool: the only module that knows sled.
//!
//! # Layout
//!
//! One tree, keys with a one-letter prefix, so that one [`sled::Batch`]
//! writes a whole request atomically:
//!
//! | key | value |
//! | --- | --- |
//! | `m/{id}` | [`MessageRecord`] (JSON) |
//! | `t/{batch}` | [`Template`] shared by every recipient of a request |
//! | `d/{lane}{due_ms BE}{id}` | due-time index the scheduler scans |
//! | `i/{idempotency key}` | the first answer to that key |
//! | `s/{scope}/{email}` | [`Suppression`] |
//! | `u/{campaign}/{email}` | uniqueness marker of a campaign |
//! | `f/{finished_ms BE}{id}` | finished messages, for compaction |
//! | `k/{key}` | small markers (acknowledgements sent, unique opens) |
//! | `e/{id}/{seq BE}` | opens and clicks of a message, one small record each |
//! | `r/{email}/{created_ms BE}{id}` | id: messages by recipient, for late bounces |
//!
//! Durability: [`Spool::accept`] returns only after a flush that covers the
//! write; concurrent callers share one flush ([`flusher`]). Delivery asks
//! for a flush after each outcome and waits for it before the next outcome
//! on the same connection ([`FlushTicket`]). Other writes (events) are
//! flushed by sled every few milliseconds.

mod flusher;
pub mod records;

pub use flusher::FlushTicket;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use thiserror::Error;

pub use records::{Mailbox, MessageRecord, Priority, State, Suppression, Template};

use crate::events::Event;
use crate::metrics::Metrics;

/// Spool failures. They are internal: callers log them and answer 5xx or retry.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// sled failed (I/O, corruption).
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record could not be read back.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The flusher is gone (shutting down).
    #[error("spool is closed")]
    Closed,
    /// A bounded queue is full.
    #[error("queue is full")]
    Full,
}

/// Result of spool operations.
pub type Result<T> = std::result::Result<T, SpoolError>;

/// The stored form of a message when it was read (see
/// [`Spool::update_message_at`]).
#[derive(Debug, Clone)]
pub struct Version(sled::IVec);

/// A due-index entry: which message, when, in which lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    /// The raw key, to resume a scan after it.
    pub key: Vec<u8>,
    /// Priority lane.
    pub lane: u8,
    /// Due time, unix ms.
    pub due_ms: u64,
    /// Message id.
    pub id: String,
    /// Recipient domain (the destination), kept in the entry so that the
    /// scheduler need not read the message; empty if unknown.
    pub domain: String,
}

/// One request to accept: a template and its messages.
pub struct AcceptBatch {
    /// Batch id.
    pub batch: String,
    /// The shared template.
    pub template: Template,
    /// The messages; those in a final state (suppressed, dropped) get no due key.
    pub messages: Vec<MessageRecord>,
    /// Idempotency key and the answer to store for it.
    pub idempotency: Option<(String, serde_json::Value)>,
    /// Campaign uniqueness markers to set: (campaign, email, id).
    pub unique: Vec<(String, String, String)>,
}

/// The spool: a handle to the sled database. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    db: sled::Db,
    tree: sled::Tree,
    flusher: flusher::Flusher,
    /// Templates are read for every delivery: keep the recent ones decoded.
    /// A std mutex: held for a map lookup only, never across an await.
    templates: Arc<Mutex<HashMap<String, Arc<Template>>>>,
}

const TEMPLATE_CACHE: usize = 4096;

fn mkey(id: &str) -> Vec<u8> {
    [b"m/", id.as_bytes()].concat()
}

fn tkey(batch: &str) -> Vec<u8> {
    [b"t/", batch.as_bytes()].concat()
}

/// The due-index key of a message.
fn dkey(lane: u8, due_ms: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + id.len());
    k.extend_from_slice(b"d/");
    k.push(lane);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn fkey(at_ms: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + id.len());
    k.extend_from_slice(b"f/");
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of a recipient's entries in the `r/` index. An address has an
/// `@` and its domain no `/`, so one address's prefix never covers another's.
fn rprefix(email: &str) -> Vec<u8> {
    format!("r/{}/", email.to_ascii_lowercase()).into_bytes()
}

/// The recipient-index key of a message.
fn rkey(email: &str, created_ms: u64, id: &str) -> Vec<u8> {
    let mut k = rprefix(email);
    k.extend_from_slice(&created_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The prefix of a message's tracking log: ids hold no `/`, so one
/// message's prefix never covers another's.
fn ekey_prefix(id: &str) -> Vec<u8> {
    [b"e/", id.as_bytes(), b"/"].concat()
}

fn skey(scope: &str, email: &str) -> Vec<u8> {
    format!("s/{scope}/{}", email.to_ascii_lowercase()).into_bytes()
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|source| SpoolError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Spool {
    /// Opens (or creates) the spool under `dir`.
    pub fn open(dir: &Path, cache_mb: u64, metrics: Arc<Metrics>) -> Result<Spool> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mb * 1024 * 1024)
            .flush_every_ms(Some(50))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("main")?;
        let flusher = flusher::Flusher::start(db.clone(), metrics).map_err(sled::Error::Io)?;
        Ok(Spool {
            db,
            tree,
            flusher,
            templates: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Writes a whole request in one atomic batch and waits until it is on
    /// disk. Nothing is written if anything fails.
    pub async fn accept(&self, b: AcceptBatch) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(tkey(&b.batch), encode(&b.template));
        for m in &b.messages {
            batch.insert(mkey(&m.id), encode(m));
            if m.state.is_final() {
                batch.insert(fkey(now_ms(), &m.id), b"".to_vec());
            } else {
                batch.insert(
                    dkey(m.priority.lane(), m.due_ms, &m.id),
                    m.domain.as_bytes(),
                );
                batch.insert(rkey(&m.email, m.created_ms, &m.id), m.id.as_bytes());
            }
        }
        if let Some((key, answer)) = &b.idempotency {
            batch.insert([b"i/", key.as_bytes()].concat(), encode(answer));
        }
        for (campaign, email, id) in &b.unique {
            batch.insert(
                format!("u/{campaign}/{}", email.to_ascii_lowercase()).into_bytes(),
                id.as_bytes(),
            );
        }
        self.tree.apply_batch(batch)?;
        self.flusher.flush().await
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await
    }

    /// Asks for a flush of everything written so far, to be awaited later
    /// (group commit overlapping other work).
    pub fn flush_ticket(&self) -> FlushTicket {
        self.flusher.ticket()
    }

    /// The answer stored for an idempotency key.
    pub fn idempotent_answer(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let k = [b"i/", key.as_bytes()].concat();
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// The message that already carries `campaign` to `email`, if any.
    pub fn campaign_sent_to(&self, campaign: &str, email: &str) -> Result<Option<String>> {
        let k = format!("u/{campaign}/{}", email.to_ascii_lowercase());
        Ok(self
            .tree
            .get(k)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A message by id.
    pub fn message(&self, id: &str) -> Result<Option<MessageRecord>> {
        Ok(self.message_with_version(id)?.map(|(rec, _)| rec))
    }

    /// A message and the version it was read at, for
    /// [`Spool::update_message_at`].
    pub fn message_with_version(&self, id: &str) -> Result<Option<(MessageRecord, Version)>> {
        let k = mkey(id);
        match self.tree.get(&k)? {
            Some(v) => Ok(Some((decode(&k, &v)?, Version(v)))),
            None => Ok(None),
        }
    }

    /// The latest message sent (queued) to `email` and created at or after
    /// `not_before_ms`: how a bounce that names only its recipient finds
    /// its message. Messages never queued (suppressed, dropped) are not
    /// indexed.
    pub fn latest_message_for(&self, email: &str, not_before_ms: u64) -> Result<Option<String>> {
        let prefix = rprefix(email);
        let Some(item) = self.tree.scan_prefix(&prefix).next_back() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let created = k
            .get(prefix.len()..prefix.len() + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if created < not_before_ms {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&v).into_owned()))
    }

    /// The template of a batch (cached).
    pub fn template(&self, batch: &str) -> Result<Option<Arc<Template>>> {
        if let Some(t) = self
            .templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(batch)
        {
            return Ok(Some(t.clone()));
        }
        let k = tkey(batch);
        let Some(v) = self.tree.get(&k)? else {
            return Ok(None);
        };
        let t: Arc<Template> = Arc::new(decode(&k, &v)?);
        let mut cache = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TEMPLATE_CACHE {
            cache.clear();
        }
        cache.insert(batch.to_string(), t.clone());
        Ok(Some(t))
    }

    /// Applies `change` to a message atomically (read-modify-write) and
    /// returns the new record; `None` if there is no such message.
    pub fn update_message(
        &self,
        id: &str,
        mut change: impl FnMut(&mut MessageRecord),
    ) -> Result<Option<MessageRecord>> {
        let k = mkey(id);
        let mut decode_error = None;
        let mut updated = None;
        // fetch_and_update may run the closure more than once (on a
        // concurrent change); the last run's record is the one stored.
        self.tree.fetch_and_update(&k, |old| {
            let old = old?;
            match serde_json::from_slice::<MessageRecord>(old) {
                Ok(mut rec) => {
                    change(&mut rec);
                    let bytes = encode(&rec);
                    updated = Some(rec);
                    decode_error = None;
                    Some(bytes)
                }
                Err(e) => {
                    decode_error = Some(e);
                    updated = None;
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(source) = decode_error {
            return Err(SpoolError::Corrupt {
                key: id.to_string(),
                source,
            });
        }
        Ok(updated)
    }

    /// Applies `change` to `rec`, read at `version`, and stores it if the
    /// stored message is still that version; otherwise (it changed since)
    /// falls back to [`Spool::update_message`]. Saves decoding the record
    /// again when the caller holds it already.
    pub fn update_message_at(
        &self,
        rec: &MessageRecord,
        version: &Version,
        mut change: impl FnMut(&mut MessageRecord),
    ) -> Result<Option<MessageRecord>> {
        let mut new = rec.clone();
        change(&mut new);
        let k = mkey(&rec.id);
        match self
            .tree
            .compare_and_swap(&k, Some(&version.0), Some(encode(&new)))?
        {
            Ok(()) => Ok(Some(new)),
            Err(_) => self.update_message(&rec.id, change),
        }
    }

    /// Appends an event to a message's timeline.
    pub fn add_event(&self, id: &str, event: Event) -> Result<Option<MessageRecord>> {
        self.update_message(id, |rec| rec.record(event.clone()))
    }

    /// Appends an open or a click to the message's tracking log
    /// (`e/{id}/{seq}`). A small write of its own: the message record is
    /// neither rewritten nor grown, so that a message opened a thousand times
    /// costs a thousand small inserts, not a thousand rewrites of a growing
    /// record, and tracking never contends with delivery for the record.
    pub fn add_tracking_event(&self, id: &str, event: &Event) -> Result<()> {
        let seq = self.db.generate_id()?;
        let mut k = ekey_prefix(id);
        k.extend_from_slice(&seq.to_be_bytes());
        self.tree.insert(k, encode(event))?;
        Ok(())
    }

    /// The tracking log of a message (see [`Spool::add_tracking_event`]),
    /// oldest first.
    pub fn tracking_events(&self, id: &str) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(ekey_prefix(id)) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// How many events the tracking log of a message holds.
    pub fn tracking_event_count(&self, id: &str) -> usize {
        self.tree.scan_prefix(ekey_prefix(id)).keys().count()
    }

    /// Moves a message's due-index entry: `from` (the old due time) is
    /// removed after the new one is written, so a crash leaves at worst a
    /// stale entry, which the scheduler drops.
    pub fn reschedule(&self, rec: &MessageRecord, old_due_ms: u64) -> Result<()> {
        self.tree.insert(
            dkey(rec.priority.lane(), rec.due_ms, &rec.id),
            rec.domain.as_bytes(),
        )?;
        if old_due_ms != rec.due_ms {
            self.tree
                .remove(dkey(rec.priority.lane(), old_due_ms, &rec.id))?;
        }
        Ok(())
    }

    /// Removes a finished message from the due index and records it for
    /// compaction.
    ///
    /// Two single-key writes, not a batch: sled applies a batch under a
    /// lock that stops every other reader and writer, which delivery cannot
    /// afford per message. The order makes a crash between them harmless: a
    /// due entry left behind points at a finished message, which the
    /// scheduler drops.
    pub fn finish(&self, rec: &MessageRecord, due_ms: u64) -> Result<()> {
        self.tree.insert(fkey(now_ms(), &rec.id), b"")?;
        self.tree
            .remove(dkey(rec.priority.lane(), due_ms, &rec.id))?;
        Ok(())
    }

    /// Drops a due-index entry (by its key) that no longer matches its
    /// message.
    pub fn drop_due(&self, key: &[u8]) -> Result<()> {
        if key.starts_with(b"d/") {
            self.tree.remove(key)?;
        }
        Ok(())
    }

    /// Due-index entries of `lane` due at or before `until_ms`, after
    /// `after` (exclusive) when given, at most `limit`.
    pub fn due(
        &self,
        lane: u8,
        after: Option<&[u8]>,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        let start = match after {
            Some(k) => {
                let mut k = k.to_vec();
                k.push(0);
                k
            }
            None => dkey(lane, 0, ""),
        };
        let end = dkey(lane, until_ms.saturating_add(1), "");
        let mut out = Vec::new();
        for item in self.tree.range(start..end) {
            let (k, v) = item?;
            if k.len() < 11 {
                continue;
            }
            let due_ms = u64::from_be_bytes(k[3..11].try_into().expect("8 bytes"));
            let id = String::from_utf8_lossy(&k[11..]).into_owned();
            let domain = String::from_utf8_lossy(&v).into_owned();
            out.push(DueEntry {
                domain,
                key: k.to_vec(),
                lane,
                due_ms,
                id,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The number of entries in the due index (messages not finished).
    pub fn pending_count(&self) -> usize {
        self.tree.scan_prefix(b"d/").count()
    }

    /// Entries of the due index due by `now_ms`, and due later.
    pub fn pending_counts(&self, now_ms: u64) -> (usize, usize) {
        let (mut now, mut later) = (0, 0);
        for (k, _) in self.tree.scan_prefix(b"d/").flatten() {
            let due = k
                .get(3..11)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if due <= now_ms {
                now += 1;
            } else {
                later += 1;
            }
        }
        (now, later)
    }

    /// The earliest due time in the index.
    pub fn oldest_due(&self) -> Result<Option<u64>> {
        let mut oldest = None;
        for lane in 0..3u8 {
            if let Some(e) = self.due(lane, None, u64::MAX - 1, 1)?.first() {
                oldest = Some(oldest.map_or(e.due_ms, |o: u64| o.min(e.due_ms)));
            }
        }
        Ok(oldest)
    }

    /// Puts an address on the suppression list.
    pub fn suppress(&self, email: &str, s: &Suppression) -> Result<()> {
        self.tree.insert(skey(&s.scope, email), encode(s))?;
        Ok(())
    }

    /// The suppression of `email` in `scope`, if any.
    pub fn suppression(&self, scope: &str, email: &str) -> Result<Option<Suppression>> {
        let k = skey(scope, email);
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Lifts a suppression.
    pub fn unsuppress(&self, scope: &str, email: &str) -> Result<bool> {
        Ok(self.tree.remove(skey(scope, email))?.is_some())
    }

    /// Sets a small marker (`k/{key}`) unless it exists; returns true if it
    /// was newly set. Used for unique opens and acknowledgement periods.
    pub fn mark_once(&self, key: &str, value_ms: u64) -> Result<bool> {
        let k = format!("k/{key}").into_bytes();
        let r = self.tree.compare_and_swap(
            k,
            None as Option<&[u8]>,
            Some(&value_ms.to_be_bytes()[..]),
        )?;
        Ok(r.is_ok())
    }

    /// Reads a marker's value.
    pub fn marker(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .tree
            .get(format!("k/{key}"))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Sets a marker's value.
    pub fn set_marker(&self, key: &str, value_ms: u64) -> Result<()> {
        self.tree
            .insert(format!("k/{key}"), &value_ms.to_be_bytes())?;
        Ok(())
    }

    /// Compacts messages finished before `before_ms`: drops their variables
    /// and, once a batch has no message left that needs it, its template.
    /// Returns how many messages were compacted.
    pub fn compact(&self, before_ms: u64, limit: usize) -> Result<usize> {
        let end = fkey(before_ms, "");
        let mut done = 0;
        for item in self.tree.range(b"f/".to_vec()..end) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[10..]).into_owned();
            let mut batch_id = None;
            self.update_message(&id, |rec| {
                if !rec.compacted {
                    rec.vars = serde_json::Value::Null;
                    rec.compacted = true;
                    batch_id = Some(rec.batch.clone());
                }
            })?;
            if let Some(b) = batch_id {
                self.release_template(&b)?;
            }
            self.tree.remove(&k)?;
            done += 1;
            if done >= limit {
                break;
            }
        }
        Ok(done)
    }

    fn release_template(&self, batch: &str) -> Result<()> {
        let k = tkey(batch);
        let mut gone = false;
        self.tree.fetch_and_update(&k, |old| {
            let old = old?;
            let mut t: Template = serde_json::from_slice(old).ok()?;
            t.recipients = t.recipients.saturating_sub(1);
            if t.recipients == 0 {
                gone = true;
                None
            } else {
                Some(encode(&t))
            }
        })?;
        if gone {
            self.templates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(batch);
        }
        Ok(())
    }

    /// Number of keys stored: lets tests prove a refused request wrote nothing.
    pub fn key_count(&self) -> usize {
        self.tree.len()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Checks that the spool can be written (for `/readyz`).
    pub fn writable(&self) -> bool {
        self.tree
            .insert(b"k/readyz", &now_ms().to_be_bytes())
            .is_ok()
    }

    /// Appends to a durable queue (`q/{name}/{seq}`); returns the sequence.
    pub fn enqueue(&self, name: &str, value: &[u8]) -> Result<u64> {
        let seq = self.db.generate_id()?;
        let mut k = format!("q/{name}/").into_bytes();
        k.extend_from_slice(&seq.to_be_bytes());
        self.tree.insert(k, value)?;
        Ok(seq)
    }

    /// The number of items in a durable queue (reads them all).
    pub fn queue_len(&self, name: &str) -> usize {
        self.tree
            .scan_prefix(format!("q/{name}/").into_bytes())
            .keys()
            .count()
    }

    /// Up to `limit` items of a durable queue, oldest first.
    pub fn queue_items(&self, name: &str, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let prefix = format!("q/{name}/").into_bytes();
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix).take(limit) {
            let (k, v) = item?;
            let seq = k[prefix.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    /// Replaces or removes (`None`) a queue item.
    pub fn queue_set(&self, name: &str, seq: u64, value: Option<&[u8]>) -> Result<()> {
        let mut k = format!("q/{name}/").into_bytes();
        k.extend_from_slice(&seq.to_be_bytes());
        match value {
            Some(v) => self.tree.insert(k, v)?,
            None => self.tree.remove(k)?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
