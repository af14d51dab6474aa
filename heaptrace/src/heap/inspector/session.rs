//! One DevTools protocol client of a node process's inspector: requests
//! with ids, replies matched to them, events routed to the call that
//! expects them (a snapshot's chunks) and otherwise dropped.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{
    Refusal, Target,
    connect::{self, CLOSE_EXPRESSION, Ws},
};

/// What went wrong talking to an inspector.
#[derive(Debug, Error)]
pub enum InspectorError {
    /// A check passed in the preflight fails now, just before the signal.
    #[error("process changed since the checks, nothing was sent: {0}")]
    Changed(Refusal),
    /// The signal could not be sent.
    #[error("sending SIGUSR1 to process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    /// /proc could not be read while waiting.
    #[error("reading {what} of process {pid} in /proc: {source}")]
    Proc {
        pid: u32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The process ended while heaptrace waited for its inspector.
    #[error("process {pid} exited while heaptrace waited for its inspector")]
    Exited { pid: u32 },
    /// No listening socket appeared after the signal.
    #[error(
        "process {pid} did not open its inspector (port {port}, 0: any) within {waited:?} of SIGUSR1; {hint}. If it opens later it stays open: restart the process, or close it from a debugger with require('inspector').close()"
    )]
    NotListening { pid: u32, port: u16, waited: Duration, hint: String },
    /// No connection could be made inside the process's network namespace.
    #[error("connecting to {addr} in process {pid}'s network namespace: {source}")]
    Connect {
        pid: u32,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The inspector's HTTP side failed.
    #[error("the inspector at {addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
    /// `/json/list` named nothing to connect to.
    #[error("the inspector at {addr} lists no target to connect to: {reason}")]
    NoTarget { addr: SocketAddr, reason: String },
    /// The WebSocket failed.
    #[error("{what}: {source}")]
    WebSocket {
        what: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// The inspector answered a request with an error.
    #[error("{method}: the inspector answered error {code}: {message}")]
    Protocol { method: String, code: i64, message: String },
    /// No message came for too long during a call.
    #[error("{method}: no message from the inspector for {after:?}")]
    Timeout { method: String, after: Duration },
    /// The connection closed during a call.
    #[error("{method}: the inspector closed the connection")]
    Disconnected { method: String },
    /// A reply without what it should hold.
    #[error("{method}: unexpected reply: {reason}")]
    BadReply { method: String, reason: String },
    /// A client connected while heaptrace used the inspector it opened:
    /// it is left open for that client.
    #[error(
        "{clients} other client(s) connected to process {pid}'s inspector on {addr} while heaptrace used it (a debugger?): heaptrace leaves the inspector open rather than drop that session (node's inspector.close() would also hold up the event loop until every client lets go); close it from that client with require('inspector').close(), or restart the process"
    )]
    OtherClients { pid: u32, addr: SocketAddr, clients: usize },
    /// heaptrace opened the inspector and could not close it.
    #[error(
        "heaptrace opened process {pid}'s inspector and could not close it ({reason}): it may still listen on {addr}; restart the process, or run require('inspector').close() in it from a debugger"
    )]
    StillOpen { pid: u32, addr: SocketAddr, reason: String },
}

/// The longest wait for the next message of a call, by default: a
/// snapshot of a big heap takes seconds to start streaming.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long closing may take: the reply (or the drop), then the port.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// A message from the inspector: a reply (`id`) or an event (`method`).
#[derive(Deserialize)]
struct Incoming {
    id: Option<u64>,
    method: Option<String>,
    params: Option<Value>,
    result: Option<Value>,
    error: Option<ProtocolError>,
}

#[derive(Deserialize)]
struct ProtocolError {
    code: i64,
    message: String,
}

/// One DevTools client of the inspector of one process.
pub struct Session {
    pid: u32,
    /// Where it is reached, inside the process's network namespace.
    addr: SocketAddr,
    ws_path: String,
    /// The WebSocket's own address (the inspector's peer for it), to tell
    /// heaptrace's connection from other clients'.
    local: Option<SocketAddr>,
    /// None once closed.
    ws: Option<Ws>,
    next_id: u64,
    opened: bool,
    timeout: Duration,
}

impl Session {
    /// Opens the inspector (SIGUSR1, unless it is already open) and
    /// connects to it; `timeout` bounds all of it.
    pub async fn open(target: &Target, timeout: Duration) -> Result<Session, InspectorError> {
        let deadline = Instant::now() + timeout;
        let pid = target.pid;
        let (listening, opened) = match target.listening {
            Some(addr) if target.already_open => (addr, false),
            _ => (connect::signal_and_wait(target, deadline).await?, true),
        };
        let addr = super::netns::connect_address(listening);
        let connected = async {
            let ws_path = connect::ws_path(pid, addr, deadline).await?;
            let ws = connect::websocket(pid, addr, &ws_path, deadline).await?;
            Ok::<_, InspectorError>((ws_path, ws))
        };
        match connected.await {
            Ok((ws_path, ws)) => {
                let local = ws.get_ref().local_addr().ok();
                Ok(Session {
                    pid,
                    addr,
                    ws_path,
                    local,
                    ws: Some(ws),
                    next_id: 1,
                    opened,
                    timeout: DEFAULT_TIMEOUT,
                })
            }
            // Opened, but no session on it: nothing can close it.
            Err(e) if opened => Err(InspectorError::StillOpen { pid, addr, reason: e.to_string() }),
            Err(e) => Err(e),
        }
    }

    /// Whether heaptrace opened the inspector (and [`Session::close`]
    /// closes it), or it was already open (and stays so).
    pub fn opened(&self) -> bool {
        self.opened
    }

    /// Where the inspector is reached, in the process's network namespace.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// The longest wait for the next message during a call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One request; its `result`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, InspectorError> {
        self.call_with(method, params, &mut |_, _| {}).await
    }

    /// One request, with the events that come before its reply handed to
    /// `on_event` (method, params).
    async fn call_with(
        &mut self,
        method: &str,
        params: Value,
        on_event: &mut (dyn FnMut(&str, Option<Value>) + Send),
    ) -> Result<Value, InspectorError> {
        let disconnected = || InspectorError::Disconnected { method: method.to_owned() };
        let ws = self.ws.as_mut().ok_or_else(disconnected)?;
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        ws.send(Message::text(request)).await.map_err(|e| InspectorError::WebSocket {
            what: format!("sending {method}"),
            source: Box::new(e),
        })?;
        loop {
            let next = tokio::time::timeout(self.timeout, ws.next())
                .await
                .map_err(|_| InspectorError::Timeout { method: method.to_owned(), after: self.timeout })?;
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => return Err(disconnected()),
                // Pings are answered by tungstenite; nothing else is sent.
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(InspectorError::WebSocket {
                        what: format!("waiting for {method}"),
                        source: Box::new(e),
                    });
                }
            };
            let incoming: Incoming = serde_json::from_str(&text)
                .map_err(|e| InspectorError::BadReply { method: method.to_owned(), reason: e.to_string() })?;
            match (incoming.id, incoming.method) {
                (Some(got), _) if got == id => {
                    if let Some(e) = incoming.error {
                        return Err(InspectorError::Protocol {
                            method: method.to_owned(),
                            code: e.code,
                            message: e.message,
                        });
                    }
                    return Ok(incoming.result.unwrap_or(Value::Null));
                }
                (None, Some(event)) => on_event(&event, incoming.params),
                // The reply of an earlier call that was given up.
                _ => {}
            }
        }
    }

    /// The JS heap's used size (`Runtime.getHeapUsage`'s `usedSize`).
    pub async fn heap_used(&mut self) -> Result<u64, InspectorError> {
        let r = self.call("Runtime.getHeapUsage", json!({})).await?;
        r.get("usedSize").and_then(Value::as_f64).map(|v| v as u64).ok_or_else(|| InspectorError::BadReply {
            method: "Runtime.getHeapUsage".into(),
            reason: format!("no usedSize in {r}"),
        })
    }

    /// A heap snapshot (V8's JSON, as DevTools saves it). The heap
    /// profiler stays enabled for the session, so that object ids agree
    /// between two snapshots; it is disabled when the session ends.
    pub async fn take_snapshot(&mut self) -> Result<Vec<u8>, InspectorError> {
        const METHOD: &str = "HeapProfiler.takeHeapSnapshot";
        self.call("HeapProfiler.enable", json!({})).await?;
        let mut out = Vec::new();
        let mut bad_chunks = 0usize;
        self.call_with(METHOD, json!({ "reportProgress": false }), &mut |event, params| {
            if event == "HeapProfiler.addHeapSnapshotChunk" {
                match params.as_ref().and_then(|p| p.get("chunk")).and_then(Value::as_str) {
                    Some(chunk) => out.extend_from_slice(chunk.as_bytes()),
                    None => bad_chunks += 1,
                }
            }
        })
        .await?;
        if bad_chunks > 0 || out.is_empty() {
            return Err(InspectorError::BadReply {
                method: METHOD.into(),
                reason: format!("{} bytes of snapshot, {bad_chunks} chunk(s) without text", out.len()),
            });
        }
        Ok(out)
    }

    /// Starts V8's sampling heap profiler: one sample per `interval_bytes`
    /// allocated, on average.
    pub async fn start_sampling(&mut self, interval_bytes: u64) -> Result<(), InspectorError> {
        self.call("HeapProfiler.enable", json!({})).await?;
        self.call("HeapProfiler.startSampling", json!({ "samplingInterval": interval_bytes })).await?;
        Ok(())
    }

    /// Stops it; the `profile` (`SamplingHeapProfile`: a tree of call
    /// frames with self sizes, and the samples).
    pub async fn stop_sampling(&mut self) -> Result<Value, InspectorError> {
        let mut r = self.call("HeapProfiler.stopSampling", json!({})).await?;
        match r.get_mut("profile") {
            Some(profile) => Ok(profile.take()),
            None => Err(InspectorError::BadReply {
                method: "HeapProfiler.stopSampling".into(),
                reason: "no profile in the reply".into(),
            }),
        }
    }

    /// Ends the session: if heaptrace opened the inspector, closes it and
    /// checks that its port refuses connections; otherwise disconnects and
    /// leaves it open.
    pub async fn close(mut self) -> Result<(), InspectorError> {
        let Some(mut ws) = self.ws.take() else { return Ok(()) };
        let deadline = Instant::now() + CLOSE_WITHIN;
        if !self.opened {
            // A polite goodbye; the inspector stays as it was.
            let bye = async {
                ws.close(None).await?;
                while ws.next().await.is_some() {}
                Ok::<_, tungstenite::Error>(())
            };
            let _ = tokio::time::timeout_at(deadline.into(), bye).await;
            return Ok(());
        }
        let still_open =
            |reason: String| InspectorError::StillOpen { pid: self.pid, addr: self.addr, reason };
        // inspector.close() drops every session, and node's main thread
        // waits until each client has let go (Node 18 to 26 alike): someone
        // else's debugger, attached meanwhile, would lose its session, and
        // a client that does not answer would stall the application.
        let count = || super::netns::clients(self.pid, self.addr.port(), self.local).unwrap_or(0);
        let mut clients = count();
        // A short request (a tool polling /json/list) comes and goes: only
        // a client still there a moment later counts.
        for _ in 0..4 {
            if clients == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            clients = count();
        }
        if clients > 0 {
            let _ = tokio::time::timeout_at(deadline.into(), ws.close(None)).await;
            return Err(InspectorError::OtherClients { pid: self.pid, addr: self.addr, clients });
        }
        let id = self.next_id;
        if let Err(e) = ws.send(Message::text(connect::close_request(id))).await {
            return Err(still_open(format!("sending the close request: {e}")));
        }
        // node drops the connection (usually before the reply comes); a
        // reply, if one comes, must not be an exception.
        let outcome = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(reply) = serde_json::from_str::<Incoming>(&text) else { continue };
                        if reply.id != Some(id) {
                            continue;
                        }
                        let exception = reply.result.as_ref().and_then(|r| r.get("exceptionDetails"));
                        return match (reply.error, exception) {
                            (Some(e), _) => Err(e.message),
                            (None, Some(ex)) => Err(format!("{CLOSE_EXPRESSION} threw: {ex}")),
                            (None, None) => Ok(()),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ok(()),
                }
            }
        };
        match tokio::time::timeout_at(deadline.into(), outcome).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(still_open(reason)),
            Err(_) => {
                return Err(still_open(format!("no answer to {CLOSE_EXPRESSION} within {CLOSE_WITHIN:?}")));
            }
        }
        drop(ws);
        connect::wait_refused(self.pid, self.addr, deadline).await.map_err(still_open)
    }
}

impl Drop for Session {
    /// A session dropped without [`Session::close`] (an error, a panic, a
    /// cancelled task) still disconnects; and an inspector heaptrace
    /// opened is closed on a fresh connection (unless another client is
    /// on it, as in `close`), blocking for a few seconds at most (nothing
    /// can be awaited here), so that no open debug port is left behind.
    fn drop(&mut self) {
        let Some(ws) = self.ws.take() else { return };
        drop(ws);
        if !self.opened {
            return;
        }
        let (pid, addr, path, ours) = (self.pid, self.addr, self.ws_path.clone(), self.local);
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("heaptrace-close".into()).spawn(move || {
            let _ = tx.send(connect::close_blocking(pid, addr, &path, ours, Duration::from_secs(4)));
        });
        if spawned.is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }
}
