//! The live view's own cost: heaptrace's CPU time with the view and with
//! `--no-tui`, both in a terminal (tmux sessions of the same size), both
//! tracing the same leaking node process over the same window, at the
//! same time (so the two see the same events).

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use crate::bench::{
    build_heaptrace, cpu_seconds, host_model, kernel_release, peak_rss, repo_root, write_report,
};

/// One heaptrace in a detached tmux session of 160x45; killed with it.
struct Pane {
    session: String,
}

impl Pane {
    fn start(session: &str, command: &str) -> Result<Self> {
        let _ = Command::new("tmux").args(["kill-session", "-t", session]).status();
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", session, "-x", "160", "-y", "45", command])
            .env_remove("TMUX")
            .status()
            .context("tmux is needed (scripts/setup.sh installs it)")?;
        ensure!(status.success(), "tmux new-session");
        Ok(Self { session: session.to_owned() })
    }

    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// heaptrace's pid: the pane's process (the session runs it directly).
    fn pid(&self) -> Result<u32> {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.session, "#{pane_pid}"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check(&self.screen()) {
            ensure!(Instant::now() < deadline, "{what}: not within 60 s; the screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).status();
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Measured {
    /// CPU seconds over the window.
    tui: f64,
    text: f64,
    tui_peak_rss: u64,
    text_peak_rss: u64,
}

pub fn tui(seconds: u64, node: &Path, out: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root");
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let m = measure(&heaptrace, node, &root, Duration::from_secs(seconds))?;
    write_report(&report(seconds, &m), out)
}

fn measure(heaptrace: &Path, node: &Path, root: &Path, window: Duration) -> Result<Measured> {
    // ~2.5 MiB/s leaked (5 requests per 10 ms tick): a live, changing view.
    let workload = Killed(
        Command::new(node)
            .arg(root.join("workloads/leak.js"))
            .args([&(window.as_secs() + 120).to_string(), "5"])
            .stdout(Stdio::null())
            .spawn()
            .context("spawning node")?,
    );
    let pid = workload.0.id().to_string();
    let bin = heaptrace.display();
    let tui = Pane::start("heaptrace-bench-tui", &format!("{bin} --pid {pid}"))?;
    let text = Pane::start("heaptrace-bench-text", &format!("{bin} --pid {pid} --no-tui"))?;
    tui.wait_for("the live view", |s| s.contains(&pid) && s.contains(" live "))?;
    text.wait_for("the text lines", |s| s.contains(&pid) && s.contains("rss"))?;
    let (tui_pid, text_pid) = (tui.pid()?, text.pid()?);
    let c0 = (cpu_seconds(tui_pid)?, cpu_seconds(text_pid)?);
    std::thread::sleep(window);
    let c1 = (cpu_seconds(tui_pid)?, cpu_seconds(text_pid)?);
    let m = Measured {
        tui: c1.0 - c0.0,
        text: c1.1 - c0.1,
        tui_peak_rss: peak_rss(tui_pid)?,
        text_peak_rss: peak_rss(text_pid)?,
    };
    eprintln!("live view: {:.2} s CPU; --no-tui: {:.2} s CPU over {} s", m.tui, m.text, window.as_secs());
    for pid in [tui_pid, text_pid] {
        // SAFETY: kill with the pid of a heaptrace this benchmark started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while [tui_pid, text_pid].iter().any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(m)
}

fn report(seconds: u64, m: &Measured) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# The live view's cost: heaptrace's CPU with the view and with `--no-tui`\n");
    let _ = writeln!(
        s,
        "Host: {} ({} CPUs), kernel {}. `cargo xtask bench-tui --seconds {seconds}`.\n",
        host_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release()
    );
    let _ = writeln!(
        s,
        "Both at once, each in a tmux terminal of 160x45, tracing the same leaking node process \
         (`workloads/leak.js`, ~2.5 MiB/s) with `--pid`; CPU is utime + stime from /proc/PID/stat \
         over the same {seconds} s window, after both were up.\n"
    );
    let _ = writeln!(s, "| heaptrace | CPU, s | % of one core | peak RSS |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (name, cpu, rss) in
        [("live view", m.tui, m.tui_peak_rss), ("`--no-tui` (text lines)", m.text, m.text_peak_rss)]
    {
        let _ = writeln!(
            s,
            "| {name} | {cpu:.2} | {:.2} | {:.1} MiB |",
            cpu / seconds as f64 * 100.0,
            rss as f64 / 1048576.0
        );
    }
    let ratio = if m.text > 0.0 { m.tui / m.text } else { f64::NAN };
    let _ = writeln!(s, "\nThe live view costs {ratio:.2}x the CPU of text output.");
    s
}
