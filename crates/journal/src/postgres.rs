//! The log in PostgreSQL: several zhifu nodes share one database; one of
//! them leads and appends, the others follow by reading what it appended.
//! PostgreSQL (with a synchronous standby, and Patroni to fail it over)
//! keeps the log replicated; zhifu only appends, reads, and decides who
//! leads through PostgreSQL.
//!
//! Tables (made on first start, `SCHEMA_VERSION`):
//! - `zhifu_log (first_sequence bigint primary key, last_sequence, epoch, records bytea)`:
//!   a group of records as rows of at most `ROW_BYTES_MAX` compressed bytes
//!   (LZ4 of the records framed as in the file log: sequence, length,
//!   checksums). The primary key on the first sequence means two appends of
//!   the same place can never both commit.
//! - `zhifu_leader (id = 1, epoch, holder, expires_at)`: the lease. The
//!   leader renews it in every append (one statement: the lease's `UPDATE`
//!   joined to the `INSERT`, so rows go in only while this node's epoch is
//!   the lease's) and every second while idle; a follower takes it, with
//!   the next epoch, once it has expired on PostgreSQL's clock. A paused or
//!   partitioned old leader can then append nothing: its epoch is no
//!   longer the lease's.
//!
//! A connection lost while appending leaves the outcome unknown
//! (`Ambiguous`); [`LogStore::committed`] then takes the lease row's lock —
//! which any statement of this node still in flight holds until it ends —
//! before it looks for the group's first row and the epoch that wrote it,
//! so its answer is final.
//!
//! The log is kept whole: a node with an empty data directory catches up
//! by replaying it from the first record. Snapshots stay in each node's
//! data directory, so a node that restarts replays only what came after
//! its last one.

use std::time::Duration;

use postgres::{Client, Config, NoTls, Statement};

use crate::error::JournalError;
use crate::log::{Lead, LogStore, Visit};
use crate::wal;

/// The schema this code reads and writes; raised with any change to it.
const SCHEMA_VERSION: i32 = 2;
/// Compressed bytes in one row at most: rows below a page stay inline
/// (`toast_tuple_target`), without TOAST's second write.
const ROW_BYTES_MAX: usize = 7_900;
// A row stays under `toast_tuple_target` (8160) with its other columns.
const _: () = assert!(ROW_BYTES_MAX + 64 <= 8_160);

/// Records' bytes gathered before a row is compressed (LZ4 takes platform
/// commands to about a third).
const ROW_RECORD_BYTES_TARGET: usize = 16 * 1024;
/// How long a lease lasts past its last renewal, unless configured: a dead
/// leader's successor takes over this long after it stopped, plus a
/// follower's check (Patroni's own default TTL is 30 s).
pub const LEASE_DEFAULT: Duration = Duration::from_secs(10);
/// A follower asks whether the lease has run out at most this often.
const TAKEOVER_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Rows read per query while following or catching up.
const ROWS_PER_READ: i64 = 256;
/// How long to wait to connect, and for a lock while settling an append.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const LOCK_TIMEOUT_MS: u32 = 5_000;
/// An advisory lock's key under which nodes create the schema one at a time.
const SCHEMA_LOCK_KEY: i64 = 0x7a68_6966_7500_0001;

pub struct PostgresLog {
    config: Config,
    description: String,
    /// This node's name in the lease (`--public-url` or the like), and a
    /// token of this process, so that two processes never share a lease.
    node: String,
    client: Option<Connection>,
    /// The lease's epoch while this node holds it.
    epoch: Option<i64>,
    /// The epoch of the last append tried, for `committed`.
    appending_epoch: Option<i64>,
    last_takeover_check: Option<std::time::Instant>,
    last_leader: Option<String>,
    lease: Duration,
}

struct Connection {
    client: Client,
    append: Statement,
    read: Statement,
}

impl PostgresLog {
    /// A log in the database at `url` (libpq's URI syntax; several hosts
    /// with `target_session_attrs=read-write` follow a failover), for the
    /// node named `node`, holding the lead for `lease` past each renewal.
    /// Makes the schema if the database has none.
    pub fn connect(url: &str, node: &str, lease: Duration) -> Result<PostgresLog, JournalError> {
        let mut config: Config =
            url.parse().map_err(|error| JournalError::Unavailable(format!("{}: {error}", describe_url(url))))?;
        config.connect_timeout(CONNECT_TIMEOUT).keepalives(true).keepalives_idle(Duration::from_secs(5));
        config.application_name("zhifu").options("-c client_min_messages=warning");
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|error| JournalError::Unavailable(format!("no randomness: {error}")))?;
        let node = format!("{node} {}", hex_of(&token));
        let mut log = PostgresLog {
            config,
            description: describe_url(url),
            node,
            client: None,
            epoch: None,
            appending_epoch: None,
            last_takeover_check: None,
            last_leader: None,
            lease,
        };
        log.connection()?;
        Ok(log)
    }

    /// The open connection, made (with the schema checked) if there is none.
    fn connection(&mut self) -> Result<&mut Connection, JournalError> {
        if self.client.as_ref().is_some_and(|connection| connection.client.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client = self.config.connect(NoTls).map_err(|error| self.unavailable(&error))?;
            let found = create_schema(&mut client).map_err(|error| self.unavailable(&error))?;
            if let Some(version) = found.filter(|&version| version != SCHEMA_VERSION) {
                return Err(JournalError::Failed(format!(
                    "{} holds a log of schema version {version}; this zhifu reads version {SCHEMA_VERSION}",
                    self.description
                )));
            }
            let append = client.prepare(APPEND).map_err(|error| self.unavailable(&error))?;
            let read = client.prepare(READ).map_err(|error| self.unavailable(&error))?;
            self.client = Some(Connection { client, append, read });
        }
        self.client.as_mut().ok_or_else(|| JournalError::Unavailable("no connection".to_string()))
    }

    fn unavailable(&self, error: &postgres::Error) -> JournalError {
        JournalError::Unavailable(format!("{}: {error}", self.description))
    }

    /// A failed statement: the connection is dropped (made again next time),
    /// and the error says whether the statement may have committed.
    fn failed(&mut self, error: &postgres::Error) -> JournalError {
        let problem = format!("{}: {error}", self.description);
        self.client = None;
        match error.code() {
            // The server answered: the statement did not commit.
            Some(code) if *code == postgres::error::SqlState::UNIQUE_VIOLATION => {
                self.epoch = None;
                JournalError::NotLeader { leader: self.last_leader.clone() }
            }
            Some(_) => JournalError::Unavailable(problem),
            // No answer: it may have committed.
            None => JournalError::Ambiguous(problem),
        }
    }

    fn read_leader(&mut self) -> Result<(i64, String, bool), JournalError> {
        let connection = self.connection()?;
        let row =
            connection.client.query_one("SELECT epoch, holder, expires_at < now() FROM zhifu_leader WHERE id = 1", &[]);
        match row {
            Ok(row) => Ok((row.get(0), row.get(1), row.get(2))),
            Err(error) => Err(self.read_failed(&error)),
        }
    }

    /// A failed read: nothing was written, so never ambiguous.
    fn read_failed(&mut self, error: &postgres::Error) -> JournalError {
        self.client = None;
        JournalError::Unavailable(format!("{}: {error}", self.description))
    }
}

/// One statement, so one transaction: renew the lease if this node's epoch
/// holds it, and only then, and only if the group follows the log's last
/// record exactly, insert the group's rows. Anything else inserts nothing.
const APPEND: &str = "
    WITH lease AS (
        UPDATE zhifu_leader SET expires_at = now() + make_interval(secs => $4)
        WHERE id = 1 AND epoch = $5
        RETURNING epoch
    ), tail AS (
        SELECT coalesce((SELECT last_sequence FROM zhifu_log ORDER BY first_sequence DESC LIMIT 1), 0) AS last
    )
    INSERT INTO zhifu_log (first_sequence, last_sequence, epoch, records)
    SELECT first_sequence, last_sequence, lease.epoch, records
    FROM unnest($1::int8[], $2::int8[], $3::bytea[]) AS rows(first_sequence, last_sequence, records), lease, tail
    WHERE tail.last = $6";

/// The rows from the one holding the record after `$1` on, in order: both
/// by the primary key's index (the log is contiguous, so that row is the
/// last one starting at or before it).
const READ: &str = "
    SELECT first_sequence, last_sequence, records FROM zhifu_log
    WHERE first_sequence >= coalesce(
        (SELECT first_sequence FROM zhifu_log WHERE first_sequence <= $1::int8 + 1 ORDER BY first_sequence DESC LIMIT 1), 0)
    ORDER BY first_sequence LIMIT $2";

/// Makes the tables if they are missing; returns the schema version an
/// existing log was written in (`None`: a new one, of this version).
fn create_schema(client: &mut Client) -> Result<Option<i32>, postgres::Error> {
    let mut transaction = client.transaction()?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])?;
    transaction.batch_execute(
        "CREATE TABLE IF NOT EXISTS zhifu_schema (version int NOT NULL);
         CREATE TABLE IF NOT EXISTS zhifu_log (
             first_sequence bigint PRIMARY KEY,
             last_sequence bigint NOT NULL,
             epoch bigint NOT NULL,
             records bytea NOT NULL
         ) WITH (toast_tuple_target = 8160);
         CREATE TABLE IF NOT EXISTS zhifu_leader (
             id int PRIMARY KEY CHECK (id = 1),
             epoch bigint NOT NULL,
             holder text NOT NULL,
             expires_at timestamptz NOT NULL
         );
         INSERT INTO zhifu_leader VALUES (1, 0, '', now()) ON CONFLICT (id) DO NOTHING;
         CREATE TABLE IF NOT EXISTS zhifu_format (
             id int PRIMARY KEY CHECK (id = 1),
             record text NOT NULL
         );
         CREATE TABLE IF NOT EXISTS zhifu_nodes (
             node text PRIMARY KEY,
             applied bigint NOT NULL,
             seen_at timestamptz NOT NULL
         );",
    )?;
    let versions: Vec<i32> =
        transaction.query("SELECT version FROM zhifu_schema", &[])?.iter().map(|row| row.get(0)).collect();
    if versions.is_empty() {
        transaction.execute("INSERT INTO zhifu_schema VALUES ($1)", &[&SCHEMA_VERSION])?;
    }
    transaction.commit()?;
    Ok(versions.iter().copied().find(|&version| version != SCHEMA_VERSION).or(versions.first().copied()))
}

impl LogStore for PostgresLog {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn first_sequence(&mut self) -> Result<Option<u64>, JournalError> {
        let connection = self.connection()?;
        let row = connection.client.query_one("SELECT min(first_sequence) FROM zhifu_log", &[]);
        match row {
            Ok(row) => Ok(row.get::<_, Option<i64>>(0).map(|first| first as u64)),
            Err(error) => Err(self.read_failed(&error)),
        }
    }

    fn read_after(&mut self, after: u64, limit: u64, visit: &mut Visit<'_>) -> Result<u64, JournalError> {
        let description = self.description.clone();
        let mut next = after + 1;
        let mut read = 0;
        while read < limit {
            let connection = self.connection()?;
            let rows = connection.client.query(&connection.read, &[&(next as i64 - 1), &ROWS_PER_READ]);
            let rows = match rows {
                Ok(rows) => rows,
                Err(error) => return Err(self.read_failed(&error)),
            };
            if rows.is_empty() {
                break;
            }
            let full = rows.len() as i64 == ROWS_PER_READ;
            for row in rows {
                let first: i64 = row.get(0);
                if first as u64 > next {
                    return Err(JournalError::Gap {
                        path: description.clone().into(),
                        detail: format!("expected record {next} next, the log goes on at {first}"),
                    });
                }
                let records = decompress(row.get(2), &description, first)?;
                for (sequence, payload) in records_of(&records, &description)? {
                    if sequence < next {
                        continue;
                    }
                    if sequence != next {
                        return Err(JournalError::Gap {
                            path: description.clone().into(),
                            detail: format!("expected record {next} next, found {sequence}"),
                        });
                    }
                    if read == limit {
                        return Ok(read);
                    }
                    visit(sequence, payload)?;
                    next += 1;
                    read += 1;
                }
            }
            if !full {
                break;
            }
        }
        Ok(read)
    }

    fn append(&mut self, first: u64, payloads: &[&[u8]]) -> Result<(), JournalError> {
        let Some(epoch) = self.epoch else {
            return Err(JournalError::NotLeader { leader: self.last_leader.clone() });
        };
        self.appending_epoch = Some(epoch);
        let rows = rows_of(first, payloads)?;
        let (firsts, lasts, records): (Vec<i64>, Vec<i64>, Vec<Vec<u8>>) = rows.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut firsts, mut lasts, mut records), (first, last, bytes)| {
                firsts.push(first as i64);
                lasts.push(last as i64);
                records.push(bytes);
                (firsts, lasts, records)
            },
        );
        let expected = firsts.len() as u64;
        let lease = self.lease.as_secs_f64();
        let connection = self.connection()?;
        let follows = first as i64 - 1;
        let inserted =
            connection.client.execute(&connection.append, &[&firsts, &lasts, &records, &lease, &epoch, &follows]);
        match inserted {
            Ok(count) if count == expected => Ok(()),
            // The lease is another epoch's (another node took the lead), or
            // the log goes on past what this node saw: it no longer leads.
            Ok(_) => {
                self.epoch = None;
                Err(JournalError::NotLeader { leader: self.last_leader.clone() })
            }
            Err(error) => Err(self.failed(&error)),
        }
    }

    /// Waits (up to the lock timeout, then says `Unavailable`) for any
    /// statement of this node still in flight — it holds the lease row —
    /// then looks for the group's first row: there, and written under this
    /// node's epoch, it committed; absent, or another node's, it did not.
    fn committed(&mut self, first: u64, _count: u64) -> Result<bool, JournalError> {
        let Some(epoch) = self.appending_epoch else { return Ok(false) };
        let connection = self.connection()?;
        let settled = (|| -> Result<Option<i64>, postgres::Error> {
            let mut transaction = connection.client.transaction()?;
            transaction.batch_execute(&format!("SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))?;
            transaction.query_one("SELECT epoch FROM zhifu_leader WHERE id = 1 FOR UPDATE", &[])?;
            let row =
                transaction.query_opt("SELECT epoch FROM zhifu_log WHERE first_sequence = $1", &[&(first as i64)])?;
            transaction.commit()?;
            Ok(row.map(|row| row.get(0)))
        })();
        match settled {
            Ok(Some(written)) if written == epoch => Ok(true),
            Ok(Some(_)) => {
                // Another leader's records are there: this node leads no more.
                self.epoch = None;
                Ok(false)
            }
            Ok(None) => Ok(false),
            Err(error) => Err(self.read_failed(&error)),
        }
    }

    /// The log is kept: a new node catches up from it.
    fn release(&mut self, _sequence: u64) -> Result<(), JournalError> {
        Ok(())
    }

    fn lead(&mut self) -> Result<Lead, JournalError> {
        let lease = self.lease.as_secs_f64();
        if let Some(epoch) = self.epoch {
            let connection = self.connection()?;
            let renewed = connection.client.execute(
                "UPDATE zhifu_leader SET expires_at = now() + make_interval(secs => $1) WHERE id = 1 AND epoch = $2",
                &[&lease, &epoch],
            );
            return match renewed {
                Ok(1) => Ok(Lead::Leader),
                Ok(_) => {
                    self.epoch = None;
                    let (_, holder, _) = self.read_leader()?;
                    self.last_leader = leader_name(&holder);
                    Ok(Lead::Follower { leader: self.last_leader.clone() })
                }
                Err(error) => Err(self.read_failed(&error)),
            };
        }
        let due = self.last_takeover_check.is_none_or(|at| at.elapsed() >= TAKEOVER_CHECK_INTERVAL);
        if !due {
            return Ok(Lead::Follower { leader: self.last_leader.clone() });
        }
        self.last_takeover_check = Some(std::time::Instant::now());
        let (_, holder, expired) = self.read_leader()?;
        self.last_leader = leader_name(&holder);
        if !expired {
            return Ok(Lead::Follower { leader: self.last_leader.clone() });
        }
        let node = self.node.clone();
        let connection = self.connection()?;
        let taken = connection.client.query_opt(
            "UPDATE zhifu_leader SET epoch = epoch + 1, holder = $1, expires_at = now() + make_interval(secs => $2)
             WHERE id = 1 AND expires_at < now() RETURNING epoch",
            &[&node, &lease],
        );
        match taken {
            Ok(Some(row)) => {
                self.epoch = Some(row.get(0));
                self.last_leader = None;
                Ok(Lead::Leader)
            }
            Ok(None) => Ok(Lead::Follower { leader: self.last_leader.clone() }),
            Err(error) => Err(self.read_failed(&error)),
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn format_record(&mut self) -> Result<Option<String>, JournalError> {
        let connection = self.connection()?;
        match connection.client.query_opt("SELECT record FROM zhifu_format WHERE id = 1", &[]) {
            Ok(row) => Ok(row.map(|row| row.get(0))),
            Err(error) => Err(self.read_failed(&error)),
        }
    }

    fn set_format_record(&mut self, text: &str) -> Result<(), JournalError> {
        let connection = self.connection()?;
        let inserted =
            connection.client.execute("INSERT INTO zhifu_format VALUES (1, $1) ON CONFLICT (id) DO NOTHING", &[&text]);
        inserted.map(drop).map_err(|error| self.read_failed(&error))
    }

    fn followers(&mut self) -> Vec<crate::Follower> {
        let Some(me) = leader_name(&self.node) else { return Vec::new() };
        let Ok(connection) = self.connection() else { return Vec::new() };
        let rows = connection.client.query(
            "SELECT node, applied, (extract(epoch FROM now() - seen_at) * 1000)::int8 FROM zhifu_nodes
             WHERE seen_at > now() - interval '60 seconds' AND node <> $1 ORDER BY node LIMIT 32",
            &[&me],
        );
        let Ok(rows) = rows else { return Vec::new() };
        rows.iter()
            .filter_map(|row| {
                let applied = u64::try_from(row.try_get::<_, i64>(1).ok()?).ok()?;
                let seen = row.try_get::<_, Option<i64>>(2).ok().flatten().and_then(|ms| u64::try_from(ms).ok());
                Some(crate::Follower { node: row.try_get(0).ok()?, applied, seen_ms_ago: seen.unwrap_or(0) })
            })
            .collect()
    }

    fn report_applied(&mut self, applied: u64) {
        let Some(me) = leader_name(&self.node) else { return };
        let Ok(applied) = i64::try_from(applied) else { return };
        let Ok(connection) = self.connection() else { return };
        let _ = connection.client.execute(
            "INSERT INTO zhifu_nodes VALUES ($1, $2, now())
             ON CONFLICT (node) DO UPDATE SET applied = excluded.applied, seen_at = excluded.seen_at",
            &[&me, &applied],
        );
    }

    fn replicas(&mut self) -> Vec<crate::Replica> {
        // Figures only: a store that does not answer shows none (the lease
        // renewal just before reports the store's problems).
        let Ok(connection) = self.connection() else { return Vec::new() };
        let rows = connection.client.query(
            "SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
                    (extract(epoch FROM replay_lag) * 1000)::int8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8
             FROM pg_stat_replication ORDER BY application_name LIMIT 32",
            &[],
        );
        let Ok(rows) = rows else { return Vec::new() };
        rows.iter()
            .map(|row| {
                let text = |column: usize| row.try_get::<_, String>(column).unwrap_or_default();
                let number = |column: usize| {
                    row.try_get::<_, Option<i64>>(column).ok().flatten().and_then(|n| u64::try_from(n).ok())
                };
                crate::Replica {
                    name: text(0),
                    state: text(1),
                    sync_state: text(2),
                    replay_lag_ms: number(3),
                    behind_bytes: number(4),
                }
            })
            .collect()
    }
}

/// A lease holder's name without its process token.
fn leader_name(holder: &str) -> Option<String> {
    let name = holder.rsplit_once(' ').map_or(holder, |(name, _)| name);
    (!name.is_empty()).then(|| name.to_string())
}

/// The records of a group as rows: `(first, last, compressed records)`,
/// each row's records framed as in the file log.
fn rows_of(first: u64, payloads: &[&[u8]]) -> Result<Vec<(u64, u64, Vec<u8>)>, JournalError> {
    let mut rows = Vec::new();
    let mut start = 0;
    while start < payloads.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < payloads.len() && (end == start || bytes + payloads[end].len() <= ROW_RECORD_BYTES_TARGET) {
            bytes += wal::HEADER_BYTES + payloads[end].len();
            end += 1;
        }
        push_rows(first, payloads, start, end, &mut rows)?;
        start = end;
    }
    Ok(rows)
}

/// Records `start..end` as one row, or halves of them while the row is too
/// big compressed (a single record stays one row, however big).
fn push_rows(
    first: u64,
    payloads: &[&[u8]],
    start: usize,
    end: usize,
    rows: &mut Vec<(u64, u64, Vec<u8>)>,
) -> Result<(), JournalError> {
    let mut framed = Vec::new();
    for (index, payload) in payloads.iter().enumerate().take(end).skip(start) {
        wal::encode_record(first + index as u64, first, payload, &mut framed);
    }
    let compressed = compress_row(&framed)?;
    if compressed.len() > ROW_BYTES_MAX && end - start > 1 {
        let middle = start + (end - start) / 2;
        push_rows(first, payloads, start, middle, rows)?;
        return push_rows(first, payloads, middle, end, rows);
    }
    rows.push((first + start as u64, first + end as u64 - 1, compressed));
    Ok(())
}

/// A row's bytes: the records' length (4 bytes, little-endian, below
/// 2^31), then the records as an LZ4 block.
fn compress_row(records: &[u8]) -> Result<Vec<u8>, JournalError> {
    let failed = |why: String| JournalError::Failed(format!("cannot compress a group for PostgreSQL: {why}"));
    let length = i32::try_from(records.len()).map_err(|_| failed(format!("{} bytes", records.len())))?;
    let mut row = length.to_le_bytes().to_vec();
    lzzzz::lz4::compress_to_vec(records, &mut row, lzzzz::lz4::ACC_LEVEL_DEFAULT)
        .map_err(|error| failed(error.to_string()))?;
    Ok(row)
}

/// LZ4 makes at most this many bytes of one: a row claiming more is damaged
/// (and never an allocation of that size).
const LZ4_EXPANSION_MAX: usize = 255;

fn decompress(row: &[u8], description: &str, first: i64) -> Result<Vec<u8>, JournalError> {
    let gap = |why: &str| JournalError::Gap {
        path: description.into(),
        detail: format!("the row of records from {first} does not decompress: {why}"),
    };
    let (length, block) = row.split_first_chunk::<4>().ok_or_else(|| gap("shorter than its length"))?;
    let length = usize::try_from(i32::from_le_bytes(*length)).map_err(|_| gap("a negative length"))?;
    if length > block.len().saturating_mul(LZ4_EXPANSION_MAX) + 16 {
        return Err(gap("a length beyond what its bytes can hold"));
    }
    let mut records = vec![0; length];
    match lzzzz::lz4::decompress(block, &mut records) {
        Ok(decompressed) if decompressed == length => Ok(records),
        Ok(_) => Err(gap("shorter than its length")),
        Err(error) => Err(gap(&error.to_string())),
    }
}

/// The records framed in a row: `(sequence, payload)`, each checked.
fn records_of<'a>(bytes: &'a [u8], description: &str) -> Result<Vec<(u64, &'a [u8])>, JournalError> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let Some(span) = wal::parse_record(bytes, offset) else {
            return Err(JournalError::Corrupt {
                path: description.into(),
                offset: offset as u64,
                reason: "a row of the log holds a damaged record",
            });
        };
        records.push((span.sequence, &bytes[span.payload_start..span.payload_end]));
        offset = span.payload_end;
    }
    Ok(records)
}

/// The URL without its password, for messages.
fn describe_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_becomes_rows_that_give_its_records_back() {
        let payloads: Vec<Vec<u8>> =
            (0..3_000u32).map(|n| format!("command {n} {}", "x".repeat((n % 97) as usize)).into_bytes()).collect();
        let borrowed: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let rows = rows_of(41, &borrowed).unwrap_or_default();
        assert!(rows.len() > 1, "several rows");
        let mut next = 41;
        for (first, last, compressed) in &rows {
            assert!(compressed.len() <= ROW_BYTES_MAX, "{}", compressed.len());
            assert_eq!(*first, next);
            let bytes = decompress(compressed, "test", *first as i64).unwrap_or_default();
            for (sequence, payload) in records_of(&bytes, "test").unwrap_or_default() {
                assert_eq!(sequence, next);
                assert_eq!(payload, payloads[(sequence - 41) as usize].as_slice());
                next += 1;
            }
            assert_eq!(*last, next - 1);
        }
        assert_eq!(next, 41 + 3_000);
    }

    /// A row is the records' length (little-endian) and a plain LZ4 block,
    /// as rows written before (by another LZ4 binding) are: here a block of
    /// five literals. A length its bytes cannot hold is a gap, not an
    /// allocation.
    #[test]
    fn a_row_is_a_length_and_an_lz4_block() {
        let row = [5, 0, 0, 0, 0x50, b'h', b'e', b'l', b'l', b'o'];
        assert_eq!(decompress(&row, "test", 1).ok(), Some(b"hello".to_vec()));
        let records = b"hello hello hello hello".repeat(40);
        let compressed = compress_row(&records).unwrap_or_default();
        assert_eq!(compressed[..4], (records.len() as u32).to_le_bytes());
        assert!(compressed.len() < records.len() / 4, "{} bytes", compressed.len());
        assert_eq!(decompress(&compressed, "test", 1).ok(), Some(records));
        let claims_too_much = [0, 0, 0, 0x10, 0x50, b'h', b'e', b'l', b'l', b'o'];
        assert!(matches!(decompress(&claims_too_much, "test", 1), Err(JournalError::Gap { .. })));
        assert!(matches!(decompress(&row[..3], "test", 1), Err(JournalError::Gap { .. })));
        let mut longer = row;
        longer[0] = 6;
        assert!(matches!(decompress(&longer, "test", 1), Err(JournalError::Gap { .. })));
    }

    #[test]
    fn urls_are_described_without_their_password() {
        assert_eq!(
            describe_url("postgresql://zhifu:secret@h1:5432,h2:5433/db"),
            "postgresql://zhifu@h1:5432,h2:5433/db"
        );
        assert_eq!(describe_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(leader_name("http://10.0.0.2:8080 0a1b"), Some("http://10.0.0.2:8080".to_string()));
        assert_eq!(leader_name(""), None);
    }
}
