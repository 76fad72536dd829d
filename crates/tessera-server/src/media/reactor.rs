//! The reactor: one thread, a current-thread tokio runtime with a single task, every
//! connection. It waits on the sockets, the two queues and the earliest timer; after each
//! wake it drains the connections it touched and sends what they wrote.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tessera_config::NetworkConfig;
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::conn::Conn;
use super::demux::{self, Demux};
use super::egress::FrameCache;
use super::{Control, PeerKey, PlaneStats};
use crate::room::MediaOut;

/// Datagrams read per socket wake before the queues get a turn.
const READ_BATCH: usize = 64;
/// Media items taken per wake.
const MEDIA_BATCH: usize = 256;
/// Any UDP datagram fits: a truncated one would fail SRTP authentication unseen.
const MAX_DATAGRAM: usize = 65_536;

/// Binds the sockets and starts the thread; returns the bound UDP addresses.
pub(super) fn spawn(
    network: &NetworkConfig,
    control: mpsc::UnboundedReceiver<Control>,
    media: mpsc::Receiver<(PeerKey, MediaOut)>,
    shed: Arc<AtomicU64>,
) -> std::io::Result<Vec<SocketAddr>> {
    let mut std_sockets = Vec::new();
    let mut std_listeners = Vec::new();
    for ip in host_ips(network)? {
        if network.tcp_port != 0 {
            let addr = SocketAddr::new(ip, network.tcp_port);
            let l = tcp_listener(addr).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen for ICE-TCP on {addr} (network.tcp_port): {e}"),
                )
            })?;
            std_listeners.push(l);
        }
        let addr = SocketAddr::new(ip, network.udp_port);
        let s = media_socket(addr).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind media socket {addr} (network.udp_port): {e}"),
            )
        })?;
        std_sockets.push(s);
    }
    let locals = std_sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let tcp_locals = std_listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    info!(addrs = ?locals, "media on one UDP port per host address");
    if !tcp_locals.is_empty() {
        info!(addrs = ?tcp_locals, "ICE-TCP (passive) on one TCP port per host address");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addrs = locals.clone();
    std::thread::Builder::new()
        .name("media-reactor".into())
        .spawn(move || {
            runtime.block_on(async move {
                let sockets = match std_sockets
                    .into_iter()
                    .map(UdpSocket::from_std)
                    .collect::<std::io::Result<Vec<_>>>()
                {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("media sockets: {e}");
                        return;
                    }
                };
                let listeners = match std_listeners
                    .into_iter()
                    .map(TcpListener::from_std)
                    .collect::<std::io::Result<Vec<_>>>()
                {
                    Ok(l) => l,
                    Err(e) => {
                        warn!("ICE-TCP listeners: {e}");
                        return;
                    }
                };
                let mut r = Reactor {
                    sockets,
                    locals: addrs,
                    tcp: Tcp {
                        listeners,
                        locals: tcp_locals,
                        ..Tcp::default()
                    },
                    conns: HashMap::new(),
                    demux: Demux::default(),
                    timers: BinaryHeap::new(),
                    scheduled: HashMap::new(),
                    dirty: HashSet::new(),
                    cache: FrameCache::default(),
                    stats: PlaneStats::default(),
                    shed,
                };
                r.run(control, media).await;
            })
        })?;
    Ok(locals)
}

/// Kernel buffers asked for on each media socket. One socket carries every participant, so
/// the default (about 200 KiB) overflows in a burst of keyframes; the kernel caps the request
/// at `net.core.rmem_max`/`wmem_max` (operations.md says how to raise them).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr`, with large kernel buffers.
fn media_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer than asked for still works, it only drops sooner.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    if let (Ok(r), Ok(w)) = (s.recv_buffer_size(), s.send_buffer_size()) {
        debug!(%addr, recv = r, send = w, "media socket buffers");
    }
    Ok(s.into())
}

/// A non-blocking TCP listener on `addr` for ICE-TCP.
fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// `network.host_ips`, or when it is empty every interface address of the machine
/// (loopback included, IPv6 link-local and unspecified excepted).
fn host_ips(network: &NetworkConfig) -> std::io::Result<Vec<IpAddr>> {
    if !network.host_ips.is_empty() {
        return network
            .host_ips
            .iter()
            .map(|ip| {
                ip.parse().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("network.host_ips: {ip:?} is not an IP address"),
                    )
                })
            })
            .collect();
    }
    let mut ips: Vec<IpAddr> = rtc::shared::ifaces::ifaces()?
        .into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    Ok(ips)
}

/// Most ICE-TCP connections open at once; more are refused.
const MAX_TCP_LINKS: usize = 4096;
/// An ICE-TCP connection that has not sent a binding request for one of our connections
/// this soon is closed.
const TCP_UNROUTED_FOR: Duration = Duration::from_secs(10);
/// Bytes waiting to be written to one ICE-TCP connection before its packets are dropped
/// (media over TCP on a slow link: better lost than seconds late).
const TCP_BACKLOG: usize = 512 * 1024;

/// ICE-TCP: passive candidates (RFC 6544), every packet framed with a 2-byte length
/// (RFC 4571). A connection is routed by the USERNAME of its first binding request, the
/// way a UDP datagram from an unknown address is; after that everything on it belongs to
/// that PeerConnection.
#[derive(Default)]
struct Tcp {
    listeners: Vec<TcpListener>,
    locals: Vec<SocketAddr>,
    /// By (local, remote): the 4-tuple the agents write to.
    links: HashMap<Pair, TcpLink>,
}

type Pair = (SocketAddr, SocketAddr);

struct TcpLink {
    stream: TcpStream,
    key: Option<PeerKey>,
    opened: Instant,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

enum TcpEvent {
    Accepted(usize, std::io::Result<(TcpStream, SocketAddr)>),
    Readable(Pair),
    Writable(Pair),
}

/// Waits for an ICE-TCP connection to accept, read or finish writing.
fn tcp_event(tcp: &Tcp) -> impl std::future::Future<Output = TcpEvent> + '_ {
    std::future::poll_fn(move |cx| {
        for (i, l) in tcp.listeners.iter().enumerate() {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready(TcpEvent::Accepted(i, r));
            }
        }
        for (pair, link) in &tcp.links {
            if link.stream.poll_read_ready(cx).is_ready() {
                return Poll::Ready(TcpEvent::Readable(*pair));
            }
            if !link.wbuf.is_empty() && link.stream.poll_write_ready(cx).is_ready() {
                return Poll::Ready(TcpEvent::Writable(*pair));
            }
        }
        Poll::Pending
    })
}

impl TcpLink {
    /// Writes what it can of the backlog; false when the connection is broken.
    fn write_some(&mut self) -> bool {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

struct Reactor {
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    tcp: Tcp,
    conns: HashMap<PeerKey, Conn>,
    demux: Demux,
    /// (due, key); stale entries (the connection's due time moved) are skipped.
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    scheduled: HashMap<PeerKey, Instant>,
    /// Connections touched since their last drain.
    dirty: HashSet<PeerKey>,
    cache: FrameCache,
    stats: PlaneStats,
    shed: Arc<AtomicU64>,
}

/// Waits for a datagram on any socket: (socket index, sender, length).
fn recv_any<'a>(
    sockets: &'a [UdpSocket],
    buf: &'a mut [u8],
) -> impl std::future::Future<Output = (usize, SocketAddr, usize)> + 'a {
    std::future::poll_fn(move |cx| {
        for (i, s) in sockets.iter().enumerate() {
            let mut rb = ReadBuf::new(buf);
            match s.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => return Poll::Ready((i, from, rb.filled().len())),
                // ICMP errors surface on the next read; the socket stays usable.
                Poll::Ready(Err(_)) => cx.waker().wake_by_ref(),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
}

impl Reactor {
    async fn run(
        &mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut media: mpsc::Receiver<(PeerKey, MediaOut)>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut batch = Vec::with_capacity(MEDIA_BATCH);
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(deadline.map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                tokio::time::Instant::from_std,
            ));
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(c) => self.control(c),
                    None => break,
                },
                (i, from, n) = recv_any(&self.sockets, &mut buf) => {
                    let now = Instant::now();
                    self.datagram(i, from, &buf[..n], now);
                    // More may be waiting: take a batch before anything else.
                    for _ in 0..READ_BATCH {
                        match self.sockets[i].try_recv_from(&mut buf) {
                            Ok((n, from)) => self.datagram(i, from, &buf[..n], now),
                            Err(_) => break,
                        }
                    }
                }
                n = media.recv_many(&mut batch, MEDIA_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for (key, m) in batch.drain(..) {
                        if let Some(c) = self.conns.get_mut(&key) {
                            c.media(m, &mut self.cache, now);
                            self.dirty.insert(key);
                        }
                    }
                }
                ev = tcp_event(&self.tcp) => self.tcp_ready(ev, &mut buf),
                _ = sleep => {}
            }
            self.run_timers(Instant::now());
            self.flush();
        }
        for c in self.conns.values_mut() {
            c.close();
        }
        self.dirty.extend(self.conns.keys().copied());
        self.flush();
        info!("media reactor stopped");
    }

    fn control(&mut self, c: Control) {
        let now = Instant::now();
        match c {
            Control::Open { key, req, reply } => {
                match Conn::open(key, *req, &self.locals, &self.tcp.locals, now) {
                    Ok((conn, answer)) => {
                        self.demux.add_ufrag(&conn.ufrag, key);
                        self.conns.insert(key, conn);
                        self.dirty.insert(key);
                        let _ = reply.send(Ok(answer));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Control::Candidate {
                key,
                candidate,
                reply,
            } => {
                let r = match self.conns.get_mut(&key) {
                    Some(c) => c.add_candidate(candidate),
                    None => Ok(()),
                };
                self.dirty.insert(key);
                let _ = reply.send(r);
            }
            Control::Restart { key, with, reply } => {
                let r = match self.conns.get_mut(&key) {
                    Some(c) => c.restart(with, now).inspect(|_| {
                        // The old ufrag keeps routing checks still in flight; both go
                        // when the connection closes.
                        self.demux.add_ufrag(&c.ufrag, key);
                    }),
                    None => Err(super::PeerError::Webrtc("no such connection".into())),
                };
                self.dirty.insert(key);
                let _ = reply.send(r);
            }
            Control::Close { key } => {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.close();
                    self.dirty.insert(key);
                }
            }
            Control::Stats { reply } => {
                let mut s = self.stats.clone();
                s.udp_sockets = self.sockets.len();
                s.tcp_connections = self.tcp.links.len();
                s.connections = self.conns.len();
                s.datagrams_unroutable = self.demux.unroutable;
                s.media_shed = self.shed.load(Ordering::Relaxed);
                s.frames_packetized = self.cache.packetized;
                s.frames_reused = self.cache.reused;
                let _ = reply.send(s);
            }
        }
    }

    fn datagram(&mut self, socket: usize, from: SocketAddr, data: &[u8], now: Instant) {
        self.stats.datagrams_in += 1;
        let local = self.locals[socket];
        let Some(key) = self.demux.route(local, from, data) else {
            if self.demux.unroutable.is_power_of_two() {
                debug!(%from, %local, len = data.len(), stun = demux::is_stun(data), ufrag = ?demux::local_ufrag(data), unroutable = self.demux.unroutable, head = ?&data[..data.len().min(80)], "datagram for no connection");
            }
            return;
        };
        self.deliver(
            key,
            (local, from),
            TransportProtocol::UDP,
            BytesMut::from(data),
            now,
        );
    }

    /// Hands a packet to connection `key`'s PeerConnection.
    fn deliver(
        &mut self,
        key: PeerKey,
        (local, from): Pair,
        protocol: TransportProtocol,
        message: BytesMut,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message,
        });
        self.dirty.insert(key);
    }

    fn tcp_ready(&mut self, ev: TcpEvent, buf: &mut [u8]) {
        let now = Instant::now();
        match ev {
            TcpEvent::Accepted(i, Ok((stream, remote))) => {
                // Connections that never named a PeerConnection go first.
                self.tcp.links.retain(|_, l| {
                    l.key.is_some() || now.saturating_duration_since(l.opened) < TCP_UNROUTED_FOR
                });
                if self.tcp.links.len() >= MAX_TCP_LINKS {
                    self.stats.tcp_refused += 1;
                    return;
                }
                let _ = stream.set_nodelay(true);
                let local = self.tcp.locals[i];
                debug!(%local, %remote, "ICE-TCP connection accepted");
                self.tcp.links.insert(
                    (local, remote),
                    TcpLink {
                        stream,
                        key: None,
                        opened: now,
                        rbuf: BytesMut::new(),
                        wbuf: Vec::new(),
                    },
                );
            }
            TcpEvent::Accepted(_, Err(e)) => debug!("ICE-TCP accept: {e}"),
            TcpEvent::Writable(pair) => {
                if let Some(l) = self.tcp.links.get_mut(&pair) {
                    if !l.write_some() {
                        self.tcp_close(pair);
                    }
                }
            }
            TcpEvent::Readable(pair) => {
                let mut frames = Vec::new();
                let mut broken = false;
                if let Some(l) = self.tcp.links.get_mut(&pair) {
                    for _ in 0..READ_BATCH {
                        match l.stream.try_read(buf) {
                            Ok(0) => {
                                broken = true;
                                break;
                            }
                            Ok(n) => l.rbuf.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                broken = true;
                                break;
                            }
                        }
                    }
                    // RFC 4571: a 2-byte length, then the packet. Each frame is split off
                    // the buffer (no copy, no shifting what follows; `rtc`'s
                    // `tcp_framing` decoder copies each packet and drains per packet).
                    while l.rbuf.len() >= 2 {
                        let len = u16::from_be_bytes([l.rbuf[0], l.rbuf[1]]) as usize;
                        if l.rbuf.len() < 2 + len {
                            break;
                        }
                        let mut frame = l.rbuf.split_to(2 + len);
                        let _ = frame.split_to(2);
                        frames.push(frame);
                    }
                }
                for f in frames {
                    self.tcp_frame(pair, f, now);
                }
                if broken {
                    self.tcp_close(pair);
                }
            }
        }
    }

    /// One framed packet from the ICE-TCP connection of `pair`.
    fn tcp_frame(&mut self, pair: Pair, data: BytesMut, now: Instant) {
        self.stats.datagrams_in += 1;
        let Some(l) = self.tcp.links.get_mut(&pair) else {
            return;
        };
        if l.key.is_none() {
            // Only a binding request naming one of our ufrags opens the way; the agent
            // then checks its MESSAGE-INTEGRITY before it answers.
            l.key = demux::local_ufrag(&data).and_then(|u| self.demux.by_ufrag(u));
        }
        match l.key {
            Some(key) => self.deliver(key, pair, TransportProtocol::TCP, data, now),
            None => {
                self.demux.unroutable += 1;
                self.tcp_close(pair);
            }
        }
    }

    fn tcp_close(&mut self, pair: Pair) {
        if self.tcp.links.remove(&pair).is_some() {
            debug!(local = %pair.0, remote = %pair.1, "ICE-TCP connection closed");
        }
    }

    /// Frames a packet an agent wrote for ICE-TCP onto its connection.
    fn tcp_send(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        let Some(l) = self.tcp.links.get_mut(&(local, remote)) else {
            self.stats.send_errors += 1;
            return;
        };
        if l.wbuf.len() + data.len() + 2 > TCP_BACKLOG || data.len() > u16::MAX as usize {
            self.stats.send_errors += 1;
            return;
        }
        l.wbuf.extend_from_slice(&(data.len() as u16).to_be_bytes());
        l.wbuf.extend_from_slice(data);
        self.stats.datagrams_out += 1;
        if !l.write_some() {
            self.tcp_close((local, remote));
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if self.scheduled.get(&key) == Some(&at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.scheduled.get(&key) != Some(&at) {
                continue;
            }
            self.scheduled.remove(&key);
            if let Some(c) = self.conns.get_mut(&key) {
                c.on_timeout(now);
                self.dirty.insert(key);
            }
        }
    }

    /// Drains every touched connection: sends its datagrams, learns the addresses its ICE
    /// agent answered, reschedules its timer, and removes it once closed.
    fn flush(&mut self) {
        let now = Instant::now();
        let mut out = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.drain(now, &mut out);
            let (closed, due) = (c.closed, c.next_due());
            for w in out.drain(..) {
                let t = w.transport;
                if t.transport_protocol == TransportProtocol::TCP {
                    self.tcp_send(t.local_addr, t.peer_addr, &w.message);
                    continue;
                }
                // A success response goes only to a request that carried our password:
                // the address is verified.
                if demux::is_stun_success(&w.message) {
                    self.demux.learn(t.local_addr, t.peer_addr, key);
                }
                self.demux.sent(&w.message, key);
                let Some(i) = self.locals.iter().position(|l| *l == t.local_addr) else {
                    self.stats.send_errors += 1;
                    continue;
                };
                match self.sockets[i].try_send_to(&w.message, t.peer_addr) {
                    Ok(_) => self.stats.datagrams_out += 1,
                    Err(e) => {
                        self.stats.send_errors += 1;
                        if self.stats.send_errors.is_power_of_two() {
                            debug!(errors = self.stats.send_errors, "send: {e}");
                        }
                    }
                }
            }
            if closed {
                self.conns.remove(&key);
                self.demux.remove(key);
                self.tcp.links.retain(|_, l| l.key != Some(key));
                self.scheduled.remove(&key);
                continue;
            }
            match due {
                Some(at) if self.scheduled.get(&key) != Some(&at) => {
                    self.scheduled.insert(key, at);
                    self.timers.push(Reverse((at, key)));
                }
                Some(_) => {}
                None => {
                    self.scheduled.remove(&key);
                }
            }
        }
    }
}
