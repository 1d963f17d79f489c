//! `imbtrack barcode encode|decode|parse`: one output line per input, JSON for anything but bars.

use std::io::{self, BufRead, Write};

use clap::Subcommand;
use imbtrack_barcode::{decode, Barcode, Bars, Error, Imb};
use serde_json::{json, Value};

use crate::Outcome;

#[derive(Subcommand)]
pub(crate) enum BarcodeCommand {
    /// Print the 65 bars (A/D/F/T) of each IMb payload: 20/25/29/31 digits or TRACKING-ROUTING.
    /// Reads stdin lines when no payload is given.
    Encode {
        /// Payloads to encode.
        payloads: Vec<String>,
    },
    /// Decode 65-bar strings (any case, spaces ignored) to JSON fields; upside-down reads are
    /// recognised. Reads stdin lines when no bars are given.
    Decode {
        /// Bar strings to decode.
        bars: Vec<String>,
        /// Repair exactly one damaged bar when the read fails; the repair is reported.
        #[arg(long)]
        repair: bool,
    },
    /// Recognise any barcode form (IMb digits or bars, IMpb, IMcb) and print its fields and key.
    Parse {
        /// Barcodes to parse.
        inputs: Vec<String>,
    },
}

pub(crate) fn run(command: BarcodeCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match command {
        BarcodeCommand::Encode { payloads } => for_each_input(payloads, out, |payload| {
            Imb::from_payload(payload).map(|imb| Value::String(imb.encode().to_string()))
        }),
        BarcodeCommand::Decode { bars, repair } => for_each_input(bars, out, |input| {
            let decoded = decode(&Bars::parse(input)?, repair)?;
            let mut fields = imb_fields(&decoded.imb);
            fields["orientation"] = json!(decoded.orientation.as_str());
            fields["repaired"] = json!(decoded.repair.is_some());
            if let Some(repair) = decoded.repair {
                fields["bars"] = json!(repair.bars.as_str());
                fields["repaired_bar"] =
                    json!({ "position": repair.position, "was": repair.was.to_string() });
            }
            Ok(fields)
        }),
        BarcodeCommand::Parse { inputs } => for_each_input(inputs, out, |input| {
            let barcode = Barcode::parse(input)?;
            let mut fields = match &barcode {
                Barcode::Imb(imb) => imb_fields(imb),
                Barcode::Impb(impb) => json!({
                    "kind": "impb",
                    "tracking": impb.tracking(),
                    "zip": impb.zip(),
                    "channel": impb.channel(),
                    "service_type": impb.service_type(),
                    "mailer_id": impb.mailer_id(),
                    "serial": impb.serial(),
                    "check_digit": impb.check_digit(),
                }),
                Barcode::Imcb(imcb) => json!({
                    "kind": "imcb",
                    "mailer_id": imcb.mailer_id(),
                    "serial": imcb.serial(),
                }),
            };
            fields["key"] = json!(format!("{:032x}", barcode.key().as_u128()));
            Ok(fields)
        }),
    }
}

fn imb_fields(imb: &Imb) -> Value {
    json!({
        "kind": "imb",
        "tracking": imb.tracking(),
        "routing": imb.routing(),
        "barcode_id": imb.barcode_id(),
        "service_type": imb.service_type(),
        "mailer_id": imb.mailer_id(),
        "serial": imb.serial(),
    })
}

/// Runs `handle` on each argument, or on each stdin line when there are none, printing one line
/// per input: a JSON string's content as is, other JSON compact, an error as `{"input","error"}`.
fn for_each_input(
    inputs: Vec<String>,
    out: &mut dyn Write,
    mut handle: impl FnMut(&str) -> Result<Value, Error>,
) -> anyhow::Result<Outcome> {
    let mut failed = false;
    let mut one = |input: &str, out: &mut dyn Write| -> io::Result<()> {
        match handle(input) {
            Ok(Value::String(text)) => writeln!(out, "{text}"),
            Ok(value) => writeln!(out, "{value}"),
            Err(e) => {
                failed = true;
                let error = json!({ "input": input, "error": { "code": e.code(), "message": e.to_string() } });
                writeln!(out, "{error}")
            }
        }
    };
    if inputs.is_empty() {
        for line in io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                one(&line, out)?;
            }
        }
    } else {
        for input in &inputs {
            one(input, out)?;
        }
    }
    Ok(if failed {
        Outcome::SomeFailed
    } else {
        Outcome::AllGood
    })
}
