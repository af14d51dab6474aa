//! The process's network namespace, seen and entered from outside.
//!
//! - Seen: `/proc/PID/net/tcp` and `tcp6` list the TCP sockets of the
//!   namespace the process is in (its container's, not the host's), and
//!   `/proc/PID/fd` links name the socket inodes the process itself holds.
//!   Together they tell the inspector's listening socket (the process's
//!   own), a port taken by another process, and clients connected to it.
//! - Entered: a connection to the inspector is made by a short-lived
//!   thread that joins the namespace (`setns`) and connects there; the
//!   socket stays in that namespace when the thread ends. A thread of its
//!   own, because the namespace is per thread and a pooled thread would
//!   carry it into unrelated work.

use std::{
    collections::HashSet,
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

/// TCP states, as `/proc/net/tcp` numbers them.
pub const ESTABLISHED: u8 = 0x01;
pub const LISTEN: u8 = 0x0A;

/// One line of `/proc/net/tcp{,6}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// Parses a line of `/proc/net/tcp` or `tcp6` (not the header): `sl
/// local rem st tx:rx tr:when retrnsmt uid timeout inode ...`, addresses
/// as the kernel's in-memory words in hex, ports big-endian hex.
pub fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let inode = fields.nth(5)?.parse().ok()?;
    Some(TcpSocket { local, remote, state, inode })
}

/// `0100007F:240D` (IPv4) or 32 hex digits `:PORT` (IPv6): each 32-bit
/// word of the address as the host (little-endian x86-64) stores it.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each hex word is the value of 4 address bytes loaded as a
    // little-endian u32: its bytes in memory order are the address's.
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_le_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP socket of `pid`'s network namespace.
pub fn tcp_sockets(pid: u32) -> io::Result<Vec<TcpSocket>> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        match std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(text) => out.extend(text.lines().skip(1).filter_map(parse_tcp_line)),
            // A kernel without IPv6 has no tcp6.
            Err(e) if table == "tcp6" && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The socket inodes `pid` holds open (from its fd links).
pub fn socket_inodes(pid: u32) -> io::Result<HashSet<u64>> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // An fd closed between the listing and the readlink is no socket.
        let Ok(link) = std::fs::read_link(entry?.path()) else { continue };
        if let Some(inode) = socket_inode(&link.to_string_lossy()) {
            out.insert(inode);
        }
    }
    Ok(out)
}

/// How many clients are connected to `pid`'s own listener on `port`: the
/// established sockets on that port that `pid` holds, less the one whose
/// peer is `ours` (heaptrace's own connection, seen from the client side).
pub fn clients(pid: u32, port: u16, ours: Option<SocketAddr>) -> io::Result<usize> {
    let own = socket_inodes(pid)?;
    Ok(tcp_sockets(pid)?.iter().filter(|s| is_client(s, port, &own, ours)).count())
}

/// Whether `s` is the process's end of a client's connection to its
/// listener on `port` (other than `ours`).
pub fn is_client(s: &TcpSocket, port: u16, own: &HashSet<u64>, ours: Option<SocketAddr>) -> bool {
    s.state == ESTABLISHED && s.local.port() == port && own.contains(&s.inode) && Some(s.remote) != ours
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Whether a listener at `other` keeps node from binding `host`:`port`:
/// the same port, and the same address or a wildcard on either side (a
/// wildcard IPv6 socket may be dual-stack: /proc does not say).
pub fn conflicts(other: &SocketAddr, host: Option<IpAddr>, port: u16) -> bool {
    if other.port() != port {
        return false;
    }
    match host {
        Some(h) => h.is_unspecified() || other.ip().is_unspecified() || other.ip() == h,
        // A host name: whatever it resolves to may clash.
        None => true,
    }
}

/// Where to connect to reach a listener at `listening`: the wildcard
/// addresses through loopback, a specific address as it is.
pub fn connect_address(listening: SocketAddr) -> SocketAddr {
    let ip = match listening.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listening.port())
}

/// The network namespace's identity (the inode of `/proc/PID/ns/net`).
pub fn netns_id(pid: u32) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino())
}

/// The process (pid, comm) in the same network namespace as `pid` that
/// holds socket `inode`, if one can be found: a walk over /proc, made only
/// to word a refusal.
pub fn owner_of(inode: u64, pid: u32) -> Option<(u32, String)> {
    let ns = netns_id(pid).ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(other) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if other == pid || netns_id(other).ok() != Some(ns) {
            continue;
        }
        if socket_inodes(other).is_ok_and(|s| s.contains(&inode)) {
            let comm = std::fs::read_to_string(format!("/proc/{other}/comm")).unwrap_or_default();
            return Some((other, comm.trim().to_owned()));
        }
    }
    None
}

/// Connects to `addr` from inside `pid`'s network namespace: must run on
/// a thread of its own ([`connect_in_netns`] makes one), which it leaves
/// in that namespace.
pub fn connect_here_in_netns(pid: u32, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// [`connect_here_in_netns`] on a short-lived thread, awaited without
/// blocking the runtime; the socket comes back ready for tokio.
pub async fn connect_in_netns(
    pid: u32,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("heaptrace-netns".into()).spawn(move || {
        let _ = tx.send(connect_here_in_netns(pid, addr, timeout));
    })?;
    let stream =
        rx.await.map_err(|_| io::Error::other("the connecting thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_lines_parse() {
        let listen = "   0: 0100007F:240D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 268029 1 00000000b1b14854 100 0 0 10 0";
        let s = parse_tcp_line(listen).unwrap();
        assert_eq!(s.local, "127.0.0.1:9229".parse().unwrap());
        assert_eq!(s.remote, "0.0.0.0:0".parse().unwrap());
        assert_eq!((s.state, s.inode), (LISTEN, 268029));
        let est = "  14: 0100007F:240D 0100007F:99DE 01 00000000:00000000 00:00000000 00000000     0        0 269162 1 000000003e604ddc 20 4 29 12 -1";
        let s = parse_tcp_line(est).unwrap();
        assert_eq!(s.remote, "127.0.0.1:39390".parse().unwrap());
        assert_eq!(s.state, ESTABLISHED);
        let v6 = "   0: 00000000000000000000000001000000:240D 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0";
        let s = parse_tcp_line(v6).unwrap();
        assert_eq!(s.local, "[::1]:9229".parse().unwrap());
        assert_eq!(s.inode, 31337);
        // 10.1.2.3 in a container.
        let s = parse_tcp_line("1: 0302010A:0050 00000000:0000 0A 0:0 0:0 0 0 0 7 1").unwrap();
        assert_eq!(s.local, "10.1.2.3:80".parse().unwrap());
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert_eq!(parse_tcp_line(header), None);
        assert_eq!(parse_tcp_line(""), None);
        assert_eq!(parse_tcp_line("0: zz:1 00000000:0000 0A 0 0 0 0 0 1"), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[268808]"), Some(268808));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn what_clashes_with_the_inspectors_address() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:9229".parse().unwrap();
        let any6: SocketAddr = "[::]:9229".parse().unwrap();
        let other_ip: SocketAddr = "127.0.0.2:9229".parse().unwrap();
        assert!(conflicts(&"127.0.0.1:9229".parse().unwrap(), Some(lo), 9229));
        assert!(conflicts(&any4, Some(lo), 9229));
        assert!(conflicts(&any6, Some(lo), 9229));
        assert!(!conflicts(&other_ip, Some(lo), 9229));
        assert!(conflicts(&other_ip, Some("0.0.0.0".parse().unwrap()), 9229));
        assert!(!conflicts(&any4, Some(lo), 9230));
        assert!(conflicts(&other_ip, None, 9229));
    }

    #[test]
    fn wildcards_are_reached_through_loopback() {
        assert_eq!(connect_address("0.0.0.0:1".parse().unwrap()), "127.0.0.1:1".parse().unwrap());
        assert_eq!(connect_address("[::]:1".parse().unwrap()), "[::1]:1".parse().unwrap());
        assert_eq!(connect_address("10.0.0.5:1".parse().unwrap()), "10.0.0.5:1".parse().unwrap());
    }
}
