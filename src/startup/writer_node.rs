//! `event-ingest writer`: a writer on its own, reading the JetStream stream through the durable
//! consumer every writer shares, with health and metrics endpoints for its supervisor.

use std::sync::Arc;
use std::time::Duration;

use super::{Node, bind};
use crate::api::{self, Vitals};
use crate::catalogue::Catalogue;
use crate::config::WriterSettings;
use crate::handoff::Handoff;
use crate::handoff::jetstream::{JetStream, JetStreamHandoff, JetStreamSource};
use crate::health::Health;
use crate::server::ConnectionLimits;
use crate::writer;
use crate::{db, telemetry};

pub struct WriterNode {
    node: Node,
}

impl WriterNode {
    /// Prepares PostgreSQL, connects to NATS (in the background: it may be down), starts the
    /// writer and binds the health and metrics endpoints.
    pub async fn build(settings: WriterSettings) -> anyhow::Result<Self> {
        super::install_metrics();
        tracing::info!(?settings, "starting a writer");
        let writer_config = settings.writer_config()?;
        let health = Health::default();
        telemetry::spawn_metrics_upkeep(&health);
        let database = &settings.database;
        let pool = db::prepare(&database.database_url, database.database_max_connections).await?;
        let catalogue = Catalogue::new(pool.clone(), settings.catalogue.config());
        let jetstream = JetStream::connect(settings.nats.config(), &health).await?;
        let writer = writer::start(
            pool.clone(),
            catalogue,
            JetStreamSource::new(jetstream.clone()),
            writer_config,
            &health,
        );
        // For the stream's state in readiness; this node publishes nothing.
        let handoff: Arc<dyn Handoff> = Arc::new(JetStreamHandoff::new(jetstream));
        let vitals = Vitals {
            pool,
            health: health.clone(),
            handoff: handoff.clone(),
            context: None,
            writer: Some(writer.status()),
        };
        api::watch_dependencies(&vitals);
        Ok(Self {
            node: Node {
                listener: bind(settings.host, settings.port).await?,
                router: api::vitals_router(vitals),
                limits: ConnectionLimits::default(),
                shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
                handoff,
                writer: Some(writer),
                health,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// Runs until `shutdown` resolves; then finishes the batches in hand, acknowledges them and
    /// returns. A dead component ends the run with an error, as for `serve`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.node.run(shutdown).await
    }
}
