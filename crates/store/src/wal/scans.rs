//! The WAL's scans record: 32 bytes a scan where [`ScanEvent::encode_record`] takes 56. Every
//! byte a scan costs in the WAL is copied into the kernel and written to disk on each ingest,
//! so the record spends a little encoding on it: times are milliseconds after the record's
//! earliest, and the record's few distinct sites (facility ZIP, facility, machine) sit in a
//! table its scans index.
//!
//! ```text
//! body:  base ms i64 | count × scan | sites u32 | sites × site
//! scan:  key u128 | ms after base u32 | routing ZIP 6 bytes | site u16 | code 3 bytes
//!        | class (bit 0) and handling (bits 4-5) u8                              = 32 bytes
//! site:  facility ZIP u64 | facility symbol u32 | machine symbol u32           = 16 bytes
//! ```
//!
//! A record holds at most [`MAX_SCANS`] scans, so a site's index fits its u16; scans whose
//! times span more than a u32 of milliseconds (49 days) go in the 56-byte form instead.

use hashbrown::HashMap;
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{EventCode, HandlingEventType, MailClass, ScanEvent, Zip};

/// Bytes of one scan.
pub(crate) const SCAN_LEN: usize = 32;
const SITE_LEN: usize = 16;
/// Most scans in one record (and so most sites).
pub(crate) const MAX_SCANS: usize = 1 << 16;
/// Low bytes of a ZIP's packed form ([`Zip::to_bits`]: its digit count from bit 40, its value
/// below; 44 bits at most) that a scan keeps.
const ZIP_BYTES: usize = 6;

/// Where a scan was made, as the table holds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Site {
    facility_zip: u64,
    facility: u32,
    machine: u32,
}

impl Site {
    fn of(event: &ScanEvent) -> Site {
        Site {
            facility_zip: event.facility_zip.to_bits(),
            facility: event.facility,
            machine: event.machine,
        }
    }
}

/// A scan's site as the appender numbers it (the store's site numbers, a few thousand at
/// most), or [`NO_SITE_NUMBER`]: the encoder then finds the site in its record's table by that
/// number, without hashing it.
pub(crate) type SiteNumber = u32;

/// The [`SiteNumber`] of a site that has none.
pub(crate) const NO_SITE_NUMBER: SiteNumber = u32::MAX;

/// How many `events` there are, and their earliest time when all fit within a u32 of
/// milliseconds after it: one pass, for a caller that needs both.
pub(crate) fn count_and_base_ms<'e>(
    events: impl Iterator<Item = (&'e ScanEvent, SiteNumber)>,
) -> (usize, Option<i64>) {
    let (count, min, max) = events
        .fold((0, i64::MAX, i64::MIN), |(count, min, max), (event, _)| {
            (count + 1, min.min(event.time_ms), max.max(event.time_ms))
        });
    let base = max
        .checked_sub(min)
        .filter(|&span| span <= i64::from(u32::MAX))
        .map(|_| min);
    (count, base)
}

/// Encodes records' bodies, its site table reused from one to the next.
#[derive(Default)]
pub(crate) struct ScansEncoder {
    sites: Vec<Site>,
    /// The record's sites without a [`SiteNumber`], by their fields.
    ids: HashMap<Site, u16>,
    /// The record's sites by their [`SiteNumber`]: one plus the site's index in `sites`, 0
    /// for a site the record has not met (a hash map's lookup an event, found this way, was
    /// half the encoding, on the appender's thread).
    ids_by_number: Vec<u32>,
    /// The numbers the record met, for the next to forget (a store numbers up to a million
    /// sites: clearing them all a record would cost more than the record).
    numbers_met: Vec<SiteNumber>,
}

impl ScansEncoder {
    /// Appends the body of a record of `events` (at most [`MAX_SCANS`], every time within a
    /// u32 of milliseconds after `base`, as [`count_and_base_ms`] found) to `out`.
    pub(crate) fn encode<'e>(
        &mut self,
        events: impl Iterator<Item = (&'e ScanEvent, SiteNumber)>,
        base: i64,
        out: &mut Vec<u8>,
    ) {
        self.sites.clear();
        self.ids.clear();
        out.extend_from_slice(&base.to_le_bytes());
        for (event, number) in events {
            let site = self.site_id(event, number);
            let mut scan = [0u8; SCAN_LEN];
            scan[..16].copy_from_slice(&event.barcode.as_u128().to_le_bytes());
            scan[16..20].copy_from_slice(&((event.time_ms - base) as u32).to_le_bytes());
            let routing = event.routing.to_bits();
            debug_assert!(
                routing >> (8 * ZIP_BYTES) == 0,
                "a ZIP's bits fit six bytes"
            );
            scan[20..26].copy_from_slice(&routing.to_le_bytes()[..ZIP_BYTES]);
            scan[26..28].copy_from_slice(&site.to_le_bytes());
            scan[28..31].copy_from_slice(&event.code.to_bytes());
            scan[31] = event.class as u8 | (event.handling as u8) << 4;
            out.extend_from_slice(&scan);
        }
        out.extend_from_slice(&(self.sites.len() as u32).to_le_bytes());
        for site in &self.sites {
            out.extend_from_slice(&site.facility_zip.to_le_bytes());
            out.extend_from_slice(&site.facility.to_le_bytes());
            out.extend_from_slice(&site.machine.to_le_bytes());
        }
        for number in self.numbers_met.drain(..) {
            self.ids_by_number[number as usize] = 0;
        }
    }

    /// The index in the record's table of `event`'s site, `number` if it has one, added if new.
    fn site_id(&mut self, event: &ScanEvent, number: SiteNumber) -> u16 {
        let sites = &mut self.sites;
        let mut add = || {
            sites.push(Site::of(event));
            (sites.len() - 1) as u16
        };
        if number == NO_SITE_NUMBER {
            return *self.ids.entry(Site::of(event)).or_insert_with(add);
        }
        let number = number as usize;
        if self.ids_by_number.len() <= number {
            self.ids_by_number.resize(number + 1, 0);
        }
        match self.ids_by_number[number] {
            0 => {
                let id = add();
                self.ids_by_number[number] = u32::from(id) + 1;
                self.numbers_met.push(number as SiteNumber);
                id
            }
            known => (known - 1) as u16,
        }
    }
}

/// Reads the body of a record of `count` scans; `None` if its length, a site index or any
/// field's value is not one [`ScansEncoder::encode`] writes.
pub(crate) fn decode(count: usize, body: &[u8]) -> Option<Vec<ScanEvent>> {
    let base = i64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let scans_end = count.checked_mul(SCAN_LEN)?.checked_add(8)?;
    let scans = body.get(8..scans_end)?;
    let site_count = u32::from_le_bytes(body.get(scans_end..scans_end + 4)?.try_into().ok()?);
    let table = &body[scans_end + 4..];
    if table.len() != (site_count as usize).checked_mul(SITE_LEN)? {
        return None;
    }
    let sites = table
        .chunks_exact(SITE_LEN)
        .map(|site| {
            let facility_zip = Zip::from_bits(u64::from_le_bytes(site[..8].try_into().ok()?))?;
            let facility = u32::from_le_bytes(site[8..12].try_into().ok()?);
            let machine = u32::from_le_bytes(site[12..].try_into().ok()?);
            Some((facility_zip, facility, machine))
        })
        .collect::<Option<Vec<_>>>()?;
    scans
        .chunks_exact(SCAN_LEN)
        .map(|scan| {
            let mut routing = [0u8; 8];
            routing[..ZIP_BYTES].copy_from_slice(&scan[20..26]);
            let site = u16::from_le_bytes([scan[26], scan[27]]);
            let &(facility_zip, facility, machine) = sites.get(usize::from(site))?;
            let ms_after_base = u32::from_le_bytes(scan[16..20].try_into().ok()?);
            let kinds = scan[31];
            if kinds & !0x31 != 0 {
                return None;
            }
            Some(ScanEvent {
                barcode: BarcodeKey::from_u128(u128::from_le_bytes(scan[..16].try_into().ok()?))
                    .ok()?,
                time_ms: base.checked_add(i64::from(ms_after_base))?,
                routing: Zip::from_bits(u64::from_le_bytes(routing))?,
                facility_zip,
                facility,
                machine,
                code: EventCode::from_bytes([scan[28], scan[29], scan[30]])?,
                class: MailClass::from_byte(kinds & 1)?,
                handling: HandlingEventType::from_byte(kinds >> 4)?,
            })
        })
        .collect()
}

/// Bytes of the body of a record of `scans` scans at `sites` sites.
#[cfg(test)]
pub(crate) fn body_len(scans: usize, sites: usize) -> usize {
    8 + scans * SCAN_LEN + 4 + sites * SITE_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbtrack_barcode::{Barcode, Imb};
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = ScanEvent> {
        (
            0u64..10u64.pow(15),
            0i64..(1 << 33),
            (0u64..100_000, 0u64..100_000_000_000, 0..3usize),
            (0u64..3, 0u32..3, 0u32..3),
            "[0-9A-Z]{1,3}",
            any::<bool>(),
            0u8..4,
        )
            .prop_map(
                |(
                    tracking,
                    ms,
                    (routing, long, digits),
                    (facility_zip, facility, machine),
                    code,
                    package,
                    handling,
                )| {
                    let imb = Imb::new(&format!("00270{tracking:015}"), "").unwrap();
                    let routing = match digits {
                        0 => Zip::NONE,
                        1 => Zip::from_parts(routing, 5).unwrap(),
                        _ => Zip::from_parts(long, 11).unwrap(),
                    };
                    ScanEvent {
                        barcode: Barcode::Imb(imb).key(),
                        time_ms: 1_700_000_000_000 + ms,
                        routing,
                        facility_zip: Zip::from_parts(94_100 + facility_zip, 5).unwrap(),
                        facility,
                        machine: machine * 1_000_000,
                        code: EventCode::parse(code.as_bytes()).unwrap(),
                        class: if package {
                            MailClass::Package
                        } else {
                            MailClass::Mail
                        },
                        handling: HandlingEventType::from_byte(handling).unwrap(),
                    }
                },
            )
    }

    fn encoded(events: &[ScanEvent]) -> Option<Vec<u8>> {
        encoded_numbered(
            events,
            &vec![NO_SITE_NUMBER; events.len()],
            &mut ScansEncoder::default(),
        )
    }

    /// The body of `events` with their site `numbers`, by `encoder`.
    fn encoded_numbered(
        events: &[ScanEvent],
        numbers: &[SiteNumber],
        encoder: &mut ScansEncoder,
    ) -> Option<Vec<u8>> {
        let numbered = || events.iter().zip(numbers.iter().copied());
        let base = count_and_base_ms(numbered()).1?;
        let mut body = Vec::new();
        encoder.encode(numbered(), base, &mut body);
        Some(body)
    }

    proptest! {
        /// Sites found by their numbers (some sites numbered, some not, numbers sparse) encode
        /// as sites found by their fields do, byte for byte; and one encoder's next record
        /// forgets the numbers of its last.
        #[test]
        fn numbered_sites_encode_as_unnumbered_ones(events in proptest::collection::vec(any_event(), 1..300), numbering in any::<u64>()) {
            let number_of = |event: &ScanEvent| {
                let site = Site::of(event);
                let code = site.facility_zip as u32 * 9 + site.facility * 3 + site.machine;
                if numbering >> (code % 64) & 1 == 1 { code * 5 + 3 } else { NO_SITE_NUMBER }
            };
            let numbers: Vec<SiteNumber> = events.iter().map(number_of).collect();
            let mut encoder = ScansEncoder::default();
            let Some(plain) = encoded(&events) else { return Ok(()) };
            prop_assert_eq!(encoded_numbered(&events, &numbers, &mut encoder), Some(plain));
            let rest = &events[events.len() / 2..];
            prop_assert_eq!(encoded_numbered(rest, &numbers[events.len() / 2..], &mut encoder), encoded(rest));
        }

        /// Scans read back as written, their sites shared through the table; times that span
        /// too far are refused (the caller writes the long form); a body of another length, or
        /// a scan naming a site the table lacks, does not read.
        #[test]
        fn scans_round_trip(events in proptest::collection::vec(any_event(), 1..300)) {
            let Some(body) = encoded(&events) else {
                let (min, max) = events.iter().fold((i64::MAX, i64::MIN), |(a, b), e| (a.min(e.time_ms), b.max(e.time_ms)));
                prop_assert!(max - min > i64::from(u32::MAX));
                return Ok(());
            };
            let sites: hashbrown::HashSet<Site> = events.iter().map(Site::of).collect();
            prop_assert_eq!(body.len(), body_len(events.len(), sites.len()));
            prop_assert_eq!(decode(events.len(), &body), Some(events.clone()));
            prop_assert_eq!(decode(events.len() + 1, &body), None);
            prop_assert_eq!(decode(events.len(), &body[..body.len() - 1]), None);
            let mut beyond = body.clone();
            let site_at = 8 + 26;
            beyond[site_at..site_at + 2].copy_from_slice(&(sites.len() as u16).to_le_bytes());
            prop_assert_eq!(decode(events.len(), &beyond), None);
        }
    }

    #[test]
    fn times_a_u32_of_milliseconds_apart_fit_and_one_more_does_not() {
        let events = |span: i64| {
            let first = ScanEvent {
                barcode: Barcode::Imb(Imb::new("00270123456789123456", "").unwrap()).key(),
                time_ms: -5,
                routing: Zip::NONE,
                facility_zip: Zip::NONE,
                facility: 0,
                machine: 0,
                code: EventCode::parse(b"918").unwrap(),
                class: MailClass::Mail,
                handling: HandlingEventType::Unknown,
            };
            let last = ScanEvent {
                time_ms: first.time_ms + span,
                ..first
            };
            [first, last]
        };
        let fits = events(i64::from(u32::MAX));
        assert_eq!(decode(2, &encoded(&fits).unwrap()), Some(fits.to_vec()));
        assert_eq!(encoded(&events(i64::from(u32::MAX) + 1)), None);
    }
}
