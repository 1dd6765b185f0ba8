//! Measures the broker's durable-state write pattern (see
//! `mqtt-broker/src/store.rs`) on three embedded stores: SQLite through
//! rusqlite in WAL mode, fjall, and redb.
//!
//! `store-candidates run` runs everything and prints Markdown tables; the
//! other subcommands are child processes it starts (a writer to SIGKILL, a
//! filler, and a probe that opens a possibly damaged store and reads it back).
//!
//! Each candidate is driven the way the broker's writer thread drives SQLite:
//! one writer, each batch of puts/deletes is one atomic commit, and a
//! maintenance step every `SYNC_INTERVAL` (SQLite: `wal_checkpoint(TRUNCATE)`
//! in both modes, as the broker does; fjall: `persist(SyncAll)` in periodic
//! mode; redb: an `Immediate` commit in periodic mode).

use std::collections::VecDeque;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

const SYNC_INTERVAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Operations and the candidates

#[derive(Clone)]
enum Op {
    PutMsg { client: String, seq: u64, publish: Vec<u8> },
    DelMsg { client: String, seq: u64 },
    PutRet { topic: String, publish: Vec<u8> },
    PutSess { client: String, subs: Vec<u8> },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sqlite,
    Fjall,
    Redb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Fjall => "fjall",
            Kind::Redb => "redb",
        }
    }
    fn parse(s: &str) -> Kind {
        match s {
            "sqlite" => Kind::Sqlite,
            "fjall" => Kind::Fjall,
            "redb" => Kind::Redb,
            _ => panic!("unknown store {s}"),
        }
    }
    const ALL: [Kind; 3] = [Kind::Sqlite, Kind::Fjall, Kind::Redb];
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Every commit synced before it returns (broker `durability = "always"`).
    Durable,
    /// Commits not synced; a sync every `SYNC_INTERVAL` (broker `"periodic"`).
    Periodic,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Durable => "durable",
            Mode::Periodic => "periodic",
        }
    }
    fn parse(s: &str) -> Mode {
        match s {
            "durable" => Mode::Durable,
            "periodic" => Mode::Periodic,
            _ => panic!("unknown mode {s}"),
        }
    }
    fn setting(self, kind: Kind) -> &'static str {
        match (kind, self) {
            (Kind::Sqlite, Mode::Durable) => "WAL, synchronous=FULL",
            (Kind::Sqlite, Mode::Periodic) => "WAL, synchronous=NORMAL + checkpoint(TRUNCATE)/1 s",
            (Kind::Fjall, Mode::Durable) => "batch durability SyncAll",
            (Kind::Fjall, Mode::Periodic) => "batch durability None (OS buffer) + persist(SyncAll)/1 s",
            (Kind::Redb, Mode::Durable) => "Durability::Immediate",
            (Kind::Redb, Mode::Periodic) => "Durability::None + Immediate commit/1 s",
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    retained: u64,
    sessions: u64,
    messages: u64,
    bytes: u64,
    /// Sequence numbers of client "k0" (used by the kill test), in key order.
    k0_seqs: Vec<u64>,
    /// Session ids read from the sessions table.
    session_ids: Vec<String>,
}

trait Candidate {
    /// Applies `ops` as one atomic commit; returns when it is as durable as
    /// the mode promises.
    fn commit(&mut self, ops: &[Op]) -> Res<()>;
    /// The writer's periodic step (checkpoint / sync).
    fn periodic(&mut self) -> Res<()>;
    /// Reads every table. Strict: the first error fails the scan. Lenient:
    /// errors are collected, and reading goes on where it can.
    fn scan(&self, lenient: bool) -> Res<(Counts, Vec<String>)>;
    /// Reads the messages of one session only (a salvage step that skips
    /// damaged parts of the messages table); returns how many were read
    /// before the first error, and that error.
    fn scan_client(&self, client: &str) -> (u64, Option<String>);
    /// A store-specific way to read past damage in the messages table, if
    /// there is one: (rows read, errors met, first error).
    fn salvage_messages(&self) -> (u64, u64, Option<String>) {
        (0, 0, None)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// Value encodings for the key-value stores, carrying the same fields as the
// broker's SQLite columns.
fn encode_msg(publish: &[u8]) -> Vec<u8> {
    // state, pid(2), qos, retain, received_ms(8), n_sub_ids, sub_ids, publish
    let mut v = Vec::with_capacity(14 + publish.len());
    v.extend_from_slice(&[0, 0, 0, 1, 0]);
    v.extend_from_slice(&now_ms().to_be_bytes());
    v.push(0);
    v.extend_from_slice(publish);
    v
}
fn encode_ret(publish: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + publish.len());
    v.extend_from_slice(&now_ms().to_be_bytes());
    v.extend_from_slice(publish);
    v
}
fn encode_sess(subs: &[u8]) -> Vec<u8> {
    // expiry(4), has_disconnected_at, disconnected_at(8), subscriptions
    let mut v = Vec::with_capacity(13 + subs.len());
    v.extend_from_slice(&3600u32.to_be_bytes());
    v.push(1);
    v.extend_from_slice(&(now_ms() / 1000).to_be_bytes());
    v.extend_from_slice(subs);
    v
}
fn msg_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(client.len() + 9);
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

// --- SQLite ---------------------------------------------------------------

mod sqlite {
    use super::*;
    use rusqlite::{params, Connection, OpenFlags};

    // The broker's schema, verbatim.
    const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, publish BLOB NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, expiry_secs INTEGER NOT NULL,
    disconnected_at INTEGER, subscriptions BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
    pid INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, sub_ids BLOB NOT NULL,
    publish BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (client_id, seq));
CREATE TABLE IF NOT EXISTS incoming_qos2 (client_id TEXT NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (client_id, pid));
";

    pub struct Sqlite {
        conn: Connection,
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("broker.db")
    }

    /// The broker's `open_conn`.
    pub fn open(dir: &Path, mode: Mode) -> Res<Sqlite> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open_with_flags(
            path(dir),
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = if mode == Mode::Durable { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Sqlite { conn })
    }

    /// The broker's start: open, `PRAGMA quick_check`.
    pub fn open_checked(dir: &Path, mode: Mode) -> Res<Sqlite> {
        let s = open(dir, mode)?;
        let ok: String = s.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(format!("quick_check: {}", ok.lines().next().unwrap_or("")).into());
        }
        Ok(s)
    }

    /// The broker's salvage path: read-only open, then a lenient read.
    pub fn open_read_only(dir: &Path) -> Res<Sqlite> {
        let conn = Connection::open_with_flags(path(dir), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Sqlite { conn })
    }

    /// Read-only with `PRAGMA writable_schema = ON`, which makes SQLite
    /// accept a file shorter than its header says (a truncated file) instead
    /// of refusing it as malformed. Not what the broker does today.
    pub fn open_read_only_lenient(dir: &Path) -> Res<Sqlite> {
        let conn = Connection::open_with_flags(path(dir), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.execute_batch("PRAGMA writable_schema = ON")?;
        Ok(Sqlite { conn })
    }

    pub fn version() -> String {
        rusqlite::version().to_string()
    }

    impl Candidate for Sqlite {
        fn commit(&mut self, ops: &[Op]) -> Res<()> {
            let tx = self.conn.transaction()?;
            {
                let mut put_msg = tx.prepare_cached(
                    "INSERT OR REPLACE INTO messages (client_id, seq, state, pid, qos, retain, sub_ids, publish, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut del_msg =
                    tx.prepare_cached("DELETE FROM messages WHERE client_id = ?1 AND seq = ?2")?;
                let mut put_ret = tx.prepare_cached(
                    "INSERT OR REPLACE INTO retained (topic, publish, received_ms) VALUES (?1, ?2, ?3)",
                )?;
                let mut put_sess = tx.prepare_cached(
                    "INSERT OR REPLACE INTO sessions (client_id, expiry_secs, disconnected_at, subscriptions) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for op in ops {
                    match op {
                        Op::PutMsg { client, seq, publish } => put_msg.execute(params![
                            client,
                            *seq as i64,
                            0i64,
                            0i64,
                            1i64,
                            0i64,
                            Vec::<u8>::new(),
                            publish,
                            now_ms() as i64
                        ])?,
                        Op::DelMsg { client, seq } => del_msg.execute(params![client, *seq as i64])?,
                        Op::PutRet { topic, publish } => {
                            put_ret.execute(params![topic, publish, now_ms() as i64])?
                        }
                        Op::PutSess { client, subs } => put_sess.execute(params![
                            client,
                            3600i64,
                            (now_ms() / 1000) as i64,
                            subs
                        ])?,
                    };
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn periodic(&mut self) -> Res<()> {
            self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
            Ok(())
        }

        /// Reads the messages table in rowid order; at a damaged page,
        /// skips forward by rowid (doubling the step) and goes on.
        fn salvage_messages(&self) -> (u64, u64, Option<String>) {
            let (mut n, mut errors, mut first) = (0u64, 0u64, None);
            let mut lo: i64 = 0;
            let mut step: i64 = 8;
            let mut misses = 0;
            while misses < 40 {
                let mut last = None;
                let r: rusqlite::Result<()> = (|| {
                    let mut stmt = self
                        .conn
                        .prepare_cached("SELECT rowid, client_id, seq, publish FROM messages WHERE rowid > ?1 ORDER BY rowid")?;
                    let mut rows = stmt.query([lo])?;
                    while let Some(row) = rows.next()? {
                        let id: i64 = row.get(0)?;
                        let _: String = row.get(1)?;
                        let _: i64 = row.get(2)?;
                        let _: Vec<u8> = row.get(3)?;
                        last = Some(id);
                        n += 1;
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => break,
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e.to_string());
                        match last {
                            Some(id) => {
                                lo = id;
                                step = 8;
                                misses = 0;
                            }
                            None => {
                                lo += step;
                                step *= 2;
                                misses += 1;
                            }
                        }
                    }
                }
            }
            (n, errors, first)
        }

        fn scan_client(&self, client: &str) -> (u64, Option<String>) {
            let mut n = 0;
            let r: rusqlite::Result<()> = (|| {
                let mut stmt = self
                    .conn
                    .prepare("SELECT seq, publish FROM messages WHERE client_id = ?1 ORDER BY seq")?;
                let mut rows = stmt.query([client])?;
                while let Some(row) = rows.next()? {
                    let _: i64 = row.get(0)?;
                    let _: Vec<u8> = row.get(1)?;
                    n += 1;
                }
                Ok(())
            })();
            (n, r.err().map(|e| e.to_string()))
        }

        fn scan(&self, lenient: bool) -> Res<(Counts, Vec<String>)> {
            let mut c = Counts::default();
            let mut errs = Vec::new();
            // Same queries as the broker's read_all.
            let queries: [(&str, u8); 3] = [
                ("SELECT publish, received_ms FROM retained", 0),
                (
                    "SELECT client_id, expiry_secs, disconnected_at, subscriptions FROM sessions",
                    1,
                ),
                (
                    "SELECT client_id, seq, state, pid, qos, retain, sub_ids, publish, received_ms FROM messages ORDER BY client_id, seq",
                    2,
                ),
            ];
            for (sql, which) in queries {
                let r: rusqlite::Result<()> = (|| {
                    let mut stmt = self.conn.prepare(sql)?;
                    let mut rows = stmt.query([])?;
                    loop {
                        match rows.next() {
                            Ok(Some(row)) => {
                                let one: rusqlite::Result<()> = (|| {
                                    match which {
                                        0 => {
                                            let p: Vec<u8> = row.get(0)?;
                                            let _: i64 = row.get(1)?;
                                            c.retained += 1;
                                            c.bytes += p.len() as u64;
                                        }
                                        1 => {
                                            let id: String = row.get(0)?;
                                            let _: i64 = row.get(1)?;
                                            let _: Option<i64> = row.get(2)?;
                                            let s: Vec<u8> = row.get(3)?;
                                            c.sessions += 1;
                                            c.session_ids.push(id);
                                            c.bytes += s.len() as u64;
                                        }
                                        _ => {
                                            let id: String = row.get(0)?;
                                            let seq: i64 = row.get(1)?;
                                            let _: i64 = row.get(2)?;
                                            let _: i64 = row.get(3)?;
                                            let _: i64 = row.get(4)?;
                                            let _: i64 = row.get(5)?;
                                            let _: Vec<u8> = row.get(6)?;
                                            let p: Vec<u8> = row.get(7)?;
                                            let _: i64 = row.get(8)?;
                                            c.messages += 1;
                                            c.bytes += p.len() as u64;
                                            if id == "k0" {
                                                c.k0_seqs.push(seq as u64);
                                            }
                                        }
                                    }
                                    Ok(())
                                })();
                                if let Err(e) = one {
                                    if !lenient {
                                        return Err(e);
                                    }
                                    errs.push(format!("row: {e}"));
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                if !lenient {
                                    return Err(e);
                                }
                                errs.push(format!("table stopped: {e}"));
                                break;
                            }
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    if !lenient {
                        return Err(e.into());
                    }
                    errs.push(format!("table: {e}"));
                }
            }
            Ok((c, errs))
        }
    }
}

// --- fjall ------------------------------------------------------------------

mod fj {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    pub struct Fj {
        db: Database,
        ret: Keyspace,
        sess: Keyspace,
        msgs: Keyspace,
        mode: Mode,
    }

    pub fn open(dir: &Path, mode: Mode) -> Res<Fj> {
        let db = Database::builder(dir).open()?;
        let ret = db.keyspace("retained", KeyspaceCreateOptions::default)?;
        let sess = db.keyspace("sessions", KeyspaceCreateOptions::default)?;
        let msgs = db.keyspace("messages", KeyspaceCreateOptions::default)?;
        Ok(Fj { db, ret, sess, msgs, mode })
    }

    impl Fj {
        /// Flushes memtables to on-disk tables (what a long-running broker
        /// reaches by itself once the write buffer or journal is full).
        pub fn flush(&self) -> Res<()> {
            for ks in [&self.ret, &self.sess, &self.msgs] {
                ks.rotate_memtable_and_wait()?;
            }
            Ok(())
        }
    }

    impl Candidate for Fj {
        fn commit(&mut self, ops: &[Op]) -> Res<()> {
            let mut b = self.db.batch();
            if self.mode == Mode::Durable {
                b = b.durability(Some(PersistMode::SyncAll));
            }
            for op in ops {
                match op {
                    Op::PutMsg { client, seq, publish } => {
                        b.insert(&self.msgs, msg_key(client, *seq), encode_msg(publish))
                    }
                    Op::DelMsg { client, seq } => b.remove(&self.msgs, msg_key(client, *seq)),
                    Op::PutRet { topic, publish } => {
                        b.insert(&self.ret, topic.as_bytes(), encode_ret(publish))
                    }
                    Op::PutSess { client, subs } => {
                        b.insert(&self.sess, client.as_bytes(), encode_sess(subs))
                    }
                }
            }
            b.commit()?;
            Ok(())
        }

        fn periodic(&mut self) -> Res<()> {
            if self.mode == Mode::Periodic {
                self.db.persist(PersistMode::SyncAll)?;
            }
            Ok(())
        }

        fn scan_client(&self, client: &str) -> (u64, Option<String>) {
            let mut prefix = client.as_bytes().to_vec();
            prefix.push(0);
            let mut n = 0;
            for g in self.msgs.prefix(prefix) {
                match g.into_inner() {
                    Ok(_) => n += 1,
                    Err(e) => return (n, Some(e.to_string())),
                }
            }
            (n, None)
        }

        fn scan(&self, lenient: bool) -> Res<(Counts, Vec<String>)> {
            let mut c = Counts::default();
            let mut errs = Vec::new();
            for (i, ks) in [&self.ret, &self.sess, &self.msgs].into_iter().enumerate() {
                for g in ks.iter() {
                    match g.into_inner() {
                        Ok((k, v)) => {
                            c.bytes += v.len() as u64;
                            match i {
                                0 => c.retained += 1,
                                1 => {
                                    c.sessions += 1;
                                    c.session_ids.push(String::from_utf8_lossy(&k).into_owned());
                                }
                                _ => {
                                    c.messages += 1;
                                    if k.len() == 11 && &k[..3] == b"k0\0" {
                                        c.k0_seqs.push(u64::from_be_bytes(
                                            k[3..11].try_into().unwrap(),
                                        ));
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            if !lenient {
                                return Err(e.into());
                            }
                            errs.push(format!("keyspace {i} stopped: {e}"));
                            break;
                        }
                    }
                }
            }
            Ok((c, errs))
        }
    }
}

// --- redb -------------------------------------------------------------------

mod rd {
    use super::*;
    use redb::{
        Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
    };

    const RET: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
    const SESS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
    const MSGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");

    pub enum Db {
        Rw(Database),
        Ro(ReadOnlyDatabase),
    }

    pub struct Rd {
        db: Db,
        mode: Mode,
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("broker.redb")
    }

    pub fn open(dir: &Path, mode: Mode) -> Res<Rd> {
        open_with(dir, mode, false)
    }

    pub fn open_with(dir: &Path, mode: Mode, check_integrity: bool) -> Res<Rd> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder()
            .set_check_integrity_on_open(check_integrity)
            .create(path(dir))?;
        let tx = db.begin_write()?;
        tx.open_table(RET)?;
        tx.open_table(SESS)?;
        tx.open_table(MSGS)?;
        tx.commit()?;
        Ok(Rd { db: Db::Rw(db), mode })
    }

    pub fn open_read_only(dir: &Path) -> Res<Rd> {
        Ok(Rd {
            db: Db::Ro(ReadOnlyDatabase::open(path(dir))?),
            mode: Mode::Periodic,
        })
    }

    impl Rd {
        fn rw(&self) -> Res<&Database> {
            match &self.db {
                Db::Rw(db) => Ok(db),
                Db::Ro(_) => Err("read-only".into()),
            }
        }
    }

    impl Candidate for Rd {
        fn commit(&mut self, ops: &[Op]) -> Res<()> {
            let db = self.rw()?;
            let mut tx = db.begin_write()?;
            tx.set_durability(match self.mode {
                Mode::Durable => Durability::Immediate,
                Mode::Periodic => Durability::None,
            })?;
            {
                let mut ret = tx.open_table(RET)?;
                let mut sess = tx.open_table(SESS)?;
                let mut msgs = tx.open_table(MSGS)?;
                for op in ops {
                    match op {
                        Op::PutMsg { client, seq, publish } => {
                            msgs.insert((client.as_str(), *seq), encode_msg(publish).as_slice())?;
                        }
                        Op::DelMsg { client, seq } => {
                            msgs.remove((client.as_str(), *seq))?;
                        }
                        Op::PutRet { topic, publish } => {
                            ret.insert(topic.as_str(), encode_ret(publish).as_slice())?;
                        }
                        Op::PutSess { client, subs } => {
                            sess.insert(client.as_str(), encode_sess(subs).as_slice())?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn scan_client(&self, client: &str) -> (u64, Option<String>) {
            let mut n = 0;
            let r: Res<()> = (|| {
                let rtx = match &self.db {
                    Db::Rw(db) => db.begin_read()?,
                    Db::Ro(db) => db.begin_read()?,
                };
                let t = rtx.open_table(MSGS)?;
                for item in t.range((client, 0u64)..=(client, u64::MAX))? {
                    item?;
                    n += 1;
                }
                Ok(())
            })();
            (n, r.err().map(|e| e.to_string()))
        }

        fn periodic(&mut self) -> Res<()> {
            if self.mode == Mode::Periodic {
                let tx = self.rw()?.begin_write()?;
                // Immediate is the default: this commit persists the
                // non-durable commits before it.
                tx.commit()?;
            }
            Ok(())
        }

        fn scan(&self, lenient: bool) -> Res<(Counts, Vec<String>)> {
            let mut c = Counts::default();
            let mut errs = Vec::new();
            let rtx = match &self.db {
                Db::Rw(db) => db.begin_read()?,
                Db::Ro(db) => db.begin_read()?,
            };
            macro_rules! table {
                ($def:expr, $each:expr) => {{
                    let r: Res<()> = guarded_if(lenient, || {
                        let t = rtx.open_table($def)?;
                        for item in t.iter()? {
                            match item {
                                Ok((k, v)) => $each(k.value(), v.value()),
                                Err(e) => {
                                    if !lenient {
                                        return Err(e.into());
                                    }
                                    errs.push(format!("table stopped: {e}"));
                                    break;
                                }
                            }
                        }
                        Ok(())
                    });
                    if let Err(e) = r {
                        if !lenient {
                            return Err(e);
                        }
                        errs.push(format!("table: {e}"));
                    }
                }};
            }
            table!(RET, |_k: &str, v: &[u8]| {
                c.retained += 1;
                c.bytes += v.len() as u64;
            });
            table!(SESS, |k: &str, v: &[u8]| {
                c.sessions += 1;
                c.session_ids.push(k.to_string());
                c.bytes += v.len() as u64;
            });
            table!(MSGS, |k: (&str, u64), v: &[u8]| {
                c.messages += 1;
                c.bytes += v.len() as u64;
                if k.0 == "k0" {
                    c.k0_seqs.push(k.1);
                }
            });
            Ok((c, errs))
        }
    }
}

fn open(kind: Kind, dir: &Path, mode: Mode) -> Res<Box<dyn Candidate>> {
    Ok(match kind {
        Kind::Sqlite => Box::new(sqlite::open(dir, mode)?),
        Kind::Fjall => Box::new(fj::open(dir, mode)?),
        Kind::Redb => Box::new(rd::open(dir, mode)?),
    })
}

// ---------------------------------------------------------------------------
// Helpers

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Lat(Vec<Duration>);
impl Lat {
    fn pct(&mut self, p: f64) -> f64 {
        self.0.sort();
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_secs_f64() * 1e3
    }
    fn max(&mut self) -> f64 {
        self.0.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn secs() -> f64 {
    std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0)
}

/// The writer loop's step: commit, then the periodic step if due; returns
/// the time until the batch's waiters are released (the broker releases
/// them after the checkpoint).
/// Longest periodic step since last reset (µs), reported on stderr per cell.
static PERIODIC_MAX_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn step(c: &mut dyn Candidate, ops: &[Op], last: &mut Instant) -> Res<Duration> {
    let t0 = Instant::now();
    c.commit(ops)?;
    if last.elapsed() >= SYNC_INTERVAL {
        let tp = Instant::now();
        c.periodic()?;
        PERIODIC_MAX_US.fetch_max(tp.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        *last = Instant::now();
    }
    Ok(t0.elapsed())
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_size(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

fn files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if let Ok(m) = e.metadata() {
                out.push((p, m.len()));
            }
        }
    }
}

fn client(i: u64) -> String {
    format!("client-{i:04}")
}

// ---------------------------------------------------------------------------
// (a) queue append + delete-on-ack

struct QueueResult {
    msgs_per_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    commits: usize,
}

/// One measurement window: operations done, seconds, commit latencies.
#[derive(Default)]
struct Raw {
    done: f64,
    secs: f64,
    lat: Vec<Duration>,
}

impl Raw {
    fn add(&mut self, o: Raw) {
        self.done += o.done;
        self.secs += o.secs;
        self.lat.extend(o.lat);
    }
    fn result(self) -> QueueResult {
        let commits = self.lat.len();
        let mut l = Lat(self.lat);
        QueueResult {
            msgs_per_s: self.done / self.secs,
            p50: l.pct(0.5),
            p99: l.pct(0.99),
            max: l.max(),
            commits,
        }
    }
}

/// Windows per cell. The disk's sync cost drifts (other tenants), so each
/// cell is measured in `ROUNDS` windows with the stores taking turns in a
/// rotating order, and the windows are pooled.
const ROUNDS: usize = 2;

/// First periodic step half a window in, then every `SYNC_INTERVAL`: with
/// 1 s windows, exactly one per window.
fn first_periodic() -> Instant {
    Instant::now()
        .checked_sub(SYNC_INTERVAL / 2)
        .unwrap_or_else(Instant::now)
}

fn interleaved(
    root: &Path,
    name: &str,
    f: impl Fn(Kind, &Path, Duration) -> Res<Raw>,
) -> Res<Vec<(Kind, QueueResult)>> {
    let window = Duration::from_secs_f64(secs() / ROUNDS as f64);
    let mut raws: Vec<Raw> = Kind::ALL.iter().map(|_| Raw::default()).collect();
    for round in 0..ROUNDS {
        for i in 0..Kind::ALL.len() {
            let k = (i + round) % Kind::ALL.len();
            let kind = Kind::ALL[k];
            let dir = fresh_dir(root, &format!("{name}-{}", kind.name()));
            PERIODIC_MAX_US.store(0, std::sync::atomic::Ordering::Relaxed);
            let raw = f(kind, &dir, window)?;
            let mut l = Lat(raw.lat.clone());
            eprintln!(
                "{name} {} round {round}: max commit {:.1} ms, longest periodic step {:.1} ms",
                kind.name(),
                l.max(),
                PERIODIC_MAX_US.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3
            );
            raws[k].add(raw);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(Kind::ALL.iter().copied().zip(raws.into_iter().map(Raw::result)).collect())
}

/// Median and p99 of 4 KiB write + fdatasync on the scratch dir, ms.
fn fsync_probe(root: &Path, n: usize) -> (f64, f64) {
    use std::io::{Seek, SeekFrom};
    let p = root.join("fsync-probe");
    let mut f = std::fs::File::create(&p).unwrap();
    let buf = vec![0xA5u8; 4096];
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f.seek(SeekFrom::Start((i * 4096) as u64)).unwrap();
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&p);
    let mut l = Lat(lat);
    (l.pct(0.5), l.pct(0.99))
}

fn bench_queue(kind: Kind, mode: Mode, dir: &Path, payload: usize, batch: usize, dur: Duration) -> Res<Raw> {
    let mut c = open(kind, dir, mode)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let publish = rng.bytes(payload);
    const LAG: usize = 4; // batches in flight between append and ack
    let mut pending: VecDeque<Vec<(String, u64)>> = VecDeque::new();
    let mut lat = Vec::new();
    let mut next: u64 = 0;
    let (mut appended, mut deleted) = (0u64, 0u64);
    let mut last = first_periodic();
    let start = Instant::now();
    while start.elapsed() < dur || lat.len() < 10 {
        // Append one batch.
        let mut ops = Vec::with_capacity(batch);
        let mut keys = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (cl, seq) = (client(next % 100), next / 100);
            next += 1;
            keys.push((cl.clone(), seq));
            ops.push(Op::PutMsg { client: cl, seq, publish: publish.clone() });
        }
        lat.push(step(c.as_mut(), &ops, &mut last)?);
        appended += batch as u64;
        pending.push_back(keys);
        // Acknowledge (delete) the oldest batch once LAG batches are queued.
        if pending.len() > LAG {
            let keys = pending.pop_front().unwrap();
            let ops: Vec<Op> = keys
                .into_iter()
                .map(|(client, seq)| Op::DelMsg { client, seq })
                .collect();
            lat.push(step(c.as_mut(), &ops, &mut last)?);
            deleted += batch as u64;
        }
    }
    let el = start.elapsed().as_secs_f64();
    drop(c);
    Ok(Raw { done: (appended + deleted) as f64 / 2.0, secs: el, lat })
}

// ---------------------------------------------------------------------------
// (b) retained upserts, (c) session overwrites

fn bench_upserts(kind: Kind, mode: Mode, dir: &Path, retained: bool, dur: Duration) -> Res<Raw> {
    let mut c = open(kind, dir, mode)?;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let n: u64 = if retained { 10_000 } else { 10_000 };
    let value = rng.bytes(if retained { 200 } else { 120 });
    let key = |i: u64| -> String {
        if retained {
            format!("sensors/site-{:02}/device-{:05}/temperature", i % 50, i)
        } else {
            client(i)
        }
    };
    let mk = |k: String, v: Vec<u8>| -> Op {
        if retained {
            Op::PutRet { topic: k, publish: v }
        } else {
            Op::PutSess { client: k, subs: v }
        }
    };
    // Fill all keys first (not timed).
    let mut last = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let ops: Vec<Op> = chunk.iter().map(|&i| mk(key(i), value.clone())).collect();
        step(c.as_mut(), &ops, &mut last)?;
    }
    c.periodic()?;
    let mut lat = Vec::new();
    let mut done = 0u64;
    let mut last = first_periodic();
    let start = Instant::now();
    while start.elapsed() < dur || lat.len() < 10 {
        let ops: Vec<Op> = (0..64)
            .map(|_| {
                let mut v = value.clone();
                v[..8].copy_from_slice(&rng.next().to_be_bytes());
                mk(key(rng.next() % n), v)
            })
            .collect();
        lat.push(step(c.as_mut(), &ops, &mut last)?);
        done += 64;
    }
    let el = start.elapsed().as_secs_f64();
    Ok(Raw { done: done as f64, secs: el, lat })
}

// ---------------------------------------------------------------------------
// Fill (child process): used by recovery (d) and damage (e)

/// Writes `n` queued messages (over `sessions` sessions), 10,000 or 1,000
/// retained messages and `sessions` session records, in periodic mode with
/// batches of 256, and then:
/// - `clean`: closes normally;
/// - `flush`: (fjall) flushes memtables to tables, then closes;
/// - `crash`: writes 2,000 more messages after the last periodic step,
///   makes them crash-safe the store's way, prints `filled`, and waits to be
///   killed.
fn child_fill(kind: Kind, dir: &Path, n: u64, payload: usize, sessions: u64, how: &str) -> Res<()> {
    let mut c: Box<dyn Candidate> = open(kind, dir, Mode::Periodic)?;
    let mut rng = Rng(42);
    let publish = rng.bytes(payload);
    let mut last = Instant::now();
    let n_ret = if n >= 100_000 { 10_000 } else { 1_000 };
    let ret_val = rng.bytes(200);
    let ops: Vec<Op> = (0..n_ret)
        .map(|i| Op::PutRet {
            topic: format!("sensors/site-{:02}/device-{:05}/temperature", i % 50, i),
            publish: ret_val.clone(),
        })
        .collect();
    for ch in ops.chunks(256) {
        step(c.as_mut(), ch, &mut last)?;
    }
    let sess_val = rng.bytes(120);
    let ops: Vec<Op> = (0..sessions)
        .map(|i| Op::PutSess { client: client(i), subs: sess_val.clone() })
        .collect();
    for ch in ops.chunks(256) {
        step(c.as_mut(), ch, &mut last)?;
    }
    let put = |i: u64| Op::PutMsg { client: client(i % sessions), seq: i / sessions, publish: publish.clone() };
    let mut i = 0;
    while i < n {
        let ops: Vec<Op> = (i..(i + 256).min(n)).map(put).collect();
        i += ops.len() as u64;
        step(c.as_mut(), &ops, &mut last)?;
    }
    match how {
        "clean" => {
            c.periodic()?;
            drop(c);
        }
        "flush" => {
            c.periodic()?;
            drop(c);
            if kind == Kind::Fjall {
                let f = fj::open(dir, Mode::Periodic)?;
                f.flush()?;
                drop(f);
            }
        }
        "crash" => {
            c.periodic()?;
            // 2,000 more messages, not checkpointed: they live in the log.
            while i < n + 2000 {
                let ops: Vec<Op> = (i..i + 250).map(put).collect();
                i += 250;
                c.commit(&ops)?;
            }
            if kind != Kind::Sqlite {
                // SQLite NORMAL: the commit is in the WAL (OS buffers), which
                // survives a process kill. fjall: persist the journal
                // buffer; redb: make the None commits visible on disk.
                c.periodic()?;
            }
            println!("filled");
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(600));
        }
        _ => return Err("unknown fill mode".into()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Kill test (child): durable/periodic writer that reports each commit

fn child_writer(kind: Kind, mode: Mode, dir: &Path) -> Res<()> {
    let mut c = open(kind, dir, mode)?;
    let (counts, _) = c.scan(false)?;
    let mut next = counts.k0_seqs.len() as u64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {next}")?;
    out.flush()?;
    let publish = vec![7u8; 64];
    let mut last = Instant::now();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let ops: Vec<Op> = (next..next + 16)
            .map(|seq| Op::PutMsg { client: "k0".into(), seq, publish: publish.clone() })
            .collect();
        step(c.as_mut(), &ops, &mut last)?;
        next += 16;
        // Acknowledged: everything below `next` is committed.
        writeln!(out, "ok {next}")?;
        out.flush()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Probe (child): open a store as the broker would and read it back

static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn guarded<T>(f: impl FnOnce() -> Res<T>) -> Result<T, String> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(one_line(&format!("{e}"))),
        Err(_) => Err(format!("PANIC: {}", one_line(&LAST_PANIC.lock().unwrap()))),
    }
}

/// With `catch`, a panic in `f` becomes an error (so a lenient read can go
/// on with the next table).
fn guarded_if<T>(catch: bool, f: impl FnOnce() -> Res<T>) -> Res<T> {
    if !catch {
        return f();
    }
    guarded(f).map_err(|e| e.into())
}

fn one_line(s: &str) -> String {
    let s = s.replace(['\n', '|', ';'], " ");
    if s.len() > 150 {
        format!("{}…", &s[..s.char_indices().take_while(|(i, _)| *i < 150).last().map_or(0, |(i, c)| i + c.len_utf8())])
    } else {
        s
    }
}

/// Prints one line: `RESULT open=<ok|err>;open_ms=..;scan=<ok|err>;scan_ms=..;
/// retained=..;sessions=..;messages=..;k0=..;k0_contig=..;salvage=..`.
fn child_probe(kind: Kind, variant: &str, dir: &Path) -> Res<()> {
    panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap() = info.to_string();
    }));
    let mut fields: Vec<(String, String)> = Vec::new();
    let t0 = Instant::now();
    let opened: Result<Box<dyn Candidate>, String> = guarded(|| {
        Ok(match (kind, variant) {
            (Kind::Sqlite, _) => Box::new(sqlite::open_checked(dir, Mode::Periodic)?) as Box<dyn Candidate>,
            (Kind::Fjall, _) => Box::new(fj::open(dir, Mode::Periodic)?),
            (Kind::Redb, "check") => Box::new(rd::open_with(dir, Mode::Periodic, true)?),
            (Kind::Redb, _) => Box::new(rd::open(dir, Mode::Periodic)?),
        })
    });
    fields.push(("open_ms".into(), format!("{:.1}", t0.elapsed().as_secs_f64() * 1e3)));
    let report = |fields: &mut Vec<(String, String)>, c: &Counts, errs: &[String], prefix: &str| {
        fields.push((format!("{prefix}retained"), c.retained.to_string()));
        fields.push((format!("{prefix}sessions"), c.sessions.to_string()));
        fields.push((format!("{prefix}messages"), c.messages.to_string()));
        fields.push((format!("{prefix}errors"), errs.len().to_string()));
        if let Some(e) = errs.first() {
            fields.push((format!("{prefix}first_error"), one_line(e)));
        }
        let contig = c.k0_seqs.iter().enumerate().all(|(i, s)| *s == i as u64);
        fields.push((format!("{prefix}k0"), c.k0_seqs.len().to_string()));
        fields.push((format!("{prefix}k0_contig"), contig.to_string()));
    };
    let mut need_salvage = false;
    let mut primary: Option<Box<dyn Candidate>> = None;
    match opened {
        Ok(c) => {
            fields.push(("open".into(), "ok".into()));
            let t1 = Instant::now();
            match guarded(|| c.scan(false)) {
                Ok((counts, errs)) => {
                    fields.push(("scan".into(), "ok".into()));
                    fields.push(("scan_ms".into(), format!("{:.1}", t1.elapsed().as_secs_f64() * 1e3)));
                    report(&mut fields, &counts, &errs, "");
                }
                Err(e) => {
                    fields.push(("scan".into(), format!("err: {e}")));
                    // Lenient read of the same handle.
                    match guarded(|| c.scan(true)) {
                        Ok((counts, errs)) => report(&mut fields, &counts, &errs, ""),
                        Err(e) => fields.push(("lenient".into(), format!("err: {e}"))),
                    }
                    need_salvage = true;
                }
            }
            primary = Some(c);
        }
        Err(e) => {
            fields.push(("open".into(), format!("err: {e}")));
            need_salvage = true;
        }
    }
    if need_salvage && kind == Kind::Sqlite {
        // What the broker does today: read-only open, lenient read.
        drop(primary.take());
        let s = guarded(|| Ok(Box::new(sqlite::open_read_only(dir)?) as Box<dyn Candidate>));
        match s {
            Ok(c) => match guarded(|| c.scan(true)) {
                Ok((counts, errs)) => {
                    fields.push(("salvage".into(), "ok".into()));
                    report(&mut fields, &counts, &errs, "salvage_");
                }
                Err(e) => fields.push(("salvage".into(), format!("err: {e}"))),
            },
            Err(e) => fields.push(("salvage".into(), format!("err: {e}"))),
        }
    }
    if need_salvage {
        // Best effort with what each library offers: SQLite read-only with
        // writable_schema; redb the open handle or a read-only open; fjall
        // the open handle (it has no other). Then every table leniently, and
        // the messages session by session (ids from the sessions table), so
        // one damaged part does not hide the rest. Rows = the larger of the
        // two reads of the messages.
        let h: Result<Box<dyn Candidate>, String> = match kind {
            Kind::Sqlite => guarded(|| Ok(Box::new(sqlite::open_read_only_lenient(dir)?) as Box<dyn Candidate>)),
            Kind::Fjall => primary.take().ok_or_else(|| "fjall has no read-only or salvage open".to_string()),
            Kind::Redb => match primary.take() {
                Some(c) => Ok(c),
                None => guarded(|| Ok(Box::new(rd::open_read_only(dir)?) as Box<dyn Candidate>)),
            },
        };
        match h {
            Ok(c) => {
                let (counts, errs) = guarded(|| c.scan(true)).unwrap_or_else(|e| (Counts::default(), vec![e]));
                let mut per_client = 0;
                let mut client_errs = 0;
                let mut first_client_err = None;
                for id in &counts.session_ids {
                    match guarded(|| Ok(c.scan_client(id))) {
                        Ok((n, e)) => {
                            per_client += n;
                            if let Some(e) = e {
                                client_errs += 1;
                                first_client_err.get_or_insert(e);
                            }
                        }
                        Err(e) => {
                            client_errs += 1;
                            first_client_err.get_or_insert(e);
                        }
                    }
                }
                let (by_rowid, rowid_errs, rowid_first) =
                    guarded(|| Ok(c.salvage_messages())).unwrap_or_else(|e| (0, 1, Some(e)));
                fields.push(("deep".into(), "ok".into()));
                fields.push(("deep_retained".into(), counts.retained.to_string()));
                fields.push(("deep_sessions".into(), counts.sessions.to_string()));
                fields.push((
                    "deep_messages".into(),
                    counts.messages.max(per_client).max(by_rowid).to_string(),
                ));
                fields.push(("deep_errors".into(), (errs.len() as u64 + client_errs + rowid_errs).to_string()));
                if let Some(e) = errs.first().cloned().or(first_client_err).or(rowid_first) {
                    fields.push(("deep_first_error".into(), one_line(&e)));
                }
            }
            Err(e) => fields.push(("deep".into(), format!("err: {e}"))),
        }
    }
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(";"));
    Ok(())
}

// ---------------------------------------------------------------------------
// Parent side of the child processes

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn parse_result(out: &str) -> Vec<(String, String)> {
    out.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|r| {
            r.split(';')
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn get<'a>(r: &'a [(String, String)], k: &str) -> &'a str {
    r.iter().find(|(kk, _)| kk == k).map_or("", |(_, v)| v.as_str())
}

/// Runs a probe child with a timeout; returns its fields (or a `died`).
fn probe(kind: Kind, variant: &str, dir: &Path) -> Vec<(String, String)> {
    let mut child = Command::new(exe())
        .args(["probe", kind.name(), variant, dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read;
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let mut r = parse_result(&out);
            if r.is_empty() {
                r.push((
                    "open".into(),
                    format!("process died ({status}): {}", one_line(err.lines().last().unwrap_or(""))),
                ));
            }
            return r;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return vec![("open".into(), "timeout (60 s), killed".into())];
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_fill(kind: Kind, dir: &Path, n: u64, payload: usize, sessions: u64, how: &str) -> Duration {
    let t = Instant::now();
    let mut child = Command::new(exe())
        .args([
            "fill",
            kind.name(),
            dir.to_str().unwrap(),
            &n.to_string(),
            &payload.to_string(),
            &sessions.to_string(),
            how,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    if how == "crash" {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "filled", "fill child failed");
        let el = t.elapsed();
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        el
    } else {
        let st = child.wait().unwrap();
        assert!(st.success(), "fill child failed");
        t.elapsed()
    }
}

// ---------------------------------------------------------------------------
// The run

fn run(root: &Path) -> Res<()> {
    let only: Vec<String> = std::env::var("ONLY")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let total = Instant::now();
    println!("# store-candidates run");
    println!();
    println!(
        "SQLite {} (rusqlite 0.37, bundled); measurement window {} s per cell; sync interval {} s; scratch dir {}",
        sqlite::version(),
        secs(),
        SYNC_INTERVAL.as_secs(),
        root.display()
    );
    println!();
    let (a, b) = fsync_probe(root, 100);
    println!("Disk at start: 4 KiB write + fdatasync p50 {} ms, p99 {} ms (100 samples)", fmt_ms(a), fmt_ms(b));
    println!();
    println!("Modes:");
    println!();
    for kind in Kind::ALL {
        for mode in [Mode::Durable, Mode::Periodic] {
            println!("- {} {}: {}", kind.name(), mode.name(), mode.setting(kind));
        }
    }
    println!();

    if want("queue") {
        println!("## (a) queued message append + delete-on-ack");
        println!();
        println!("msgs/s = messages appended and deleted per second (each message is in one append commit and one delete commit of the same batch size; deletes trail appends by 4 batches; 100 sessions; fresh store); latency = one commit incl. the periodic step when it falls in (once a second), ms. Each cell: {} windows of {} s per store, stores taking turns in rotating order, pooled.", ROUNDS, secs() / ROUNDS as f64);
        println!();
        println!("| store | mode | payload | batch | msgs/s | p50 ms | p99 ms | max ms | commits | disk fsync p50 before the cell |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for mode in [Mode::Durable, Mode::Periodic] {
            for payload in [64usize, 1024] {
                for batch in [1usize, 16, 64, 256] {
                    let (fs50, _) = fsync_probe(root, 20);
                    let rs = interleaved(root, "q", |kind, dir, dur| bench_queue(kind, mode, dir, payload, batch, dur))?;
                    for (kind, r) in rs {
                        println!(
                            "| {} | {} | {} B | {} | {} | {} | {} | {} | {} | {} |",
                            kind.name(),
                            mode.name(),
                            payload,
                            batch,
                            fmt_rate(r.msgs_per_s),
                            fmt_ms(r.p50),
                            fmt_ms(r.p99),
                            fmt_ms(r.max),
                            r.commits,
                            fmt_ms(fs50)
                        );
                    }
                    std::io::stdout().flush()?;
                }
            }
        }
        println!();
    }

    for (name, retained) in [("retained", true), ("sessions", false)] {
        if !want(name) {
            continue;
        }
        if retained {
            println!("## (b) retained upserts: 10,000 topics, 200 B, random overwrites, batches of 64");
        } else {
            println!("## (c) session record overwrites: 10,000 sessions, 120 B records, random, batches of 64");
        }
        println!();
        println!("| store | mode | upserts/s | p50 ms | p99 ms | max ms | commits |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for mode in [Mode::Durable, Mode::Periodic] {
            let rs = interleaved(root, name, |kind, dir, dur| bench_upserts(kind, mode, dir, retained, dur))?;
            for (kind, r) in rs {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    kind.name(),
                    mode.name(),
                    fmt_rate(r.msgs_per_s),
                    fmt_ms(r.p50),
                    fmt_ms(r.p99),
                    fmt_ms(r.max),
                    r.commits
                );
                std::io::stdout().flush()?;
            }
        }
        println!();
    }

    if want("recovery") {
        let payload: usize = std::env::var("RECOVERY_PAYLOAD").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);
        println!("## (d) recovery: open + full scan of 100,000 queued messages ({payload} B) in 1,000 sessions, + 10,000 retained, 1,000 session records");
        println!();
        println!("Filled in periodic mode, batches of 256, by a child process; opened and read back by a fresh process (page cache warm). \"open\" for SQLite includes the broker's `PRAGMA quick_check`; \"crash\" = the filler was SIGKILLed (SQLite WAL not checkpointed, fjall journal not flushed, redb not closed).");
        println!();
        println!("| store | state | fill s | on disk MB | open ms | scan ms | rows read | result |");
        println!("|---|---|---:|---:|---:|---:|---:|---|");
        for kind in Kind::ALL {
            for how in ["clean", "crash"] {
                let dir = fresh_dir(root, &format!("rec-{}-{how}", kind.name()));
                let fill = run_fill(kind, &dir, 100_000, payload, 1_000, how);
                let size = dir_size(&dir) as f64 / 1e6;
                let variants: &[&str] = if kind == Kind::Redb { &["plain", "check"] } else { &["plain"] };
                for v in variants {
                    // The probe may modify the files (repair): use a copy for the second variant.
                    let pdir = if *v == "check" {
                        let d = fresh_dir(root, &format!("rec-{}-{how}-check", kind.name()));
                        copy_dir(&dir, &d);
                        d
                    } else {
                        dir.clone()
                    };
                    let t = Instant::now();
                    let r = probe(kind, v, &pdir);
                    let _wall = t.elapsed();
                    let label = if *v == "check" { format!("{how}, check_integrity_on_open") } else { how.to_string() };
                    let rows = get(&r, "messages").parse::<u64>().unwrap_or(0)
                        + get(&r, "retained").parse::<u64>().unwrap_or(0)
                        + get(&r, "sessions").parse::<u64>().unwrap_or(0);
                    println!(
                        "| {} | {} | {:.1} | {:.0} | {} | {} | {} | open {}, scan {} |",
                        kind.name(),
                        label,
                        fill.as_secs_f64(),
                        size,
                        get(&r, "open_ms"),
                        get(&r, "scan_ms"),
                        rows,
                        get(&r, "open"),
                        get(&r, "scan"),
                    );
                    std::io::stdout().flush()?;
                }
                let _ = std::fs::remove_dir_all(root.join(format!("rec-{}-{how}-check", kind.name())));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        println!();
    }

    if want("kill") {
        println!("## (e1) SIGKILL of a writer mid-loop (batches of 16 × 64 B messages; 3 kills per store and mode, continuing on the same files)");
        println!();
        println!("acked = messages whose commit had returned (and been printed) before the kill; found = read back after reopen; ok = found ≥ acked, contiguous, and a whole number of batches.");
        println!();
        println!("| store | mode | kill after | acked | found | contiguous | whole batches | lost acked |");
        println!("|---|---|---:|---:|---:|---|---|---:|");
        for mode in [Mode::Durable, Mode::Periodic] {
            for kind in Kind::ALL {
                let dir = fresh_dir(root, &format!("kill-{}-{}", kind.name(), mode.name()));
                for after in [700u64, 1300, 1900] {
                    let (acked, r) = kill_round(kind, mode, &dir, Duration::from_millis(after));
                    let found: u64 = get(&r, "k0").parse().unwrap_or(0);
                    let lost = acked.saturating_sub(found);
                    println!(
                        "| {} | {} | {} ms | {} | {} | {} | {} | {} |",
                        kind.name(),
                        mode.name(),
                        after,
                        acked,
                        if get(&r, "open") == "ok" { found.to_string() } else { format!("open {}", get(&r, "open")) },
                        get(&r, "k0_contig"),
                        found % 16 == 0,
                        lost
                    );
                    std::io::stdout().flush()?;
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        println!();
    }

    if want("damage") {
        damage(root)?;
    }

    let (a, b) = fsync_probe(root, 100);
    println!("Disk at end: 4 KiB write + fdatasync p50 {} ms, p99 {} ms (100 samples)", fmt_ms(a), fmt_ms(b));
    println!();
    println!("Total run time: {:.0} s", total.elapsed().as_secs_f64());
    Ok(())
}

fn kill_round(kind: Kind, mode: Mode, dir: &Path, after: Duration) -> (u64, Vec<(String, String)>) {
    let mut child = Command::new(exe())
        .args(["writer", kind.name(), mode.name(), dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            match l {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    // Wait for "ready", then let it write for `after`.
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    assert!(first.starts_with("ready"), "writer failed: {first}");
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    reader.join().unwrap();
    let mut acked = first.trim_start_matches("ready ").parse::<u64>().unwrap_or(0);
    while let Ok(l) = rx.try_recv() {
        if let Some(n) = l.strip_prefix("ok ") {
            acked = n.parse().unwrap();
        }
    }
    (acked, probe(kind, "plain", dir))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

/// (e2/e3) truncation and garbage in the main data file and in the log.
/// Bytes up to the last non-zero byte (journals may be preallocated).
fn used_len(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap_or_default();
    data.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1)
}

fn rows3(r: &[(String, String)], prefix: &str) -> String {
    let g = |k: &str| get(r, &format!("{prefix}{k}")).to_string();
    let errs = g("errors");
    let mut out = format!("{}/{}/{}", g("retained"), g("sessions"), g("messages"));
    if !errs.is_empty() && errs != "0" {
        out.push_str(&format!(" ({} read errors, first: {})", errs, g("first_error")));
    }
    out
}

/// (e2/e3) truncation and garbage in the main data file and in the log.
fn damage(root: &Path) -> Res<()> {
    println!("## (e2, e3) damaged files");
    println!();
    println!("Base store: 20,000 queued messages (256 B) in 100 sessions, 1,000 retained, 100 session records. \"main\" = the data file after a clean close (SQLite broker.db; redb broker.redb; fjall: the largest table file, after flushing memtables). \"log\" = after a SIGKILL, with the last 2,000 messages only in the log (SQLite broker.db-wal; fjall: the journal, whose file is preallocated, so offsets are taken within its used part). truncate = cut at 3/5 of the used length + 777 B; garbage = 4 KiB of random bytes written at 1/2 of the used length + 333 B. Each case is opened by a fresh process the broker's way (SQLite: open + `quick_check` + read). Rows are retained/sessions/messages.");
    println!();
    println!("- *read on open store*: a strict read; if it fails, a lenient read (stop a table at its first error, go on with the next) on the same handle.");
    println!("- *broker salvage today* (SQLite only): `store.rs`'s path: read-only open and lenient read.");
    println!("- *best effort*: SQLite read-only with `PRAGMA writable_schema=ON`; fjall the opened handle (it has no other way in); redb the opened handle or `ReadOnlyDatabase`. Every table leniently, then messages session by session (ids from the sessions table), and for SQLite also the messages table in rowid order, skipping forward past damaged pages; panics caught per step. Rows = the most any of these reads got.");
    println!();
    println!("| store | file | damage | open (broker way) | read on open store | broker salvage today | best effort |");
    println!("|---|---|---|---|---|---|---|");
    let mut rng = Rng(7);
    for kind in Kind::ALL {
        for target in ["main", "log"] {
            if kind == Kind::Redb && target == "log" {
                continue;
            }
            let base = fresh_dir(root, &format!("dmg-{}-{target}", kind.name()));
            let how = match (target, kind) {
                ("log", _) => "crash",
                (_, Kind::Fjall) => "flush",
                _ => "clean",
            };
            run_fill(kind, &base, 20_000, 256, 100, how);
            // Undamaged read-back for reference.
            let r0 = probe(kind, "plain", &{
                let d = fresh_dir(root, "dmg-ref");
                copy_dir(&base, &d);
                d
            });
            println!(
                "| {} | {target} | none (reference) | {} | {} | | |",
                kind.name(),
                get(&r0, "open"),
                rows3(&r0, "")
            );
            let variants: &[&str] = if kind == Kind::Redb { &["plain", "check"] } else { &["plain"] };
            for dmg in ["truncate", "garbage"] {
                for v in variants {
                    let d = fresh_dir(root, "dmg-case");
                    copy_dir(&base, &d);
                    let mut fl = Vec::new();
                    files(&d, &mut fl);
                    let is_log = |p: &Path| p.to_string_lossy().ends_with(".jnl") || p.to_string_lossy().contains("journal");
                    let pick = match (kind, target) {
                        (Kind::Sqlite, "main") => fl.iter().find(|(p, _)| p.ends_with("broker.db")).cloned(),
                        (Kind::Sqlite, _) => fl.iter().find(|(p, _)| p.to_string_lossy().ends_with("-wal")).cloned(),
                        (Kind::Redb, _) => fl.iter().find(|(p, _)| p.ends_with("broker.redb")).cloned(),
                        (Kind::Fjall, "main") => fl.iter().filter(|(p, _)| !is_log(p)).max_by_key(|(_, s)| *s).cloned(),
                        (Kind::Fjall, _) => fl
                            .iter()
                            .filter(|(p, _)| is_log(p))
                            .max_by_key(|(p, _)| used_len(p))
                            .cloned(),
                    };
                    let Some((file, len)) = pick else {
                        println!("| {} | {target} | {dmg} | no such file | | | |", kind.name());
                        continue;
                    };
                    let used = used_len(&file);
                    let at;
                    if dmg == "truncate" {
                        at = used * 3 / 5 + 777;
                        let f = std::fs::OpenOptions::new().write(true).open(&file)?;
                        f.set_len(at)?;
                    } else {
                        use std::io::{Seek, SeekFrom};
                        at = used / 2 + 333;
                        let mut f = std::fs::OpenOptions::new().write(true).open(&file)?;
                        f.seek(SeekFrom::Start(at))?;
                        f.write_all(&rng.bytes(4096))?;
                    }
                    let r = probe(kind, v, &d);
                    let rel = file.strip_prefix(&d).unwrap_or(&file).display().to_string();
                    let size = if used != len { format!("{used} B used of {len}") } else { format!("{len} B") };
                    let open_s = {
                        let o = get(&r, "open");
                        let s = get(&r, "scan");
                        if o == "ok" && s != "ok" && !s.is_empty() {
                            format!("ok; strict read fails: {}", s.trim_start_matches("err: "))
                        } else {
                            o.to_string()
                        }
                    };
                    let read = if get(&r, "open") != "ok" {
                        "–".to_string()
                    } else if !get(&r, "lenient").is_empty() {
                        get(&r, "lenient").to_string()
                    } else {
                        rows3(&r, "")
                    };
                    let salvage = match get(&r, "salvage") {
                        "" => "–".to_string(),
                        "ok" => rows3(&r, "salvage_"),
                        e => e.to_string(),
                    };
                    let deep = match get(&r, "deep") {
                        "" => "–".to_string(),
                        "ok" => rows3(&r, "deep_"),
                        e => e.to_string(),
                    };
                    let label = if *v == "check" { format!("{}, check_integrity_on_open", kind.name()) } else { kind.name().to_string() };
                    println!("| {label} | {target}: {rel} ({size}) | {dmg} at {at} | {open_s} | {read} | {salvage} | {deep} |");
                    std::io::stdout().flush()?;
                    let _ = std::fs::remove_dir_all(&d);
                }
            }
            let _ = std::fs::remove_dir_all(root.join("dmg-ref"));
            let _ = std::fs::remove_dir_all(&base);
        }
    }
    println!();
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let sub = args.get(1).map(String::as_str).unwrap_or("run");
    match sub {
        "run" => {
            let root = std::env::var("STORE_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    // On the disk being measured: /work here, else the temp dir.
                    let base = if Path::new("/work").is_dir() { PathBuf::from("/work/tmp") } else { std::env::temp_dir() };
                    base.join(format!("store-candidates-{}", std::process::id()))
                });
            std::fs::create_dir_all(&root)?;
            let r = run(&root);
            let _ = std::fs::remove_dir_all(&root);
            r
        }
        "fill" => child_fill(
            Kind::parse(&args[2]),
            Path::new(&args[3]),
            args[4].parse()?,
            args[5].parse()?,
            args[6].parse()?,
            &args[7],
        ),
        "writer" => child_writer(Kind::parse(&args[2]), Mode::parse(&args[3]), Path::new(&args[4])),
        "probe" => child_probe(Kind::parse(&args[2]), &args[3], Path::new(&args[4])),
        _ => Err(format!("unknown subcommand {sub}").into()),
    }
}
