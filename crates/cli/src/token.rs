//! `imbtrack token new`: a new API token and its tokens-file entry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use imbtrack_server::{token_hash_hex, Scope};
use serde_json::json;

use crate::Outcome;

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a new random token: prints the token (give it to its holder; it is not stored)
    /// and the entry to append to the tokens file.
    New {
        /// Who holds it (shown in the audit log).
        #[arg(long)]
        id: String,
        /// Scopes: admin, ingest, mailer:<MID>,<MID>… (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Append the entry to this tokens file (created, readable by its owner only).
        #[arg(long)]
        append: Option<PathBuf>,
    },
}

pub(crate) fn run(command: TokenCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let TokenCommand::New { id, scopes, append } = command;
    for scope in &scopes {
        Scope::parse(scope).map_err(|e| anyhow::anyhow!(e))?;
    }
    anyhow::ensure!(
        !id.is_empty() && !id.contains(['"', '\\', '\n']),
        "--id {id:?} must be non-empty, without quotes, backslashes or newlines"
    );
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("imbt_{token}");
    let entry = format!(
        "[[tokens]]\nid = \"{id}\"\nsha256 = \"{}\"\nscopes = {}\n",
        token_hash_hex(&token),
        serde_json::to_string(&scopes)?
    );
    if let Some(path) = &append {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // A blank line first, so an entry never runs into a file's last line.
        write!(file, "\n{entry}").with_context(|| format!("writing {}", path.display()))?;
    }
    writeln!(out, "{}", json!({"id": id, "token": token, "entry": entry}))?;
    Ok(Outcome::AllGood)
}
