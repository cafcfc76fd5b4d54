//! PostgreSQL: the `metrics` table, idempotent batch inserts and the read-back query.
//!
//! A row is identified by where it came from — (source_topic, source_partition,
//! source_offset) is the primary key — so inserting a batch twice (a sink that crashed after
//! the database commit but before the offset commit) leaves one row per message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

use crate::metric::Metric;

/// A row ready to insert: the metric and where it was read.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: Metric,
    pub partition: i32,
    pub offset: i64,
}

/// A stored metric read back for `GET /api/v1/metrics`.
#[derive(Debug, serde::Serialize)]
pub struct StoredMetric {
    pub name: String,
    pub value: f64,
    pub timestamp: String,
    pub labels: serde_json::Value,
    pub partition: i32,
    pub offset: i64,
}

/// Table names are interpolated into SQL, so only plain identifiers are allowed.
pub fn check_table_name(table: &str) -> Result<(), String> {
    let ok = !table.is_empty()
        && table.len() <= 63
        && table
            .bytes()
            .enumerate()
            .all(|(i, c)| c == b'_' || c.is_ascii_lowercase() || (i > 0 && c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "table name {table:?}: use lower-case letters, digits and '_' (at most 63 bytes)"
        ))
    }
}

/// How long an insert or a query may take before its connection is given up.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a connection; its driver task runs on the current runtime until the connection ends.
/// Unless the URL says otherwise, connecting gives up after 10 s and idle connections are
/// probed (TCP keepalive), so a dead server is noticed rather than waited for.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %describe(&err), "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Creates the table and its indexes if missing. Several sinks starting at once serialize on
/// an advisory lock, because concurrent `CREATE TABLE IF NOT EXISTS` can still collide.
async fn ensure_schema(client: &mut Client, table: &str) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('sluice-sink-schema'))",
        &[],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            time timestamptz NOT NULL,
            name text NOT NULL,
            value double precision NOT NULL,
            labels jsonb NOT NULL DEFAULT '{{}}',
            source_topic text NOT NULL,
            source_partition integer NOT NULL,
            source_offset bigint NOT NULL,
            PRIMARY KEY (source_topic, source_partition, source_offset)
        );
        CREATE INDEX IF NOT EXISTS {table}_name_time ON {table} (name, time DESC);
        CREATE INDEX IF NOT EXISTS {table}_time ON {table} (time DESC);"
    ))
    .await?;
    tx.commit().await
}

/// A connection with the insert statement prepared for its table.
#[derive(Debug)]
pub struct Writer {
    client: Client,
    insert: tokio_postgres::Statement,
    /// An insert timed out: its outcome is unknown and the connection may be stuck.
    abandoned: std::sync::atomic::AtomicBool,
}

impl Writer {
    /// Connects, creates the schema if missing and prepares the insert.
    pub async fn connect(url: &str, table: &str) -> Result<Writer, tokio_postgres::Error> {
        let mut client = connect(url).await?;
        ensure_schema(&mut client, table).await?;
        // One statement with array parameters: a single round trip and a single implicit
        // transaction whatever the batch size.
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} (time, name, value, labels, source_topic, source_partition, source_offset)
                 SELECT t, n, v, l::jsonb, $5, p, o
                 FROM UNNEST($1::timestamptz[], $2::text[], $3::float8[], $4::text[], $6::int4[], $7::int8[])
                      AS u(t, n, v, l, p, o)
                 ON CONFLICT DO NOTHING"
            ))
            .await?;
        Ok(Writer {
            client,
            insert,
            abandoned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Closed, or abandoned after a timeout: needs a new connection.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.abandoned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inserts `rows` atomically; rows already present (same topic, partition and offset)
    /// are skipped. Returns how many were new, or what went wrong (after
    /// [`STATEMENT_TIMEOUT`], a timeout; the connection is then abandoned).
    pub async fn insert(&self, topic: &str, rows: &[Row]) -> Result<u64, String> {
        match tokio::time::timeout(STATEMENT_TIMEOUT, self.insert_rows(topic, rows)).await {
            Ok(result) => result.map_err(|e| describe(&e)),
            Err(_) => {
                self.abandoned
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Err(format!("no answer within {STATEMENT_TIMEOUT:?}"))
            }
        }
    }

    async fn insert_rows(&self, topic: &str, rows: &[Row]) -> Result<u64, tokio_postgres::Error> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut times = Vec::with_capacity(rows.len());
        let mut names = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        let mut labels = Vec::with_capacity(rows.len());
        let mut partitions = Vec::with_capacity(rows.len());
        let mut offsets = Vec::with_capacity(rows.len());
        for row in rows {
            times.push(system_time(row.metric.timestamp_micros));
            names.push(row.metric.name.as_str());
            values.push(row.metric.value);
            labels.push(row.metric.labels_json());
            partitions.push(row.partition);
            offsets.push(row.offset);
        }
        self.client
            .execute(
                &self.insert,
                &[
                    &times,
                    &names,
                    &values,
                    &labels,
                    &topic,
                    &partitions,
                    &offsets,
                ],
            )
            .await
    }
}

/// The newest metrics first, optionally of one name and from a time on.
pub async fn query(
    client: &Client,
    table: &str,
    name: Option<&str>,
    since_micros: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredMetric>, tokio_postgres::Error> {
    let since = since_micros.map(system_time);
    let sql = format!(
        "SELECT name, value, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                labels::text, source_partition, source_offset
         FROM {table}
         WHERE ($1::text IS NULL OR name = $1) AND ($2::timestamptz IS NULL OR time >= $2)
         ORDER BY time DESC, source_partition, source_offset DESC
         LIMIT $3"
    );
    let rows = client.query(&sql, &[&name, &since, &limit]).await?;
    // try_get: a table of that name with other column types is an error, not a panic.
    rows.iter()
        .map(|row| {
            Ok(StoredMetric {
                name: row.try_get(0)?,
                value: row.try_get(1)?,
                timestamp: row.try_get(2)?,
                labels: serde_json::from_str(row.try_get::<_, &str>(3)?).unwrap_or_default(),
                partition: row.try_get(4)?,
                offset: row.try_get(5)?,
            })
        })
        .collect()
}

/// The error with its causes: tokio-postgres puts the server's message in the source.
pub fn describe(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn system_time(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(check_table_name("metrics").is_ok());
        assert!(check_table_name("metrics_2026").is_ok());
        for bad in [
            "",
            "Metrics",
            "1metrics",
            "metrics; DROP TABLE x",
            "a.b",
            &"m".repeat(64),
        ] {
            assert!(check_table_name(bad).is_err(), "{bad:?}");
        }
    }
}
