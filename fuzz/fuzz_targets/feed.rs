//! Any bytes as a feed of every format: every record accepted or rejected, never a panic; and
//! as an operator's op-code list (`--op-codes`): read or refused, never a panic.
#![no_main]

use imbtrack_feed::{parse_feed, CodeTables, FeedOptions, Format, RejectList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CodeTables::with_mail_csv(text);
    }
    for format in [
        None,
        Some(Format::Delimited),
        Some(Format::Json),
        Some(Format::Legacy),
    ] {
        let mut options = FeedOptions::at(1_736_000_000_000);
        options.format = format;
        options.default_offset_minutes = Some(-300);
        let mut rejects = RejectList::default();
        if let Ok(parsed) = parse_feed("fuzz", data, &options, &mut rejects) {
            let report = parsed.report;
            assert_eq!(report.records, report.accepted + report.rejected);
            assert_eq!(report.accepted as usize, parsed.events.len());
            assert_eq!(report.rejected as usize, rejects.rejects.len());
        }
    }
});
