//! Property test: any sequence of appends, seals, restarts and expiries gives the same answers
//! as a plain in-memory model of the same operations.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::collections::BTreeMap;

use common::{at, mail_key, package_key, scan};
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{MailClass, ScanEvent, SymbolTable, Zip};
use imbtrack_store::{class_of, RetentionPolicy, Store, StoreOptions, DAY_MS};
use proptest::prelude::*;

const BASE: i64 = 20_100;

#[derive(Debug, Clone)]
enum Op {
    /// (piece, day, offset step, code) of each scan.
    Append(Vec<(u8, u8, u8, bool)>),
    Seal(u8),
    Reopen,
    Expire(u8),
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..6, 0u8..6, 0u8..3, any::<bool>()), 1..12).prop_map(Op::Append),
        2 => (0u8..10).prop_map(Op::Seal),
        1 => Just(Op::Reopen),
        1 => (0u8..10).prop_map(Op::Expire),
        1 => Just(Op::Checkpoint),
    ]
}

fn key(piece: u8) -> BarcodeKey {
    if piece % 3 == 2 {
        package_key(u64::from(piece))
    } else {
        mail_key(
            u64::from(piece),
            if piece.is_multiple_of(2) {
                "94110"
            } else {
                "941101234"
            },
        )
    }
}

fn options() -> StoreOptions {
    let retention = RetentionPolicy::new(2 * DAY_MS, 4 * DAY_MS).unwrap();
    StoreOptions {
        retention,
        seal_grace_ms: DAY_MS / 2,
        max_deltas: 1,
        ..StoreOptions::default()
    }
}

/// The model: every distinct scan identity, and per class the last day expiry removed.
#[derive(Default)]
struct Model {
    scans: BTreeMap<(u128, i64, String), ()>,
    expired_through: BTreeMap<&'static str, i64>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), options()).unwrap();
        let mut symbols = SymbolTable::new();
        let mut model = Model::default();
        let retention = options().retention;
        let mut now = at(BASE, 0);
        for op in ops {
            match op {
                Op::Append(scans) => {
                    let events: Vec<ScanEvent> = scans
                        .iter()
                        .map(|&(piece, day, step, dps)| {
                            scan(&mut symbols, key(piece), at(BASE + i64::from(day), i64::from(step) * 1000), if dps { "918" } else { "919" })
                        })
                        .collect();
                    let report = store.append(&events, &symbols).unwrap();
                    let mut fresh = 0;
                    for e in &events {
                        let through = model.expired_through.get(e.class.as_str()).copied().unwrap_or(i64::MIN);
                        if e.time_ms.div_euclid(DAY_MS) > through
                            && model.scans.insert((e.barcode.as_u128(), e.time_ms, e.code.to_string()), ()).is_none()
                        {
                            fresh += 1;
                        }
                    }
                    prop_assert_eq!(report.accepted, fresh);
                }
                Op::Seal(days) => {
                    now = now.max(at(BASE + i64::from(days), 0));
                    store.seal(now).unwrap();
                }
                Op::Checkpoint => {
                    store.checkpoint().unwrap();
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path(), options()).unwrap().0;
                }
                Op::Expire(days) => {
                    now = now.max(at(BASE + i64::from(days), 0));
                    store.expire(now).unwrap();
                    for class in [MailClass::Mail, MailClass::Package] {
                        let through = (now - retention.window_ms(class)).div_euclid(DAY_MS) - 1;
                        let entry = model.expired_through.entry(class.as_str()).or_insert(i64::MIN);
                        *entry = (*entry).max(through);
                    }
                    model.scans.retain(|(raw, time, _), ()| {
                        let class = class_of(BarcodeKey::from_u128(*raw).unwrap());
                        !retention.bucket_expired(class, time.div_euclid(DAY_MS), now)
                    });
                }
            }
            for piece in 0..6 {
                let key = key(piece);
                let got: Vec<(i64, String)> = store.lookup(key, now).iter().map(|s| (s.time_ms, s.code.to_string())).collect();
                let want: Vec<(i64, String)> = model
                    .scans
                    .keys()
                    .filter(|(raw, time, _)| *raw == key.as_u128() && retention.serves(class_of(key), *time, now))
                    .map(|(_, time, code)| (*time, code.clone()))
                    .collect();
                prop_assert_eq!(got, want, "piece {}", piece);
            }
            for day in 0..6 {
                let got = store.pieces_by_zip(Zip::parse(b"94110").unwrap(), BASE + day, now).len();
                let want = (0..6u8)
                    .filter(|&p| p % 3 != 2)
                    .filter(|&p| {
                        let key = key(p);
                        model.scans.keys().any(|(raw, time, _)| {
                            *raw == key.as_u128() && time.div_euclid(DAY_MS) == BASE + day && retention.serves(class_of(key), *time, now)
                        })
                    })
                    .count();
                prop_assert_eq!(got, want, "zip query day {}", day);
            }
        }
    }
}
