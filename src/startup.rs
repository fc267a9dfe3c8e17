//! Building the application from its settings, running it, and stopping it without losing events.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState, Limits};
use crate::catalogue::Catalogue;
use crate::config::Settings;
use crate::context::ContextStore;
use crate::ingest::Ingest;
use crate::journal::Journal;
use crate::rerank::ReRankingService;
use crate::writer::{self, WriterHandle};
use crate::{db, telemetry};

/// Most events in one `POST /api/events`.
pub const MAX_BATCH_EVENTS: usize = 500;
/// Largest body of one `POST /api/events`.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    journal: Journal,
    writer: WriterHandle,
    settings: Settings,
}

impl Application {
    /// Prepares PostgreSQL (database, migrations), opens and recovers the journal, starts the
    /// background writer and binds the listener. Redis is not needed to start.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        telemetry::metrics_handle();
        let database_url = &settings.database.database_url;
        let pool = db::prepare(database_url, settings.database_max_connections).await?;

        let journal_dir = settings.journal_dir.display().to_string();
        let (journal, reader, recovery) = Journal::open(settings.journal())
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

        let context = ContextStore::new(&settings.redis_url, settings.context())
            .context("REDIS_URL is not a valid Redis URL")?;
        if let Err(error) = context.ping().await {
            tracing::warn!(%error, "Redis is unreachable; serving without the realtime context until it is back");
        }

        let catalogue = Catalogue::new(pool.clone(), settings.catalogue());
        let writer = writer::start(
            pool.clone(),
            catalogue.clone(),
            journal.clone(),
            reader,
            settings.writer(),
        );
        let rerank = ReRankingService::new(context.clone(), catalogue.clone(), &settings.rerank());
        let ingest = Ingest {
            catalogue,
            context,
            journal: journal.clone(),
            unknown_items: settings.unknown_items,
        };
        let state = AppState {
            ingest,
            rerank: Arc::new(rerank),
            pool,
            limits: Limits {
                max_body_bytes: settings.max_body_bytes,
                max_batch_body_bytes: MAX_BATCH_BODY_BYTES,
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
            router: api::router(state),
            journal,
            writer,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests finish,
    /// and writes everything the journal holds to PostgreSQL before returning.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let timeout = self.settings.shutdown_timeout();
        let address = self.listener.local_addr()?;
        tracing::info!(%address, "listening");

        let (stopping, mut stop_seen) = watch::channel(false);
        let server = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing requests in flight");
            let _ = stopping.send(true);
        });
        let overdue = async move {
            let _ = stop_seen.wait_for(|stop| *stop).await;
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            served = server => served.context("the HTTP server failed")?,
            () = overdue => tracing::warn!(?timeout, "requests still in flight after the shutdown timeout; closing anyway"),
        }

        self.journal.close().await;
        tracing::info!(
            bytes = self.journal.used_bytes(),
            "writing the journal's backlog to PostgreSQL"
        );
        if self.writer.drain(timeout).await {
            tracing::info!("all accepted events are stored; bye");
        } else {
            tracing::warn!(
                journal = %self.settings.journal_dir.display(),
                bytes = self.journal.used_bytes(),
                "PostgreSQL did not take the whole backlog in time; it stays in the journal and is written at the next start"
            );
        }
        Ok(())
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
