//! Join tokens: `base64url(JSON claims) "." base64url(HMAC-SHA256(secret, first part))`,
//! minted by `tessera token` and checked on every WebSocket join, WHIP and WHEP request
//! when `auth.token_secret` is set. Claims name the room (or `*`), optionally the
//! participant's name, an expiry in Unix seconds and what the holder may do.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    /// Send camera and microphone.
    Publish,
    /// Receive the composite and the mix.
    Subscribe,
    /// Use the admin API for the token's room.
    Admin,
}

impl std::str::FromStr for Perm {
    type Err = String;
    fn from_str(s: &str) -> Result<Perm, String> {
        match s {
            "publish" => Ok(Perm::Publish),
            "subscribe" => Ok(Perm::Subscribe),
            "admin" => Ok(Perm::Admin),
            _ => Err(format!(
                "unknown permission {s:?}: must be publish, subscribe or admin"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// A room name, or `*` for every room.
    pub room: String,
    /// If set, the participant must join with exactly this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    pub perms: Vec<Perm>,
}

impl Claims {
    pub fn allows_room(&self, room: &str) -> bool {
        self.room == "*" || self.room == room
    }

    pub fn has(&self, perm: Perm) -> bool {
        self.perms.contains(&perm)
    }
}

/// Why a token was refused. Never carries the token or the secret.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token signature does not match (minted with another auth.token_secret?)")]
    BadSignature,
    #[error("token expired {0} s ago")]
    Expired(u64),
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// Signs `claims` with `secret`.
pub fn mint(secret: &str, claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let tag = hmac::sign(&key(secret), body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Checks the signature (in constant time) and the expiry against `now_unix`.
pub fn verify(secret: &str, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
    let (body, tag) = token
        .trim()
        .split_once('.')
        .ok_or(TokenError::Malformed("expected two parts separated by '.'"))?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    hmac::verify(&key(secret), body.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    let claims: Claims = serde_json::from_slice(&json)
        .map_err(|_| TokenError::Malformed("claims are not the expected JSON"))?;
    if claims.exp <= now_unix {
        return Err(TokenError::Expired(now_unix - claims.exp));
    }
    Ok(claims)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `bytes` random bytes as lowercase hex (session URL secrets).
pub fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut b = vec![0u8; bytes];
    // SystemRandom fails only without an OS entropy source; then the secret is weaker,
    // never absent.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// TURN REST credentials (what coturn's `use-auth-secret` checks): the username is
/// `EXPIRY:NAME` (Unix seconds; the participant's name with every character outside
/// `A-Za-z0-9._-` as `_`, at most 64, so that it survives HTTP headers and coturn's logs
/// unchanged), the password base64(HMAC-SHA1(secret, username)).
pub fn turn_credentials(secret: &str, expiry_unix: u64, name: &str) -> (String, String) {
    use base64::Engine as _;
    let safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let username = format!("{expiry_unix}:{safe}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            room: "standup".into(),
            name: Some("Ann".into()),
            exp: 2_000,
            perms: vec![Perm::Publish, Perm::Subscribe],
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let t = mint(SECRET, &claims());
        assert_eq!(verify(SECRET, &t, 1_000), Ok(claims()));
        assert_eq!(verify(SECRET, &t, 2_005), Err(TokenError::Expired(5)));
    }

    #[test]
    fn tampering_or_another_secret_is_refused() {
        let t = mint(SECRET, &claims());
        assert_eq!(
            verify("another-secret-of-32-characters!", &t, 1_000),
            Err(TokenError::BadSignature)
        );
        // Claims of an admin token swapped in under the old signature.
        let mut admin = claims();
        admin.perms.push(Perm::Admin);
        let forged = format!(
            "{}.{}",
            mint(SECRET, &admin).split('.').next().unwrap(),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(
            verify(SECRET, &forged, 1_000),
            Err(TokenError::BadSignature)
        );
        let mut flipped = t.clone().into_bytes();
        flipped[3] ^= 1;
        assert!(verify(SECRET, &String::from_utf8(flipped).unwrap(), 1_000).is_err());
        assert!(matches!(
            verify(SECRET, "nodot", 1_000),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify(SECRET, "a.%%%", 1_000),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn errors_never_contain_the_token() {
        let t = mint(SECRET, &claims());
        let e = verify(SECRET, &t, 3_000).unwrap_err().to_string();
        assert!(!e.contains(&t[..10]) && !e.contains(SECRET), "{e}");
    }

    #[test]
    fn turn_credentials_follow_the_turn_rest_scheme() {
        // Worked out independently with
        // `printf 1700000000:ann | openssl dgst -sha1 -hmac north -binary | base64`.
        let (u, p) = turn_credentials("north", 1_700_000_000, "ann");
        assert_eq!(u, "1700000000:ann");
        assert_eq!(p, "jeamH6dA5l2I9g3jmieza7CzEDo=");
        let (u, _) = turn_credentials("north", 1, "a:b José \"x\"");
        assert_eq!(u, "1:a_b_Jos___x_");
    }
}
