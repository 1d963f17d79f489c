//! A valid format v2 bucket with bytes changed where the input says, its checksums recomputed
//! so the damage reaches the block, bit-field and index decoding behind them: an error at open,
//! or answers to every query without a panic or a read out of bounds. Input: 5-byte patches
//! (file offset u32 LE modulo the file's length, then the byte to XOR in).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{generate, parse_feed, FeedOptions, GenOptions, RejectList, Zip};
use imbtrack_store::{BloomProbe, RetentionPolicy, SealedBucket, Store, StoreOptions, DAY_MS};
use libfuzzer_sys::fuzz_target;

/// The seed bucket's bytes, and the keys, ZIP Codes and Mailer IDs it holds.
struct Seed {
    bytes: Vec<u8>,
    keys: Vec<BarcodeKey>,
    zips: Vec<Zip>,
    mailers: Vec<u32>,
}

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        let day = 20_100;
        let now = (day + 10) * DAY_MS;
        let mut feed = Vec::new();
        generate(&GenOptions::new(300, day), &mut feed, |_| {}).expect("generate");
        let parsed = parse_feed(
            "f.psv",
            &feed,
            &FeedOptions::at(now),
            &mut RejectList::default(),
        )
        .expect("parse");
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions {
            seal_grace_ms: 0,
            retention: RetentionPolicy::with_override(100 * DAY_MS, 100 * DAY_MS).expect("window"),
            ..StoreOptions::default()
        };
        let (store, _) = Store::open(dir.path(), options).expect("store");
        store
            .append(&parsed.events, &parsed.symbols)
            .expect("append");
        store.seal(now).expect("seal");
        drop(store);
        // The largest bucket sealed.
        let biggest: PathBuf = std::fs::read_dir(dir.path().join("buckets"))
            .expect("buckets")
            .map(|e| e.expect("entry").path().join("scans.bin"))
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a bucket");
        let bytes = std::fs::read(biggest).expect("read");
        let mut keys: Vec<BarcodeKey> = parsed.events.iter().map(|e| e.barcode).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut zips: Vec<Zip> = parsed
            .events
            .iter()
            .flat_map(|e| [5, 9, 11].map(|d| e.routing.prefix(d)))
            .flatten()
            .collect();
        zips.sort_unstable_by_key(|z| (z.len(), z.value()));
        zips.dedup();
        let mut mailers: Vec<u32> = keys
            .iter()
            .filter_map(|k| k.to_barcode().mailer_id())
            .collect();
        mailers.sort_unstable();
        mailers.dedup();
        Seed {
            bytes,
            keys,
            zips,
            mailers,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let seed = seed();
    let mut bytes = seed.bytes.clone();
    for patch in data.chunks_exact(5) {
        let at =
            u32::from_le_bytes([patch[0], patch[1], patch[2], patch[3]]) as usize % bytes.len();
        bytes[at] ^= patch[4];
    }
    imbtrack_store::rechecksum(&mut bytes);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("scans.bin"), &bytes).expect("write");
    let Ok(bucket) = SealedBucket::open(dir.path()) else {
        return;
    };
    let mut scans = Vec::new();
    for key in &seed.keys {
        bucket.scans_of(*key, &BloomProbe::new(*key), &mut scans);
    }
    let mut found = Vec::new();
    for zip in &seed.zips {
        bucket.pieces_by_zip(*zip, &mut found);
    }
    for mailer in &seed.mailers {
        bucket.pieces_by_mailer(*mailer, &mut found);
    }
    for (piece, key) in (0..bucket.piece_count() + 2).zip(seed.keys.iter().cycle()) {
        bucket.scans_at(piece, *key, &mut scans);
    }
    for (key, piece) in found {
        bucket.scans_at(piece, key, &mut scans);
    }
});
