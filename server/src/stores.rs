//! The one place that chooses the stores from configuration. Today every contract is
//! served by the embedded (redb) database in the data directory; the CQL backend plugs
//! in here when `ROOMCAST_SCYLLA_NODES` is set.

use roomcast_engine::{EmbeddedStore, Stores};

use crate::config::Config;

/// Opens the stores `config` asks for.
pub(crate) fn open(config: &Config) -> Result<Stores, String> {
    let dir = config.data_dir.join("history");
    let embedded = EmbeddedStore::open(&dir)
        .map_err(|e| format!("cannot open history in {}: {e}", config.data_dir.display()))?;
    Ok(Stores::embedded(embedded))
}
