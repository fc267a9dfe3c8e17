//! `event-ingest writer`: a writer on its own, reading the JetStream stream through the durable
//! consumer every writer shares, with health and metrics endpoints for its supervisor.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{bind, serve_watched, stop_writer};
use crate::api::{self, Vitals};
use crate::catalogue::Catalogue;
use crate::config::WriterSettings;
use crate::handoff::Handoff;
use crate::handoff::jetstream::{JetStream, JetStreamHandoff, JetStreamSource};
use crate::health::Health;
use crate::server::ConnectionLimits;
use crate::writer::{self, WriterHandle};
use crate::{db, telemetry};

pub struct WriterNode {
    listener: TcpListener,
    router: axum::Router,
    /// For the stream's state; this node publishes nothing.
    handoff: Arc<dyn Handoff>,
    writer: WriterHandle,
    health: Health,
    shutdown_timeout: Duration,
}

impl WriterNode {
    /// Prepares PostgreSQL, connects to NATS (in the background: it may be down), starts the
    /// writer and binds the health and metrics endpoints.
    pub async fn build(settings: WriterSettings) -> anyhow::Result<Self> {
        telemetry::metrics_handle();
        tracing::info!(?settings, "starting a writer");
        let health = Health::default();
        let database = &settings.database;
        let pool = db::prepare(&database.database_url, database.database_max_connections).await?;
        let catalogue = Catalogue::new(pool.clone(), settings.catalogue.config());
        let jetstream = JetStream::connect(settings.nats.config()).await?;
        let writer = writer::start(
            pool.clone(),
            catalogue,
            JetStreamSource::new(jetstream.clone()),
            settings.writer.config(),
            &health,
        );
        let handoff: Arc<dyn Handoff> = Arc::new(JetStreamHandoff::new(jetstream));
        let vitals = Vitals {
            pool,
            health: health.clone(),
            handoff: handoff.clone(),
            context: None,
            writer: Some(writer.status()),
        };
        Ok(Self {
            listener: bind(settings.host, settings.port).await?,
            router: api::vitals_router(vitals),
            handoff,
            writer,
            health,
            shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Runs until `shutdown` resolves; then finishes the batches in hand, acknowledges them and
    /// returns. A dead component ends the run with an error, as for `serve`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        };
        let deadline = serve_watched(
            self.listener,
            self.router,
            limits,
            shutdown,
            &self.health,
            self.shutdown_timeout,
        )
        .await?;
        stop_writer(Some(self.writer), &self.health, deadline, &*self.handoff).await
    }
}
