//! Telling someone when a piece's status changes: a [`StatusWatch`] set on the engine
//! ([`Engine::watch`]) hears, for every append that touches pieces of the Mailer IDs it wants,
//! each piece whose status the append changed, with its status before. Appends that touch
//! watched pieces go one at a time, the statuses read before and after under one lock, so each
//! transition is told once and in order.

use std::sync::Arc;

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{ScanEvent, Status};

use crate::status::{piece_status, PieceStatus};
use crate::Engine;

/// A piece whose status an append changed.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// Its status before the append (`None`: the store had no scan of it).
    pub previous: Option<Status>,
    /// The piece after the append.
    pub piece: PieceStatus,
}

/// Who hears of status changes.
pub trait StatusWatch: Send + Sync {
    /// Whether any Mailer ID's changes are wanted: when none is, an append reads no scan's
    /// Mailer ID at all.
    fn wants_any(&self) -> bool;

    /// Whether changes of this Mailer ID's pieces are wanted (asked for every scan appended:
    /// keep it cheap).
    fn wants(&self, mailer_id: u32) -> bool;

    /// The changes one append made, in the order of the pieces' first scans in it. Called
    /// after the append is durable and before it is acknowledged, one append at a time; an
    /// error is logged by the caller and does not undo the append.
    fn changed(&self, changes: Vec<StatusChange>);
}

impl Engine {
    /// Sets who hears of status changes (replacing any before).
    pub fn watch(&self, watch: Arc<dyn StatusWatch>) {
        let mut slot = self.watch.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(watch);
    }

    /// The watched pieces `events` touch, each once, in the order of their first scan.
    pub(crate) fn watched_pieces(
        &self,
        events: &[ScanEvent],
    ) -> Option<(Arc<dyn StatusWatch>, Vec<BarcodeKey>)> {
        let watch = self
            .watch
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|watch| watch.wants_any())?;
        let mut pieces: Vec<BarcodeKey> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for event in events {
            let wanted = event
                .barcode
                .to_barcode()
                .mailer_id()
                .is_some_and(|mid| watch.wants(mid));
            if wanted && seen.insert(event.barcode) {
                pieces.push(event.barcode);
            }
        }
        (!pieces.is_empty()).then_some((watch, pieces))
    }

    /// The statuses of `pieces` now.
    pub(crate) fn statuses_of(&self, pieces: &[BarcodeKey]) -> Vec<Option<PieceStatus>> {
        let now = self.now_ms();
        pieces
            .iter()
            .map(|&key| piece_status(&self.store.lookup(key, now), &self.codes))
            .collect()
    }
}

/// The changes between statuses before and after an append.
pub(crate) fn changes(
    before: Vec<Option<PieceStatus>>,
    after: Vec<Option<PieceStatus>>,
) -> Vec<StatusChange> {
    before
        .into_iter()
        .zip(after)
        .filter_map(|(before, after)| {
            let piece = after?;
            let previous = before.map(|b| b.status);
            (previous != Some(piece.status)).then_some(StatusChange { previous, piece })
        })
        .collect()
}
