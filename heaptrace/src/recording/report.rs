//! `heaptrace report FILE`: a recording replayed into the output a live run
//! gives, with a warning when the recording was cut short.

use std::io::{self, IsTerminal};

use anyhow::Context;

use super::{reader::Reader, replay};
use crate::{
    cli::{OutputFormat, ReportArgs},
    output::{Discard, HtmlSink, JsonSink, Sink, Tee, TextSink},
};

/// Replays `args.file` to stdout. A file that is no recording, or one from
/// a newer heaptrace, is an error; a recording cut short is replayed up to
/// its last complete chunk, with a warning.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let file = args.file.display();
    // A bad --html path is found before the replay, not after it.
    if let Some(html) = &args.html {
        crate::cli::output_file("--html", html).map_err(anyhow::Error::msg)?;
    }
    let mut reader = Reader::open(&args.file).with_context(|| format!("{file}"))?;
    if args.tui && !io::stdout().is_terminal() {
        anyhow::bail!("--tui needs a terminal on stdout (without one, use -o text or -o json)");
    }
    let stdout = io::stdout().lock();
    let mut kept = Keep::default();
    let mut sink: Box<dyn Sink + '_> = match (args.output, &args.html) {
        _ if args.tui => Box::new(&mut kept),
        (None, Some(_)) => Box::new(Discard),
        (None | Some(OutputFormat::Text), _) => Box::new(TextSink::new(stdout, args.events)),
        (Some(OutputFormat::Json), _) => Box::new(JsonSink::new(stdout)),
    };
    if let Some(html) = &args.html {
        sink = Box::new(Tee::new(sink, HtmlSink::new(html)));
    }
    let replayed = match replay::replay(&mut reader, sink.as_mut()) {
        Ok(replayed) => replayed,
        // `| head`: the reader went away; not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e).context("writing output"),
    };
    let span = match (replayed.first_ns, replayed.last_ns) {
        (Some(first), Some(last)) => format!("{:.1} s of tracing", last.saturating_sub(first) as f64 / 1e9),
        _ => "nothing traced".to_owned(),
    };
    if let Some(cut) = reader.cut() {
        eprintln!(
            "heaptrace report: warning: {file} is cut short: {cut}; replayed up to there ({span}), \
             with the summary made at its last time"
        );
    } else if !replayed.complete {
        eprintln!(
            "heaptrace report: warning: {file} ends without its summary (heaptrace was killed, or \
             --record-max stopped it); replayed {span}, with the summary made at its last time"
        );
    }
    if let Some(html) = &args.html {
        eprintln!("heaptrace report: wrote {}", html.display());
    }
    drop(sink);
    if args.tui {
        crate::tui::browse(kept.0)?;
    }
    Ok(())
}

/// `--tui`: the records, kept for browsing.
#[derive(Default)]
struct Keep(Vec<crate::core::Record>);

impl Sink for Keep {
    fn record(&mut self, record: &crate::core::Record) -> io::Result<()> {
        self.0.push(record.clone());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
