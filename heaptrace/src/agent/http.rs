//! The agent's HTTP edge: `/metrics` (OpenMetrics text), `/healthz`, and
//! `/findings` (JSON: what is traced now, per group). hyper serves it on the
//! collector's own thread; handlers borrow the metrics only between awaits.

use std::{cell::RefCell, convert::Infallible, rc::Rc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Bytes, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::MetricsSink;
use crate::clock;

/// Shared between the collector (which writes records into it) and the
/// handlers.
pub type Shared = Rc<RefCell<MetricsSink>>;

/// Serves until the task is dropped. `interval`: the collector's; /healthz
/// fails when no interval completed for three of them.
pub async fn serve(listener: TcpListener, metrics: Shared, interval: Duration) {
    let started_ns = clock::monotonic_ns();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| {
                let reply = handle(&req, &metrics, interval, started_ns);
                async move { Ok::<_, Infallible>(reply) }
            });
            // A client that goes away mid-response is not our problem.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn handle<B>(
    req: &Request<B>,
    metrics: &Shared,
    interval: Duration,
    started_ns: u64,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let (cpu_s, rss) = self_usage();
            let mut m = metrics.borrow_mut();
            m.set_self_usage(cpu_s, rss);
            // Prometheus asks for OpenMetrics; curl, promtool and older
            // scrapers get the classic text format.
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            if accept.contains("application/openmetrics-text") {
                reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    m.encode(),
                )
            } else {
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    to_prometheus_text(&m.encode()),
                )
            }
        }
        "/healthz" => {
            let (started, ticks, last_ns) = metrics.borrow().progress();
            if !started {
                // Programs still loading, or the /proc scan still running:
                // a process started now might not be seen from its start.
                return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n".into());
            }
            let since = clock::monotonic_ns().saturating_sub(if ticks == 0 { started_ns } else { last_ns });
            if since <= 3 * interval.as_nanos() as u64 + 1_000_000_000 {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("no collection for {:.1} s\n", since as f64 / 1e9),
                )
            }
        }
        "/findings" => {
            let m = metrics.borrow();
            match serde_json::to_string(&m.findings()) {
                Ok(json) => reply(StatusCode::OK, "application/json", json),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "heaptrace agent: /metrics (Prometheus), /healthz, /findings (JSON)\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /findings\n".into(),
        ),
    }
}

/// OpenMetrics text → the classic Prometheus text format (0.0.4), which
/// prometheus-client does not write. They differ, for what the agent
/// serves, in three things: a counter family is named without `_total` in
/// OpenMetrics (`# TYPE x counter`, sample `x_total`) and with it in the
/// classic format; `# UNIT` lines; and the closing `# EOF`.
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in open_metrics.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")) {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// This process's CPU seconds (user + system) and RSS bytes.
fn self_usage() -> (f64, u64) {
    let Ok(me) = procfs::process::Process::myself() else { return (0.0, 0) };
    let cpu = me.stat().map_or(0.0, |s| (s.utime + s.stime) as f64 / procfs::ticks_per_second() as f64);
    let rss = me.status().ok().and_then(|s| s.vmrss).map_or(0, |kb| kb * 1024);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn openmetrics_counters_become_classic_counters() {
        let om = "# HELP x_events Kernel events.\n# TYPE x_events counter\nx_events_total 5\n# HELP x_rss RSS.\n# TYPE x_rss gauge\n# UNIT x_rss bytes\nx_rss 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_events_total Kernel events.\n# TYPE x_events_total counter\nx_events_total 5\n# HELP x_rss RSS.\n# TYPE x_rss gauge\nx_rss 1\n"
        );
    }
}
