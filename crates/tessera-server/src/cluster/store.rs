//! What the cluster keeps in Redis, and the Lua scripts that change it atomically.
//!
//! Keys (`P` is `cluster.key_prefix`):
//! - `P:nodes`: set of node ids that registered (members whose heartbeat key is gone are
//!   removed by whoever reads the set);
//! - `P:node:ID`: hash, the node's heartbeat (url, cpu, rooms, participants, pending,
//!   room_cost, max_load, max_rooms, draining, started, beat), expiring after the TTL.
//!   `cpu` and `rooms` are as of the last full heartbeat, `pending` counts the rooms
//!   claimed for the node since then (placement adds it at once), so a burst of new rooms
//!   spreads before the node's CPU shows them;
//! - `P:node:ID:rooms`: hash, room name -> `{"participants":N,"created":UNIX}`, same TTL;
//! - `P:room:NAME`: string `ID/EPOCH`, the room's claim, expiring after the TTL unless the
//!   owner renews it at each heartbeat;
//! - `P:epoch`: counter; each claim takes the next value, so a newer claim is recognisable.
//!
//! One Redis (not Redis Cluster): the scripts touch keys they compute from the prefix.

use redis::aio::ConnectionManager;
use redis::Script;
use serde::Deserialize;

/// Claims a room for the least-loaded live node, or returns its live owner.
/// KEYS: room, nodes, epoch. ARGV: prefix, this node's id, ttl in ms.
/// Returns {owner, claim, url, new} or {"", reason}.
const PLACE: &str = r#"
local prefix, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner = string.match(cur, '^(.+)/%d+$')
  if owner then
    local url = redis.call('HGET', prefix .. ':node:' .. owner, 'url')
    if url then return {owner, cur, url, '0'} end
  end
end
-- Loads within TIE of each other count as equal: then the node with fewer rooms wins,
-- then this node (no proxy hop), then the smaller id.
local TIE = 0.02
local best, best_url, best_load, best_rooms
local live, busy = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local f = redis.call('HMGET', prefix .. ':node:' .. id,
    'url', 'cpu', 'rooms', 'pending', 'room_cost', 'max_load', 'max_rooms', 'draining')
  if not f[1] then
    redis.call('SREM', KEYS[2], id)
  else
    live = live + 1
    local pending = tonumber(f[4]) or 0
    local load = (tonumber(f[2]) or 0) + pending * (tonumber(f[5]) or 0.05)
    local rooms = (tonumber(f[3]) or 0) + pending
    if f[8] == '1' or load >= (tonumber(f[6]) or 0.8) or rooms >= (tonumber(f[7]) or 100) then
      busy = busy + 1
    else
      local better = not best or load < best_load - TIE
      if best and not better and load <= best_load + TIE then
        better = rooms < best_rooms
          or (rooms == best_rooms and (id == me or (best ~= me and id < best)))
      end
      if better then best, best_url, best_load, best_rooms = id, f[1], load, rooms end
    end
  end
end
if not best then
  return {'', 'no live node can take a new room (' .. live .. ' live, ' .. busy ..
    ' of them draining, over cluster.max_load or at rooms.max_rooms)'}
end
local claim = best .. '/' .. redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], claim, 'PX', ttl)
redis.call('HINCRBY', prefix .. ':node:' .. best, 'pending', 1)
return {best, claim, best_url, '1'}
"#;

/// Writes this node's heartbeat and room table.
/// KEYS: node, node rooms, nodes. ARGV: ttl ms, id, field count N, N field/value pairs,
/// then room/json pairs.
const BEAT: &str = r#"
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local i = 4 + 2 * n
redis.call('HSET', KEYS[1], unpack(ARGV, 4, i - 1))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[2])
if i <= #ARGV then
  redis.call('HSET', KEYS[2], unpack(ARGV, i))
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"#;

/// Renews this node's room claims. KEYS: room keys. ARGV: ttl ms, epoch key, this node's
/// id, then the claim held for each key ("" if none yet). Returns, per key, the claim now
/// held, or "" where another node's newer claim won.
const RENEW: &str = r#"
local ttl, me = tonumber(ARGV[1]), ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  local want = ARGV[3 + i]
  local cur = redis.call('GET', key)
  if not cur then
    local claim = me .. '/' .. redis.call('INCR', ARGV[2])
    redis.call('SET', key, claim, 'PX', ttl)
    out[i] = claim
  elseif cur == want or string.match(cur, '^(.+)/%d+$') == me then
    redis.call('PEXPIRE', key, ttl)
    out[i] = cur
  else
    out[i] = ''
  end
end
return out
"#;

/// Deletes claims that are still the given ones. KEYS: room keys. ARGV: claims.
const RELEASE: &str = r#"
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key); n = n + 1 end
end
return n
"#;

/// Every live node's heartbeat, as JSON `[{"id":..., field: value...}]`.
/// KEYS: nodes. ARGV: prefix.
const NODES: &str = r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. ':node:' .. id)
  if #h == 0 then
    redis.call('SREM', KEYS[1], id)
  else
    local t = {id = id}
    for i = 1, #h, 2 do t[h[i]] = h[i + 1] end
    t.rooms = tostring(redis.call('HLEN', ARGV[1] .. ':node:' .. id .. ':rooms'))
    out[#out + 1] = t
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"#;

/// Every live node's rooms, as JSON `[{"node","room","info"}]`. KEYS: nodes. ARGV: prefix.
const ROOMS: &str = r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':node:' .. id) == 1 then
    local h = redis.call('HGETALL', ARGV[1] .. ':node:' .. id .. ':rooms')
    for i = 1, #h, 2 do out[#out + 1] = {node = id, room = h[i], info = h[i + 1]} end
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"#;

/// The live owner of a room and its URL, or nothing. KEYS: room. ARGV: prefix.
const OWNER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return {} end
local owner = string.match(cur, '^(.+)/%d+$')
if not owner then return {} end
local url = redis.call('HGET', ARGV[1] .. ':node:' .. owner, 'url')
if not url then return {} end
return {owner, url}
"#;

/// Removes this node: heartbeat, room table, set member and the given claims.
/// KEYS: node, node rooms, nodes, room keys... ARGV: id, claims...
const LEAVE: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i - 2] then redis.call('DEL', KEYS[i]) end
end
return 1
"#;

/// A node as its heartbeat describes it (all fields are strings in the hash).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub cpu: String,
    #[serde(default)]
    pub rooms: String,
    #[serde(default)]
    pub participants: String,
    #[serde(default)]
    pub pending: String,
    #[serde(default)]
    pub max_load: String,
    #[serde(default)]
    pub max_rooms: String,
    #[serde(default)]
    pub draining: String,
    #[serde(default)]
    pub started: String,
    #[serde(default)]
    pub beat: String,
}

/// One row of a node's room table.
#[derive(Clone, Debug, Deserialize)]
pub struct RoomRecord {
    pub node: String,
    pub room: String,
    pub info: String,
}

/// Where a room is, after `place`.
#[derive(Clone, Debug, PartialEq)]
pub enum Placed {
    /// On `node` (at `url`) under `claim`; `new`: claimed by this call.
    At {
        node: String,
        url: String,
        claim: String,
        new: bool,
    },
    /// No node can take it; the reason in words.
    Nowhere(String),
}

pub struct Store {
    prefix: String,
    id: String,
    ttl_ms: u64,
    place: Script,
    beat: Script,
    renew: Script,
    release: Script,
    nodes: Script,
    rooms: Script,
    owner: Script,
    leave: Script,
}

impl Store {
    pub fn new(prefix: &str, id: &str, ttl_ms: u64) -> Store {
        Store {
            prefix: prefix.to_string(),
            id: id.to_string(),
            ttl_ms,
            place: Script::new(PLACE),
            beat: Script::new(BEAT),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            nodes: Script::new(NODES),
            rooms: Script::new(ROOMS),
            owner: Script::new(OWNER),
            leave: Script::new(LEAVE),
        }
    }

    fn node_key(&self) -> String {
        format!("{}:node:{}", self.prefix, self.id)
    }

    fn rooms_key(&self) -> String {
        format!("{}:node:{}:rooms", self.prefix, self.id)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    pub fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    pub async fn place(
        &self,
        con: &mut ConnectionManager,
        room: &str,
    ) -> redis::RedisResult<Placed> {
        let v: Vec<String> = self
            .place
            .key(self.room_key(room))
            .key(self.nodes_key())
            .key(self.epoch_key())
            .arg(&self.prefix)
            .arg(&self.id)
            .arg(self.ttl_ms)
            .invoke_async(con)
            .await?;
        Ok(match v.as_slice() {
            [node, claim, url, new] if !node.is_empty() => Placed::At {
                node: node.clone(),
                url: url.clone(),
                claim: claim.clone(),
                new: new == "1",
            },
            [_, reason] => Placed::Nowhere(reason.clone()),
            other => Placed::Nowhere(format!("unexpected answer from Redis: {other:?}")),
        })
    }

    /// Writes the heartbeat `fields` and the room table `rooms` (name, JSON).
    pub async fn beat(
        &self,
        con: &mut ConnectionManager,
        fields: &[(&str, String)],
        rooms: &[(String, String)],
    ) -> redis::RedisResult<()> {
        let mut inv = self.beat.prepare_invoke();
        inv.key(self.node_key())
            .key(self.rooms_key())
            .key(self.nodes_key())
            .arg(self.ttl_ms)
            .arg(&self.id)
            .arg(fields.len());
        for (k, v) in fields {
            inv.arg(*k).arg(v);
        }
        for (room, json) in rooms {
            inv.arg(room).arg(json);
        }
        let _: i64 = inv.invoke_async(con).await?;
        Ok(())
    }

    /// Renews `claims` (room, claim held or ""); returns the claim now held per room, ""
    /// where another node won it.
    pub async fn renew(
        &self,
        con: &mut ConnectionManager,
        claims: &[(String, String)],
    ) -> redis::RedisResult<Vec<String>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.renew.prepare_invoke();
        inv.arg(self.ttl_ms).arg(self.epoch_key()).arg(&self.id);
        for (room, claim) in claims {
            inv.key(self.room_key(room)).arg(claim);
        }
        inv.invoke_async(con).await
    }

    pub async fn release(
        &self,
        con: &mut ConnectionManager,
        claims: &[(String, String)],
    ) -> redis::RedisResult<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut inv = self.release.prepare_invoke();
        for (room, claim) in claims {
            inv.key(self.room_key(room)).arg(claim);
        }
        let _: i64 = inv.invoke_async(con).await?;
        Ok(())
    }

    pub async fn nodes(&self, con: &mut ConnectionManager) -> redis::RedisResult<Vec<NodeRecord>> {
        let json: String = self
            .nodes
            .key(self.nodes_key())
            .arg(&self.prefix)
            .invoke_async(con)
            .await?;
        parse_json(&json)
    }

    pub async fn rooms(&self, con: &mut ConnectionManager) -> redis::RedisResult<Vec<RoomRecord>> {
        let json: String = self
            .rooms
            .key(self.nodes_key())
            .arg(&self.prefix)
            .invoke_async(con)
            .await?;
        parse_json(&json)
    }

    /// The live node holding `room` and its URL.
    pub async fn owner(
        &self,
        con: &mut ConnectionManager,
        room: &str,
    ) -> redis::RedisResult<Option<(String, String)>> {
        let v: Vec<String> = self
            .owner
            .key(self.room_key(room))
            .arg(&self.prefix)
            .invoke_async(con)
            .await?;
        Ok(match v.as_slice() {
            [node, url] => Some((node.clone(), url.clone())),
            _ => None,
        })
    }

    pub async fn leave(
        &self,
        con: &mut ConnectionManager,
        claims: &[(String, String)],
    ) -> redis::RedisResult<()> {
        let mut inv = self.leave.prepare_invoke();
        inv.key(self.node_key())
            .key(self.rooms_key())
            .key(self.nodes_key())
            .arg(&self.id);
        for (room, claim) in claims {
            inv.key(self.room_key(room)).arg(claim);
        }
        let _: i64 = inv.invoke_async(con).await?;
        Ok(())
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> redis::RedisResult<Vec<T>> {
    serde_json::from_str(json).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected JSON from a cluster script",
            e.to_string(),
        ))
    })
}
