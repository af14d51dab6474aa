//! Privileged tests of the live view: heaptrace in a real terminal (a
//! detached tmux session of fixed size) tracing real node processes,
//! driven with keys, resized, and stopped with `q` and with SIGTERM; the
//! terminal's settings (`stty -a`) must be the same after as before.
//! Run as root; they never skip.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use support::*;

const NODE: &str = "22.23.3";
/// Attaching (BPF load, V8 probes) and the first snapshot, on a busy host.
const UP: Duration = Duration::from_secs(60);

/// A detached tmux session running heaptrace through a wrapper that saves
/// `stty -a` before and after it and its exit status; killed, with
/// everything in it, when the test ends (panics included).
struct Tmux {
    name: String,
    dir: PathBuf,
}

impl Tmux {
    fn start(tag: &str, heaptrace_args: &[&str]) -> Self {
        let name = format!("ht-{tag}-{}", std::process::id());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wrapper = dir.join("run.sh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\ncd '{dir}'\nstty -a > stty.before\n'{bin}' {args}\necho $? > rc.tmp\n\
                 stty -a > stty.after\nmv rc.tmp rc\nexec sleep 600\n",
                dir = dir.display(),
                bin = heaptrace_bin(),
                args = heaptrace_args.join(" "),
            ),
        )
        .unwrap();
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "160", "-y", "45", "sh"])
            .arg(&wrapper)
            .env_remove("TMUX")
            .status()
            .expect("tmux is needed (scripts/setup.sh installs it)");
        assert!(status.success(), "tmux new-session");
        Self { name, dir }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// The screen and what scrolled off it.
    fn history(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-1000", "-t", &self.name])
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", &self.name, keys]);
    }

    /// Waits until the screen satisfies `check`; returns it.
    fn wait_for(&self, what: &str, within: Duration, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let held = wait_until(within, || {
            last = self.screen();
            check(&last)
        });
        assert!(held, "{what}: not within {within:?}; the screen:\n{last}");
        last
    }

    fn pane_pid(&self) -> u32 {
        self.tmux(&["display-message", "-p", "-t", &self.name, "#{pane_pid}"]).trim().parse().unwrap()
    }

    /// heaptrace's pid: the wrapper shell's child.
    fn heaptrace_pid(&self) -> u32 {
        let shell = self.pane_pid();
        poll("heaptrace in the pane", WAIT, || children(shell).into_iter().find(|&p| comm(p) == "heaptrace"))
    }

    /// heaptrace's exit status, once it has ended and `stty -a` has run.
    fn exit_status(&self) -> i32 {
        let rc = self.dir.join("rc");
        poll("heaptrace's end", Duration::from_secs(30), || std::fs::read_to_string(&rc).ok())
            .trim()
            .parse()
            .unwrap()
    }

    fn stty(&self, which: &str) -> String {
        let stty = std::fs::read_to_string(self.dir.join(format!("stty.{which}"))).unwrap();
        assert!(stty.contains("icanon") && stty.contains("echo"), "stty -a {which}: {stty}");
        stty
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let shell = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, "#{pane_pid}"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().ok());
        for pid in shell.map(children).unwrap_or_default() {
            // SAFETY: kill with a pid read from /proc; at worst it is gone.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.name]).status();
    }
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// Direct children of `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the comm's closing parenthesis: state, ppid.
        let ppid =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// A leaking node process under a name of its own.
fn leaking_node(node: &Path) -> ChildGuard {
    let script = repo_root().join("workloads/leak.js");
    ChildGuard(
        Command::new(node)
            .arg(&script)
            .args(["600", "5"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning node (scripts/fetch-node.sh)"),
    )
}

/// The table row the cursor is on (the highlight symbol starts it).
fn selected_row(screen: &str) -> String {
    screen.lines().find(|l| l.starts_with("│> ")).unwrap_or_default().to_owned()
}

#[test]
fn keys_sort_and_select_a_resize_redraws_and_q_restores_the_terminal() {
    require_root();
    let (node, comm) = unique_node(NODE, "tu");
    let a = leaking_node(&node);
    let b = leaking_node(&node);
    let (pa, pb) = (a.0.id().to_string(), b.0.id().to_string());
    let tmux = Tmux::start("keys", &["--comm", &comm]);
    // Both rows, with their first snapshot's figures.
    let row_of = |s: &str, pid: &str| s.lines().any(|l| l.contains(&format!(" {pid} ")) && l.contains("MiB"));
    let shown = |s: &str| row_of(s, &pa) && row_of(s, &pb) && s.contains(" live ");
    let screen = tmux.wait_for("both processes in the table", UP, shown);
    assert!(screen.contains("RSS▼") && screen.contains("sort rss▼"), "{screen}");

    // Sorting: by pid with its number key, back to RSS with `s` cycling.
    tmux.keys("9");
    tmux.wait_for("sorted by pid", WAIT, |s| s.contains("PID▼") && s.contains("sort pid▼"));
    tmux.keys("s");
    tmux.wait_for("sorted by RSS again", WAIT, |s| s.contains("RSS▼") && s.contains("sort rss▼"));

    // Selection: down and up move the highlighted row.
    let first = selected_row(&tmux.screen());
    assert!(!first.is_empty(), "a row is selected:\n{}", tmux.screen());
    tmux.keys("j");
    let moved = tmux.wait_for("the selection moves down", WAIT, |s| {
        let row = selected_row(s);
        !row.is_empty() && row != first
    });
    let second = selected_row(&moved);
    tmux.keys("k");
    tmux.wait_for("the selection moves back up", WAIT, |s| selected_row(s) != second);

    // A filter by text keeps only the matching process.
    tmux.keys("/");
    tmux.keys(&pb);
    tmux.keys("Enter");
    tmux.wait_for("filtered to one process", WAIT, |s| {
        s.contains(&format!("filter '{pb}'")) && !s.contains(&pa)
    });
    tmux.keys("Escape");
    tmux.wait_for("the filter cleared", WAIT, shown);

    // A smaller window: redrawn to its size, still showing the processes.
    tmux.tmux(&["resize-window", "-t", &tmux.name, "-x", "100", "-y", "30"]);
    let small = tmux.wait_for("redrawn at 100x30", WAIT, |s| {
        let top = s.lines().next().unwrap_or_default();
        shown(s) && top.starts_with('┌') && top.ends_with('┐') && top.chars().count() == 100
    });
    assert_eq!(small.lines().count(), 30, "{small}");
    tmux.tmux(&["resize-window", "-t", &tmux.name, "-x", "160", "-y", "45"]);
    tmux.wait_for("redrawn at 160x45", WAIT, |s| {
        s.lines().next().is_some_and(|top| top.ends_with('┐') && top.chars().count() == 160)
    });

    tmux.keys("q");
    assert_eq!(tmux.exit_status(), 0);
    let after = tmux.history();
    assert!(after.contains("=== heaptrace summary"), "the summary on the normal screen:\n{after}");
    assert!(!after.contains("RSS▼"), "the alternate screen is gone:\n{after}");
    assert_eq!(tmux.stty("before"), tmux.stty("after"), "the terminal's settings are restored");
}

#[test]
fn sigterm_ends_the_view_and_restores_the_terminal() {
    require_root();
    let (node, _comm) = unique_node(NODE, "tt");
    let a = leaking_node(&node);
    let pid = a.0.id().to_string();
    // With --html too: the report is written at the end, as without the view.
    let html = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tui-{}.html", std::process::id()));
    let _ = std::fs::remove_file(&html);
    let tmux = Tmux::start("term", &["--pid", &pid, "--html", html.to_str().unwrap()]);
    tmux.wait_for("the process in the table", UP, |s| {
        s.lines().any(|l| l.contains(&format!(" {pid} ")) && l.contains("MiB")) && s.contains(" live ")
    });
    let heaptrace = tmux.heaptrace_pid();
    // SAFETY: kill with heaptrace's pid, a child of the pane's shell.
    assert_eq!(unsafe { libc::kill(heaptrace as i32, libc::SIGTERM) }, 0);
    assert_eq!(tmux.exit_status(), 0);
    let after = tmux.history();
    assert!(after.contains("=== heaptrace summary"), "the summary on the normal screen:\n{after}");
    assert!(after.contains(&format!("pid {pid}")), "{after}");
    assert_eq!(tmux.stty("before"), tmux.stty("after"), "the terminal's settings are restored");
    let page = std::fs::read_to_string(&html).expect("the HTML report written at the end");
    let _ = std::fs::remove_file(&html);
    assert!(page.contains(&format!("pid {pid}")) || page.contains(&pid), "the report names the process");
}

/// `heaptrace report FILE --tui`: a real recording browsed in a terminal,
/// the time cursor moved by keys, and `q` restoring the terminal.
#[test]
fn a_recording_is_browsed_with_a_time_cursor() {
    require_root();
    let (node, _comm) = unique_node(NODE, "tr");
    let a = leaking_node(&node);
    let pid = a.0.id().to_string();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tui-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("run.htrec");
    let status = Command::new(heaptrace_bin())
        .args(["--pid", &pid, "--duration", "12s", "-o", "json", "--record", rec.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    drop(a);
    let tmux = Tmux::start("rep", &["report", rec.to_str().unwrap(), "--tui"]);
    // It opens at the end of the recording, with the process in the table.
    let end =
        tmux.wait_for("the replay's end", WAIT, |s| s.contains("replay ") && s.contains(&format!(" {pid} ")));
    let offset = |screen: &str| -> u64 {
        let at = screen.find("replay ").expect("the cursor") + "replay ".len();
        let rest = &screen[at..];
        let plus = rest.find("(+").unwrap() + 2;
        rest[plus..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(offset(&end) >= 10, "{end}");
    tmux.keys("Home");
    let home = tmux.wait_for("the cursor at the start", WAIT, |s| s.contains("(+0 s)"));
    assert!(home.contains("replay "), "{home}");
    tmux.keys("Right");
    tmux.wait_for("the cursor a second on", WAIT, |s| s.contains("(+1 s)"));
    tmux.keys("End");
    tmux.wait_for("the cursor back at the end", WAIT, |s| offset(s) == offset(&end));
    tmux.keys("q");
    assert_eq!(tmux.exit_status(), 0);
    assert_eq!(tmux.stty("before"), tmux.stty("after"), "the terminal's settings are restored");
    let _ = std::fs::remove_dir_all(&dir);
}
