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
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", m.encode())
        }
        "/healthz" => {
            let (ticks, last_ns) = metrics.borrow().progress();
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

/// This process's CPU seconds (user + system) and RSS bytes.
fn self_usage() -> (f64, u64) {
    let Ok(me) = procfs::process::Process::myself() else { return (0.0, 0) };
    let cpu = me.stat().map_or(0.0, |s| (s.utime + s.stime) as f64 / procfs::ticks_per_second() as f64);
    let rss = me.status().ok().and_then(|s| s.vmrss).map_or(0, |kb| kb * 1024);
    (cpu, rss)
}
