//! Getting to the inspector: the signal, the wait for its socket, the
//! `/json/list` request and the WebSocket handshake, each made inside the
//! process's network namespace; and a blocking close on a fresh connection
//! for the paths that cannot await (a `Session` dropped without `close`).

use std::{
    collections::HashSet,
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use super::{
    HandlerCheck, Target,
    netns::{self, LISTEN},
    preflight::{self, pidfd_signal},
    session::InspectorError,
    signals::SIGUSR1,
};

pub(super) type Ws = WebSocketStream<tokio::net::TcpStream>;

/// How often the process's sockets are looked at while waiting.
const POLL: Duration = Duration::from_millis(10);

/// The expression that closes the inspector (and every session on it),
/// `require` coming from the command-line API.
pub(super) const CLOSE_EXPRESSION: &str = "require('inspector').close()";

/// Messages as large as a long sampling profile; the snapshot itself comes
/// in small chunks.
pub(super) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(1 << 30)).max_frame_size(Some(1 << 30))
}

/// The inodes of the LISTEN sockets `pid` holds, with their addresses.
fn own_listeners(pid: u32) -> io::Result<Vec<(u64, SocketAddr)>> {
    let own = netns::socket_inodes(pid)?;
    Ok(netns::tcp_sockets(pid)?
        .into_iter()
        .filter(|s| s.state == LISTEN && own.contains(&s.inode))
        .map(|s| (s.inode, s.local))
        .collect())
}

/// Sends SIGUSR1, after looking again at what could have changed since
/// the preflight (a handler registered since, a mask changed), and waits
/// until the process has a new listening socket on the inspector's port
/// (any new one if node picks the port). Returns where it listens.
pub(super) async fn signal_and_wait(
    target: &Target,
    deadline: Instant,
) -> Result<SocketAddr, InspectorError> {
    let pid = target.pid;
    let proc_err = |what: &'static str| move |source| InspectorError::Proc { pid, what, source };
    let before: HashSet<u64> =
        own_listeners(pid).map_err(proc_err("its sockets"))?.into_iter().map(|(i, _)| i).collect();
    preflight::check_masks(pid).map_err(InspectorError::Changed)?;
    if let Some(tree) = target.signal_tree
        && let Err(refusal) = preflight::sigusr1_watchers(pid, tree)
    {
        return Err(InspectorError::Changed(refusal));
    }
    pidfd_signal(&target.pidfd, SIGUSR1 as i32).map_err(|source| InspectorError::Signal { pid, source })?;
    let started = Instant::now();
    loop {
        let new = own_listeners(pid).map_err(proc_err("its sockets"))?.into_iter().find(|(inode, addr)| {
            !before.contains(inode) && (target.port == 0 || addr.port() == target.port)
        });
        if let Some((_, addr)) = new {
            return Ok(addr);
        }
        // Signal 0 through the pidfd: is it still there?
        if pidfd_signal(&target.pidfd, 0).is_err() {
            return Err(InspectorError::Exited { pid });
        }
        if Instant::now() >= deadline {
            let hint = match &target.handler_check {
                HandlerCheck::Unavailable(why) => format!(
                    "the application may handle SIGUSR1 itself (process.on('SIGUSR1')), which heaptrace could not rule out: {why}"
                ),
                _ => "node may be busy in native code, which delays the inspector".to_owned(),
            };
            return Err(InspectorError::NotListening {
                pid,
                port: target.port,
                waited: started.elapsed(),
                hint,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The WebSocket path of the inspector's target, from `GET /json/list`.
pub(super) async fn ws_path(pid: u32, addr: SocketAddr, deadline: Instant) -> Result<String, InspectorError> {
    let http = |reason: String| InspectorError::Http { addr, reason };
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = netns::connect_in_netns(pid, addr, left)
        .await
        .map_err(|source| InspectorError::Connect { pid, addr, source })?;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(format!("handshake: {e}")))?;
        let conn = tokio::spawn(conn);
        // node checks the Host header against DNS rebinding: an IP
        // address passes.
        let request = hyper::Request::get("/json/list")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| http(format!("GET /json/list: {e}")));
        let body = match response {
            Ok(r) if r.status().is_success() => r.into_body().collect().await.map(|b| b.to_bytes()),
            Ok(r) => {
                conn.abort();
                return Err(http(format!("GET /json/list answered {}", r.status())));
            }
            Err(e) => {
                conn.abort();
                return Err(e);
            }
        };
        conn.abort();
        body.map_err(|e| http(format!("reading /json/list: {e}")))
    };
    let body = tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .map_err(|_| http("no answer to GET /json/list in time".into()))??;
    path_from_list(&body).map_err(|reason| InspectorError::NoTarget { addr, reason })
}

/// The path of the first target's `webSocketDebuggerUrl`
/// (`ws://127.0.0.1:9229/<uuid>` → `/<uuid>`).
pub(super) fn path_from_list(body: &[u8]) -> Result<String, String> {
    let list: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("/json/list is not JSON: {e}"))?;
    let targets = list.as_array().ok_or("/json/list is not a list")?;
    let url =
        targets.iter().find_map(|t| t.get("webSocketDebuggerUrl").and_then(|u| u.as_str())).ok_or_else(
            || format!("no target with a webSocketDebuggerUrl among {} in /json/list", targets.len()),
        )?;
    let rest = url.strip_prefix("ws://").ok_or_else(|| format!("{url}: not a ws:// URL"))?;
    let path = &rest[rest.find('/').ok_or_else(|| format!("{url}: no path"))?..];
    Ok(path.to_owned())
}

/// The WebSocket to `path`, on a second connection made in the namespace.
pub(super) async fn websocket(
    pid: u32,
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
) -> Result<Ws, InspectorError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = netns::connect_in_netns(pid, addr, left)
        .await
        .map_err(|source| InspectorError::Connect { pid, addr, source })?;
    let url = format!("ws://{addr}{path}");
    let handshake = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config()));
    match tokio::time::timeout_at(deadline.into(), handshake).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => {
            Err(InspectorError::WebSocket { what: format!("handshake with {url}"), source: Box::new(e) })
        }
        Err(_) => {
            Err(InspectorError::Http { addr, reason: format!("no WebSocket handshake with {url} in time") })
        }
    }
}

/// Polls until a connection to `addr` in the namespace is refused: the
/// inspector has stopped listening.
pub(super) async fn wait_refused(pid: u32, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    loop {
        match netns::connect_in_netns(pid, addr, Duration::from_secs(1)).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(format!("checking that {addr} refuses connections: {e}")),
            Ok(_still_open) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("{addr} still accepts connections"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Closes the inspector on a connection of its own, blocking: run on a
/// thread of its own (it joins the namespace). For a session dropped
/// without `close`, where nothing can be awaited.
pub(super) fn close_blocking(
    pid: u32,
    addr: SocketAddr,
    path: &str,
    ours: Option<SocketAddr>,
    within: Duration,
) -> Result<(), String> {
    use tokio_tungstenite::tungstenite;
    let deadline = Instant::now() + within;
    // Left open for another client, as `Session::close` does.
    match netns::clients(pid, addr.port(), ours) {
        Ok(0) => {}
        Ok(n) => return Err(format!("{n} other client(s) on {addr}: left open")),
        Err(e) => return Err(e.to_string()),
    }
    let stream = netns::connect_here_in_netns(pid, addr, within).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(within)).map_err(|e| e.to_string())?;
    let (mut ws, _) =
        tungstenite::client::client_with_config(format!("ws://{addr}{path}"), stream, Some(ws_config()))
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
    ws.send(Message::text(close_request(1))).map_err(|e| e.to_string())?;
    // The reply, or (as node does) the connection dropped first.
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) if reply_id(&t) == Some(1) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(e.to_string()),
            Ok(_) if Instant::now() >= deadline => return Err(format!("{addr} still accepts connections")),
            Ok(_) => std::thread::sleep(POLL),
        }
    }
}

/// The id of a reply (None for an event or something else).
fn reply_id(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text).ok()?.get("id")?.as_u64()
}

/// The `Runtime.evaluate` request that closes the inspector.
pub(super) fn close_request(id: u64) -> String {
    serde_json::json!({
        "id": id,
        "method": "Runtime.evaluate",
        "params": { "expression": CLOSE_EXPRESSION, "includeCommandLineAPI": true },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_path_comes_from_json_list() {
        let list = br#"[ {
          "description": "node.js instance",
          "id": "a0ba9cbb-ad7c-4b1c-ba5d-bce6f204c171",
          "type": "node",
          "webSocketDebuggerUrl": "ws://127.0.0.1:9229/a0ba9cbb-ad7c-4b1c-ba5d-bce6f204c171"
        } ]"#;
        assert_eq!(path_from_list(list).unwrap(), "/a0ba9cbb-ad7c-4b1c-ba5d-bce6f204c171");
        let v6 = br#"[{"webSocketDebuggerUrl": "ws://[::1]:9229/x"}]"#;
        assert_eq!(path_from_list(v6).unwrap(), "/x");
        assert!(path_from_list(b"[]").unwrap_err().contains("no target"));
        assert!(path_from_list(br#"[{"id":"x"}]"#).is_err());
        assert!(path_from_list(b"{}").is_err());
        assert!(path_from_list(b"<html>").is_err());
        assert!(path_from_list(br#"[{"webSocketDebuggerUrl": "ws://host"}]"#).is_err());
    }

    #[test]
    fn the_close_request() {
        let v: serde_json::Value = serde_json::from_str(&close_request(7)).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "Runtime.evaluate");
        assert_eq!(v["params"]["expression"], CLOSE_EXPRESSION);
        assert_eq!(v["params"]["includeCommandLineAPI"], true);
    }
}
