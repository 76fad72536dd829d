//! Which PeerConnection a datagram on the shared UDP port belongs to.
//!
//! A remote address is known only after that connection's ICE agent answered an
//! authenticated binding request from it (its checks carry our password's
//! MESSAGE-INTEGRITY, which the agent verifies before it answers). Until then a binding
//! request is routed by its USERNAME's first half, which is our local ufrag, and a response
//! by the transaction id of the check our agent sent (the agent then verifies it with the
//! remote password); anything else from an unknown address is dropped and counted. An
//! address is never learnt from an unauthenticated packet.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::PeerKey;

/// STUN's magic cookie (RFC 5389), at bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
/// STUN message types are 0x0000..0x3fff (the first two bits are zero, RFC 7983 demux).
const HEADER_LEN: usize = 20;

/// Whether `data` looks like a STUN message (RFC 7983: first byte 0..=3 and the cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// Whether a STUN message is a success response (class 0b10: bits 0x0100 set, 0x0010 clear).
pub fn is_stun_success(data: &[u8]) -> bool {
    is_stun(data) && {
        let t = u16::from_be_bytes([data[0], data[1]]);
        t & 0x0110 == 0x0100
    }
}

/// STUN class bits of the message type: 0b00 request, 0b01 indication, 0b10 success,
/// 0b11 error.
fn class(data: &[u8]) -> u16 {
    let t = u16::from_be_bytes([data[0], data[1]]);
    ((t & 0x0100) >> 7) | ((t & 0x0010) >> 4)
}

fn transaction_id(data: &[u8]) -> [u8; 12] {
    let mut id = [0u8; 12];
    id.copy_from_slice(&data[8..20]);
    id
}

/// Checks our agents sent and have not had answered, kept at most this many.
const MAX_PENDING_CHECKS: usize = 8192;

/// The local half (ours) of a binding request's USERNAME, `local:remote`.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(HEADER_LEN..HEADER_LEN + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// The routing tables. `(local, remote)` pairs are keyed on both ends, since one remote
/// address may reach two host addresses of ours.
#[derive(Default)]
pub struct Demux {
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<(SocketAddr, SocketAddr), PeerKey>,
    /// Transaction ids of the checks our agents sent, oldest first.
    checks: HashMap<[u8; 12], PeerKey>,
    check_order: std::collections::VecDeque<[u8; 12]>,
    /// Datagrams no connection claimed.
    pub unroutable: u64,
}

impl Demux {
    pub fn add_ufrag(&mut self, ufrag: &str, key: PeerKey) {
        self.by_ufrag.insert(ufrag.to_string(), key);
    }

    /// The connection whose local ufrag is `ufrag`.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<PeerKey> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// A connection's ICE agent answered `remote` on `local`: learn the pair.
    pub fn learn(&mut self, local: SocketAddr, remote: SocketAddr, key: PeerKey) {
        self.by_addr.insert((local, remote), key);
    }

    /// A datagram connection `key` sends: its binding requests are remembered, so that
    /// their responses find their way back before the address is known.
    pub fn sent(&mut self, data: &[u8], key: PeerKey) {
        if !is_stun(data) || class(data) != 0 {
            return;
        }
        if self.check_order.len() >= MAX_PENDING_CHECKS {
            if let Some(old) = self.check_order.pop_front() {
                self.checks.remove(&old);
            }
        }
        let id = transaction_id(data);
        self.checks.insert(id, key);
        self.check_order.push_back(id);
    }

    /// Forgets every route to `key` (it closed).
    pub fn remove(&mut self, key: PeerKey) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.by_addr.retain(|_, k| *k != key);
        self.checks.retain(|_, k| *k != key);
    }

    /// The connection `data` from `remote` to `local` belongs to.
    pub fn route(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) -> Option<PeerKey> {
        if is_stun(data) {
            // A request's USERNAME names its connection, whatever the address says.
            if let Some(k) = local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                return Some(*k);
            }
            if class(data) >= 2 {
                if let Some(k) = self.checks.remove(&transaction_id(data)) {
                    return Some(k);
                }
            }
        }
        let found = self.by_addr.get(&(local, remote)).copied();
        if found.is_none() {
            self.unroutable += 1;
        }
        found
    }

    pub fn routes(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with USERNAME `user` (no integrity: routing does not check it).
    fn binding_request(user: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A PRIORITY attribute first, so the parser has to skip one.
        let mut body = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        body.extend(attr);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend(body);
        m
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_the_local_ufrag_of_a_binding_request() {
        assert_eq!(local_ufrag(&binding_request("abcd:efgh")), Some("abcd"));
        assert_eq!(local_ufrag(&binding_request(":efgh")), None);
        assert_eq!(
            local_ufrag(b"\x80\x60 not stun at all, an RTP packet"),
            None
        );
        let mut cut = binding_request("abcd:efgh");
        cut.truncate(30);
        assert_eq!(local_ufrag(&cut), None, "a truncated message is no route");
    }

    #[test]
    fn routes_by_ufrag_until_the_address_is_learnt() {
        let (local, remote) = (addr("127.0.0.1:8080"), addr("127.0.0.1:50000"));
        let mut d = Demux::default();
        d.add_ufrag("abcd", PeerKey(1));
        d.add_ufrag("wxyz", PeerKey(2));
        // DTLS from an address nobody learnt: dropped, counted.
        assert_eq!(d.route(local, remote, &[22, 254, 253, 0, 0]), None);
        assert_eq!(d.unroutable, 1);
        assert_eq!(
            d.route(local, remote, &binding_request("wxyz:1")),
            Some(PeerKey(2))
        );
        assert_eq!(d.route(local, remote, &binding_request("nope:1")), None);
        d.learn(local, remote, PeerKey(2));
        assert_eq!(
            d.route(local, remote, &[22, 254, 253, 0, 0]),
            Some(PeerKey(2))
        );
        // The same remote address on another of our addresses is another route.
        assert_eq!(d.route(addr("10.0.0.1:8080"), remote, &[22]), None);
        d.remove(PeerKey(2));
        assert_eq!(d.route(local, remote, &[22, 254, 253, 0, 0]), None);
        assert_eq!(d.routes(), (1, 0));
    }

    #[test]
    fn a_response_to_our_check_goes_to_the_connection_that_sent_it() {
        let (local, remote) = (addr("127.0.0.1:8080"), addr("127.0.0.1:50000"));
        let mut d = Demux::default();
        let mut check = binding_request("theirs:ours");
        check[8..20].copy_from_slice(&[9; 12]);
        d.sent(&check, PeerKey(3));
        let mut response = check.clone();
        response[1] = 0x01;
        response[0] = 0x01;
        assert_eq!(d.route(local, remote, &response), Some(PeerKey(3)));
        assert_eq!(d.route(local, remote, &response), None, "answered once");
        // Nothing was learnt from it.
        assert_eq!(d.route(local, remote, &[22, 254, 253]), None);
    }

    #[test]
    fn tells_success_responses() {
        let mut m = binding_request("a:b");
        assert!(!is_stun_success(&m));
        m[0] = 0x01;
        m[1] = 0x01;
        assert!(is_stun_success(&m));
    }
}
