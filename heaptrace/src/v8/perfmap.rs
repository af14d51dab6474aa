//! The perf map a node started with `--perf-basic-prof` writes
//! (`/tmp/perf-<pid>.map`): one line per piece of generated code, `START
//! SIZE NAME` in hex, appended as V8 compiles. It names JIT code by
//! address, a second source next to the postmortem metadata.
//!
//! Names look like `JS:*handler /srv/app.js:12:30` (V8 >= 11),
//! `LazyCompile:~handler /srv/app.js:12` (V8 10), `Builtin:ArrayPush`: a
//! tag, then for JS code a tier marker (`~` interpreted, `^` baseline, `+`
//! Maglev, `*` TurboFan; V8 14 adds `o` before it for on-stack replacement
//! and `'` after it for context-specialized code), the debug name (empty
//! for anonymous functions), and `script:line[:column]` of the function's
//! start.
//!
//! The file is read through `/proc/PID/root` under the process's own pid in
//! its pid namespace, so processes in containers are covered. Code that
//! moved or died leaves its line: a later line wins where ranges overlap.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::PathBuf,
};

use rangemap::RangeMap;

use super::frames::ANONYMOUS;
use crate::core::sites::{Frame, FrameKind};

/// One named range of code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfSymbol {
    /// `JS`, `LazyCompile`, `Function`, `Eval`, `Script`, `Builtin`,
    /// `BytecodeHandler`, ...
    pub tag: String,
    /// The tier marker, as written (`~`, `^`, `+`, `*`, `o*`, `*'`...).
    pub marker: String,
    /// The name as written: empty for an anonymous function.
    pub name: String,
    /// The script, for JS code (None when V8 wrote an empty one).
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// Tags of JS functions' code, across versions.
const JS_TAGS: [&str; 5] = ["JS", "LazyCompile", "Function", "Script", "Eval"];

impl PerfSymbol {
    /// Parses the name part of a line.
    pub fn parse(text: &str) -> Option<Self> {
        let (tag, rest) = text.split_once(':')?;
        if tag.is_empty() || tag.contains(' ') {
            return None;
        }
        let mut symbol = PerfSymbol {
            tag: tag.to_owned(),
            marker: String::new(),
            name: rest.to_owned(),
            file: None,
            line: None,
            column: None,
        };
        if !symbol.is_js() {
            return Some(symbol);
        }
        let marker_len = marker_len(rest);
        symbol.marker = rest[..marker_len].to_owned();
        let rest = &rest[marker_len..];
        let (name, file, line, column) = split_location(rest)?;
        symbol.name = name.to_owned();
        symbol.file = (!file.is_empty()).then(|| file.to_owned());
        symbol.line = Some(line);
        symbol.column = column;
        Some(symbol)
    }

    /// Whether this names a JS function's code.
    pub fn is_js(&self) -> bool {
        JS_TAGS.contains(&self.tag.as_str())
    }

    /// The function's name as heaptrace shows it.
    pub fn function(&self) -> &str {
        if self.is_js() && self.name.is_empty() { ANONYMOUS } else { &self.name }
    }

    /// The frame this names: a JS function, or V8's own code (builtins,
    /// bytecode handlers, stubs) as `Tag:Name`.
    pub fn frame(&self) -> Frame {
        if self.is_js() {
            Frame {
                function: self.function().to_owned(),
                file: self.file.clone(),
                line: self.line,
                kind: FrameKind::Js,
                build_id: None,
            }
        } else {
            let kind = if self.tag == "Builtin" || self.tag == "BytecodeHandler" {
                FrameKind::Builtin
            } else {
                FrameKind::Native
            };
            Frame {
                function: format!("{}:{}", self.tag, self.name),
                file: None,
                line: None,
                kind,
                build_id: None,
            }
        }
    }
}

/// Length of the tier marker at the start of `s`: `[o][~^+*][']`.
fn marker_len(s: &str) -> usize {
    let b = s.as_bytes();
    let tier = |i: usize| b.get(i).is_some_and(|c| b"~^+*".contains(c));
    let mut n = 0;
    if b.first() == Some(&b'o') && tier(1) {
        n = 1;
    }
    if tier(n) {
        n += 1;
        if b.get(n) == Some(&b'\'') {
            n += 1;
        }
    }
    n
}

/// Splits `name script:line[:column]`. Names and scripts may both hold
/// spaces (`get size`, `/srv/my app/x.js`): the script is taken to start
/// at the rightmost space after which it looks like a script name (a path,
/// `node:`, a URL), else at the rightmost space.
fn split_location(s: &str) -> Option<(&str, &str, u32, Option<u32>)> {
    let location = |loc: &str| -> Option<(usize, u32, Option<u32>)> {
        let (head, last) = loc.rsplit_once(':')?;
        let last: u32 = last.parse().ok()?;
        match head.rsplit_once(':') {
            Some((file, line)) if line.parse::<u32>().is_ok() => {
                Some((file.len(), line.parse().ok()?, Some(last)))
            }
            _ => Some((head.len(), last, None)),
        }
    };
    let looks_like_script = |f: &str| f.starts_with('/') || f.starts_with("node:") || f.contains(":/");
    let mut fallback = None;
    for (i, _) in s.match_indices(' ').collect::<Vec<_>>().into_iter().rev() {
        let loc = &s[i + 1..];
        let Some((file_len, line, column)) = location(loc) else { continue };
        let file = &loc[..file_len];
        let split = (&s[..i], file, line, column);
        if looks_like_script(file) {
            return Some(split);
        }
        fallback.get_or_insert(split);
    }
    fallback
}

/// Parses one line: `START SIZE NAME`, in hex.
pub fn parse_line(line: &str) -> Option<(u64, u64, PerfSymbol)> {
    let mut parts = line.splitn(3, ' ');
    let start = u64::from_str_radix(parts.next()?, 16).ok()?;
    let size = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some((start, size, PerfSymbol::parse(parts.next()?)?))
}

/// One process's perf map, read so far.
pub struct PerfMap {
    path: PathBuf,
    /// Bytes consumed (up to the last complete line).
    offset: u64,
    symbols: Vec<PerfSymbol>,
    ranges: RangeMap<u64, usize>,
}

impl PerfMap {
    /// Where process `pid`'s map is, as seen from here.
    pub fn path_for(pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{}.map", namespace_pid(pid).unwrap_or(pid)))
    }

    /// Reads process `pid`'s map (an error if there is none: the process
    /// was not started with `--perf-basic-prof`).
    pub fn read(pid: u32) -> io::Result<Self> {
        let mut map =
            PerfMap { path: Self::path_for(pid), offset: 0, symbols: Vec::new(), ranges: RangeMap::new() };
        map.refresh()?;
        Ok(map)
    }

    /// Reads what was appended since; returns how many entries came.
    pub fn refresh(&mut self) -> io::Result<usize> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        // A line being written is taken next time.
        let Some(end) = text.iter().rposition(|&b| b == b'\n') else { return Ok(0) };
        let before = self.symbols.len();
        for line in String::from_utf8_lossy(&text[..end]).lines() {
            let Some((start, size, symbol)) = parse_line(line) else { continue };
            let Some(stop) = start.checked_add(size).filter(|_| size > 0) else { continue };
            self.ranges.insert(start..stop, self.symbols.len());
            self.symbols.push(symbol);
        }
        self.offset += end as u64 + 1;
        Ok(self.symbols.len() - before)
    }

    /// What the code at `pc` is.
    pub fn lookup(&self, pc: u64) -> Option<&PerfSymbol> {
        self.ranges.get(&pc).map(|&i| &self.symbols[i])
    }

    /// Entries read.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

/// The process's pid in its own pid namespace (the last of `NSpid`).
fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(marker: &str, name: &str, file: Option<&str>, line: u32, column: Option<u32>) -> PerfSymbol {
        PerfSymbol {
            tag: "JS".into(),
            marker: marker.into(),
            name: name.into(),
            file: file.map(Into::into),
            line: Some(line),
            column,
        }
    }

    #[test]
    fn names_of_every_version_parse() {
        // Lines as Node 18, 22 and 26 wrote them.
        let (start, size, s) =
            parse_line("52856c0 160 LazyCompile:*heaptraceSpinHere /tmp/pb/app.js:1").unwrap();
        assert_eq!((start, size), (0x52856c0, 0x160));
        assert_eq!(
            s,
            PerfSymbol {
                tag: "LazyCompile".into(),
                ..js("*", "heaptraceSpinHere", Some("/tmp/pb/app.js"), 1, None)
            }
        );
        let (_, _, s) = parse_line("82343f41f68 20 JS:~heaptraceSpinHere /tmp/pb/app.js:1:27").unwrap();
        assert_eq!(s, js("~", "heaptraceSpinHere", Some("/tmp/pb/app.js"), 1, Some(27)));
        let (_, _, s) = parse_line("7f1383840440 990 JS:o+ /tmp/pb/app.js:1:1").unwrap();
        assert_eq!(s, js("o+", "", Some("/tmp/pb/app.js"), 1, Some(1)));
        assert_eq!(s.function(), ANONYMOUS);
        let (_, _, s) = parse_line("7f1383804380 204 JS:*'heaptraceSpinHere /tmp/pb/app.js:1:27").unwrap();
        assert_eq!(s.marker, "*'");
        let (_, _, s) = parse_line("7f13 5 JS:^obj node:internal/x:3:4").unwrap();
        assert_eq!(s, js("^", "obj", Some("node:internal/x"), 3, Some(4)));
        let (_, _, s) = parse_line(
            "3e4c 5 LazyCompile:~get hasLoadedAnyUserCJSModule node:internal/modules/cjs/loader:73",
        )
        .unwrap();
        assert_eq!(s.name, "get hasLoadedAnyUserCJSModule");
        assert_eq!(s.file.as_deref(), Some("node:internal/modules/cjs/loader"));
        let (_, _, s) = parse_line("1 2 JS:~run /srv/my app/x.js:7:3").unwrap();
        assert_eq!((s.name.as_str(), s.file.as_deref()), ("run", Some("/srv/my app/x.js")));
        let (_, _, s) = parse_line("1 2 JS:~ :1:1").unwrap();
        assert_eq!((s.function(), s.file.as_deref(), s.line), (ANONYMOUS, None, Some(1)));
        let (_, _, s) = parse_line("168a240 318 Builtin:DeoptimizationEntry_Eager").unwrap();
        assert!(!s.is_js());
        assert_eq!(s.frame().function, "Builtin:DeoptimizationEntry_Eager");
        assert_eq!(s.frame().kind, FrameKind::Builtin);
        assert!(parse_line("zz 1 JS:~a /b:1").is_none());
        assert!(parse_line("10 1").is_none());
    }

    #[test]
    fn a_later_entry_wins_and_a_partial_line_waits() {
        let dir = std::env::temp_dir().join(format!("heaptrace-perfmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf.map");
        std::fs::write(&path, "100 100 JS:~old /a.js:1:1\n180 10 JS:*new /a.js:5:2\n200 10 JS:~par").unwrap();
        let mut map = PerfMap { path: path.clone(), offset: 0, symbols: Vec::new(), ranges: RangeMap::new() };
        assert_eq!(map.refresh().unwrap(), 2);
        assert_eq!(map.lookup(0x100).unwrap().name, "old");
        assert_eq!(map.lookup(0x185).unwrap().name, "new");
        assert_eq!(map.lookup(0x195).unwrap().name, "old");
        assert!(map.lookup(0x200).is_none() && map.lookup(0xff).is_none());
        std::fs::write(
            &path,
            "100 100 JS:~old /a.js:1:1\n180 10 JS:*new /a.js:5:2\n200 10 JS:~part /a.js:9:1\n",
        )
        .unwrap();
        assert_eq!(map.refresh().unwrap(), 1);
        assert_eq!(map.lookup(0x205).unwrap().frame().label(), "part (a.js:9)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
