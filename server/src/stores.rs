//! The one place that chooses the stores from configuration: the CQL keyspace when
//! `ROOMCAST_SCYLLA_NODES` is set, else the embedded (redb) database in the data
//! directory. History is measured here, whichever backend serves it.

use roomcast_engine::store::cql::CqlStore;
use roomcast_engine::{EmbeddedStore, Stores};

use crate::config::Config;

/// Opens the stores `config` asks for. A CQL cluster that cannot be reached, or a
/// keyspace without the schema this build knows, stops start-up with a message naming
/// the contact points or the command to run.
pub(crate) async fn open(config: &Config) -> Result<Stores, String> {
    let mut stores = choose(config).await?;
    stores.history = roomcast_engine::store::measured::Measured::wrap(stores.history);
    Ok(stores)
}

async fn choose(config: &Config) -> Result<Stores, String> {
    if let Some(cql) = &config.cql {
        let store = CqlStore::connect(cql)
            .await
            .map_err(|e| format!("CQL store ({}): {e}", cql.nodes.join(",")))?;
        tracing::info!(nodes = %cql.nodes.join(","), keyspace = %cql.keyspace, "history on the CQL store");
        return Ok(Stores::cql(store));
    }
    let dir = config.data_dir.join("history");
    let embedded = EmbeddedStore::open(&dir)
        .map_err(|e| format!("cannot open history in {}: {e}", config.data_dir.display()))?;
    Ok(Stores::embedded(embedded))
}
