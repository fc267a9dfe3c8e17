//! One Redis, or a Redis Cluster, behind one connection type.
//!
//! A single Redis is reached through a [`ConnectionManager`], which reconnects by itself. A
//! cluster is reached through redis-rs' cluster client, which follows the slots to their nodes;
//! its connection is made on first use and again after it failed, so that the service starts
//! while Redis is down, as with a single Redis.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use crate::secret::SecretUrl;

/// How to reach the context's Redis.
pub(super) enum Backend {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
}

pub(super) struct Cluster {
    client: ClusterClient,
    /// The cluster connection, once made (it follows the cluster's changes by itself).
    connection: OnceCell<ClusterConnection>,
}

/// A connection to one Redis or a cluster; cheap to clone. Redis commands (`AsyncCommands`) run
/// on it whichever it is.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Backend {
    /// `url` is one Redis URL, or with `cluster`, the URLs of one or more cluster nodes,
    /// comma-separated (any node will do: the client learns the others). Connects lazily.
    pub(super) fn new(url: &SecretUrl, cluster: bool, timeout: Duration) -> RedisResult<Self> {
        if !cluster {
            let client = redis::Client::open(url.expose())?;
            // The client's own response timeout (500 ms by default) would cut short a longer
            // --redis-timeout-ms; the service's deadline is the one that counts.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(timeout.max(Duration::from_millis(100))))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            let manager = ConnectionManager::new_lazy_with_config(client, config)?;
            return Ok(Backend::Single(manager));
        }
        let nodes: Vec<&str> = url.expose().split(',').map(str::trim).collect();
        // Without a response timeout, a command to a stopped master waits for minutes; the
        // service's own deadline is shorter anyway.
        let client = ClusterClient::builder(nodes)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(timeout.max(Duration::from_millis(100)))
            .retries(1)
            .build()?;
        Ok(Backend::Cluster(Box::new(Cluster {
            client,
            connection: OnceCell::new(),
        })))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster(_))
    }

    pub(super) async fn connection(&self) -> RedisResult<Connection> {
        match self {
            Backend::Single(manager) => Ok(Connection::Single(manager.clone())),
            Backend::Cluster(cluster) => {
                let connection = cluster
                    .connection
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?;
                Ok(Connection::Cluster(connection.clone()))
            }
        }
    }

    /// PING: the one Redis, or every master of the cluster.
    pub(super) async fn ping(&self) -> RedisResult<()> {
        match self.connection().await? {
            Connection::Single(mut manager) => redis::cmd("PING").query_async(&mut manager).await,
            Connection::Cluster(mut cluster) => {
                let every_master = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                cluster
                    .route_command(redis::cmd("PING"), every_master)
                    .await
                    .map(drop)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}
