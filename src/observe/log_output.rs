//! Where log lines go: stderr, in batches written by a thread of their own.
//!
//! At info every request writes an access line. Written from the request's own thread to an
//! unbuffered stderr (one `write` each, into a file or the journal) that cost hits 40–50 % of
//! their throughput. A writer thread fed through a channel (tracing-appender's) still cost
//! about as much CPU: it was woken for nearly every line, and each of its small writes also
//! woke the policy watcher when the log file sat in the watched directory (measured with
//! `perf`: 17 % of the proxy's samples in the writer, 10 % in the watcher). So here a
//! request appends its line to a shared buffer (a copy under a lock held that long, no
//! allocation, no wakeup) and the writer thread takes the whole buffer every
//! [`FLUSH_INTERVAL`] and writes it in one go. The buffer holds at most [`queue_lines`]
//! lines: when the writer cannot keep up (a stalled disk, a full pipe), further lines are
//! dropped rather than slowing requests, and counted in `cachalot_log_lines_dropped_total`.
//! What is buffered is written before the process exits (the [`Flush`] guard, held by
//! `cachalot run` until it returns).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How often the writer writes out what was buffered: the longest a line waits.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How long the process waits at exit for the last write (a writer stuck on a pipe nobody
/// reads must not keep it from exiting).
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Lines buffered at most by default: a quarter second at 60k requests/s, about 4 MiB of
/// access lines.
const DEFAULT_QUEUE_LINES: usize = 16_384;

/// The environment variable that sets how many lines may wait for the writer.
pub const QUEUE_LINES_ENV: &str = "CACHALOT_LOG_QUEUE_LINES";

/// Lines dropped so far by this process's log output.
static DROPPED: OnceLock<Arc<Shared>> = OnceLock::new();

/// The buffer requests append to and the writer empties.
struct Shared {
    pending: Mutex<Pending>,
    limit: usize,
    dropped: AtomicU64,
    closing: AtomicBool,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

/// The log subscriber's writer: each `write` is one formatted line, appended to the buffer.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.lines >= self.0.limit {
            drop(pending);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.bytes.extend_from_slice(line);
            pending.lines += 1;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes out what is buffered when dropped, waiting [`EXIT_WAIT`] at most.
pub struct Flush {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
    done: mpsc::Receiver<()>,
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.writer.unpark();
        let _ = self.done.recv_timeout(EXIT_WAIT);
    }
}

/// Starts the writer thread for stderr: the writer to give the log subscriber, and the
/// guard that writes out the rest at exit. Call once per process (the metric counts the
/// first output's drops).
pub fn stderr() -> (Lines, Flush) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        limit: queue_lines(),
        dropped: AtomicU64::new(0),
        closing: AtomicBool::new(false),
    });
    let (done_tx, done) = mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("cachalot-log".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || {
                write_batches(&shared, std::io::stderr());
                let _ = done_tx.send(());
            }
        })
        .expect("a thread can be started");
    let _ = DROPPED.set(Arc::clone(&shared));
    let flush = Flush {
        shared: Arc::clone(&shared),
        writer: writer.thread().clone(),
        done,
    };
    (Lines(shared), flush)
}

/// The writer thread: every interval (or at once when closing), swaps the buffer for an
/// empty one and writes what it held; returns after the write that follows closing.
fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        std::thread::park_timeout(FLUSH_INTERVAL);
        let closing = shared.closing.load(Ordering::Acquire);
        {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut batch, &mut pending.bytes);
            pending.lines = 0;
        }
        if !batch.is_empty() {
            // Nowhere to report a failed log write: the next batch tries again.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
        if closing {
            return;
        }
    }
}

/// The buffer's length in lines: `CACHALOT_LOG_QUEUE_LINES` when it is a positive number,
/// else 16384.
pub fn queue_lines() -> usize {
    std::env::var(QUEUE_LINES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_QUEUE_LINES)
}

/// Copies the dropped-line count into `cachalot_log_lines_dropped_total` (0 where the log
/// does not go through the buffer, as in a test process): called before each render of
/// `/metrics`, so the counter costs the logging path nothing.
pub fn publish_dropped() {
    let dropped = DROPPED
        .get()
        .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed));
    metrics::counter!("cachalot_log_lines_dropped_total").absolute(dropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(limit: usize) -> Arc<Shared> {
        Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            limit,
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        })
    }

    #[test]
    fn lines_over_the_limit_are_dropped_and_counted() {
        let shared = shared(2);
        let mut lines = Lines(Arc::clone(&shared));
        for line in ["a\n", "b\n", "c\n"] {
            lines.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(shared.pending.lock().unwrap().bytes, b"a\nb\n");
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn closing_writes_what_is_buffered_and_stops() {
        let shared = shared(10);
        Lines(Arc::clone(&shared)).write_all(b"last\n").unwrap();
        shared.closing.store(true, Ordering::Release);
        let mut out = Vec::new();
        write_batches(&shared, &mut out);
        assert_eq!(out, b"last\n");
    }
}
