//! The store's directory: file and directory names, the manifest, and the moves that put a
//! bucket directory in place or take it away without a crash ever leaving half of one under a
//! live name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use imbtrack_barcode::{BarcodeKey, BarcodeKind};
use imbtrack_feed::time::civil_from_days;
use imbtrack_feed::{MailClass, ScanEvent};
use serde::{Deserialize, Serialize};

use crate::bucket::{BucketKind, BUCKET_FILE};
use crate::fsutil::{atomic_write, disk_bytes, sync_dir};
use crate::retention::DAY_MS;
use crate::{fault, StoreError};

pub(crate) const MANIFEST: &str = "MANIFEST.json";
pub(crate) const BUCKETS: &str = "buckets";
pub(crate) const WAL_DIR: &str = "wal";
pub(crate) const QUARANTINE: &str = "quarantine";
pub(crate) const LOCK: &str = "LOCK";
const TMP_PREFIX: &str = ".tmp-";
const DELETING_PREFIX: &str = ".deleting-";

/// A bucket's identity: class and UTC day (days since the epoch).
pub type BucketId = (MailClass, i64);

/// What the store's directory holds, written atomically after every change of its buckets.
#[derive(Serialize, Deserialize, Default, Clone, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) version: u32,
    /// Live bucket directory names under `buckets/`.
    pub(crate) buckets: BTreeSet<String>,
    /// Per class (`mail`, `package`), the last day expiry has removed: scans of that day or
    /// earlier are never taken again, not even from the WAL, so expired data stays gone.
    #[serde(default)]
    pub(crate) expired_through: BTreeMap<String, i64>,
    /// Per sealed (class, day), keyed `class:day`, the WAL position (segment, record) at its
    /// last seal: every scan of that day in the WAL before it is in a sealed bucket, so replay
    /// skips those without looking them up.
    #[serde(default)]
    pub(crate) sealed_through: BTreeMap<String, (u64, u64)>,
    /// Positions reached in named sources (see [`crate::Store::append_at`]) as of this
    /// manifest; the WAL's positions records since then override them.
    #[serde(default)]
    pub(crate) positions: BTreeMap<String, i64>,
    /// The WAL position `positions` stand at: the WAL's positions records before it are older
    /// than them and do not override them at replay.
    #[serde(default)]
    pub(crate) positions_at: (u64, u64),
}

impl Manifest {
    /// Reads the manifest in `dir`, or a new one when there is none yet.
    pub(crate) fn read(dir: &Path) -> Result<Manifest, StoreError> {
        let path = dir.join(MANIFEST);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                what: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
                version: 1,
                ..Manifest::default()
            }),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Replaces the manifest in `dir` with this one (atomically, durably).
    pub(crate) fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(MANIFEST);
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Invariant(e.to_string()))?;
        atomic_write(&path, &bytes).map_err(|e| StoreError::io(&path, e))
    }

    /// Whether expiry already removed the event's day.
    pub(crate) fn is_expired_day(&self, event: &ScanEvent) -> bool {
        let (class, day) = bucket_id(event);
        self.expired_through_day(class)
            .is_some_and(|through| day <= through)
    }

    /// The last day of `class` expiry has removed, if any.
    pub(crate) fn expired_through_day(&self, class: MailClass) -> Option<i64> {
        self.expired_through.get(class.as_str()).copied()
    }
}

/// The manifest's key of a bucket id (`mail:20100`).
pub(crate) fn bucket_name((class, day): BucketId) -> String {
    format!("{}:{day}", class.as_str())
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A bucket directory's name: class, day, kind and a store-wide sequence number.
pub(crate) fn bucket_dir_name(class: MailClass, day: i64, kind: BucketKind, seq: u64) -> String {
    match kind {
        BucketKind::Base => format!("{}-{}-base-{seq:06}", class.as_str(), day_name(day)),
        BucketKind::Delta => format!("{}-{}-delta-{seq:06}", class.as_str(), day_name(day)),
    }
}

/// The bucket a directory's name ([`bucket_dir_name`]) is of, if it is such a name.
pub(crate) fn bucket_dir_id(name: &str) -> Option<BucketId> {
    let (class, rest) = name.split_once('-')?;
    let class = [MailClass::Mail, MailClass::Package]
        .into_iter()
        .find(|c| c.as_str() == class)?;
    let day = imbtrack_feed::time::parse_date(rest.get(..10)?)?;
    Some((class, day))
}

/// The sequence number a bucket directory's name ends with.
pub(crate) fn bucket_dir_seq(name: &str) -> u64 {
    name.rsplit('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The last component of a path.
pub(crate) fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The class a barcode's scans are kept under.
pub fn class_of(key: BarcodeKey) -> MailClass {
    match key.kind() {
        BarcodeKind::Impb => MailClass::Package,
        BarcodeKind::Imb | BarcodeKind::Imcb => MailClass::Mail,
    }
}

/// The bucket an event belongs to.
pub(crate) fn bucket_id(event: &ScanEvent) -> BucketId {
    (event.class, event.time_ms.div_euclid(DAY_MS))
}

/// Writes an encoded bucket's directory under `buckets/` (temp name, fsync, rename, fsync) and
/// returns its path. It is live only once a manifest names it.
pub(crate) fn write_bucket_dir(
    store_dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<PathBuf, StoreError> {
    let buckets = store_dir.join(BUCKETS);
    let tmp = buckets.join(format!("{TMP_PREFIX}{name}"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| StoreError::io(&path, e)
    };
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let file_path = tmp.join(BUCKET_FILE);
    {
        let mut file = fs::File::create(&file_path).map_err(io(&file_path))?;
        fault::write_all(&mut file, bytes)
            .and_then(|()| fault::sync(&file, false))
            .map_err(io(&file_path))?;
    }
    sync_dir(&tmp).map_err(io(&tmp))?;
    let final_dir = buckets.join(name);
    fault::rename(&tmp, &final_dir).map_err(io(&tmp))?;
    sync_dir(&buckets).map_err(io(&buckets))?;
    Ok(final_dir)
}

/// Removes a bucket directory the manifest no longer names and returns the bytes freed: rename
/// first, so a crash never leaves half a bucket under a live name.
pub(crate) fn remove_bucket_dir(store_dir: &Path, name: &str) -> Result<u64, StoreError> {
    let buckets = store_dir.join(BUCKETS);
    let from = buckets.join(name);
    let doomed = buckets.join(format!("{DELETING_PREFIX}{name}"));
    let bytes = disk_bytes(&from);
    fault::rename(&from, &doomed).map_err(|e| StoreError::io(&from, e))?;
    sync_dir(&buckets).map_err(|e| StoreError::io(&buckets, e))?;
    fs::remove_dir_all(&doomed).map_err(|e| StoreError::io(&doomed, e))?;
    Ok(bytes)
}
