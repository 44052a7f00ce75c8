//! The stdout thread against writers the tests control: order, stalls, shutdown.
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::config::Format;
use crate::hub::{sink_input, Outlet};
use crate::record::{Event, EventKind};

/// Larger than the buffer is written at, so lines span several writes.
const WRITE_SIZE: usize = 64 * 1024;

/// A writer the test can read back; writes in small pieces, as a pipe may.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(10_000);
        self.0.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that blocks in its first write until the test lets it go, like a pipe whose
/// reader stopped reading, then fails as that pipe does once its reader is gone.
struct Stalled(std_mpsc::Receiver<()>);

impl Write for Stalled {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        let _ = self.0.recv();
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn text(seq: u64, data: String) -> Event {
    Event::now(EventKind::Text {
        seq,
        data: data.into(),
    })
}

fn ndjson() -> Encoding {
    Encoding {
        format: Format::Ndjson,
        events: true,
        parse_json: false,
        binary_bytes: false,
    }
}

async fn written_by(encoding: Encoding, events: Vec<Event>) -> Vec<u8> {
    let out = Shared::default();
    let (input, receiver) = sink_input(4, 1 << 20);
    let stats = Arc::new(SinkStats::default());
    let task = tokio::spawn(StdoutSink::new(out.clone(), encoding).run(
        receiver,
        CancellationToken::new(),
        stats.clone(),
    ));
    let mut outlet = Outlet::fixed(vec![input]);
    let name: Arc<str> = Arc::from("feed");
    let count = events.len() as u64;
    for event in events {
        outlet.deliver(&name, event).await;
    }
    drop(outlet);
    task.await.unwrap().unwrap();
    assert_eq!(stats.records_written.load(Ordering::Relaxed), count);
    assert_eq!(stats.bytes_buffered.load(Ordering::Relaxed), 0);
    let bytes = out.0.lock().unwrap().clone();
    bytes
}

#[tokio::test]
async fn large_and_small_lines_come_out_whole_and_in_order() {
    let raw = Encoding {
        format: Format::Raw,
        events: true,
        parse_json: false,
        binary_bytes: false,
    };
    let ndjson = Encoding {
        format: Format::Ndjson,
        parse_json: true,
        ..raw
    };
    let mut events = vec![
        text(1, "small".into()),
        text(2, "x".repeat(3 * WRITE_SIZE)),
        text(
            3,
            format!("{}\nwith a \"break\"", "y".repeat(2 * WRITE_SIZE)),
        ),
        Event::now(EventKind::Binary {
            seq: 4,
            data: (0..2 * WRITE_SIZE + 1).map(|i| i as u8).collect(),
        }),
        text(5, format!("[{}1]", "1,\n".repeat(WRITE_SIZE))),
    ];
    // Many small ones, so that some are gathered into one write.
    events.extend((6..2006).map(|seq| text(seq, format!("line {seq}"))));
    for encoding in [raw, ndjson] {
        let mut expected = Vec::new();
        for event in &events {
            encoding.encode("feed", event, &mut expected);
        }
        let written = written_by(encoding, events.clone()).await;
        assert_eq!(written.len(), expected.len(), "{encoding:?}");
        assert!(
            written == expected,
            "{encoding:?}: the output differs from the encoded lines"
        );
    }
}

/// A reload stops a stdout sink while its upstreams still hold its input: it must end
/// after writing what was queued, not wait for them.
#[tokio::test]
async fn shutdown_writes_what_is_queued_and_ends_while_senders_remain() {
    let out = Shared::default();
    let (input, receiver) = sink_input(16, 1 << 20);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(StdoutSink::new(out.clone(), ndjson()).run(
        receiver,
        shutdown.clone(),
        Arc::new(SinkStats::default()),
    ));
    let mut outlet = Outlet::fixed(vec![input]);
    let name: Arc<str> = Arc::from("feed");
    for seq in 1..=3 {
        outlet.deliver(&name, text(seq, format!("m{seq}"))).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the sink ends on shutdown although its input is still open")
        .unwrap()
        .unwrap();
    let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(written.lines().count(), 3, "{written}");
    // The input is closed: a later batch is refused, not waited for.
    tokio::time::timeout(
        Duration::from_secs(30),
        outlet.deliver(&name, text(4, "late".into())),
    )
    .await
    .expect("a stopped sink never makes its upstreams wait");
}

/// The thread blocks in write(2), the runtime does not; a closed pipe is a normal ending
/// that lets the upstreams go on.
#[tokio::test]
async fn a_stalled_stdout_blocks_its_thread_only_and_a_closed_one_ends_the_sink() {
    let (release, stalled) = std_mpsc::channel();
    let (input, receiver) = sink_input(1, 1 << 20);
    let task = tokio::spawn(StdoutSink::new(Stalled(stalled), ndjson()).run(
        receiver,
        CancellationToken::new(),
        Arc::new(SinkStats::default()),
    ));
    let mut outlet = Outlet::fixed(vec![input]);
    let name: Arc<str> = Arc::from("feed");
    outlet.deliver(&name, text(1, "first".into())).await;
    // This test's runtime has one thread: this timer fires only if the write that is
    // stuck does not hold it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!task.is_finished());
    release.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the sink ends when its write fails")
        .unwrap();
    assert!(matches!(ended, Err(SinkError::BrokenPipe)), "{ended:?}");
    for seq in 2..10 {
        tokio::time::timeout(
            Duration::from_secs(30),
            outlet.deliver(&name, text(seq, "more".into())),
        )
        .await
        .expect("a sink that ended never makes its upstreams wait");
    }
}
