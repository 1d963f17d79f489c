//! `imbtrack audit hash BARCODE`: the keyed hash the audit log records a barcode under, so an
//! investigator can find its accesses (`grep` the log for it) though the log holds no barcode.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use imbtrack_barcode::Barcode;
use imbtrack_server::AuditKey;

use crate::Outcome;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the hash the audit log records BARCODE under (with the data directory's key).
    Hash {
        /// Any barcode form imbtrack accepts.
        barcode: String,
    },
}

pub(crate) fn run(
    data: &Path,
    command: AuditCommand,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let AuditCommand::Hash { barcode } = command;
    let parsed = Barcode::parse(&barcode)
        .map_err(|e| anyhow::anyhow!("{barcode:?} is not a barcode: {e}"))?;
    let path = data.join("audit.key");
    anyhow::ensure!(
        path.exists(),
        "{} does not exist: the server makes it on its first start",
        path.display()
    );
    let key =
        AuditKey::load_or_create(&path).with_context(|| format!("reading {}", path.display()))?;
    writeln!(out, "{}", key.hash(parsed.key()))?;
    Ok(Outcome::AllGood)
}
