//! A connection's life, and what each attempt does to its message.
//!
//! resolve → connect → transactions (one per message, until the queue is
//! empty or the connection has carried its quota) → QUIT. Each outcome is
//! written to the message's timeline: delivered, deferred (with the next
//! due time), bounced or expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn, Instrument};

use super::mx::RouteError;
use super::queue::{Destination, Job};
use super::reply::Outcome;
use super::session::{ConnectError, ConnectOptions, Session};
use super::Shared;
use crate::events::{Event, EventType, MessageEvent, SmtpReply};
use crate::spool::{now_ms, MessageRecord, Suppression, Version};

/// A reserved connection slot (RAII): releasing it on drop frees the
/// destination's and the global counts, and looks for more work.
pub struct Slot {
    shared: Arc<Shared>,
    dest: Arc<Destination>,
    _alive: mpsc::Sender<()>,
}

impl Slot {
    /// Wraps a slot already counted by `Shared::dispatch`.
    pub(super) fn new(
        shared: Arc<Shared>,
        dest: Arc<Destination>,
        alive: mpsc::Sender<()>,
    ) -> Slot {
        Slot {
            shared,
            dest,
            _alive: alive,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.dest.release();
        self.shared
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if !self.shared.stopping() {
            self.shared.dispatch(&self.dest);
        }
        self.shared.wake.notify_one();
    }
}

/// Runs one connection to the slot's destination.
pub async fn run_connection(slot: Slot) {
    let span = info_span!("connection", domain = %slot.dest.domain);
    connection(&slot).instrument(span).await;
}

async fn connection(slot: &Slot) {
    let shared = &slot.shared;
    let dest = &slot.dest;
    let cfg = &shared.cfg.delivery;
    let session = match shared.mx.route(&dest.domain).await {
        Ok(hosts) => {
            let opts = ConnectOptions {
                helo: &cfg.helo_name,
                host: "",
                tls: dest.tls,
                connect_timeout: cfg.connect_timeout.0,
                command_timeout: cfg.command_timeout.0,
                tls_strict: &shared.tls_strict,
                tls_lenient: &shared.tls_lenient,
            };
            let mut last = Outcome::network("no address to connect to");
            let mut found = None;
            'hosts: for host in hosts.iter() {
                let o = ConnectOptions {
                    host: &host.name,
                    ..opts
                };
                for addr in &host.addrs {
                    match Session::connect(*addr, &o).await {
                        Ok(s) => {
                            found = Some(s);
                            break 'hosts;
                        }
                        Err(ConnectError::Network(t)) => last = Outcome::network(t),
                        Err(ConnectError::Refused(r)) => last = Outcome::from_reply(r),
                    }
                }
            }
            match found {
                Some(s) => s,
                None => return fail_queue(slot, last).await,
            }
        }
        Err(RouteError::Permanent(t)) => {
            return fail_queue(
                slot,
                Outcome::Bounced(SmtpReply {
                    code: 0,
                    enhanced: Some("5.1.2".into()),
                    text: t,
                }),
            )
            .await
        }
        Err(RouteError::Temporary(t)) => {
            return fail_queue(
                slot,
                Outcome::Deferred {
                    reply: SmtpReply {
                        code: 0,
                        enhanced: Some("4.4.3".into()),
                        text: t,
                    },
                    slowdown: false,
                },
            )
            .await
        }
    };
    let conns = shared
        .metrics
        .smtp_connections
        .with_label_values(&[&dest.label]);
    conns.inc();
    let session = transactions(slot, session).await;
    conns.dec();
    if let Some(s) = session {
        s.quit().await;
    }
}

/// A message ready to go: read, checked and composed.
struct Prepared {
    job: Job,
    rec: MessageRecord,
    version: Version,
    body: Vec<u8>,
    verp: String,
    span: tracing::Span,
}

/// The transactions of one connection, until the queue is empty, the
/// connection has carried its quota, or it breaks (then `None`).
///
/// While a message's body goes out, the next one at hand (if the rate
/// allows it now) is already prepared, and its envelope follows the body
/// in the same write: on a pipelining server a message costs one round
/// trip.
async fn transactions(slot: &Slot, mut session: Session) -> Option<Session> {
    let shared = &slot.shared;
    let dest = &slot.dest;
    let limit = dest.throttle.messages_per_connection();
    let mut taken = 0;
    let mut flushed = Flushed::default();
    // Taken from the queue but not yet allowed by the rate.
    let mut held: Option<Job> = None;
    // Prepared; its envelope may already be out (the session knows).
    let mut ready: Option<Prepared> = None;
    let mut alive = true;
    while alive {
        let cur = match ready.take() {
            Some(p) => p,
            None => {
                let job = match held.take() {
                    Some(j) => j,
                    None if taken >= limit || shared.stopping() => break,
                    None => match next_job(dest).await {
                        Some(j) => {
                            taken += 1;
                            j
                        }
                        None => break,
                    },
                };
                dest.throttle.acquire().await;
                match prepare(shared, job) {
                    Some(p) => p,
                    None => continue,
                }
            }
        };
        if session.pipelining() && taken < limit && !shared.stopping() {
            if let Some(job) = dest.pop() {
                taken += 1;
                if dest.throttle.try_acquire() {
                    ready = prepare(shared, job);
                } else {
                    held = Some(job);
                }
            }
        }
        let then = ready
            .as_ref()
            .map(|p| (p.verp.as_str(), p.rec.email.as_str()));
        // The attempt's duration: its SMTP transaction (whose envelope may
        // have gone out behind the previous body).
        let started = Instant::now();
        let sent = session
            .send(&cur.verp, &cur.rec.email, &cur.body, then)
            .instrument(cur.span.clone())
            .await;
        let (outcome, keep) = match sent.outcome {
            Ok(o) => (o, true),
            Err(o) => (o, false),
        };
        alive = keep;
        // The previous outcome of this connection is on disk before this
        // one is written.
        flushed.wait().await;
        {
            let _e = cur.span.enter();
            debug!(outcome = outcome.class(), "attempt finished");
            let via = serde_json::json!({"mx": session.peer.0, "ip": session.peer.1.to_string(), "tls": session.tls});
            apply(
                shared,
                dest,
                (&cur.rec, Some(&cur.version)),
                &cur.job,
                outcome,
                started,
                Some(via),
            );
        }
        flushed.0 = Some(shared.spool.flush_ticket());
        shared.release(&cur.job.id);
    }
    flushed.wait().await;
    // Jobs this connection will not carry go back to the scheduler.
    for job in ready.map(|p| p.job).into_iter().chain(held) {
        shared.release(&job.id);
    }
    alive.then_some(session)
}

/// The flush of a connection's last outcome, still running.
///
/// An outcome is written, then its flush is requested and left to run while
/// the connection carries the next message; it is awaited before the next
/// outcome is written. So after a crash at most two messages per connection
/// (the one in its SMTP transaction, and the one whose outcome was still
/// being flushed) can be delivered twice, and flushes overlap SMTP.
#[derive(Default)]
struct Flushed(Option<crate::spool::FlushTicket>);

impl Flushed {
    /// Waits for the pending flush, if any.
    async fn wait(&mut self) {
        if let Some(t) = self.0.take() {
            if let Err(e) = t.wait().await {
                warn!(error = %e, "cannot flush an attempt outcome");
            }
        }
    }
}

/// The next job, waiting a moment for the scheduler when the queue is
/// empty, so that a connection is reused across scheduler ticks.
async fn next_job(dest: &Destination) -> Option<Job> {
    for _ in 0..5 {
        if let Some(j) = dest.pop() {
            return Some(j);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The destination cannot be reached: every waiting job (up to one
/// connection's worth) gets the same outcome.
async fn fail_queue(slot: &Slot, outcome: Outcome) {
    let limit = slot.dest.throttle.messages_per_connection();
    for _ in 0..limit {
        let Some(job) = slot.dest.pop() else { break };
        let _span = info_span!("message", id = %job.id).entered();
        if let Some((rec, version)) = load(&slot.shared, &job) {
            apply(
                &slot.shared,
                &slot.dest,
                (&rec, Some(&version)),
                &job,
                outcome.clone(),
                Instant::now(),
                None,
            );
        }
        slot.shared.release(&job.id);
    }
}

/// The record of a job if it still needs an attempt.
fn load(shared: &Shared, job: &Job) -> Option<(MessageRecord, Version)> {
    match shared.spool.message_with_version(&job.id) {
        Ok(Some((rec, v))) if !rec.state.is_final() && rec.due_ms == job.due_ms => Some((rec, v)),
        Ok(_) => {
            // Finished or rescheduled since it was queued: the entry that
            // produced the job is stale.
            if let Err(e) = shared.spool.drop_due(&job.key) {
                warn!(id = %job.id, error = %e, "cannot drop a stale due entry");
            }
            None
        }
        Err(e) => {
            warn!(id = %job.id, error = %e, "cannot read message");
            None
        }
    }
}

/// Reads a job's message and composes it. `None` when there is nothing to
/// send: already done or moved (stale job), expired, or not composable;
/// the last two are finished here. The job is released in all these cases.
fn prepare(shared: &Arc<Shared>, job: Job) -> Option<Prepared> {
    let Some((rec, version)) = load(shared, &job) else {
        shared.release(&job.id);
        return None;
    };
    let span = info_span!("message", id = %rec.id);
    let _e = span.enter();
    if expired(shared, &rec) {
        let ev = Event::now(
            EventType::Expired,
            Some("max_age reached before delivery".to_string()),
        );
        finish(shared, (&rec, Some(&version)), &job, ev);
        shared.metrics.expired.inc();
        shared.release(&job.id);
        return None;
    }
    let body = match compose(shared, &rec) {
        Ok(b) => b,
        Err(reason) => {
            let ev = Event::now(EventType::Dropped, Some(reason));
            finish(shared, (&rec, Some(&version)), &job, ev);
            shared.release(&job.id);
            return None;
        }
    };
    let verp = format!("bounces+{}@{}", rec.id, shared.cfg.delivery.bounce_domain);
    drop(_e);
    Some(Prepared {
        job,
        rec,
        version,
        body,
        verp,
        span,
    })
}

fn expired(shared: &Shared, rec: &MessageRecord) -> bool {
    let max_age = shared.cfg.delivery.max_age.0.as_millis() as u64;
    now_ms() > rec.created_ms.saturating_add(max_age)
}

fn compose(shared: &Shared, rec: &MessageRecord) -> Result<Vec<u8>, String> {
    let t = shared
        .spool
        .template(&rec.batch)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("template of batch {} is missing", rec.batch))?;
    let extras = shared.decorate.extras(rec, &t);
    shared
        .composer
        .compose(rec, &t, &extras)
        .map_err(|e| format!("cannot compose: {e}"))
}

/// Writes an attempt's outcome to the message, the index and the metrics.
fn apply(
    shared: &Shared,
    dest: &Destination,
    msg: Msg<'_>,
    job: &Job,
    outcome: Outcome,
    started: Instant,
    via: Option<serde_json::Value>,
) {
    let m = &shared.metrics;
    let with_via = |ev: Event| match &via {
        Some(v) => ev.with_data(v.clone()),
        None => ev,
    };
    m.smtp_replies.with_label_values(&[outcome.class()]).inc();
    let elapsed = started.elapsed().as_secs_f64();
    match outcome {
        Outcome::Delivered(reply) => {
            m.attempt_duration
                .with_label_values(&["delivered"])
                .observe(elapsed);
            m.delivered.inc();
            let ev = with_via(Event::now(EventType::Delivered, None).with_reply(reply));
            finish(shared, msg, job, ev);
        }
        Outcome::Bounced(reply) => {
            m.attempt_duration
                .with_label_values(&["bounced"])
                .observe(elapsed);
            m.bounced.with_label_values(&[&dest.label]).inc();
            if is_unknown_user(&reply) {
                let s = Suppression {
                    reason: "bounce".into(),
                    scope: "all".into(),
                    at_ms: now_ms(),
                    message_id: Some(msg.0.id.clone()),
                };
                if let Err(e) = shared.spool.suppress(&msg.0.email, &s) {
                    warn!(error = %e, "cannot record suppression");
                }
            }
            let ev = Event::now(
                EventType::Bounced,
                Some("permanent failure at delivery".to_string()),
            )
            .with_reply(reply);
            finish(shared, msg, job, with_via(ev));
        }
        Outcome::Deferred { reply, slowdown } => {
            m.attempt_duration
                .with_label_values(&["deferred"])
                .observe(elapsed);
            let mut reason = "temporary failure".to_string();
            if slowdown {
                dest.throttle
                    .slow_down(shared.cfg.delivery.slowdown_period.0);
                reason = format!("temporary failure; destination {} slowed down", dest.domain);
            }
            defer(shared, dest, msg, job, reply, reason);
        }
    }
}

fn defer(
    shared: &Shared,
    dest: &Destination,
    msg: Msg<'_>,
    job: &Job,
    reply: SmtpReply,
    reason: String,
) {
    let rec = msg.0;
    let cfg = &shared.cfg.delivery;
    let delay = cfg.retry_delay(rec.attempts + 1);
    let jitter = cfg.retry_jitter;
    let factor = if jitter > 0.0 {
        rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter)
    } else {
        1.0
    };
    let due = now_ms() + (delay.as_millis() as f64 * factor) as u64;
    if due
        > rec
            .created_ms
            .saturating_add(cfg.max_age.0.as_millis() as u64)
    {
        shared.metrics.expired.inc();
        let ev = Event::now(
            EventType::Expired,
            Some(format!("max_age reached; last failure: {reason}")),
        )
        .with_reply(reply);
        finish(shared, msg, job, ev);
        return;
    }
    shared
        .metrics
        .deferred
        .with_label_values(&[&dest.label])
        .inc();
    let ev = Event::now(EventType::Deferred, Some(reason)).with_reply(reply);
    let updated = update(shared, msg, |r| {
        r.due_ms = due;
        r.attempts += 1;
        r.record(ev.clone());
    });
    match updated {
        Ok(Some(r)) => {
            if let Err(e) = shared.spool.reschedule(&r, job.due_ms) {
                warn!(error = %e, "cannot reschedule");
            }
            publish(shared, &r, ev);
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot record deferral"),
    }
}

/// A message as a connection read it, and the version it was read at.
type Msg<'a> = (&'a MessageRecord, Option<&'a Version>);

/// Changes a stored message, from the copy at hand when there is one.
fn update(
    shared: &Shared,
    (rec, version): Msg<'_>,
    change: impl FnMut(&mut MessageRecord),
) -> crate::spool::Result<Option<MessageRecord>> {
    match version {
        Some(v) => shared.spool.update_message_at(rec, v, change),
        None => shared.spool.update_message(&rec.id, change),
    }
}

/// Records a final event and takes the message out of the due index.
pub(crate) fn finish(shared: &Shared, msg: Msg<'_>, job: &Job, ev: Event) {
    let delivered = ev.kind == EventType::Delivered;
    // An outcome that carries a reply (or a network error) ends an attempt.
    let attempted = ev.reply.is_some();
    let updated = update(shared, msg, |r| {
        if delivered {
            r.delivered_ms = Some(now_ms());
        }
        if attempted {
            r.attempts += 1;
        }
        r.record(ev.clone());
    });
    match updated {
        Ok(Some(r)) => {
            if let Err(e) = shared.spool.finish(&r, job.due_ms) {
                warn!(error = %e, "cannot finish message");
            }
            publish(shared, &r, ev);
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot record outcome"),
    }
}

fn publish(shared: &Shared, rec: &MessageRecord, event: Event) {
    shared.events.publish(MessageEvent::of(rec, event));
}

/// A 5xx that says the mailbox does not exist: the address is suppressed.
fn is_unknown_user(reply: &SmtpReply) -> bool {
    match reply.enhanced.as_deref() {
        Some(e) => matches!(e, "5.1.1" | "5.1.10" | "5.1.2" | "5.1.6"),
        None => {
            let t = reply.text.to_ascii_lowercase();
            reply.code == 550
                && (t.contains("no such user")
                    || t.contains("user unknown")
                    || t.contains("does not exist"))
        }
    }
}
