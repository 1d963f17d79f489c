//! The synthetic feed generator behind `imbtrack gen`: mail and packages, Zipf-spread Mailer IDs
//! of both lengths, valid barcodes with every routing length, 3–8 scans a piece in a plausible
//! order over a few days, late and duplicate scans, and on request a share of bad records of
//! each reject reason. Deterministic for a seed.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};

use imbtrack_barcode::{mod10_check_digit, Barcode, BarcodeKey, Imb, Impb};

use crate::event::{
    EventCode, Facility, HandlingEventType, MailClass, ScanEvent, SymbolTable, Zip,
};
use crate::time::{civil_from_days, DAY_MS};

/// Output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenFormat {
    /// IV-MTR delimited, `|`, header row.
    Psv,
    /// JSON lines, each an IV-MTR push body (`{"msgGrpId":…,"events":[…]}`) of up to 100 events.
    Json,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Pieces (each gets 3–8 scans).
    pub pieces: u64,
    /// Days the first scans spread over.
    pub days: u32,
    /// First day, as days since 1970-01-01 (UTC).
    pub start_day: i64,
    /// Random seed; the same options give the same bytes.
    pub seed: u64,
    /// Share of pieces that are packages.
    pub package_share: f64,
    /// Share of extra records that are bad, one reject reason after another.
    pub bad_share: f64,
    /// Share of scans written a second time, later in the feed.
    pub duplicate_share: f64,
    /// Share of scans held back and written after later pieces.
    pub late_share: f64,
    /// Output shape.
    pub format: GenFormat,
    /// When set, scans at or after this instant (ms since the epoch) are not written: the feed
    /// is a snapshot taken then, with the pieces still on their way.
    pub until_ms: Option<i64>,
}

impl GenOptions {
    /// `pieces` pieces over one day starting `start_day`, 20% packages, 2% duplicates, 3% late
    /// scans, no bad records, psv, seed 1.
    pub fn new(pieces: u64, start_day: i64) -> GenOptions {
        GenOptions {
            pieces,
            days: 1,
            start_day,
            seed: 1,
            package_share: 0.2,
            bad_share: 0.0,
            duplicate_share: 0.02,
            late_share: 0.03,
            format: GenFormat::Psv,
            until_ms: None,
        }
    }
}

/// What a generated record is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A scan written for the first time.
    Good,
    /// An exact repeat of an earlier good record.
    Duplicate,
    /// A bad record that must be rejected for this reason (a [`crate::RejectReason::code`]).
    Bad(&'static str),
}

/// One generated record and the scan it stands for, so tests can check a parse against intent.
#[derive(Debug, Clone)]
pub struct GeneratedLine {
    /// 1-based line of the record.
    pub line: u64,
    /// Index in its JSON body's event array.
    pub index: Option<u64>,
    /// Good, duplicate or bad.
    pub kind: LineKind,
    /// The barcode key (for bad records, of the piece the record was spoiled from).
    pub barcode: BarcodeKey,
    /// Mail or package.
    pub class: MailClass,
    /// Scan instant, UTC milliseconds.
    pub time_ms: i64,
    /// Event code.
    pub code: EventCode,
    /// Facility ZIP.
    pub facility_zip: Zip,
    /// Routing ZIP.
    pub routing: Zip,
    /// Handling event type.
    pub handling: HandlingEventType,
    /// Facility fields.
    pub facility: Facility<'static>,
    /// Machine name.
    pub machine: &'static str,
}

impl GeneratedLine {
    /// The scan the record stands for, its names interned into `symbols`: what parsing the
    /// record gives, for benches and tests that skip the parse.
    pub fn event(&self, symbols: &mut SymbolTable) -> ScanEvent {
        ScanEvent {
            barcode: self.barcode,
            time_ms: self.time_ms,
            routing: self.routing,
            facility_zip: self.facility_zip,
            facility: symbols.intern_facility(self.facility),
            machine: symbols.intern(self.machine),
            code: self.code,
            class: self.class,
            handling: self.handling,
        }
    }
}

/// Counts of what was written. `scans + duplicates + bad == records`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenSummary {
    /// Pieces.
    pub pieces: u64,
    /// Records written (lines for psv, events for json).
    pub records: u64,
    /// Distinct good scans.
    pub scans: u64,
    /// Repeated scans.
    pub duplicates: u64,
    /// Scans written after later pieces.
    pub late: u64,
    /// Bad records.
    pub bad: u64,
    /// Bad records by the reason they must be rejected for.
    pub bad_by_reason: BTreeMap<&'static str, u64>,
    /// Bytes written.
    pub bytes: u64,
}

/// Processing and delivery facilities: ZIP, name, city, state, UTC offset in minutes (standard
/// time; the generator does not model daylight saving).
const FACILITIES: [(&str, &str, &str, &str, i32); 16] = [
    ("60607", "CHICAGO IL P&DC", "CHICAGO", "IL", -360),
    ("10199", "NEW YORK NY P&DC", "NEW YORK", "NY", -300),
    ("90052", "LOS ANGELES CA P&DC", "LOS ANGELES", "CA", -480),
    (
        "94110",
        "SAN FRANCISCO CA P&DC",
        "SAN FRANCISCO",
        "CA",
        -480,
    ),
    ("75260", "DALLAS TX P&DC", "DALLAS", "TX", -360),
    ("30320", "ATLANTA GA P&DC", "ATLANTA", "GA", -300),
    ("98168", "SEATTLE WA P&DC", "SEATTLE", "WA", -480),
    ("80266", "DENVER CO P&DC", "DENVER", "CO", -420),
    ("85026", "PHOENIX AZ P&DC", "PHOENIX", "AZ", -420),
    ("33152", "MIAMI FL P&DC", "MIAMI", "FL", -300),
    ("02205", "BOSTON MA P&DC", "BOSTON", "MA", -300),
    ("19176", "PHILADELPHIA PA P&DC", "PHILADELPHIA", "PA", -300),
    ("48233", "DETROIT MI P&DC", "DETROIT", "MI", -300),
    ("55202", "MINNEAPOLIS MN P&DC", "MINNEAPOLIS", "MN", -360),
    ("63155", "SAINT LOUIS MO P&DC", "SAINT LOUIS", "MO", -360),
    ("00936", "SAN JUAN PR P&DC", "SAN JUAN", "PR", -240),
];

/// Mail: acceptance, processing codes without a public meaning (they show as `UNKNOWN`, as
/// real feeds' unlisted codes do), destination sort, DPS passes.
const MAIL_ACCEPTANCE: [(&str, HandlingEventType); 2] = [
    ("873", HandlingEventType::Assumed),
    ("874", HandlingEventType::Assumed),
];
const MAIL_PROCESSING: [&str; 4] = ["271", "335", "891", "911"];
const MAIL_DESTINATION: [&str; 3] = ["893", "918", "919"];
const MAIL_MACHINES: [&str; 4] = ["DBCS", "DIOSS", "AFCS200", "CIOSS"];
/// Packages: the usual sequence of scan-feeds.md §2.3.
const PACKAGE_SEQUENCE: [&str; 10] = ["GX", "03", "10", "EF", "10", "EF", "07", "PC", "OF", "01"];
const PACKAGE_MACHINES: [&str; 3] = ["APBS", "APPS", "MDD"];
const SERVICE_TYPES: [&str; 4] = ["040", "270", "300", "700"];
const BAD_REASONS_PSV: [&str; 7] = [
    "bad_barcode",
    "bad_time",
    "time_without_offset",
    "missing_event_code",
    "bad_zip",
    "column_count",
    "time_out_of_range",
];
const BAD_REASONS_JSON: [&str; 7] = [
    "bad_barcode",
    "bad_time",
    "time_without_offset",
    "missing_event_code",
    "bad_zip",
    "malformed_json",
    "time_out_of_range",
];
const MAILERS: usize = 2_000;
/// Mailers from this Zipf rank on get 9-digit Mailer IDs (USPS gives those to small mailers;
/// their 6-digit serials suffice at their volumes).
const NINE_DIGIT_FROM_RANK: usize = 200;

const PSV_HEADER: &str = "imb|impb|scanDatetime|scanEventCode|scanFacilityZip|handlingEventType|scanFacilityName|scanFacilityCity|scanFacilityState|machineName\n";

/// splitmix64: a small, fast random generator that gives the same numbers on every platform
/// and version, for reproducible feeds, tests and benchmarks.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn digits(&mut self, out: &mut String, n: usize) {
        for _ in 0..n {
            out.push(char::from(b'0' + self.below(10) as u8));
        }
    }
}

/// One scan before it is written: the record's text fields and its meaning.
#[derive(Clone)]
struct Scan {
    barcode: String,
    class: MailClass,
    key: BarcodeKey,
    routing: Zip,
    time_ms: i64,
    offset_minutes: i32,
    code: &'static str,
    handling: HandlingEventType,
    facility: usize,
    machine: &'static str,
}

struct Mailer {
    mailer_id: String,
    next_serial: u64,
}

struct Generator<'o, W: Write, F: FnMut(&GeneratedLine)> {
    options: &'o GenOptions,
    rng: SplitMix64,
    out: W,
    on_line: F,
    summary: GenSummary,
    zipf_cdf: Vec<f64>,
    mailers: Vec<Mailer>,
    line: u64,
    /// Events written into the current JSON body.
    body_events: u64,
    held_back: VecDeque<(u64, Scan)>,
    repeats: VecDeque<(u64, Scan)>,
    bad_turn: usize,
    buffer: String,
}

/// Writes a synthetic feed to `out`, calling `on_line` for every record written.
pub fn generate<W: Write>(
    options: &GenOptions,
    out: W,
    on_line: impl FnMut(&GeneratedLine),
) -> io::Result<GenSummary> {
    let mut rng = SplitMix64(options.seed ^ 0x1AB7_2ACC);
    // Zipf (s = 1) over mailer ranks.
    let mut zipf_cdf: Vec<f64> = (1..=MAILERS)
        .scan(0.0, |total, rank| {
            *total += 1.0 / rank as f64;
            Some(*total)
        })
        .collect();
    let total = zipf_cdf[MAILERS - 1];
    zipf_cdf.iter_mut().for_each(|c| *c /= total);
    let mailers = (0..MAILERS)
        .map(|rank| {
            let mut mailer_id = String::new();
            if rank >= NINE_DIGIT_FROM_RANK {
                mailer_id.push('9');
                rng.digits(&mut mailer_id, 8);
            } else {
                mailer_id.push(char::from(b'0' + rng.below(9) as u8));
                rng.digits(&mut mailer_id, 5);
            }
            Mailer {
                mailer_id,
                next_serial: rng.below(1000),
            }
        })
        .collect();
    let mut generator = Generator {
        options,
        rng,
        out: io::BufWriter::with_capacity(1 << 20, out),
        on_line,
        summary: GenSummary {
            pieces: options.pieces,
            ..GenSummary::default()
        },
        zipf_cdf,
        mailers,
        line: 0,
        body_events: 0,
        held_back: VecDeque::new(),
        repeats: VecDeque::new(),
        bad_turn: 0,
        buffer: String::with_capacity(512),
    };
    generator.run()?;
    let Generator {
        mut summary,
        mut out,
        ..
    } = generator;
    out.flush()?;
    summary.records = summary.scans + summary.duplicates + summary.bad;
    Ok(summary)
}

impl<W: Write, F: FnMut(&GeneratedLine)> Generator<'_, W, F> {
    fn run(&mut self) -> io::Result<()> {
        if self.options.format == GenFormat::Psv {
            self.write_raw(PSV_HEADER)?;
            self.line = 1;
        }
        for piece in 0..self.options.pieces {
            let scans = self.piece();
            for scan in scans {
                if self.rng.chance(self.options.late_share) {
                    self.summary.late += 1;
                    self.held_back.push_back((piece + 50, scan));
                } else {
                    self.emit(scan, LineKind::Good)?;
                }
                if self.rng.chance(self.options.bad_share) {
                    self.emit_bad()?;
                }
            }
            while self.held_back.front().is_some_and(|(due, _)| *due <= piece) {
                let (_, scan) = self.held_back.pop_front().expect("front exists");
                self.emit(scan, LineKind::Good)?;
            }
            while self.repeats.front().is_some_and(|(due, _)| *due <= piece) {
                let (_, scan) = self.repeats.pop_front().expect("front exists");
                self.emit(scan, LineKind::Duplicate)?;
            }
        }
        while let Some((_, scan)) = self.held_back.pop_front() {
            self.emit(scan, LineKind::Good)?;
        }
        while let Some((_, scan)) = self.repeats.pop_front() {
            self.emit(scan, LineKind::Duplicate)?;
        }
        self.close_body()
    }

    fn zipf_rank(&mut self) -> usize {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.zipf_cdf.partition_point(|&c| c < u).min(MAILERS - 1)
    }

    /// The scans of one new piece, in the order they happened.
    fn piece(&mut self) -> Vec<Scan> {
        let package = self.rng.chance(self.options.package_share);
        let rank = self.zipf_rank();
        let mailer = &mut self.mailers[rank];
        let serial = mailer.next_serial;
        mailer.next_serial += 1;
        let mailer_id = mailer.mailer_id.clone();
        let destination = self.rng.below(FACILITIES.len() as u64) as usize;
        let origin = self.rng.below(FACILITIES.len() as u64) as usize;
        let (barcode, class, key, routing) = if package {
            self.package_barcode(&mailer_id, serial, destination)
        } else {
            self.mail_barcode(&mailer_id, serial, destination)
        };

        let count = 3 + self.rng.below(6) as usize;
        let steps: Vec<(&'static str, HandlingEventType, usize)> = if package {
            let delivered = self.rng.chance(0.5);
            let start = if delivered {
                PACKAGE_SEQUENCE.len().saturating_sub(count)
            } else {
                0
            };
            PACKAGE_SEQUENCE[start..start + count]
                .iter()
                .enumerate()
                .map(|(i, &code)| {
                    (
                        code,
                        HandlingEventType::Physical,
                        if i * 2 < count { origin } else { destination },
                    )
                })
                .collect()
        } else {
            let mut steps: Vec<_> = MAIL_ACCEPTANCE
                .iter()
                .map(|&(c, h)| (c, h, origin))
                .collect();
            for _ in 0..count.saturating_sub(5) {
                let code = MAIL_PROCESSING[self.rng.below(MAIL_PROCESSING.len() as u64) as usize];
                steps.push((code, HandlingEventType::Physical, origin));
            }
            steps.extend(
                MAIL_DESTINATION
                    .iter()
                    .map(|&c| (c, HandlingEventType::Physical, destination)),
            );
            steps.truncate(count);
            steps
        };
        let until = self.options.until_ms.unwrap_or(i64::MAX);
        let machines: &[&'static str] = if package {
            &PACKAGE_MACHINES
        } else {
            &MAIL_MACHINES
        };
        let mut time_ms = (self.options.start_day * DAY_MS) as u64 as i64
            + self
                .rng
                .below((self.options.days.max(1) as u64) * DAY_MS as u64) as i64
                / 1000
                * 1000;
        steps
            .into_iter()
            .map(|(code, handling, facility)| {
                let scan = Scan {
                    barcode: barcode.clone(),
                    class,
                    key,
                    routing,
                    time_ms,
                    offset_minutes: FACILITIES[facility].4,
                    code,
                    handling,
                    facility,
                    machine: machines[self.rng.below(machines.len() as u64) as usize],
                };
                time_ms += (1 + self.rng.below(18 * 3600)) as i64 * 1000;
                scan
            })
            .filter(|scan| scan.time_ms < until)
            .collect()
    }

    fn routing_digits(&mut self, destination: usize) -> String {
        let mut routing = FACILITIES[destination].0[..3].to_string();
        match self.rng.below(20) {
            0 => return String::new(),
            1..=3 => self.rng.digits(&mut routing, 2),
            4..=7 => self.rng.digits(&mut routing, 6),
            _ => self.rng.digits(&mut routing, 8),
        }
        routing
    }

    fn mail_barcode(
        &mut self,
        mailer_id: &str,
        serial: u64,
        destination: usize,
    ) -> (String, MailClass, BarcodeKey, Zip) {
        let serial_len = 15 - mailer_id.len();
        let barcode_id = if self.rng.chance(0.9) {
            "00".to_string()
        } else {
            format!("{}{}", self.rng.below(10), self.rng.below(5))
        };
        let service_type = SERVICE_TYPES[self.rng.below(SERVICE_TYPES.len() as u64) as usize];
        let tracking = format!(
            "{barcode_id}{service_type}{mailer_id}{:0serial_len$}",
            serial % 10u64.pow(serial_len as u32)
        );
        let routing = self.routing_digits(destination);
        let imb = Imb::new(&tracking, &routing).expect("generated IMbs are valid");
        let zip = Zip::parse(routing.as_bytes()).unwrap_or(Zip::NONE);
        (
            format!("{tracking}{routing}"),
            MailClass::Mail,
            Barcode::Imb(imb).key(),
            zip,
        )
    }

    fn package_barcode(
        &mut self,
        mailer_id: &str,
        serial: u64,
        destination: usize,
    ) -> (String, MailClass, BarcodeKey, Zip) {
        // Channel 92 carries a 9-digit Mailer ID and a 7-digit serial, 93 a 6-digit one and 10.
        let (channel, serial_len) = if mailer_id.len() == 9 {
            ("92", 7)
        } else {
            ("93", 10)
        };
        let service_type = ["001", "612", "055"][self.rng.below(3) as usize];
        let data = format!(
            "{channel}{service_type}{mailer_id}{:0serial_len$}",
            serial % 10u64.pow(serial_len as u32)
        );
        let tracking = format!("{data}{}", mod10_check_digit(data.bytes()));
        let zip = FACILITIES[destination].0;
        let barcode = if self.rng.chance(0.5) {
            format!("420{zip}{tracking}")
        } else {
            tracking
        };
        let impb = Impb::parse(&barcode).expect("generated package barcodes are valid");
        let routing = Zip::parse(impb.zip().as_bytes()).unwrap_or(Zip::NONE);
        (
            barcode,
            MailClass::Package,
            Barcode::Impb(impb).key(),
            routing,
        )
    }

    fn emit(&mut self, scan: Scan, kind: LineKind) -> io::Result<()> {
        let mut fields = ScanFields::of(&scan);
        self.write_record(&mut fields, kind, &scan)?;
        if kind == LineKind::Good {
            self.summary.scans += 1;
            if self.rng.chance(self.options.duplicate_share) {
                let due = self.summary.scans / 4 + self.rng.below(20);
                self.repeats.push_back((due, scan));
            }
        } else {
            self.summary.duplicates += 1;
        }
        Ok(())
    }

    /// A record spoiled in the next reason's way, from a fresh piece's first scan.
    fn emit_bad(&mut self) -> io::Result<()> {
        let reasons = if self.options.format == GenFormat::Psv {
            &BAD_REASONS_PSV
        } else {
            &BAD_REASONS_JSON
        };
        let reason = reasons[self.bad_turn % reasons.len()];
        self.bad_turn += 1;
        // A piece whose first scan is after `until_ms` has nothing to spoil.
        let Some(scan) = self.piece().into_iter().next() else {
            return Ok(());
        };
        let mut fields = ScanFields::of(&scan);
        match reason {
            // A barcode ID whose second digit is above 4.
            "bad_barcode" => fields.barcode.replace_range(1..2, "7"),
            // Month 13.
            "bad_time" => fields.time.replace_range(5..7, "13"),
            "time_without_offset" => fields.time.truncate(19),
            "missing_event_code" => fields.code = "",
            "bad_zip" => fields.facility_zip = "9411",
            "column_count" => fields.extra_column = true,
            "malformed_json" => fields.malformed = true,
            "time_out_of_range" => fields.time.replace_range(0..4, "1999"),
            _ => unreachable!("every reason is handled"),
        }
        self.summary.bad += 1;
        *self.summary.bad_by_reason.entry(reason).or_default() += 1;
        self.write_record(&mut fields, LineKind::Bad(reason), &scan)
    }

    fn write_raw(&mut self, text: &str) -> io::Result<()> {
        self.summary.bytes += text.len() as u64;
        self.out.write_all(text.as_bytes())
    }

    fn write_record(
        &mut self,
        fields: &mut ScanFields,
        kind: LineKind,
        scan: &Scan,
    ) -> io::Result<()> {
        let mut text = std::mem::take(&mut self.buffer);
        text.clear();
        let index = match self.options.format {
            GenFormat::Psv => {
                fields.write_psv(&mut text);
                self.line += 1;
                None
            }
            GenFormat::Json => {
                if self.body_events == 0 {
                    self.line += 1;
                    text.push_str(&format!(
                        "{{\"msgGrpId\":\"gen-{}\",\"events\":[",
                        self.line
                    ));
                } else {
                    text.push(',');
                }
                fields.write_json(&mut text);
                self.body_events += 1;
                Some(self.body_events - 1)
            }
        };
        self.write_raw(&text)?;
        self.buffer = text;
        if self.body_events == 100 {
            self.close_body()?;
        }
        let facility = FACILITIES[scan.facility];
        (self.on_line)(&GeneratedLine {
            line: self.line,
            index,
            kind,
            barcode: scan.key,
            class: scan.class,
            time_ms: scan.time_ms,
            code: EventCode::parse(scan.code.as_bytes()).expect("generator codes are valid"),
            facility_zip: Zip::parse(facility.0.as_bytes()).expect("facility ZIPs are valid"),
            routing: scan.routing,
            handling: scan.handling,
            facility: Facility {
                name: facility.1,
                city: facility.2,
                state: facility.3,
            },
            machine: scan.machine,
        });
        Ok(())
    }

    fn close_body(&mut self) -> io::Result<()> {
        if self.body_events > 0 {
            self.body_events = 0;
            self.write_raw("]}\n")?;
        }
        Ok(())
    }
}

/// The text fields of one record.
struct ScanFields {
    barcode: String,
    package: bool,
    time: String,
    code: &'static str,
    facility_zip: &'static str,
    handling: &'static str,
    facility: (&'static str, &'static str, &'static str),
    machine: &'static str,
    extra_column: bool,
    malformed: bool,
}

/// A local ISO 8601 time with its offset, as plants write them.
fn local_time(time_ms: i64, offset_minutes: i32) -> String {
    let local = time_ms + i64::from(offset_minutes) * 60_000;
    let days = local.div_euclid(DAY_MS);
    let ms = local.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset = offset_minutes.unsigned_abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        offset / 60,
        offset % 60
    )
}

impl ScanFields {
    fn of(scan: &Scan) -> ScanFields {
        let facility = FACILITIES[scan.facility];
        ScanFields {
            barcode: scan.barcode.clone(),
            package: scan.class == MailClass::Package,
            time: local_time(scan.time_ms, scan.offset_minutes),
            code: scan.code,
            facility_zip: facility.0,
            handling: scan.handling.code(),
            facility: (facility.1, facility.2, facility.3),
            machine: scan.machine,
            extra_column: false,
            malformed: false,
        }
    }

    fn write_psv(&self, out: &mut String) {
        let (imb, impb) = if self.package {
            ("", self.barcode.as_str())
        } else {
            (self.barcode.as_str(), "")
        };
        for (i, field) in [
            imb,
            impb,
            &self.time,
            self.code,
            self.facility_zip,
            self.handling,
            self.facility.0,
            self.facility.1,
            self.facility.2,
            self.machine,
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                out.push('|');
            }
            out.push_str(field);
        }
        if self.extra_column {
            out.push_str("|EXTRA");
        }
        out.push('\n');
    }

    fn write_json(&self, out: &mut String) {
        if self.malformed {
            out.push_str("\"not an event\"");
            return;
        }
        let barcode_key = if self.package { "impb" } else { "imb" };
        out.push_str(&format!(
            "{{\"{barcode_key}\":\"{}\",\"scanDatetime\":\"{}\",\"scanEventCode\":\"{}\",\"scanFacilityZip\":\"{}\",\"handlingEventType\":\"{}\",\"scanFacilityName\":\"{}\",\"scanFacilityCity\":\"{}\",\"scanFacilityState\":\"{}\",\"machineName\":\"{}\"}}",
            self.barcode, self.time, self.code, self.facility_zip, self.handling, self.facility.0, self.facility.1, self.facility.2, self.machine
        ));
    }
}
