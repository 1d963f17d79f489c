//! The code tables of `data/`: mail operation codes (phase, description, stop-the-clock, status)
//! and package event codes (description, status). Each file starts with a `# version:` line and
//! a header row. Only codes with a public source are listed; any other code is
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
    /// Delivered.
    Delivered,
    /// Mail whose stop-the-clock scan says it is delivered, in all likelihood.
    DeliveredEstimated,
    /// Going back, with a problem.
    ReturnException,
    /// Going back to the sender.
    ReturnToSender,
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
        Status::DeliveredEstimated,
        Status::ReturnException,
        Status::ReturnToSender,
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
            Status::DeliveredEstimated => "DELIVERED_ESTIMATED",
            Status::ReturnException => "RETURN_EXCEPTION",
            Status::ReturnToSender => "RETURN_TO_SENDER",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// The status named `name` ([`Status::as_str`]).
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the piece has reached its addressee (for certain or by estimate).
    pub fn is_delivered(self) -> bool {
        matches!(self, Status::Delivered | Status::DeliveredEstimated)
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
    /// Mail phase, as USPS names it.
    pub phase: String,
    /// Process description.
    pub description: String,
    /// Whether the scan stops the service clock.
    pub stop_the_clock: bool,
    /// Normalised status shown to users (`SORTED_FOR_DELIVERY`, …).
    pub status: Status,
}

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

/// A table's version and its rows, each with its 1-based line number.
type VersionedRows = (String, Vec<(usize, Vec<String>)>);

/// Rows of a versioned CSV table with the given header, as owned fields.
fn rows(
    text: &str,
    table: &'static str,
    header: &[&str],
) -> Result<VersionedRows, CodeTablesError> {
    let error = |line: usize, message: String| CodeTablesError::Format {
        table,
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let version = match lines.next() {
        Some((_, line)) if line.starts_with("# version:") => {
            line["# version:".len()..].trim().to_string()
        }
        _ => return Err(error(1, "first line must be `# version: …`".into())),
    };
    let split = |line: &str, n: usize| -> Result<Vec<String>, CodeTablesError> {
        let mut fields: Vec<Cow<'_, [u8]>> = Vec::new();
        split_fields(line.as_bytes(), b',', &mut fields).map_err(|e| error(n, e.to_string()))?;
        Ok(fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect())
    };
    let (n, header_line) = lines
        .next()
        .ok_or_else(|| error(2, "no header row".into()))?;
    if split(header_line, n)? != header {
        return Err(error(n, format!("header must be {}", header.join(","))));
    }
    let mut out = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let row = split(line, n)?;
        if row.len() != header.len() {
            return Err(error(
                n,
                format!("{} fields, expected {}", row.len(), header.len()),
            ));
        }
        out.push((n, row));
    }
    Ok((version, out))
}

impl CodeTables {
    /// The tables shipped with imbtrack.
    pub fn builtin() -> CodeTables {
        CodeTables::parse(BUILTIN_MAIL, BUILTIN_PACKAGE)
            .expect("the shipped code tables are valid (tested)")
    }

    /// Reads `mail_opcodes.csv` and `package_events.csv` from a directory.
    pub fn load(dir: &Path) -> Result<CodeTables, CodeTablesError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CodeTablesError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        CodeTables::parse(&read("mail_opcodes.csv")?, &read("package_events.csv")?)
    }

    /// Parses both tables from their text.
    pub fn parse(mail_csv: &str, package_csv: &str) -> Result<CodeTables, CodeTablesError> {
        let code = |table: &'static str, line: usize, text: &str| {
            EventCode::parse(text.as_bytes()).ok_or_else(|| CodeTablesError::Format {
                table,
                line,
                message: format!("bad code {text:?}"),
            })
        };
        let status = |table: &'static str, line: usize, text: &str| {
            Status::parse(text).ok_or_else(|| CodeTablesError::Format {
                table,
                line,
                message: format!("unknown status {text:?}"),
            })
        };
        let (mail_version, mail_rows) = rows(
            mail_csv,
            "mail_opcodes",
            &["code", "phase", "description", "stop_the_clock", "status"],
        )?;
        let mut mail = HashMap::new();
        for (line, row) in mail_rows {
            let stop_the_clock = match row[3].as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(CodeTablesError::Format {
                        table: "mail_opcodes",
                        line,
                        message: format!("stop_the_clock {other:?} is not true/false"),
                    })
                }
            };
            let entry = MailOpCode {
                phase: row[1].clone(),
                description: row[2].clone(),
                stop_the_clock,
                status: status("mail_opcodes", line, &row[4])?,
            };
            mail.insert(code("mail_opcodes", line, &row[0])?, entry);
        }
        let (package_version, package_rows) = rows(
            package_csv,
            "package_events",
            &["code", "description", "status"],
        )?;
        let mut package = HashMap::new();
        for (line, row) in package_rows {
            let entry = PackageEvent {
                description: row[1].clone(),
                status: status("package_events", line, &row[2])?,
            };
            package.insert(code("package_events", line, &row[0])?, entry);
        }
        Ok(CodeTables {
            mail_version,
            package_version,
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

    /// Number of (mail, package) codes.
    pub fn len(&self) -> (usize, usize) {
        (self.mail.len(), self.package.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_tables_load() {
        let tables = CodeTables::builtin();
        assert!(tables.mail_version.starts_with('1'));
        let dps = EventCode::parse(b"918").unwrap();
        match tables.lookup(MailClass::Mail, dps) {
            CodeInfo::Mail(entry) => {
                assert_eq!(entry.status, Status::SortedForDelivery);
                assert_eq!(entry.description, "DBCS/DIOSS BCS DPS, 1st pass");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tables.lookup(MailClass::Package, dps), CodeInfo::Unknown);
        let delivered = EventCode::parse(b"01").unwrap();
        assert!(
            matches!(tables.lookup(MailClass::Package, delivered), CodeInfo::Package(e) if e.status == Status::Delivered)
        );
        assert_eq!(
            tables.lookup(MailClass::Mail, EventCode::parse(b"999").unwrap()),
            CodeInfo::Unknown
        );
        let (mail, package) = tables.len();
        assert_eq!((mail, package), (5, 56));
    }

    #[test]
    fn bad_tables_say_where() {
        let err = CodeTables::parse("code,phase\n", BUILTIN_PACKAGE).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mail_opcodes line 1: first line must be `# version: …`"
        );
        let err = CodeTables::parse(
            "# version: x\ncode,phase,description,stop_the_clock,status\n918,a,b,maybe,c\n",
            BUILTIN_PACKAGE,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mail_opcodes line 3: stop_the_clock \"maybe\" is not true/false"
        );
    }

    #[test]
    fn statuses_are_read_by_name_and_an_unknown_one_names_its_line() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        let mail =
            "# version: t\ncode,phase,description,stop_the_clock,status\n918,P,D,false,SORTED\n";
        let package = "# version: t\ncode,description,status\n";
        match CodeTables::parse(mail, package) {
            Err(CodeTablesError::Format {
                line: 3, message, ..
            }) => {
                assert!(message.contains("SORTED"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
