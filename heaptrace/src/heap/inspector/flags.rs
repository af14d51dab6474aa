//! Node's own options, as a process was started with them: its command line
//! (`/proc/PID/cmdline`) up to the script, and `NODE_OPTIONS` in its initial
//! environment (`/proc/PID/environ`). Pure: the caller reads the files.
//!
//! Only node's options count: everything from the script on (or after
//! `--`) belongs to the application, so `node app.js --disable-sigusr1`
//! is not node's flag. `-e`/`-p` do not end node's options (node keeps
//! parsing them: `node -e CODE --inspect-port=1 x` gives node the port and
//! the app `x`). Options that take a value may have it as the next word
//! (`--require mod`), which must not be taken for the script.

use std::fmt;

/// Where a flag was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    NodeOptions,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::CommandLine => "its command line",
            Source::NodeOptions => "NODE_OPTIONS",
        })
    }
}

/// The inspector's address as an option gives it (`[host:]port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// What heaptrace needs to know of node's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFlags {
    /// `--disable-sigusr1` (Node 22.14+): node neither catches SIGUSR1
    /// nor opens its inspector on it.
    pub disable_sigusr1: Option<Source>,
    /// The permission model's flag as written (`--permission`,
    /// `--experimental-permission`, `--permission-audit`).
    pub permission: Option<(String, Source)>,
    /// `--allow-inspector` (Node 24+): the permission model lets the
    /// inspector open.
    pub allow_inspector: bool,
    /// The last `--inspect-port`/`--debug-port`/`--inspect*=` value: the
    /// command line's wins over NODE_OPTIONS' (node reads NODE_OPTIONS
    /// first).
    pub inspect: Option<HostPort>,
}

/// Default inspector port and host, as node has them.
pub const DEFAULT_PORT: u16 = 9229;
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// node's options that take a value, which may come as the next word.
/// From `node --help` of Node 18 to 26 (V8's own options take theirs
/// only after `=`).
const TAKES_VALUE: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "-e",
    "--eval",
    "-p",
    "--print",
    "-pe",
    "-C",
    "--conditions",
    "--inspect-port",
    "--debug-port",
    "--title",
    "--input-type",
    "--env-file",
    "--env-file-if-exists",
    "--redirect-warnings",
    "--icu-data-dir",
    "--openssl-config",
    "--diagnostic-dir",
    "--report-filename",
    "--report-signal",
    "--heapsnapshot-signal",
    "--heapsnapshot-near-heap-limit",
    "--cpu-prof-dir",
    "--cpu-prof-interval",
    "--cpu-prof-name",
    "--heap-prof-dir",
    "--heap-prof-interval",
    "--heap-prof-name",
    "--disable-proto",
    "--disable-warning",
    "--dns-result-order",
    "--experimental-default-type",
    "--experimental-policy",
    "--policy-integrity",
    "--experimental-sea-config",
    "--experimental-config-file",
    "--localstorage-file",
    "--max-http-header-size",
    "--secure-heap",
    "--secure-heap-min",
    "--snapshot-blob",
    "--tls-cipher-list",
    "--tls-keylog",
    "--trace-event-categories",
    "--trace-event-file-pattern",
    "--unhandled-rejections",
    "--use-largepages",
    "--v8-pool-size",
    "--watch-path",
    "--allow-fs-read",
    "--allow-fs-write",
    "--run",
    "--test-name-pattern",
    "--test-reporter",
    "--test-reporter-destination",
    "--test-shard",
    "--test-skip-pattern",
    "--test-timeout",
    "--test-concurrency",
    "--stack-trace-limit",
    "--inspect-publish-uid",
    "--watch-kill-signal",
];

const PERMISSION: &[&str] = &["--permission", "--experimental-permission", "--permission-audit"];

impl NodeFlags {
    /// Scans a NUL-separated `/proc/PID/cmdline` and the process's
    /// `NODE_OPTIONS` (if it had one).
    pub fn from_process(cmdline: &[u8], node_options: Option<&str>) -> Self {
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let mut flags = NodeFlags::default();
        if let Some(options) = node_options {
            flags.scan(&split_node_options(options), Source::NodeOptions);
        }
        // argv[0] is the executable.
        flags.scan(args.get(1..).unwrap_or(&[]), Source::CommandLine);
        flags
    }

    /// The port the inspector listens on (or would): 0 means node picks
    /// one when it opens.
    pub fn port(&self) -> u16 {
        self.inspect.as_ref().and_then(|i| i.port).unwrap_or(DEFAULT_PORT)
    }

    /// The host it binds, as written (an IP address, or a name).
    pub fn host(&self) -> &str {
        self.inspect.as_ref().and_then(|i| i.host.as_deref()).unwrap_or(DEFAULT_HOST)
    }

    /// Node's options among `words`, up to the first that is not an option
    /// (the script, or the first argument of `-e`'s program) or `--`.
    fn scan(&mut self, words: &[String], source: Source) {
        let mut i = 0;
        while let Some(word) = words.get(i) {
            i += 1;
            if word == "--" || word == "-" || !word.starts_with('-') {
                break;
            }
            let (raw_name, value) = match word.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (word.as_str(), None),
            };
            // node takes `--inspect_port` for `--inspect-port`.
            let name =
                if raw_name.starts_with("--") { raw_name.replace('_', "-") } else { raw_name.to_owned() };
            let value = match value {
                Some(v) => Some(v),
                None if TAKES_VALUE.contains(&name.as_str()) => {
                    let v = words.get(i).cloned();
                    i += 1;
                    v
                }
                None => None,
            };
            self.take(&name, value, source);
        }
    }

    fn take(&mut self, name: &str, value: Option<String>, source: Source) {
        match name {
            "--disable-sigusr1" => self.disable_sigusr1 = Some(source),
            "--no-disable-sigusr1" => self.disable_sigusr1 = None,
            "--allow-inspector" => self.allow_inspector = true,
            "--no-allow-inspector" => self.allow_inspector = false,
            n if PERMISSION.contains(&n) => self.permission = Some((n.to_owned(), source)),
            "--inspect-port" | "--debug-port" | "--inspect" | "--inspect-brk" | "--inspect-wait" => {
                if let Some(v) = value {
                    self.inspect = Some(parse_host_port(&v));
                }
            }
            _ => {}
        }
    }
}

/// `[host:]port`, as node's ParseHostPort reads it: digits alone are a
/// port, anything else a host with an optional `:port` (`[v6]:port`).
pub fn parse_host_port(v: &str) -> HostPort {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return HostPort { host: None, port: v.parse().ok() };
    }
    if let Some(rest) = v.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return HostPort { host: Some(host.to_owned()), port };
    }
    match v.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            HostPort { host: Some(host.to_owned()), port: port.parse().ok() }
        }
        _ => HostPort { host: Some(v.to_owned()), port: None },
    }
}

/// NODE_OPTIONS' words: split on white space, with double quotes grouping
/// and backslash escaping inside them, as node splits it.
pub fn split_node_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// `NODE_OPTIONS` from a NUL-separated `/proc/PID/environ`.
pub fn node_options(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"NODE_OPTIONS="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(args: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for a in args {
            out.extend_from_slice(a.as_bytes());
            out.push(0);
        }
        out
    }

    fn flags(args: &[&str], env: Option<&str>) -> NodeFlags {
        NodeFlags::from_process(&cmdline(args), env)
    }

    #[test]
    fn flags_after_the_script_are_the_applications() {
        let f = flags(&["node", "app.js", "--disable-sigusr1", "--permission", "--inspect-port=1"], None);
        assert_eq!(f, NodeFlags::default());
        assert_eq!(f.port(), 9229);
        assert_eq!(f.host(), "127.0.0.1");
        let f = flags(&["node", "--disable-sigusr1", "app.js"], None);
        assert_eq!(f.disable_sigusr1, Some(Source::CommandLine));
        let f = flags(&["node", "--", "--disable-sigusr1"], None);
        assert_eq!(f.disable_sigusr1, None);
    }

    #[test]
    fn a_value_in_the_next_word_is_not_the_script() {
        let f = flags(&["node", "-r", "./hook.js", "--inspect-port", "9333", "--permission", "app.js"], None);
        assert_eq!(f.port(), 9333);
        assert_eq!(f.permission, Some(("--permission".into(), Source::CommandLine)));
        // -e does not end node's options; its program's arguments do.
        let f = flags(&["node", "-e", "code", "--disable-sigusr1", "x", "--permission"], None);
        assert_eq!(f.disable_sigusr1, Some(Source::CommandLine));
        assert_eq!(f.permission, None);
        // An unknown option without `=` takes no value.
        let f = flags(&["node", "--expose-gc", "app.js", "--disable-sigusr1"], None);
        assert_eq!(f.disable_sigusr1, None);
    }

    #[test]
    fn inspect_ports_and_hosts() {
        assert_eq!(flags(&["node", "--inspect", "a.js"], None).port(), 9229);
        assert_eq!(flags(&["node", "--inspect=9444", "a.js"], None).port(), 9444);
        let f = flags(&["node", "--inspect-brk=0.0.0.0:9555", "a.js"], None);
        assert_eq!((f.host(), f.port()), ("0.0.0.0", 9555));
        let f = flags(&["node", "--inspect=0.0.0.0", "a.js"], None);
        assert_eq!((f.host(), f.port()), ("0.0.0.0", 9229));
        let f = flags(&["node", "--inspect-port=[::1]:9666", "a.js"], None);
        assert_eq!((f.host(), f.port()), ("::1", 9666));
        assert_eq!(flags(&["node", "--inspect_port=0", "a.js"], None).port(), 0);
        assert_eq!(flags(&["node", "--debug-port=9777", "a.js"], None).port(), 9777);
        // The command line wins over NODE_OPTIONS.
        let f = flags(&["node", "--inspect-port=9001", "a.js"], Some("--inspect-port=9002"));
        assert_eq!(f.port(), 9001);
        assert_eq!(flags(&["node", "a.js"], Some("--inspect-port=9002")).port(), 9002);
    }

    #[test]
    fn node_options_are_split_like_node_does() {
        assert_eq!(
            split_node_options(r#"  --require "./a b.js"  --title="x \"y\""  --disable-sigusr1 "#),
            vec!["--require", "./a b.js", "--title=x \"y\"", "--disable-sigusr1"]
        );
        let f = flags(&["node", "app.js"], Some("--max-old-space-size=100 --disable-sigusr1"));
        assert_eq!(f.disable_sigusr1, Some(Source::NodeOptions));
        let f = flags(&["node", "app.js"], Some("--experimental-permission --allow-fs-read=*"));
        assert_eq!(f.permission, Some(("--experimental-permission".into(), Source::NodeOptions)));
        assert!(!f.allow_inspector);
        let f = flags(&["node", "--permission-audit", "--allow-inspector", "a.js"], None);
        assert!(f.permission.is_some() && f.allow_inspector);
    }

    #[test]
    fn node_options_from_environ() {
        let env = b"PATH=/bin\0NODE_OPTIONS=--disable-sigusr1 --inspect-port=1\0HOME=/\0";
        assert_eq!(node_options(env).as_deref(), Some("--disable-sigusr1 --inspect-port=1"));
        assert_eq!(node_options(b"PATH=/bin\0"), None);
        assert_eq!(node_options(b""), None);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("9229"), HostPort { host: None, port: Some(9229) });
        assert_eq!(
            parse_host_port("localhost:1"),
            HostPort { host: Some("localhost".into()), port: Some(1) }
        );
        assert_eq!(parse_host_port("[::]:2"), HostPort { host: Some("::".into()), port: Some(2) });
        assert_eq!(parse_host_port("::1"), HostPort { host: Some("::1".into()), port: None });
        assert_eq!(parse_host_port("99999"), HostPort { host: None, port: None });
    }
}
