//! Building the application from its settings, running it, and stopping it without losing events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::api::access::{AccessConfig, AccessControl};
use crate::api::limits::RequestLimits;
use crate::api::{self, AppState, Edge, Limits};
use crate::catalogue::Catalogue;
use crate::config::Settings;
use crate::context::ContextStore;
use crate::handoff::Handoff;
use crate::handoff::journal::{Journal, JournalSource};
use crate::health::Health;
use crate::ingest::Ingest;
use crate::rerank::ReRankingService;
use crate::writer::{self, WriterHandle};
use crate::{db, server, telemetry};

/// Most events in one `POST /api/events`.
pub const MAX_BATCH_EVENTS: usize = 500;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    handoff: Arc<dyn Handoff>,
    writer: Option<WriterHandle>,
    health: Health,
    settings: Settings,
}

/// How long a service whose component died keeps answering (its readiness red, so that a load
/// balancer stops sending to it) before it stops.
pub const DEATH_GRACE: Duration = Duration::from_secs(2);

impl Application {
    /// Prepares PostgreSQL (database, migrations), opens and recovers the journal, starts the
    /// background writer and binds the listener. Redis is not needed to start.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        telemetry::metrics_handle();
        tracing::info!(?settings, "starting");
        let health = Health::default();
        let database_url = &settings.database.database_url;
        let pool = db::prepare(database_url, settings.database_max_connections).await?;

        let journal_dir = settings.journal_dir.display().to_string();
        let (journal, reader, recovery) = Journal::open(settings.journal(), &health)
            .with_context(|| format!("could not open the journal at {journal_dir}"))?;
        if recovery.records > 0 || recovery.torn_bytes > 0 || !recovery.quarantined.is_empty() {
            tracing::info!(
                records = recovery.records,
                torn_bytes = recovery.torn_bytes,
                quarantined = recovery.quarantined.len(),
                journal = %journal_dir,
                "recovered the journal; its events are written to PostgreSQL now"
            );
        }

        let context = ContextStore::new(&settings.redis_url, settings.context(), &health)
            .context("REDIS_URL is not a valid Redis URL")?;
        if let Err(error) = context.ping().await {
            tracing::warn!(%error, "Redis is unreachable; serving without the realtime context until it is back");
        }

        let catalogue = Catalogue::new(pool.clone(), settings.catalogue());
        let writer = writer::start(
            pool.clone(),
            catalogue.clone(),
            JournalSource::new(journal.clone(), reader),
            settings.writer(),
            &health,
        );
        let handoff: Arc<dyn Handoff> = Arc::new(journal);
        let rerank = ReRankingService::new(context.clone(), catalogue.clone(), &settings.rerank());
        let ingest = Ingest {
            catalogue,
            context,
            handoff: handoff.clone(),
            unknown_items: settings.unknown_items,
        };
        let state = AppState {
            ingest,
            rerank: Arc::new(rerank),
            pool,
            health: health.clone(),
            writer: Some(writer.status()),
            limits: Limits {
                max_body_bytes: settings.max_body_bytes,
                max_batch_body_bytes: settings.max_batch_body_bytes,
                max_batch_events: MAX_BATCH_EVENTS,
                metadata: settings.metadata_limits(),
            },
        };
        let address = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("could not listen on {address}"))?;
        Ok(Self {
            listener,
            router: api::router(state, edge(&settings)),
            handoff,
            writer: Some(writer),
            health,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests finish,
    /// and writes everything the journal holds to PostgreSQL before returning. Both steps share
    /// one deadline, `--shutdown-timeout-secs` after the signal; what is not written by then stays
    /// in the journal for the next start.
    ///
    /// If a background component dies, the service answers for [`DEATH_GRACE`] more (readiness
    /// red), stops without draining, and returns the death as an error: the process exits
    /// non-zero, and the journal replays at the next start.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let timeout = self.settings.shutdown_timeout();
        let address = self.listener.local_addr()?;
        tracing::info!(%address, "listening");

        let limits = self.settings.connection_limits();
        let signalled = Arc::new(std::sync::OnceLock::new());
        let health = self.health.clone();
        let shutdown = {
            let signalled = signalled.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    _ = health.died() => tokio::time::sleep(DEATH_GRACE).await,
                }
                health.begin_stopping();
                let _ = signalled.set(Instant::now());
            }
        };
        server::serve(self.listener, self.router, limits, shutdown, timeout).await;
        self.health.begin_stopping();
        let deadline = *signalled.get_or_init(Instant::now) + timeout;

        self.handoff.close().await;
        if let Some(death) = self.health.death() {
            // The writer may be the one that died, and the hand-off keeps what is unwritten: no
            // drain.
            return Err(anyhow::anyhow!(
                "{death}; stopped so that a supervisor restarts the service (the hand-off keeps what is unwritten: {:?})",
                self.handoff.state()
            ));
        }
        let Some(writer) = self.writer else {
            tracing::info!("every accepted event is in the hand-off; bye");
            return Ok(());
        };
        tracing::info!(handoff = ?self.handoff.state(), "writing the backlog to PostgreSQL");
        if writer
            .drain(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            tracing::info!("all accepted events are stored; bye");
        } else {
            tracing::warn!(
                handoff = ?self.handoff.state(),
                "PostgreSQL did not take the whole backlog in time; it stays in the hand-off and is written at the next start"
            );
        }
        Ok(())
    }
}

/// The API's edge from the settings: limits, CORS, keys, rate limits.
fn edge(settings: &Settings) -> Edge {
    let access = Arc::new(AccessControl::new(&AccessConfig {
        api_keys: settings.api_keys.clone(),
        per_key_per_second: settings.rate_limit_per_key,
        per_address_per_second: settings.rate_limit_per_ip,
        burst: settings.rate_limit_burst,
        trust_forwarded_for: settings.trust_forwarded_for,
    }));
    let idle = Arc::downgrade(&access);
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        while let Some(access) = {
            every_minute.tick().await;
            idle.upgrade()
        } {
            access.forget_idle();
        }
    });
    Edge {
        limits: RequestLimits::new(
            settings.max_concurrent_requests,
            Duration::from_secs(settings.request_timeout_secs),
        ),
        access,
        cors_origins: settings.cors_origins.clone(),
        body_timeout: Duration::from_secs(settings.body_read_timeout_secs),
        demo: settings.demo,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
