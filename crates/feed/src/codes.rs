//! The code tables of `data/`: mail operation codes (phase, level, description, stop-the-clock,
//! status) and package event codes (description, status). Each file starts with a `# version:`
//! line and a header row; the mail table's columns are the USPS Operation Code List's own, so
//! an operator can use the full list from PostalPro instead (`--op-codes FILE`). Only codes
//! with a public source are shipped (`shared/docs/op-codes.md`); any other code is
//! [`CodeInfo::Unknown`] and keeps its raw value.

use std::borrow::Cow;
use std::path::Path;

use hashbrown::HashMap;

use crate::delimited::split_fields;
use crate::event::{EventCode, MailClass};

/// The tables shipped in `data/`, compiled in so the binary runs anywhere.
const BUILTIN_MAIL: &str = include_str!("../../../data/mail_opcodes.csv");
const BUILTIN_PACKAGE: &str = include_str!("../../../data/package_events.csv");

/// What a scan says about where a piece is, as users are shown it. The tables map codes to these;
/// a code no table lists is [`Status::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Labelled or announced, not yet in USPS hands.
    PreTransit,
    /// In USPS hands.
    Accepted,
    /// Processed at the origin plant.
    OriginProcessed,
    /// Moving between facilities.
    InTransit,
    /// Processed at the destination plant.
    DestinationProcessed,
    /// At the delivery unit.
    ArrivedAtDeliveryUnit,
    /// Sorted in delivery order.
    SortedForDelivery,
    /// With the carrier.
    OutForDelivery,
    /// Held for pickup.
    AvailableForPickup,
    /// A delivery attempt failed.
    Attempted,
    /// Held up.
    Delayed,
    /// Something went wrong.
    Exception,
    /// Delivered (for mail, by a Logical Delivery Event: the piece's status says so).
    Delivered,
    /// Going back, with a problem.
    ReturnException,
    /// Returned to the sender.
    Returned,
    /// Forwarded to a new address.
    Forwarded,
    /// No table knows the code.
    Unknown,
}

impl Status {
    const ALL: [Status; 17] = [
        Status::PreTransit,
        Status::Accepted,
        Status::OriginProcessed,
        Status::InTransit,
        Status::DestinationProcessed,
        Status::ArrivedAtDeliveryUnit,
        Status::SortedForDelivery,
        Status::OutForDelivery,
        Status::AvailableForPickup,
        Status::Attempted,
        Status::Delayed,
        Status::Exception,
        Status::Delivered,
        Status::ReturnException,
        Status::Returned,
        Status::Forwarded,
        Status::Unknown,
    ];

    /// The name shown to users and used in the tables (`SORTED_FOR_DELIVERY`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::PreTransit => "PRE_TRANSIT",
            Status::Accepted => "ACCEPTED",
            Status::OriginProcessed => "ORIGIN_PROCESSED",
            Status::InTransit => "IN_TRANSIT",
            Status::DestinationProcessed => "DESTINATION_PROCESSED",
            Status::ArrivedAtDeliveryUnit => "ARRIVED_AT_DELIVERY_UNIT",
            Status::SortedForDelivery => "SORTED_FOR_DELIVERY",
            Status::OutForDelivery => "OUT_FOR_DELIVERY",
            Status::AvailableForPickup => "AVAILABLE_FOR_PICKUP",
            Status::Attempted => "ATTEMPTED",
            Status::Delayed => "DELAYED",
            Status::Exception => "EXCEPTION",
            Status::Delivered => "DELIVERED",
            Status::ReturnException => "RETURN_EXCEPTION",
            Status::Returned => "RETURNED",
            Status::Forwarded => "FORWARDED",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// The status named `name` ([`Status::as_str`]).
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the piece has reached its addressee.
    pub fn is_delivered(self) -> bool {
        self == Status::Delivered
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mail operation code's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailOpCode {
    /// Mail phase, one of USPS's 16 ([`MAIL_PHASES`]), or empty when the list gives none.
    pub phase: String,
    /// Mail level (`DPS 2nd pass`, `Logical Delivery Event`, …), or empty.
    pub level: String,
    /// Process description (the equipment's when the list gives no process description).
    pub description: String,
    /// Whether the scan stops the service clock.
    pub stop_the_clock: bool,
    /// Normalised status shown to users (`SORTED_FOR_DELIVERY`, …).
    pub status: Status,
    /// A Logical Delivery Event (op code 517, or mail level `Logical Delivery Event`): the
    /// system's delivery, not a carrier's scan.
    pub logical_delivery: bool,
}

/// USPS's 16 mail phases (IV-MTR External Data Dictionary) and the status each means.
pub const MAIL_PHASES: [(&str, Status); 16] = [
    (
        "Phase 0 - Origin Processing Cancellation of Postage",
        Status::OriginProcessed,
    ),
    ("Phase 1 - Origin Processing", Status::OriginProcessed),
    ("Phase 1a - Origin Primary", Status::OriginProcessed),
    ("Phase 1b - Origin Secondary", Status::OriginProcessed),
    (
        "Phase 2 - Destination Processing",
        Status::DestinationProcessed,
    ),
    ("Phase 2a - Destination MMP", Status::DestinationProcessed),
    ("Phase 2b - Destination SCF", Status::DestinationProcessed),
    (
        "Phase 2c - Destination Primary",
        Status::DestinationProcessed,
    ),
    (
        "Phase 3a - Destination Secondary",
        Status::DestinationProcessed,
    ),
    (
        "Phase 3b - Destination Box Mail",
        Status::DestinationProcessed,
    ),
    (
        "Phase 3c - Destination Sequenced Carrier Sortation",
        Status::SortedForDelivery,
    ),
    ("Phase 4c - Delivery", Status::Delivered),
    ("PARS Processing", Status::Forwarded),
    ("FPARS Processing", Status::Forwarded),
    ("Miscellaneous", Status::InTransit),
    ("Foreign Processing", Status::InTransit),
];

/// The op code of a Logical Delivery Event.
const LOGICAL_DELIVERY_CODE: &str = "517";

/// A package event code's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEvent {
    /// What happened.
    pub description: String,
    /// Normalised status (`DELIVERED`, …).
    pub status: Status,
}

/// What a code means, if the tables know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeInfo<'a> {
    /// A known mail operation code.
    Mail(&'a MailOpCode),
    /// A known package event code.
    Package(&'a PackageEvent),
    /// A code no table lists: shown as `UNKNOWN` with its raw value.
    Unknown,
}

/// A table that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeTablesError {
    /// The file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content is wrong at a line.
    #[error("{table} line {line}: {message}")]
    Format {
        /// Which table.
        table: &'static str,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Both code tables with their versions.
#[derive(Debug, Clone)]
pub struct CodeTables {
    /// The mail table's version line.
    pub mail_version: String,
    /// The package table's version line.
    pub package_version: String,
    mail: HashMap<EventCode, MailOpCode>,
    package: HashMap<EventCode, PackageEvent>,
}

/// A table read from CSV: its version, its columns (by [`column_key`]) and its rows, each with
/// its 1-based line number.
struct Table {
    name: &'static str,
    version: String,
    columns: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

/// A column name as tables are matched by: lower case, letters and digits only, so the USPS
/// list's `Operation Code`, `OPERATION_CODE` and `operation code` are one column.
fn column_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Table {
    /// Reads `# version: …`, a header row and the rows (blank lines skipped; every row as
    /// wide as the header).
    fn parse(text: &str, name: &'static str) -> Result<Table, CodeTablesError> {
        let error = |line: usize, message: String| CodeTablesError::Format {
            table: name,
            line,
            message,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let version = match lines.next() {
            Some((_, line))
                if line
                    .trim_start_matches('\u{feff}')
                    .starts_with("# version:") =>
            {
                line.trim_start_matches('\u{feff}')["# version:".len()..]
                    .trim()
                    .to_string()
            }
            _ => {
                return Err(error(
                    1,
                    "first line must be `# version: …` (add one naming the list's date)".into(),
                ))
            }
        };
        let split = |line: &str, n: usize| -> Result<Vec<String>, CodeTablesError> {
            let mut fields: Vec<Cow<'_, [u8]>> = Vec::new();
            split_fields(line.as_bytes(), b',', &mut fields)
                .map_err(|e| error(n, e.to_string()))?;
            Ok(fields
                .iter()
                .map(|f| String::from_utf8_lossy(f).trim().to_string())
                .collect())
        };
        let (n, header_line) = lines
            .next()
            .ok_or_else(|| error(2, "no header row".into()))?;
        let columns: Vec<String> = split(header_line, n)?
            .iter()
            .map(|c| column_key(c))
            .collect();
        let mut rows = Vec::new();
        for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            let row = split(line, n)?;
            if row.len() != columns.len() {
                return Err(error(
                    n,
                    format!("{} fields, the header has {}", row.len(), columns.len()),
                ));
            }
            rows.push((n, row));
        }
        Ok(Table {
            name,
            version,
            columns,
            rows,
        })
    }

    /// The position of the column named `name` (any case and spacing), if there is one.
    fn column(&self, name: &str) -> Option<usize> {
        let key = column_key(name);
        self.columns.iter().position(|c| *c == key)
    }

    /// The position of a column the table must have.
    fn required(&self, name: &str) -> Result<usize, CodeTablesError> {
        self.column(name).ok_or_else(|| CodeTablesError::Format {
            table: self.name,
            line: 2,
            message: format!("no {name:?} column"),
        })
    }

    fn error(&self, line: usize, message: String) -> CodeTablesError {
        CodeTablesError::Format {
            table: self.name,
            line,
            message,
        }
    }
}

/// `Y`/`Yes`/`true`/`1` or `N`/`No`/`false`/`0`/empty, as lists write a yes/no column.
fn yes_no(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "1" => Some(true),
        "n" | "no" | "false" | "0" | "" => Some(false),
        _ => None,
    }
}

impl CodeTables {
    /// The tables shipped with imbtrack.
    pub fn builtin() -> CodeTables {
        CodeTables::parse(BUILTIN_MAIL, BUILTIN_PACKAGE)
            .expect("the shipped code tables are valid (tested)")
    }

    /// The shipped package table with the mail operation codes of `path`: a CSV whose columns
    /// are the USPS Operation Code List's (`--op-codes FILE`), see [`CodeTables::parse`].
    pub fn with_mail_list(path: &Path) -> Result<CodeTables, CodeTablesError> {
        let text = std::fs::read_to_string(path).map_err(|source| CodeTablesError::Io {
            path: path.display().to_string(),
            source,
        })?;
        CodeTables::with_mail_csv(&text)
    }

    /// [`CodeTables::with_mail_list`] from the list's text.
    pub fn with_mail_csv(text: &str) -> Result<CodeTables, CodeTablesError> {
        CodeTables::parse(text, BUILTIN_PACKAGE)
    }

    /// Parses both tables from their text. Each starts with a `# version: …` line and a header
    /// row; columns are found by name in any case and spacing, and columns not listed here are
    /// ignored.
    ///
    /// The mail table takes the USPS Operation Code List's own columns: `Operation Code`
    /// (required), `Mail Phase` (one of the 16, [`MAIL_PHASES`]), `Mail Level`, `Process
    /// Description`, `Equipment Description` and `Stop The Clock Scan` (yes/no); and one of
    /// imbtrack's, `imbtrack Status`, for codes whose status their phase does not give. A
    /// code's status is that column's when given, else `DELIVERED` for a Logical Delivery Event
    /// (op code 517 or that mail level), `OUT_FOR_DELIVERY` for the `Logical Out for Delivery`
    /// level, else its phase's. The package table has `code`, `description` and `status`.
    pub fn parse(mail_csv: &str, package_csv: &str) -> Result<CodeTables, CodeTablesError> {
        let code = |table: &Table, line: usize, text: &str| {
            EventCode::parse(text.as_bytes())
                .ok_or_else(|| table.error(line, format!("bad code {text:?}")))
        };
        let status = |table: &Table, line: usize, text: &str| {
            Status::parse(text).ok_or_else(|| table.error(line, format!("unknown status {text:?}")))
        };
        let table = Table::parse(mail_csv, "mail_opcodes")?;
        let at = |name: &str| table.column(name);
        let code_at = table.required("Operation Code")?;
        let (phase_at, level_at, status_at) =
            (at("Mail Phase"), at("Mail Level"), at("imbtrack Status"));
        let (process_at, equipment_at) = (at("Process Description"), at("Equipment Description"));
        let stop_at = at("Stop The Clock Scan").or_else(|| at("Stop The Clock"));
        let mut mail = HashMap::new();
        for (line, row) in &table.rows {
            let field = |at: Option<usize>| at.map_or("", |i| row[i].as_str());
            let op_code = code(&table, *line, field(Some(code_at)))?;
            let stop_the_clock = yes_no(field(stop_at)).ok_or_else(|| {
                table.error(
                    *line,
                    format!("stop the clock {:?} is not yes or no", field(stop_at)),
                )
            })?;
            let phase_text = field(phase_at);
            let phase = match MAIL_PHASES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(phase_text))
            {
                Some(&(name, status)) => Some((name, status)),
                None if phase_text.is_empty() => None,
                None => {
                    return Err(table.error(
                        *line,
                        format!("mail phase {phase_text:?} is not one of USPS's 16"),
                    ))
                }
            };
            let level = field(level_at);
            let logical_delivery = op_code.as_str() == LOGICAL_DELIVERY_CODE
                || level.eq_ignore_ascii_case("Logical Delivery Event");
            let own = field(status_at);
            let status = if !own.is_empty() {
                status(&table, *line, own)?
            } else if logical_delivery {
                Status::Delivered
            } else if level.eq_ignore_ascii_case("Logical Out for Delivery") {
                Status::OutForDelivery
            } else if let Some((_, status)) = phase {
                status
            } else {
                return Err(table.error(
                    *line,
                    format!(
                        "op code {} has no mail phase and no imbtrack Status",
                        op_code.as_str()
                    ),
                ));
            };
            let description = match field(process_at) {
                "" => field(equipment_at),
                text => text,
            };
            let entry = MailOpCode {
                phase: phase.map_or_else(String::new, |(name, _)| name.to_string()),
                level: level.to_string(),
                description: description.to_string(),
                stop_the_clock,
                status,
                logical_delivery,
            };
            if mail.insert(op_code, entry).is_some() {
                return Err(table.error(
                    *line,
                    format!("op code {} is listed twice", op_code.as_str()),
                ));
            }
        }
        let packages = Table::parse(package_csv, "package_events")?;
        let (code_at, description_at, status_at) = (
            packages.required("code")?,
            packages.required("description")?,
            packages.required("status")?,
        );
        let mut package = HashMap::new();
        for (line, row) in &packages.rows {
            let entry = PackageEvent {
                description: row[description_at].clone(),
                status: status(&packages, *line, &row[status_at])?,
            };
            package.insert(code(&packages, *line, &row[code_at])?, entry);
        }
        Ok(CodeTables {
            mail_version: table.version,
            package_version: packages.version,
            mail,
            package,
        })
    }

    /// What `code` means for a scan of `class`.
    pub fn lookup(&self, class: MailClass, code: EventCode) -> CodeInfo<'_> {
        let found = match class {
            MailClass::Mail => self.mail.get(&code).map(CodeInfo::Mail),
            MailClass::Package => self.package.get(&code).map(CodeInfo::Package),
        };
        found.unwrap_or(CodeInfo::Unknown)
    }

    /// Every mail op code with its entry (in no order).
    pub fn mail_codes(&self) -> impl Iterator<Item = (EventCode, &MailOpCode)> {
        self.mail.iter().map(|(code, entry)| (*code, entry))
    }

    /// Every package event code with its entry (in no order).
    pub fn package_codes(&self) -> impl Iterator<Item = (EventCode, &PackageEvent)> {
        self.package.iter().map(|(code, entry)| (*code, entry))
    }

    /// Number of (mail, package) codes.
    pub fn len(&self) -> (usize, usize) {
        (self.mail.len(), self.package.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL_HEADER: &str = "# version: t\nOperation Code,Mail Phase,Mail Level,Process Description,Stop The Clock Scan,imbtrack Status\n";

    #[test]
    fn builtin_tables_load() {
        let tables = CodeTables::builtin();
        assert!(tables.mail_version.starts_with('2'));
        let dps = EventCode::parse(b"918").unwrap();
        match tables.lookup(MailClass::Mail, dps) {
            CodeInfo::Mail(entry) => {
                assert_eq!(entry.status, Status::SortedForDelivery);
                assert_eq!(entry.phase, MAIL_PHASES[10].0);
                assert_eq!(entry.level, "DPS 1st pass");
                assert!(!entry.stop_the_clock && !entry.logical_delivery);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tables.lookup(MailClass::Package, dps), CodeInfo::Unknown);
        let lde = EventCode::parse(b"517").unwrap();
        assert!(matches!(
            tables.lookup(MailClass::Mail, lde),
            CodeInfo::Mail(e) if e.status == Status::Delivered && e.logical_delivery
        ));
        let delivered = EventCode::parse(b"01").unwrap();
        assert!(
            matches!(tables.lookup(MailClass::Package, delivered), CodeInfo::Package(e) if e.status == Status::Delivered)
        );
        let forwarded = EventCode::parse(b"06").unwrap();
        assert!(
            matches!(tables.lookup(MailClass::Package, forwarded), CodeInfo::Package(e) if e.status == Status::Forwarded)
        );
        assert_eq!(
            tables.lookup(MailClass::Mail, EventCode::parse(b"271").unwrap()),
            CodeInfo::Unknown
        );
        let (mail, package) = tables.len();
        assert!(mail >= 48, "{mail}");
        assert_eq!(package, 56);
    }

    /// Every mail phase and the status it gives; the levels that say more; the column a
    /// shipped row sets.
    #[test]
    fn mail_statuses_come_from_phase_level_or_the_own_column() {
        let mut text = MAIL_HEADER.to_string();
        for (i, (phase, _)) in MAIL_PHASES.iter().enumerate() {
            text.push_str(&format!("{},{phase},,P,N,\n", 100 + i));
        }
        text.push_str("200,,Logical Out for Delivery,,N,\n");
        text.push_str(
            "201,Phase 3c - Destination Sequenced Carrier Sortation,Logical Delivery Event,,y,\n",
        );
        text.push_str("202,miscellaneous,,,Yes,RETURNED\n");
        let tables = CodeTables::parse(&text, BUILTIN_PACKAGE).unwrap();
        let entry = |code: &str| match tables
            .lookup(MailClass::Mail, EventCode::parse(code.as_bytes()).unwrap())
        {
            CodeInfo::Mail(e) => e.clone(),
            other => panic!("{code}: {other:?}"),
        };
        for (i, (phase, status)) in MAIL_PHASES.iter().enumerate() {
            let e = entry(&(100 + i).to_string());
            assert_eq!((e.phase.as_str(), e.status), (*phase, *status));
        }
        assert_eq!(entry("200").status, Status::OutForDelivery);
        let lde = entry("201");
        assert!(lde.logical_delivery && lde.stop_the_clock);
        assert_eq!(lde.status, Status::Delivered);
        let own = entry("202");
        assert_eq!(
            (own.status, own.phase.as_str()),
            (Status::Returned, "Miscellaneous")
        );
    }

    #[test]
    fn bad_tables_say_where() {
        let err = CodeTables::parse("code,phase\n", BUILTIN_PACKAGE).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("mail_opcodes line 1: first line must be `# version: …`"),
            "{err}"
        );
        for (row, expected) in [
            (
                "918,Phase 3c - Destination Sequenced Carrier Sortation,,D,maybe,",
                "mail_opcodes line 3: stop the clock \"maybe\" is not yes or no",
            ),
            (
                "918,Phase 9,,D,N,",
                "mail_opcodes line 3: mail phase \"Phase 9\" is not one of USPS's 16",
            ),
            (
                "918,,,D,N,",
                "mail_opcodes line 3: op code 918 has no mail phase and no imbtrack Status",
            ),
            (
                "918,,,D,N,SORTED",
                "mail_opcodes line 3: unknown status \"SORTED\"",
            ),
            (
                "9180,,,D,N,EXCEPTION",
                "mail_opcodes line 3: bad code \"9180\"",
            ),
            ("918,,,D", "mail_opcodes line 3: 4 fields, the header has 6"),
        ] {
            let err =
                CodeTables::parse(&format!("{MAIL_HEADER}{row}\n"), BUILTIN_PACKAGE).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let twice = format!("{MAIL_HEADER}918,,,D,N,EXCEPTION\n918,,,D,N,EXCEPTION\n");
        assert_eq!(
            CodeTables::parse(&twice, BUILTIN_PACKAGE)
                .unwrap_err()
                .to_string(),
            "mail_opcodes line 4: op code 918 is listed twice"
        );
        let no_code = "# version: t\nMail Phase\nMiscellaneous\n";
        assert_eq!(
            CodeTables::parse(no_code, BUILTIN_PACKAGE)
                .unwrap_err()
                .to_string(),
            "mail_opcodes line 2: no \"Operation Code\" column"
        );
    }

    #[test]
    fn statuses_are_read_by_name() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("DELIVERED_ESTIMATED"), None);
    }
}
