//! [`BetterSyncLayer`]: the engine as a tower layer.

use better_sync::BetterSync;
use tower_layer::Layer;

use crate::service::BetterSyncService;

/// Serves the sync protocol under the engine's base path; everything else
/// goes to the wrapped service.
///
/// ```no_run
/// # fn f(sync: better_sync::BetterSync) {
/// use better_sync_tower::BetterSyncLayer;
/// let layer = BetterSyncLayer::new(sync);
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BetterSyncLayer {
    sync: BetterSync,
}

impl BetterSyncLayer {
    /// A layer serving `sync`.
    pub fn new(sync: BetterSync) -> Self {
        Self { sync }
    }

    /// The engine this layer serves.
    pub fn engine(&self) -> &BetterSync {
        &self.sync
    }
}

impl<S> Layer<S> for BetterSyncLayer {
    type Service = BetterSyncService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BetterSyncService::new(self.sync.clone(), inner)
    }
}
