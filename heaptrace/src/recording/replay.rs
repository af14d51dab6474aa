//! Replays a recording through a fresh [`Model`] set up as the live one
//! was, handing the records it makes to a sink: the same records, in the
//! same order, as the live run wrote (death dumps aside: a replay writes
//! none, so its `death` records carry no `dump_path`).

use std::io::{self, Read};

use super::{Step, reader::Reader};
use crate::{
    core::{Input, Model, Record},
    output::Sink,
};

/// How a replay went.
#[derive(Debug, Default, PartialEq)]
pub struct Replayed {
    /// Steps applied.
    pub steps: u64,
    /// The recording ended with its summary (otherwise the summary was
    /// made at the last time it holds).
    pub complete: bool,
    /// The recording's span, CLOCK_MONOTONIC ns of the traced host.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

/// Applies every step of `reader` and writes the records to `sink`. A
/// recording without its summary (cut short, or stopped at
/// `--record-max`) gets one made at its last time, as a live run stopped
/// there would have printed.
pub fn replay<R: Read>(reader: &mut Reader<R>, sink: &mut dyn Sink) -> io::Result<Replayed> {
    let mut model = Model::new(reader.header().model.clone());
    let mut out = Vec::new();
    let mut done = Replayed::default();
    let seen = |t: u64, done: &mut Replayed| {
        done.first_ns = Some(done.first_ns.map_or(t, |f| f.min(t)));
        done.last_ns = Some(done.last_ns.map_or(t, |l| l.max(t)));
    };
    // The collector writes the `start` record before the records of the
    // processes it brought in to begin with: those wait for it here too.
    let mut started = false;
    while let Some(steps) = reader.next_steps() {
        for step in steps {
            done.steps += 1;
            match step {
                Step::Start(start) => {
                    out.insert(0, Record::Start(start));
                    started = true;
                }
                Step::Input(input) => {
                    if let Some(t) = input_time(&input) {
                        seen(t, &mut done);
                    }
                    model.apply(input, &mut out);
                }
                Step::Snapshots { now_ns } => {
                    seen(now_ns, &mut done);
                    model.snapshots(now_ns, &mut out);
                }
                Step::Tick(stats) => {
                    if started {
                        write_all(sink, &mut out)?;
                        sink.tick(&stats);
                    }
                }
                Step::Summary { now_ns } => {
                    seen(now_ns, &mut done);
                    out.push(model.summary(now_ns));
                    done.complete = true;
                }
            }
            if started {
                write_all(sink, &mut out)?;
            }
        }
    }
    if !done.complete
        && let Some(last) = done.last_ns
    {
        out.push(model.summary(last));
    }
    write_all(sink, &mut out)?;
    sink.flush()?;
    Ok(done)
}

fn write_all(sink: &mut dyn Sink, out: &mut Vec<Record>) -> io::Result<()> {
    out.drain(..).try_for_each(|r| sink.record(&r))
}

/// When an input happened, for inputs that say.
fn input_time(input: &Input) -> Option<u64> {
    match input {
        Input::Attach(info) => Some(info.ts_ns),
        Input::Event(e) => Some(e.ts_ns),
        Input::Sample(s) => Some(s.ts_ns),
        Input::Drops { ts_ns, .. }
        | Input::GcProbesAttached { ts_ns, .. }
        | Input::HeapLimit { ts_ns, .. } => Some(*ts_ns),
        Input::Cgroup(c) => Some(c.ts_ns),
        Input::Stack { .. } | Input::Heap(_) => None,
    }
}
