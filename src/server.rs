//! Wiring: opens the spool, starts delivery, serves the API, and shuts
//! down in order.
//!
//! Shutdown order: stop accepting HTTP (and SMTP) connections, stop the
//! scheduler, let SMTP transactions in flight finish under
//! `delivery.shutdown_deadline`, flush the spool, return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::compose::{Composer, Decorate};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::spool::{now_ms, Spool};

/// Runs the service until `shutdown` completes.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::new(cfg.tracking.max_campaigns, 50));
    std::fs::create_dir_all(&cfg.spool.data_dir)
        .map_err(|e| anyhow::anyhow!("spool.data_dir {}: {e}", cfg.spool.data_dir.display()))?;
    let spool = Spool::open(&cfg.spool.data_dir, cfg.spool.cache_mb, metrics.clone())
        .map_err(|e| anyhow::anyhow!("spool.data_dir {}: {e}", cfg.spool.data_dir.display()))?;
    let composer = Arc::new(Composer::new(&cfg.dkim)?);
    let signer = Arc::new(token_signer(&cfg)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let crate::webhooks::Started {
        sink,
        route_retries,
        webhooks,
    } = crate::webhooks::start(&cfg, spool.clone(), metrics.clone(), stop_rx.clone());
    let events = match sink {
        Some(s) => EventBus::new().with_sink(s),
        None => EventBus::new(),
    };
    let decorate: Arc<dyn Decorate> = Arc::new(crate::tracking::Tracker::new(&cfg, signer.clone()));
    let delivery = Delivery::start(
        cfg.clone(),
        spool.clone(),
        metrics.clone(),
        composer,
        decorate,
        events.clone(),
    )?;
    let app = Arc::new(AppState {
        cfg: cfg.clone(),
        spool: spool.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        delivery: Some(delivery.shared().clone()),
        stopping: false.into(),
        idempotency: tokio::sync::Mutex::new(()),
        signer: signer.clone(),
        started: Instant::now(),
    });
    let inbound = crate::inbound::Inbound::new(app.clone(), route_retries)?;
    let router = api::router(app.clone())
        .merge(crate::tracking::endpoints::router(app.clone()))
        .merge(crate::inbound::api::router(inbound.clone()));
    let router = api::with_http_metrics(router, app.clone());

    let listener = TcpListener::bind(cfg.api.listen)
        .await
        .map_err(|e| anyhow::anyhow!("api.listen {}: {e}", cfg.api.listen))?;
    if !cfg.cluster.redis_url.is_empty() {
        tracing::warn!("cluster.redis_url is set, but shared state in Redis is not implemented: this node keeps its own suppressions");
    }
    if cfg.api.keys.is_empty() {
        tracing::warn!("no api.keys configured: the API answers loopback clients only");
    }
    tracing::info!(listen = %cfg.api.listen, data_dir = %cfg.spool.data_dir.display(), "facteur is serving");

    let smtp = crate::inbound::listener::Listener::start(inbound, stop_rx.clone()).await?;
    let compactor = tokio::spawn(compact_loop(spool.clone(), cfg.clone(), stop_rx.clone()));
    let app_for_signal = app.clone();
    let mut http_stop = stop_rx.clone();
    let http = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = http_stop.wait_for(|s| *s).await;
    });
    let http = tokio::spawn(async move { http.await });

    shutdown.await;
    tracing::info!("shutting down: no new requests, finishing transactions in flight");
    app_for_signal.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let deadline = cfg.delivery.shutdown_deadline.0;
    // HTTP requests and inbound SMTP transactions in flight get the same
    // deadline; both may still queue mail, so they end before delivery.
    let smtp_stopped = async {
        if let Some(smtp) = smtp {
            smtp.stop(deadline).await;
        }
    };
    let _ = tokio::join!(tokio::time::timeout(deadline, http), smtp_stopped);
    delivery.shutdown(deadline).await;
    let _ = compactor.await;
    webhooks.join().await;
    spool.flush().await?;
    tracing::info!("spool flushed; bye");
    Ok(())
}

/// The tracking token signer from `tracking.keys` (the first signs), or a
/// random key for this process when none is configured.
fn token_signer(cfg: &Config) -> anyhow::Result<crate::tracking::TokenSigner> {
    let mut keys = Vec::new();
    for k in &cfg.tracking.keys {
        keys.push(
            crate::config::parse_tracking_key(k)
                .map_err(|e| anyhow::anyhow!("tracking.keys: {e}"))?,
        );
    }
    if keys.is_empty() {
        tracing::warn!("no tracking.keys configured: a random key is used; tracking links die with this process");
        let secret: [u8; 32] = rand::random();
        keys.push((0, secret.to_vec()));
    }
    let current = keys[0].0;
    crate::tracking::TokenSigner::new(keys, current)
        .map_err(|e| anyhow::anyhow!("tracking.keys: {e}"))
}

/// Compacts finished messages older than the retention period.
async fn compact_loop(spool: Spool, cfg: Arc<Config>, mut stop: watch::Receiver<bool>) {
    let retention = cfg.spool.retention.0.as_millis() as u64;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let before = now_ms().saturating_sub(retention);
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.compact(before, 10_000)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(compacted = n, "finished messages compacted"),
            Ok(Err(e)) => tracing::error!(error = %e, "compaction failed"),
            _ => {}
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
