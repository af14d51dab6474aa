use std::{path::PathBuf, time::Duration};

use super::*;

fn parse(args: &[&str]) -> Result<Config, String> {
    let cli =
        parse_from(std::iter::once("heaptrace").chain(args.iter().copied())).map_err(|e| e.to_string())?;
    match cli.into_command() {
        Command::Trace(args) => Config::trace(args),
        Command::Agent(args) => Config::agent(&args),
        Command::Heap(_) => Err("a heap command".into()),
        Command::Report(_) => Err("a report command".into()),
    }
}

fn parse_heap(args: &[&str]) -> Result<crate::heap::run::HeapConfig, String> {
    let cli = parse_from(["heaptrace", "heap"].into_iter().chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    match cli.into_command() {
        Command::Heap(args) => heap_config(&args),
        other => panic!("not a heap command: {other:?}"),
    }
}

#[test]
fn heap_takes_a_pid_and_one_mode() {
    use crate::heap::run::Mode;
    let plain = parse_heap(&["4242"]).unwrap();
    assert_eq!((plain.pid, plain.mode, plain.force), (4242, Mode::Summary, false));
    assert_eq!(plain.max_heap, crate::heap::run::DEFAULT_MAX_HEAP);
    assert_eq!(parse_heap(&["4242", "--diff", "30s"]).unwrap().mode, Mode::Diff(Duration::from_secs(30)));
    assert_eq!(parse_heap(&["4242", "--sample", "1m"]).unwrap().mode, Mode::Sample(Duration::from_secs(60)));
    let err = |a: &[&str]| parse_heap(a).unwrap_err();
    assert!(err(&[]).contains("<PID>"));
    assert!(err(&["0"]).contains("0"));
    assert!(err(&["42", "--diff", "1s", "--sample", "1s"]).contains("cannot be used with"));
    assert!(err(&["42", "--diff", "10ms"]).contains("from 1s to 1h"));
    assert!(err(&["42", "--sample", "2h"]).contains("from 1s to 1h"));
    assert!(err(&["42", "--sample", "5s", "--force"]).contains("does not pause"));
    assert!(err(&["42", "--save", "/no/such/dir/x.heapsnapshot"]).contains("no such directory"));
    assert!(err(&["42", "--save", "/tmp"]).contains("is a directory"));
    // Tracing flags are not heap flags.
    assert!(err(&["42", "--pid", "43"]).contains("unexpected argument"));
}

#[test]
fn the_definition_is_consistent() {
    command().debug_assert();
}

/// `heaptrace --help` and `heaptrace agent --help`, pinned: a change to a
/// flag shows here. `HEAPTRACE_BLESS=1 cargo test` rewrites the files.
#[test]
fn help_is_pinned() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cli/help");
    for (file, sub) in [
        ("heaptrace.txt", None),
        ("agent.txt", Some("agent")),
        ("heap.txt", Some("heap")),
        ("report.txt", Some("report")),
    ] {
        let mut cmd = command().term_width(100);
        let help = match sub {
            None => cmd.render_long_help().to_string(),
            Some(name) => {
                cmd.build();
                cmd.find_subcommand_mut(name).unwrap().render_long_help().to_string()
            }
        };
        let path = dir.join(file);
        if std::env::var_os("HEAPTRACE_BLESS").is_some() {
            std::fs::write(&path, &help).unwrap();
        }
        let pinned = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(help, pinned, "{} changed (HEAPTRACE_BLESS=1 cargo test rewrites it)", path.display());
    }
}

#[test]
fn trace_is_the_default_subcommand() {
    let plain = parse(&["--pid", "42"]).unwrap();
    let explicit = parse(&["trace", "--pid", "42"]).unwrap();
    assert_eq!(plain.selection, explicit.selection);
    assert_eq!(plain.drain_every, Duration::from_millis(20));
    // Flags of trace do not mix with a subcommand.
    assert!(parse(&["--pid", "42", "agent"]).is_err());
}

#[test]
fn defaults() {
    let c = parse(&["--pid", "42"]).unwrap();
    assert_eq!(c.selection.pids, vec![42]);
    assert_eq!(c.interval, Duration::from_secs(1));
    assert_eq!(c.duration, None);
    assert_eq!(c.large_threshold, 1 << 20);
    assert_eq!(c.output, OutputFormat::Text);
    assert_eq!(c.mem_hook, MemHookChoice::Auto);
    assert_eq!(c.ring_buffer_bytes, 16 << 20);
    assert!(c.live_view, "the live view, if stdout is a terminal");
}

#[test]
fn an_explicit_output_or_no_tui_means_no_live_view() {
    for args in
        [&["--pid", "42", "-o", "text"][..], &["--pid", "42", "-o", "json"], &["--pid", "42", "--no-tui"]]
    {
        let c = parse(args).unwrap();
        assert!(!c.live_view, "{args:?}");
    }
    assert_eq!(parse(&["--pid", "42", "-o", "json"]).unwrap().output, OutputFormat::Json);
    assert_eq!(parse(&["--pid", "42", "--no-tui"]).unwrap().output, OutputFormat::Text);
    assert!(!parse(&["agent"]).unwrap().live_view);
}

#[test]
fn the_agent_shares_the_flags_with_its_own_defaults() {
    let c = parse(&["agent"]).unwrap();
    assert_eq!(c.selection.comms, vec!["node"], "--comm node by default");
    assert_eq!(c.interval, Duration::from_secs(5));
    assert_eq!(c.ring_buffer_bytes, 4 << 20);
    assert_eq!(c.drain_every, Duration::from_millis(100));
    assert_eq!(c.output, OutputFormat::Json);
    let c = parse(&["agent", "--all", "--pid", "7", "-i", "2s"]).unwrap();
    assert!(c.selection.all && c.selection.comms.is_empty());
    assert_eq!((c.selection.pids.clone(), c.interval), (vec![7], Duration::from_secs(2)));
    assert!(parse(&["agent", "--metric-prefix", "9x"]).unwrap_err().contains("--metric-prefix"));
}

#[test]
fn every_agent_flag_has_an_environment_variable_and_trace_flags_have_none() {
    let mut cmd = command();
    cmd.build();
    let agent = cmd.find_subcommand("agent").unwrap();
    for arg in agent.get_arguments().filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version")) {
        let long = arg.get_long().unwrap();
        let want = format!("HEAPTRACE_{}", long.to_ascii_uppercase().replace('-', "_"));
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(want.as_str()), "--{long}");
    }
    for arg in cmd.find_subcommand("trace").unwrap().get_arguments().chain(cmd.get_arguments()) {
        assert!(arg.get_env().is_none(), "--{:?} of trace reads the environment", arg.get_long());
    }
    for name in ["HEAPTRACE_LISTEN", "HEAPTRACE_COMM", "HEAPTRACE_NODE_NAME", "HEAPTRACE_SERIES_GRACE"] {
        assert!(
            agent.get_arguments().any(|a| a.get_env().is_some_and(|e| e == name)),
            "{name}: deploy/kubernetes and docs name it"
        );
    }
}

#[test]
fn several_pids_and_options() {
    let c = parse(&[
        "-p",
        "3",
        "-p",
        "2",
        "--pid",
        "3",
        "-d",
        "30s",
        "-i",
        "250ms",
        "-o",
        "json",
        "--large-threshold",
        "512k",
    ])
    .unwrap();
    assert_eq!(c.selection.pids, vec![2, 3]);
    assert_eq!(c.duration, Some(Duration::from_secs(30)));
    assert_eq!(c.interval, Duration::from_millis(250));
    assert_eq!(c.output, OutputFormat::Json);
    assert_eq!(c.large_threshold, 512 << 10);
}

#[test]
fn selections() {
    let c = parse(&["--comm", "node", "--container", "ABCDEF12", "-p", "7"]).unwrap();
    assert_eq!(c.selection.comms, vec!["node"]);
    assert_eq!(c.selection.containers, vec!["abcdef12"]);
    assert_eq!(c.selection.pids, vec![7]);
    assert!(c.selection.follows());
    assert!(parse(&["--all"]).unwrap().selection.all);
    // Every host heaptrace supports mounts cgroup v2 (hybrid hosts too).
    assert!(crate::host::cgroup::v2_root().is_some(), "no cgroup v2 hierarchy mounted");
    assert_eq!(parse(&["--cgroup", "/"]).unwrap().selection.cgroups, vec!["/"]);
}

#[test]
fn bad_values_name_the_flag_and_what_was_expected() {
    let e = parse(&["--pid", "1", "--duration", "soon"]).unwrap_err();
    assert!(e.contains("--duration") && e.contains("expected e.g. 30s"), "{e}");
    let e = parse(&["--pid", "1", "--large-threshold", "huge"]).unwrap_err();
    assert!(e.contains("--large-threshold") && e.contains("1MiB"), "{e}");
    let e = parse(&["--pid", "0"]).unwrap_err();
    assert!(e.contains("--pid"), "{e}");
    let e = parse(&["--pid", "abc"]).unwrap_err();
    assert!(e.contains("--pid"), "{e}");
    assert!(parse(&[]).unwrap_err().contains("--pid"));
    assert!(parse(&["trace"]).unwrap_err().contains("--pid"));
    assert!(parse(&["--comm", "node", "--all"]).unwrap_err().contains("cannot be used with"));
    assert!(parse(&["--comm", "/usr/bin/node"]).unwrap_err().contains("not a path"));
    assert!(
        parse(&["--comm", "a-very-long-command"]).unwrap_err().contains("use --comm \"a-very-long-com\"")
    );
    assert!(parse(&["--container", "xyz!"]).unwrap_err().contains("hex digits"));
    assert!(parse(&["--container", "abc"]).unwrap_err().contains("at least 4"));
    assert!(parse(&["--cgroup", "/no/such/cgroup/here"]).unwrap_err().contains("no such cgroup"));
    assert!(parse(&["--pid", "1", "-i", "1ms"]).unwrap_err().contains("--interval must be at least 10ms"));
    assert!(parse(&["--pid", "1", "--duration", "0s"]).unwrap_err().contains("greater than zero"));
    assert!(parse(&["--pid", "1", "--ring-buffer", "3MiB"]).unwrap_err().contains("power of two"));
    assert!(parse(&["--pid", "1", "--ring-buffer", "1k"]).unwrap_err().contains("power of two"));
    assert_eq!(parse(&["--pid", "1", "--ring-buffer", "4KiB"]).unwrap().ring_buffer_bytes, 4096);
}

#[test]
fn a_dump_dir_must_be_a_directory_it_can_write_to() {
    let e = parse(&["--pid", "42", "--dump-dir", "/etc/passwd"]).unwrap_err();
    assert_eq!(e, "--dump-dir /etc/passwd: not a directory");
    let e = parse(&["--pid", "42", "--dump-dir", "/proc/self/no/such"]).unwrap_err();
    assert!(e.starts_with("--dump-dir /proc/self/no/such: cannot create it:"), "{e}");
    // Made if missing, readable by its owner only.
    let dir = std::env::temp_dir().join(format!("heaptrace-dumps-{}", std::process::id()));
    let c = parse(&["--pid", "42", "--dump-dir", dir.to_str().unwrap()]).unwrap();
    assert_eq!(c.dump_dir.as_deref(), Some(dir.as_path()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn events_come_with_the_flag_or_verbose() {
    assert!(!parse(&["--pid", "42"]).unwrap().events);
    assert!(parse(&["--pid", "42", "--events"]).unwrap().events);
    assert!(parse(&["--pid", "42", "-v"]).unwrap().events);
}

#[test]
fn record_flags_are_checked() {
    let c = parse(&["--pid", "42", "--record", "/tmp/x.htrec"]).unwrap();
    assert_eq!(c.record, Some(config::RecordTo { path: "/tmp/x.htrec".into(), max_bytes: 1 << 30 }));
    let c = parse(&["--pid", "42", "--record", "/tmp/x.htrec", "--record-max", "10MiB"]).unwrap();
    assert_eq!(c.record.unwrap().max_bytes, 10 << 20);
    let e = parse(&["--pid", "42", "--record-max", "10MiB"]).unwrap_err();
    assert!(e.contains("--record"), "{e}");
    let e = parse(&["--pid", "42", "--record", "/tmp/x.htrec", "--record-max", "1KiB"]).unwrap_err();
    assert!(e.contains("at least"), "{e}");
    let e = parse(&["--pid", "42", "--record", "/nonexistent-dir/x.htrec"]).unwrap_err();
    assert!(e.contains("no such directory"), "{e}");
    assert!(parse(&["agent", "--record", "/tmp/a.htrec"]).unwrap().record.is_some());
}

#[test]
fn html_takes_a_file_in_an_existing_directory() {
    let config = parse(&["--pid", "42", "--html", "/tmp/heaptrace-report.html"]).unwrap();
    assert_eq!(config.html, Some(PathBuf::from("/tmp/heaptrace-report.html")));
    assert_eq!(parse(&["--pid", "42"]).unwrap().html, None);
    assert!(
        parse(&["--pid", "42", "--html", "/no/such/dir/r.html"]).unwrap_err().contains("no such directory")
    );
    assert!(parse(&["--pid", "42", "--html", "/tmp"]).unwrap_err().contains("--html /tmp: is a directory"));
    // Without stacks the report still has everything but its sites.
    assert!(parse(&["--pid", "42", "--no-stacks", "--html", "/tmp/r.html"]).is_ok());
}
