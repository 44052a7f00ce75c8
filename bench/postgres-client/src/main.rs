//! `postgres-client URL COUNT SIZE BATCH`: COPY COUNT rows (upstream, run, seq, ts, type,
//! data with a SIZE-byte JSON string) into the table `plain` in rounds of BATCH rows, one
//! transaction each; prints `rows N seconds S rows_per_s R`.

use std::pin::pin;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: postgres-client URL COUNT SIZE BATCH".into());
    }
    let count: u64 = args[2].parse()?;
    let size: usize = args[3].parse()?;
    let batch: u64 = args[4].parse()?;
    let (client, connection) = tokio_postgres::connect(&args[1], NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS plain; CREATE TABLE plain (upstream text NOT NULL, \
             run text NOT NULL, seq bigint, ts timestamptz NOT NULL, type text NOT NULL, data jsonb); \
             CREATE UNIQUE INDEX plain_once ON plain (upstream, run, seq)",
        )
        .await?;
    let pad = "x".repeat(size);
    let start = Instant::now();
    let mut seq = 0;
    while seq < count {
        let mut rows = BytesMut::new();
        for _ in 0..batch.min(count - seq) {
            seq += 1;
            rows.put_slice(
                format!("feed\tplain\t{seq}\t2026-01-01 00:00:00+00\ttext\t\"{pad}\"\n").as_bytes(),
            );
        }
        client.batch_execute("BEGIN").await?;
        let mut sink = pin!(client.copy_in::<_, Bytes>("COPY plain FROM STDIN").await?);
        sink.send(rows.freeze()).await?;
        sink.as_mut().finish().await?;
        client.batch_execute("COMMIT").await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "rows {count} seconds {secs:.3} rows_per_s {:.0}",
        count as f64 / secs
    );
    Ok(())
}
