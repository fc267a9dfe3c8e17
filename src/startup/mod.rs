//! Building the application from its settings, running it, and stopping it without losing events:
//! `serve` here ([`Application`]), `writer` in [`WriterNode`].

mod writer_node;

pub use writer_node::WriterNode;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::api::access::AccessControl;
use crate::api::{self, App, Edge, Limits, Vitals};
use crate::catalogue::Catalogue;
use crate::config::{DemoMode, HandoffKind, Settings, WriterMode};
use crate::context::ContextStore;
use crate::handoff::Handoff;
use crate::handoff::jetstream::{JetStream, JetStreamHandoff, JetStreamSource};
use crate::handoff::journal::{Journal, JournalSource};
use crate::health::Health;
use crate::ingest::{AcceptedCounters, Ingest};
use crate::rerank::ReRankingService;
use crate::writer::{self, WriterHandle};
use crate::{db, server, telemetry};

/// Installs the metrics recorder, and has every component describe its metrics (once: tests
/// build many applications in one process).
pub fn install_metrics() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    telemetry::metrics_handle();
    DESCRIBED.call_once(|| {
        api::describe_metrics();
        crate::ingest::describe_metrics();
        crate::context::describe_metrics();
        crate::catalogue::describe_metrics();
        crate::handoff::journal::describe_metrics();
        crate::writer::describe_metrics();
        crate::server::describe_metrics();
        crate::health::describe_metrics();
    });
}

/// `serve`: an API node, with its writer unless told not to.
pub struct Application {
    node: Node,
}

/// What `serve` and `writer` run alike: HTTP endpoints, the background components' watch, and the
/// writer's drain at the end.
struct Node {
    listener: TcpListener,
    router: api::HttpService,
    limits: server::ConnectionLimits,
    shutdown_timeout: Duration,
    handoff: Arc<dyn Handoff>,
    writer: Option<WriterHandle>,
    health: Health,
}

/// How long a service whose component died keeps answering (its readiness red, so that a load
/// balancer stops sending to it) before it stops.
pub const DEATH_GRACE: Duration = Duration::from_secs(2);

impl Application {
    /// Prepares PostgreSQL (database, migrations), opens the hand-off (recovering the journal,
    /// or connecting to NATS in the background), starts the writer unless told not to, and
    /// binds the listener. Neither Redis nor NATS is needed to start.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        install_metrics();
        tracing::info!(?settings, "starting");
        settings.check()?;
        let health = Health::default();
        telemetry::spawn_metrics_upkeep(&health);
        let database = &settings.database;
        let pool = db::prepare(&database.database_url, database.database_max_connections).await?;
        let catalogue = Catalogue::new(pool.clone(), settings.catalogue.config());
        let writer_config = settings.writer.config(settings.events.max_event_age.0);
        let (handoff, writer): (Arc<dyn Handoff>, Option<WriterHandle>) = match settings.handoff {
            HandoffKind::Journal => {
                let (journal, reader) = open_journal(&settings, &health)?;
                let source = JournalSource::new(journal.clone(), reader);
                let writer = writer::start(
                    pool.clone(),
                    catalogue.clone(),
                    source,
                    writer_config,
                    &health,
                );
                (Arc::new(journal), Some(writer))
            }
            HandoffKind::Jetstream => {
                let jetstream = JetStream::connect(settings.nats.config(), &health).await?;
                let writer = (settings.writer_mode == WriterMode::On).then(|| {
                    let source = JetStreamSource::new(jetstream.clone());
                    writer::start(
                        pool.clone(),
                        catalogue.clone(),
                        source,
                        writer_config,
                        &health,
                    )
                });
                (Arc::new(JetStreamHandoff::new(jetstream)), writer)
            }
        };

        let context_config = settings.context.config(settings.redis.keys());
        let context = ContextStore::new(
            &settings.redis.redis_url,
            settings.redis.redis_cluster,
            context_config,
            &health,
        )
        .context("REDIS_URL is not a valid Redis URL")?;
        if let Err(error) = context.ping().await {
            tracing::warn!(%error, "Redis is unreachable; serving without the realtime context until it is back");
        }
        let rerank = ReRankingService::new(
            context.clone(),
            catalogue.clone(),
            &settings.rerank.config(),
        );
        let vitals = Vitals {
            pool,
            health: health.clone(),
            handoff: handoff.clone(),
            context: Some(context.clone()),
            writer: writer.as_ref().map(WriterHandle::status),
        };
        api::watch_dependencies(&vitals);
        let edge = edge(&settings, &health)?;
        let state = Arc::new(App {
            work: settings.edge.request_limits(),
            access: edge.access.clone(),
            segment: settings.segment.config(),
            ingest: Ingest {
                catalogue,
                context,
                handoff: handoff.clone(),
                unknown_items: settings.events.unknown_items,
                accepted: AcceptedCounters::default(),
            },
            rerank: Arc::new(rerank),
            vitals,
            limits: Limits {
                pace: settings.edge.body_pace(),
                max_body_bytes: settings.edge.max_body_bytes,
                max_batch_body_bytes: settings.edge.max_batch_body_bytes,
                max_batch_events: api::MAX_BATCH_EVENTS,
                events: settings.events.rules(),
            },
        });
        Ok(Self {
            node: Node {
                listener: bind(settings.host, settings.port).await?,
                router: api::router(state, edge),
                limits: settings.edge.connection_limits(),
                shutdown_timeout: settings.shutdown_timeout(),
                handoff,
                writer,
                health,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests finish,
    /// and writes what the writer holds, and the journal's whole backlog, to PostgreSQL before
    /// returning. Both steps share one deadline, `--shutdown-timeout-secs` after the signal; what
    /// is not written by then stays in the hand-off.
    ///
    /// If a background component dies, the service answers for [`DEATH_GRACE`] more (readiness
    /// red), stops without draining, and returns the death as an error: the process exits
    /// non-zero, and the hand-off keeps what is unwritten for the next start.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.node.run(shutdown).await
    }
}

/// Binds the listener.
async fn bind(host: std::net::IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("could not listen on {address}"))
}

/// Opens and recovers the journal.
fn open_journal(
    settings: &Settings,
    health: &Health,
) -> anyhow::Result<(Journal, crate::handoff::journal::JournalReader)> {
    let dir = settings.journal.journal_dir.display().to_string();
    let (journal, reader, recovery) = Journal::open(settings.journal.config(), health)
        .with_context(|| format!("could not open the journal at {dir}"))?;
    if recovery.records > 0 || recovery.torn_bytes > 0 || !recovery.quarantined.is_empty() {
        tracing::info!(
            records = recovery.records,
            torn_bytes = recovery.torn_bytes,
            quarantined = recovery.quarantined.len(),
            journal = %dir,
            "recovered the journal; its events are written to PostgreSQL now"
        );
    }
    Ok((journal, reader))
}

impl Node {
    fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves or a background component dies (then after
    /// [`DEATH_GRACE`]). Then the hand-off is closed, and a death is the run's error; otherwise
    /// the writer, if any, stores what it holds (and the journal's backlog), by the deadline
    /// `shutdown_timeout` after the stop began.
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let address = self.listener.local_addr()?;
        tracing::info!(%address, "listening");
        let signalled = Arc::new(std::sync::OnceLock::new());
        let watched = {
            let (signalled, health) = (signalled.clone(), self.health.clone());
            async move {
                tokio::select! {
                    () = shutdown => {}
                    _ = health.died() => tokio::time::sleep(DEATH_GRACE).await,
                }
                health.begin_stopping();
                let _ = signalled.set(Instant::now());
            }
        };
        let timeout = self.shutdown_timeout;
        server::serve(self.listener, self.router, self.limits, watched, timeout).await;
        self.health.begin_stopping();
        let deadline = *signalled.get_or_init(Instant::now) + timeout;
        self.handoff.close().await;

        if let Some(death) = self.health.death() {
            // The writer may be the one that died, and the hand-off keeps what is unwritten: no
            // drain.
            anyhow::bail!(
                "{death}; stopped so that a supervisor restarts the service (the hand-off keeps what is unwritten: {:?})",
                self.handoff.state()
            );
        }
        let Some(writer) = self.writer else {
            tracing::info!("every accepted event is in the hand-off; bye");
            return Ok(());
        };
        let handoff = self.handoff.state();
        tracing::info!(?handoff, "writing what is unwritten to PostgreSQL");
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

/// The API's edge from the settings: limits, CORS, keys, rate limits, the demo. Warns where the
/// keys leave something open that an operator may not expect.
fn edge(settings: &Settings, health: &Health) -> anyhow::Result<Edge> {
    let access = AccessControl::new(&settings.edge.access())?;
    if access.reads_closed() {
        tracing::warn!(
            "API_KEYS is set and SERVER_KEYS is not: /api/rerank and the context routes refuse every request (403 server_key_required) until a server key is configured in SERVER_KEYS; write keys only send events"
        );
    }
    if access.is_open() && !settings.host.is_loopback() {
        tracing::warn!(
            host = %settings.host,
            "listening beyond this machine with no API key: anyone who reaches it may send events, identify visitors, re-rank and read every user's context and purchases; set API_KEYS (for pages) and SERVER_KEYS (for servers)"
        );
    }
    let demo = match settings.edge.demo {
        DemoMode::On => true,
        DemoMode::Off => false,
        DemoMode::Auto => access.is_open(),
    };
    let access = Arc::new(access);
    if access.limits_rates() {
        let access = access.clone();
        health.spawn("rate-limiter-upkeep", async move {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                access.forget_idle();
            }
        });
    }
    let demo_segment_sdk = settings.edge.demo_segment_sdk.clone();
    if let Some(sdk) = &demo_segment_sdk {
        anyhow::ensure!(
            sdk.join(api::SEGMENT_SDK_ENTRY).is_file(),
            "DEMO_SEGMENT_SDK={} holds no {}: give the dist/umd directory of the npm package @segment/analytics-next",
            sdk.display(),
            api::SEGMENT_SDK_ENTRY
        );
        if !demo {
            tracing::warn!("DEMO_SEGMENT_SDK is set but the demo is not served (DEMO)");
        }
    }
    Ok(Edge {
        access,
        cors_origins: settings.edge.cors_origins.clone(),
        demo,
        demo_segment_sdk,
    })
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
