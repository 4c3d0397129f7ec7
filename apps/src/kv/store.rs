//! One shard's keyspace and the commands that read and write it.
//!
//! A shard is owned by one lcore: nothing here is shared or locked. Keys
//! live in an [`IndexMap`], a hash table whose entries also sit in a dense
//! vector, so that picking a random key is one index: eviction samples
//! five keys and drops the least recently used (Redis's approximated
//! LRU), and active expiry samples keys with a deadline, as Redis's cron
//! does, besides the lazy check on every access.
//!
//! Replies are Redis 7's, byte for byte (the tests run the same commands
//! against `redis-server` and compare).

use dataplane::proto::resp::{Version, Writer, parse_i64};
use indexmap::IndexMap;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// A command's arguments: ranges of a buffer (the connection's received
/// bytes, or an owned copy that crossed to another shard).
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// The arguments `ranges` of `buf`.
    pub fn new(buf: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        Self { buf, ranges }
    }

    /// How many (the command's name is the first).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// No arguments at all.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`, empty past the end.
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.ranges
            .get(i)
            .and_then(|r| self.buf.get(r.clone()))
            .unwrap_or(&[])
    }

    /// Every argument from `i` on.
    pub fn from(&self, i: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        (i..self.len()).map(|j| self.get(j))
    }
}

/// The command's name in lower case, for matching and for error texts
/// (`None` when longer than any command's).
pub fn lower_name(name: &[u8]) -> Option<([u8; 16], usize)> {
    let mut b = [0u8; 16];
    if name.len() > b.len() {
        return None;
    }
    for (d, s) in b.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    Some((b, name.len()))
}

/// Redis's arity rule: `n > 0` exactly `n` arguments with the name,
/// `n < 0` at least `-n`.
pub fn arity_ok(argc: usize, n: i32) -> bool {
    if n >= 0 {
        argc == n as usize
    } else {
        argc >= n.unsigned_abs() as usize
    }
}

/// `ERR wrong number of arguments for '<name>' command`.
pub fn wrong_args(w: &mut Writer<'_>, name: &str) {
    w.error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ));
}

const NOT_INT: &str = "ERR value is not an integer or out of range";
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const SYNTAX: &str = "ERR syntax error";

/// A value.
#[derive(Debug, Clone)]
enum Value {
    Str(Vec<u8>),
    Hash(HashMap<Box<[u8]>, Vec<u8>, foldhash::fast::RandomState>),
    List(VecDeque<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// Milliseconds since the Unix epoch; 0 for none.
    expire_at: u64,
    /// The shard's access clock when last touched (for LRU sampling).
    access: u64,
    /// The bytes this entry is charged for.
    size: usize,
}

/// Bytes charged per entry beyond its key and value (the table slot, the
/// allocation headers): an estimate, as Redis's is.
const ENTRY_OVERHEAD: usize = 64;
/// Per hash field or list element.
const ITEM_OVERHEAD: usize = 24;

fn value_size(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.capacity(),
        Value::Hash(h) => h
            .iter()
            .map(|(k, v)| k.len() + v.capacity() + ITEM_OVERHEAD)
            .sum(),
        Value::List(l) => l.iter().map(|e| e.capacity() + ITEM_OVERHEAD).sum(),
    }
}

/// A shard's counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StoreStats {
    /// Keys held.
    pub keys: usize,
    /// Keys with a deadline.
    pub expires: usize,
    /// Bytes charged (keys, values and overhead).
    pub used_memory: usize,
    /// Lookups that found their key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Keys removed because their deadline passed.
    pub expired: u64,
    /// Keys removed to stay under `maxmemory`.
    pub evicted: u64,
}

/// One shard's keyspace.
#[derive(Debug)]
pub struct Store {
    map: IndexMap<Box<[u8]>, Entry, foldhash::fast::RandomState>,
    maxmemory: usize,
    clock: u64,
    rng: u64,
    stats: StoreStats,
    /// Keys evicted since last taken, when kept (the durable log records
    /// them as `DEL`s so that a replay ends in the same state).
    evictions: Option<Vec<Box<[u8]>>>,
}

/// A bounded list index as Redis reads `LRANGE`'s start and stop.
fn list_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return None;
    }
    Some((start as usize, stop as usize))
}

impl Store {
    /// An empty shard that evicts to stay under `maxmemory` bytes (0: no
    /// limit).
    pub fn new(maxmemory: usize, seed: u64) -> Self {
        Self {
            map: IndexMap::with_hasher(foldhash::fast::RandomState::default()),
            maxmemory,
            clock: 0,
            rng: seed | 1,
            stats: StoreStats::default(),
            evictions: None,
        }
    }

    /// Keeps the keys it evicts for [`Self::take_evictions`].
    pub fn keep_evictions(&mut self) {
        self.evictions = Some(Vec::new());
    }

    /// The keys evicted since the last call.
    pub fn take_evictions(&mut self) -> Vec<Box<[u8]>> {
        self.evictions
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Sets the memory limit (after a replay, which runs without one).
    pub fn set_maxmemory(&mut self, bytes: usize) {
        self.maxmemory = bytes;
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.map.len(),
            ..self.stats
        }
    }

    /// Keys held (expired ones not yet removed included, as Redis's
    /// `DBSIZE`).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: the sampling needs spread, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn remove_index(&mut self, i: usize) {
        if let Some((_, e)) = self.map.swap_remove_index(i) {
            self.forget(&e);
        }
    }

    fn forget(&mut self, e: &Entry) {
        self.stats.used_memory = self.stats.used_memory.saturating_sub(e.size);
        if e.expire_at != 0 {
            self.stats.expires = self.stats.expires.saturating_sub(1);
        }
    }

    /// The live entry of `key` (an expired one is removed), touched.
    fn live(&mut self, key: &[u8], now: u64) -> Option<usize> {
        let i = self.map.get_index_of(key)?;
        let e = &mut self.map[i];
        if e.expire_at != 0 && e.expire_at <= now {
            self.remove_index(i);
            self.stats.expired += 1;
            return None;
        }
        self.clock += 1;
        e.access = self.clock;
        Some(i)
    }

    fn lookup(&mut self, key: &[u8], now: u64) -> Option<usize> {
        let r = self.live(key, now);
        if r.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        r
    }

    /// Recharges entry `i` after its value changed.
    fn resize(&mut self, i: usize, key_len: usize) {
        let e = &mut self.map[i];
        let size = key_len + value_size(&e.value) + ENTRY_OVERHEAD;
        self.stats.used_memory = self.stats.used_memory - e.size + size;
        e.size = size;
    }

    fn insert(&mut self, key: &[u8], value: Value, expire_at: u64) -> usize {
        self.clock += 1;
        let size = key.len() + value_size(&value) + ENTRY_OVERHEAD;
        let e = Entry {
            value,
            expire_at,
            access: self.clock,
            size,
        };
        if expire_at != 0 {
            self.stats.expires += 1;
        }
        self.stats.used_memory += size;
        if let Some(i) = self.map.get_index_of(key) {
            let old = std::mem::replace(&mut self.map[i], e);
            self.forget(&old);
            i
        } else {
            self.map.insert_full(key.into(), e).0
        }
    }

    fn set_expire(&mut self, i: usize, at: u64) {
        let e = &mut self.map[i];
        match (e.expire_at != 0, at != 0) {
            (false, true) => self.stats.expires += 1,
            (true, false) => self.stats.expires = self.stats.expires.saturating_sub(1),
            _ => {}
        }
        e.expire_at = at;
    }

    /// Evicts until the shard is under its limit (sampling five keys a
    /// round, dropping the least recently used); false when it cannot
    /// (nothing left to evict).
    pub fn make_room(&mut self) -> bool {
        if self.maxmemory == 0 {
            return true;
        }
        while self.stats.used_memory > self.maxmemory {
            let n = self.map.len();
            if n == 0 {
                return false;
            }
            let mut victim = (self.random() % n as u64) as usize;
            for _ in 1..5 {
                let j = (self.random() % n as u64) as usize;
                if self.map[j].access < self.map[victim].access {
                    victim = j;
                }
            }
            if let Some(log) = self.evictions.as_mut() {
                log.push(
                    self.map
                        .get_index(victim)
                        .map(|(k, _)| k.clone())
                        .unwrap_or_default(),
                );
            }
            self.remove_index(victim);
            self.stats.evicted += 1;
        }
        true
    }

    /// Samples up to `n` keys and removes the expired ones (the active
    /// half of expiry; a pass of the lcore calls it). Returns how many.
    pub fn expire_some(&mut self, now: u64, n: usize) -> usize {
        if self.stats.expires == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..n {
            let len = self.map.len();
            if len == 0 {
                break;
            }
            let i = (self.random() % len as u64) as usize;
            let at = self.map[i].expire_at;
            if at != 0 && at <= now {
                self.remove_index(i);
                self.stats.expired += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Writes the commands that recreate entry `i` (counting from 0 in the
    /// table's order) through `emit`, each a command's arguments: `SET`
    /// with `PXAT` for a string, `DEL` then `HSET`/`RPUSH` (and
    /// `PEXPIREAT`) for a hash or list, so that replaying them overwrites
    /// whatever the key held. Nothing for an expired entry or an index
    /// past the end.
    pub fn dump(&self, i: usize, now: u64, emit: &mut dyn FnMut(&[&[u8]])) {
        let Some((k, e)) = self.map.get_index(i) else {
            return;
        };
        if e.expire_at != 0 && e.expire_at <= now {
            return;
        }
        let at = itoa::Buffer::new().format(e.expire_at).as_bytes().to_vec();
        match &e.value {
            Value::Str(v) => {
                if e.expire_at == 0 {
                    emit(&[b"SET", k, v]);
                } else {
                    emit(&[b"SET", k, v, b"PXAT", &at]);
                }
                return;
            }
            Value::Hash(h) => {
                emit(&[b"DEL", k]);
                let mut args: Vec<&[u8]> = vec![b"HSET", k];
                for (f, v) in h {
                    args.push(f);
                    args.push(v);
                }
                emit(&args);
            }
            Value::List(l) => {
                emit(&[b"DEL", k]);
                let mut args: Vec<&[u8]> = vec![b"RPUSH", k];
                args.extend(l.iter().map(Vec::as_slice));
                emit(&args);
            }
        }
        if e.expire_at != 0 {
            emit(&[b"PEXPIREAT", k, &at]);
        }
    }

    /// Drops every key.
    pub fn flush(&mut self) {
        self.map.clear();
        self.stats.used_memory = 0;
        self.stats.expires = 0;
    }

    /// Runs one keyspace command (`name` in lower case) and writes its
    /// reply. Returns false for a name that is not a keyspace command.
    pub fn exec(&mut self, name: &[u8], a: &Args<'_>, w: &mut Writer<'_>, now: u64) -> bool {
        let Some((arity, writes)) = keyspace_arity(name) else {
            return false;
        };
        // For error replies only: not worked out for every command.
        let cmd = || std::str::from_utf8(name).unwrap_or("?");
        if !arity_ok(a.len(), arity) {
            wrong_args(w, cmd());
            return true;
        }
        if writes && !self.make_room() {
            w.error("OOM command not allowed when used memory > 'maxmemory'.");
            return true;
        }
        match name {
            b"get" => self.get(a.get(1), w, now),
            b"set" => self.set(a, w, now),
            b"setnx" => {
                let found = self.live(a.get(1), now).is_some();
                if !found {
                    self.insert(a.get(1), Value::Str(a.get(2).to_vec()), 0);
                }
                w.integer(i64::from(!found));
            }
            b"append" => self.append(a, w, now),
            b"strlen" => match self.lookup(a.get(1), now).map(|i| &self.map[i].value) {
                None => w.integer(0),
                Some(Value::Str(s)) => w.integer(s.len() as i64),
                Some(_) => w.error(WRONGTYPE),
            },
            b"incr" => self.incr_by(a.get(1), Ok(1), w, now),
            b"decr" => self.incr_by(a.get(1), Ok(-1), w, now),
            b"incrby" => self.incr_by(a.get(1), parse_i64(a.get(2)).ok_or(()), w, now),
            b"decrby" => match parse_i64(a.get(2)) {
                Some(i64::MIN) => w.error("ERR decrement would overflow"),
                by => self.incr_by(a.get(1), by.map(|b| -b).ok_or(()), w, now),
            },
            b"del" | b"unlink" => {
                let mut n = 0;
                for k in a.from(1) {
                    if let Some(i) = self.live(k, now) {
                        self.remove_index(i);
                        n += 1;
                    }
                }
                w.integer(n);
            }
            b"exists" => {
                let mut n = 0;
                for k in a.from(1) {
                    n += i64::from(self.live(k, now).is_some());
                }
                w.integer(n);
            }
            b"mget" => {
                w.array(a.len() - 1);
                for k in a.from(1) {
                    match self.lookup(k, now).map(|i| &self.map[i].value) {
                        Some(Value::Str(s)) => w.bulk(s),
                        _ => w.null(),
                    }
                }
            }
            b"mset" => {
                if a.len().is_multiple_of(2) {
                    wrong_args(w, cmd());
                    return true;
                }
                for j in (1..a.len()).step_by(2) {
                    self.insert(a.get(j), Value::Str(a.get(j + 1).to_vec()), 0);
                }
                w.ok();
            }
            b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => {
                self.expire(a, cmd(), name, w, now);
            }
            b"ttl" | b"pttl" => match self.live(a.get(1), now) {
                None => w.integer(-2),
                Some(i) if self.map[i].expire_at == 0 => w.integer(-1),
                Some(i) => {
                    let ms = self.map[i].expire_at.saturating_sub(now) as i64;
                    w.integer(if name == b"ttl" {
                        (ms + 500) / 1000
                    } else {
                        ms
                    });
                }
            },
            b"persist" => match self.live(a.get(1), now) {
                Some(i) if self.map[i].expire_at != 0 => {
                    self.set_expire(i, 0);
                    w.integer(1);
                }
                _ => w.integer(0),
            },
            b"type" => w.simple(match self.live(a.get(1), now).map(|i| &self.map[i].value) {
                None => b"none",
                Some(Value::Str(_)) => b"string",
                Some(Value::Hash(_)) => b"hash",
                Some(Value::List(_)) => b"list",
            }),
            b"hset" | b"hget" | b"hdel" | b"hgetall" | b"hlen" | b"hexists" => {
                self.hash(name, cmd(), a, w, now);
            }
            _ => self.list(name, a, w, now),
        }
        true
    }

    fn get(&mut self, key: &[u8], w: &mut Writer<'_>, now: u64) {
        match self.lookup(key, now).map(|i| &self.map[i].value) {
            None => w.null(),
            Some(Value::Str(s)) => w.bulk(s),
            Some(_) => w.error(WRONGTYPE),
        }
    }

    fn set(&mut self, a: &Args<'_>, w: &mut Writer<'_>, now: u64) {
        let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
        let mut expire: Option<u64> = None;
        let mut j = 3;
        while j < a.len() {
            let opt = a.get(j).to_ascii_uppercase();
            let next = (j + 1 < a.len()).then(|| a.get(j + 1));
            match (opt.as_slice(), next) {
                (b"NX", _) if !xx => nx = true,
                (b"XX", _) if !nx => xx = true,
                (b"GET", _) => get = true,
                (b"KEEPTTL", _) if expire.is_none() => keepttl = true,
                (unit @ (b"EX" | b"PX" | b"EXAT" | b"PXAT"), Some(v))
                    if expire.is_none() && !keepttl =>
                {
                    let Some(n) = parse_i64(v) else {
                        w.error(NOT_INT);
                        return;
                    };
                    let ms = match unit {
                        b"EX" | b"EXAT" => n.checked_mul(1000),
                        _ => Some(n),
                    };
                    let at = match unit {
                        b"EX" | b"PX" => ms.and_then(|ms| (now as i64).checked_add(ms)),
                        _ => ms,
                    };
                    let Some(at) = at.filter(|_| n > 0) else {
                        w.error("ERR invalid expire time in 'set' command");
                        return;
                    };
                    expire = Some(at as u64);
                    j += 1;
                }
                _ => {
                    w.error(SYNTAX);
                    return;
                }
            }
            j += 1;
        }
        let key = a.get(1);
        let found = self.live(key, now);
        let old = match found.map(|i| &self.map[i]) {
            Some(Entry {
                value: Value::Str(s),
                expire_at,
                ..
            }) => Some((get.then(|| s.clone()), *expire_at)),
            Some(_) if get => {
                w.error(WRONGTYPE);
                return;
            }
            Some(e) => Some((None, e.expire_at)),
            None => None,
        };
        let reply_old = |w: &mut Writer<'_>, old: &Option<(Option<Vec<u8>>, u64)>| match old {
            Some((Some(v), _)) => w.bulk(v),
            _ => w.null(),
        };
        if (nx && found.is_some()) || (xx && found.is_none()) {
            if get {
                reply_old(w, &old)
            } else {
                w.null()
            }
            return;
        }
        let at = match expire {
            Some(at) => at,
            None if keepttl => old.as_ref().map_or(0, |o| o.1),
            None => 0,
        };
        self.insert(key, Value::Str(a.get(2).to_vec()), at);
        if get { reply_old(w, &old) } else { w.ok() }
    }

    fn append(&mut self, a: &Args<'_>, w: &mut Writer<'_>, now: u64) {
        let key = a.get(1);
        match self.live(key, now) {
            None => {
                let v = a.get(2).to_vec();
                let n = v.len();
                self.insert(key, Value::Str(v), 0);
                w.integer(n as i64);
            }
            Some(i) => {
                let Value::Str(s) = &mut self.map[i].value else {
                    w.error(WRONGTYPE);
                    return;
                };
                s.extend_from_slice(a.get(2));
                let n = s.len();
                self.resize(i, key.len());
                w.integer(n as i64);
            }
        }
    }

    fn incr_by(&mut self, key: &[u8], by: Result<i64, ()>, w: &mut Writer<'_>, now: u64) {
        let Ok(by) = by else {
            w.error(NOT_INT);
            return;
        };
        let i = self.live(key, now);
        let cur = match i.map(|i| &self.map[i].value) {
            None => 0,
            Some(Value::Str(s)) => match parse_i64(s) {
                Some(v) => v,
                None => {
                    w.error(NOT_INT);
                    return;
                }
            },
            Some(_) => {
                w.error(WRONGTYPE);
                return;
            }
        };
        let Some(new) = cur.checked_add(by) else {
            w.error("ERR increment or decrement would overflow");
            return;
        };
        let text = itoa::Buffer::new().format(new).as_bytes().to_vec();
        match i {
            Some(i) => {
                self.map[i].value = Value::Str(text);
                self.resize(i, key.len());
            }
            None => {
                self.insert(key, Value::Str(text), 0);
            }
        }
        w.integer(new);
    }

    fn expire(&mut self, a: &Args<'_>, cmd: &str, name: &[u8], w: &mut Writer<'_>, now: u64) {
        let Some(n) = parse_i64(a.get(2)) else {
            w.error(NOT_INT);
            return;
        };
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for opt in a.from(3) {
            match opt.to_ascii_uppercase().as_slice() {
                b"NX" => nx = true,
                b"XX" => xx = true,
                b"GT" => gt = true,
                b"LT" => lt = true,
                _ => {
                    w.error(&format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(opt)
                    ));
                    return;
                }
            }
        }
        if nx && (xx || gt || lt) {
            w.error("ERR NX and XX, GT or LT options at the same time are not compatible");
            return;
        }
        if gt && lt {
            w.error("ERR GT and LT options at the same time are not compatible");
            return;
        }
        let ms = if matches!(name, b"pexpire" | b"pexpireat") {
            Some(n)
        } else {
            n.checked_mul(1000)
        };
        let at = if matches!(name, b"expireat" | b"pexpireat") {
            ms
        } else {
            ms.and_then(|d| (now as i64).checked_add(d))
        };
        let Some(at) = at else {
            w.error(&format!("ERR invalid expire time in '{cmd}' command"));
            return;
        };
        let Some(i) = self.live(a.get(1), now) else {
            w.integer(0);
            return;
        };
        let cur = self.map[i].expire_at;
        // No deadline counts as an infinite one for GT and LT.
        let refused = (nx && cur != 0)
            || (xx && cur == 0)
            || (gt && (cur == 0 || at <= cur as i64))
            || (lt && cur != 0 && at >= cur as i64);
        if refused {
            w.integer(0);
            return;
        }
        if at <= now as i64 {
            self.remove_index(i);
        } else {
            self.set_expire(i, at as u64);
        }
        w.integer(1);
    }

    fn hash(&mut self, name: &[u8], cmd: &str, a: &Args<'_>, w: &mut Writer<'_>, now: u64) {
        let key = a.get(1);
        let i = self.lookup(key, now);
        if let Some(i) = i
            && !matches!(self.map[i].value, Value::Hash(_))
        {
            w.error(WRONGTYPE);
            return;
        }
        let h = i.and_then(|i| match &mut self.map[i].value {
            Value::Hash(h) => Some(h),
            _ => None,
        });
        match name {
            b"hset" => {
                if !a.len().is_multiple_of(2) {
                    wrong_args(w, cmd);
                    return;
                }
                let i = match i {
                    Some(i) => i,
                    None => self.insert(key, Value::Hash(HashMap::default()), 0),
                };
                let Value::Hash(h) = &mut self.map[i].value else {
                    return;
                };
                let mut added = 0;
                for j in (2..a.len()).step_by(2) {
                    added += i64::from(h.insert(a.get(j).into(), a.get(j + 1).to_vec()).is_none());
                }
                self.resize(i, key.len());
                w.integer(added);
            }
            b"hget" => w.opt_bulk(h.and_then(|h| h.get(a.get(2))).map(Vec::as_slice)),
            b"hexists" => w.integer(i64::from(h.is_some_and(|h| h.contains_key(a.get(2))))),
            b"hlen" => w.integer(h.map_or(0, |h| h.len() as i64)),
            b"hgetall" => match h {
                None => w.map(0),
                Some(h) => {
                    w.map(h.len());
                    for (k, v) in h.iter() {
                        w.bulk(k);
                        w.bulk(v);
                    }
                }
            },
            _ => {
                // hdel
                let Some(h) = h else {
                    w.integer(0);
                    return;
                };
                let mut n = 0;
                for f in a.from(2) {
                    n += i64::from(h.remove(f).is_some());
                }
                let empty = h.is_empty();
                if let Some(i) = i {
                    if empty {
                        self.remove_index(i);
                    } else {
                        self.resize(i, key.len());
                    }
                }
                w.integer(n);
            }
        }
    }

    fn list(&mut self, name: &[u8], a: &Args<'_>, w: &mut Writer<'_>, now: u64) {
        let key = a.get(1);
        let i = self.lookup(key, now);
        if let Some(i) = i
            && !matches!(self.map[i].value, Value::List(_))
        {
            w.error(WRONGTYPE);
            return;
        }
        match name {
            b"lpush" | b"rpush" => {
                let i = match i {
                    Some(i) => i,
                    None => self.insert(key, Value::List(VecDeque::new()), 0),
                };
                let Value::List(l) = &mut self.map[i].value else {
                    return;
                };
                for v in a.from(2) {
                    if name == b"lpush" {
                        l.push_front(v.to_vec());
                    } else {
                        l.push_back(v.to_vec());
                    }
                }
                let n = l.len();
                self.resize(i, key.len());
                w.integer(n as i64);
            }
            b"lpop" | b"rpop" => {
                if a.len() > 3 {
                    w.error(SYNTAX);
                    return;
                }
                let count = if a.len() == 3 {
                    match parse_i64(a.get(2)) {
                        Some(c) if c >= 0 => Some(c as usize),
                        _ => {
                            w.error("ERR value is out of range, must be positive");
                            return;
                        }
                    }
                } else {
                    None
                };
                let Some(i) = i else {
                    if count.is_some() {
                        w.null_array()
                    } else {
                        w.null()
                    }
                    return;
                };
                let Value::List(l) = &mut self.map[i].value else {
                    return;
                };
                let mut pop = || {
                    if name == b"lpop" {
                        l.pop_front()
                    } else {
                        l.pop_back()
                    }
                };
                match count {
                    None => {
                        let v = pop();
                        w.opt_bulk(v.as_deref());
                    }
                    Some(c) => {
                        let mut got = Vec::new();
                        while got.len() < c {
                            match pop() {
                                Some(v) => got.push(v),
                                None => break,
                            }
                        }
                        w.array(got.len());
                        for v in &got {
                            w.bulk(v);
                        }
                    }
                }
                let Value::List(l) = &self.map[i].value else {
                    return;
                };
                if l.is_empty() {
                    self.remove_index(i);
                } else {
                    self.resize(i, key.len());
                }
            }
            b"llen" => match i.map(|i| &self.map[i].value) {
                Some(Value::List(l)) => w.integer(l.len() as i64),
                _ => w.integer(0),
            },
            _ => {
                // lrange
                let (Some(start), Some(stop)) = (parse_i64(a.get(2)), parse_i64(a.get(3))) else {
                    w.error(NOT_INT);
                    return;
                };
                let Some(Value::List(l)) = i.map(|i| &self.map[i].value) else {
                    w.array(0);
                    return;
                };
                match list_range(l.len(), start, stop) {
                    None => w.array(0),
                    Some((s, e)) => {
                        w.array(e - s + 1);
                        for v in l.range(s..=e) {
                            w.bulk(v);
                        }
                    }
                }
            }
        }
    }
}

/// The keyspace commands: `(arity, may grow memory)`.
pub fn keyspace_arity(name: &[u8]) -> Option<(i32, bool)> {
    Some(match name {
        b"get" | b"strlen" | b"ttl" | b"pttl" | b"persist" | b"type" | b"hgetall" | b"hlen"
        | b"llen" => (2, false),
        b"set" => (-3, true),
        b"setnx" | b"append" => (3, true),
        b"incr" | b"decr" => (2, true),
        b"incrby" | b"decrby" => (3, true),
        b"del" | b"unlink" | b"exists" | b"mget" => (-2, false),
        b"mset" => (-3, true),
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => (-3, false),
        b"hset" => (-4, true),
        b"hget" | b"hexists" => (3, false),
        b"hdel" => (-3, false),
        b"lpush" | b"rpush" => (-3, true),
        b"lpop" | b"rpop" => (-2, false),
        b"lrange" => (4, false),
        _ => return None,
    })
}

/// Whether a keyspace command may change the keyspace (and so goes to
/// the durable log).
pub fn is_write(name: &[u8]) -> bool {
    matches!(
        name,
        b"set"
            | b"setnx"
            | b"append"
            | b"incr"
            | b"decr"
            | b"incrby"
            | b"decrby"
            | b"del"
            | b"unlink"
            | b"mset"
            | b"expire"
            | b"pexpire"
            | b"expireat"
            | b"pexpireat"
            | b"persist"
            | b"hset"
            | b"hdel"
            | b"lpush"
            | b"rpush"
            | b"lpop"
            | b"rpop"
    )
}

/// The arguments of a write as the log records them: relative times made
/// absolute (`SET .. EX/PX/EXAT n` as `PXAT ms`, `EXPIRE`/`PEXPIRE` as
/// `PEXPIREAT`), so that a replay at another time gives the same state.
/// `a` is a command that succeeded at `now`.
pub fn log_form<'a>(
    name: &[u8],
    a: &Args<'a>,
    now: u64,
    scratch: &'a mut Vec<u8>,
) -> Vec<&'a [u8]> {
    let abs = |unit: &[u8], n: i64| -> i64 {
        match unit {
            b"EX" => (now as i64).saturating_add(n.saturating_mul(1000)),
            b"PX" => (now as i64).saturating_add(n),
            b"EXAT" => n.saturating_mul(1000),
            _ => n,
        }
    };
    match name {
        b"set" => {
            let mut at = None;
            let mut out: Vec<&'a [u8]> = Vec::with_capacity(a.len());
            let mut j = 0;
            while j < a.len() {
                let arg = a.get(j);
                let up = arg.to_ascii_uppercase();
                if j >= 3
                    && matches!(up.as_slice(), b"EX" | b"PX" | b"EXAT" | b"PXAT")
                    && j + 1 < a.len()
                {
                    at = parse_i64(a.get(j + 1)).map(|n| abs(&up, n));
                    j += 2;
                    continue;
                }
                if j >= 3 && up == b"GET" {
                    j += 1;
                    continue;
                }
                out.push(arg);
                j += 1;
            }
            if let Some(at) = at {
                scratch.clear();
                scratch.extend_from_slice(itoa::Buffer::new().format(at).as_bytes());
                out.push(b"PXAT");
                out.push(scratch.as_slice());
            }
            out
        }
        b"expire" | b"pexpire" | b"expireat" => {
            let unit: &[u8] = match name {
                b"expire" => b"EX",
                b"pexpire" => b"PX",
                _ => b"EXAT",
            };
            let at = parse_i64(a.get(2)).map_or(0, |n| abs(unit, n));
            scratch.clear();
            scratch.extend_from_slice(itoa::Buffer::new().format(at).as_bytes());
            let mut out: Vec<&'a [u8]> = vec![b"PEXPIREAT", a.get(1), scratch.as_slice()];
            out.extend(a.from(3));
            out
        }
        _ => a.from(0).collect(),
    }
}

/// How a keyspace command's keys are laid out: the first key's index,
/// and the step between keys (0: one key only).
pub fn key_layout(name: &[u8]) -> Option<(usize, usize)> {
    Some(match name {
        b"del" | b"unlink" | b"exists" | b"mget" => (1, 1),
        b"mset" => (1, 2),
        _ => {
            keyspace_arity(name)?;
            (1, 0)
        }
    })
}

/// Writes the RESP version's encoding of a `Version` (for `HELLO`).
pub fn proto_number(v: Version) -> i64 {
    match v {
        Version::Resp2 => 2,
        Version::Resp3 => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut Store, line: &str, now: u64) -> String {
        let buf = line.as_bytes();
        let mut ranges = Vec::new();
        let mut at = 0;
        for w in line.split(' ') {
            ranges.push(at..at + w.len());
            at += w.len() + 1;
        }
        let a = Args::new(buf, &ranges);
        let name = lower_name(a.get(0)).expect("a short name");
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, Version::Resp2);
        assert!(s.exec(&name.0[..name.1], &a, &mut w, now), "{line}");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn strings_counters_and_expiry() {
        let mut s = Store::new(0, 7);
        assert_eq!(run(&mut s, "SET k v EX 10", 1000), "+OK\r\n");
        assert_eq!(run(&mut s, "TTL k", 1000), ":10\r\n");
        assert_eq!(run(&mut s, "GET k", 10_999), "$1\r\nv\r\n");
        assert_eq!(run(&mut s, "GET k", 11_000), "$-1\r\n");
        assert_eq!(run(&mut s, "INCRBY n 5", 0), ":5\r\n");
        assert_eq!(run(&mut s, "DECR n", 0), ":4\r\n");
        assert_eq!(
            run(&mut s, "INCR k2", 0),
            ":1\r\n",
            "a missing key counts from zero"
        );
        assert_eq!(run(&mut s, "SET n 9223372036854775807", 0), "+OK\r\n");
        assert_eq!(
            run(&mut s, "INCR n", 0),
            "-ERR increment or decrement would overflow\r\n"
        );
        assert_eq!(run(&mut s, "SET k v NX XX", 0), "-ERR syntax error\r\n");
        assert_eq!(
            run(&mut s, "SET k v EX 0", 0),
            "-ERR invalid expire time in 'set' command\r\n"
        );
        assert_eq!(
            run(&mut s, "GET", 0),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(run(&mut s, "LPUSH n x", 0), format!("-{WRONGTYPE}\r\n"));
        assert_eq!(s.stats().keys, 2);
    }

    #[test]
    fn eviction_keeps_the_shard_under_its_limit() {
        let mut s = Store::new(64 * 1024, 3);
        for i in 0..10_000 {
            run(&mut s, &format!("SET key:{i} {}", "x".repeat(100)), 0);
            assert!(s.stats().used_memory <= 64 * 1024 + 400);
        }
        assert!(s.stats().evicted > 9000);
        assert_eq!(s.stats().keys + s.stats().evicted as usize, 10_000);
    }

    #[test]
    fn active_expiry_removes_what_nobody_reads() {
        let mut s = Store::new(0, 5);
        for i in 0..100 {
            run(&mut s, &format!("SET k{i} v PX 10"), 0);
        }
        let mut passes = 0;
        while !s.is_empty() && passes < 1000 {
            s.expire_some(20, 20);
            passes += 1;
        }
        assert!(s.is_empty());
        assert_eq!(s.stats().expires, 0);
        assert_eq!(s.stats().used_memory, 0);
    }
}
