//! `--flamegraph` and `--pprof`: the summary's allocation sites, written
//! at the end of a run.

use std::path::PathBuf;

use crate::{
    core::record::Summary,
    output::{
        ProcessSites, flamegraph,
        pprof::{self, ProfileInfo},
        write_file,
    },
};

/// Where the end-of-run exports go.
#[derive(Clone, Debug, Default)]
pub struct Exports {
    pub flamegraph: Option<PathBuf>,
    pub pprof: Option<PathBuf>,
}

impl Exports {
    /// Writes each requested file from the summary; says on stderr what was
    /// written or why not. Returns false if any could not be written.
    pub fn write(&self, summary: &Summary) -> bool {
        if self.flamegraph.is_none() && self.pprof.is_none() {
            return true;
        }
        let processes: Vec<ProcessSites<'_>> = summary
            .processes
            .iter()
            .filter(|p| !p.allocation_sites.is_empty())
            .map(|p| ProcessSites { pid: p.pid, name: &p.comm, sites: &p.allocation_sites })
            .collect();
        let mut ok = true;
        if let Some(path) = &self.flamegraph {
            let result = flamegraph::render_svg(&processes, flamegraph::Weight::Allocated)
                .and_then(|svg| write_file(path, &svg));
            ok &= report("flame graph", path, result);
        }
        if let Some(path) = &self.pprof {
            let info = ProfileInfo {
                start_unix_ns: ((summary.ts - summary.duration_s) * 1e9) as i64,
                duration_ns: (summary.duration_s * 1e9) as i64,
            };
            let result = pprof::encode_gzipped(&processes, info).and_then(|pb| write_file(path, &pb));
            ok &= report("pprof profile", path, result);
        }
        ok
    }
}

fn report(what: &str, path: &std::path::Path, result: Result<(), crate::output::ExportError>) -> bool {
    match result {
        Ok(()) => {
            eprintln!("heaptrace: {what} of the allocation sites written to {}", path.display());
            true
        }
        Err(e) => {
            eprintln!("heaptrace: {what} not written: {e}");
            false
        }
    }
}
