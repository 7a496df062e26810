//! Connection log lines, off the workers' threads. Each worker collects its
//! lines and hands them over when it runs out of work (or at 64 KiB) into
//! one shared buffer, without a system call or a wake-up; one writer thread
//! takes that buffer every 10 ms while lines come (less often when none do,
//! down to every 100 ms) and writes it, so under load one write covers many
//! connections and a worker never blocks on stdout nor wakes the writer per
//! connection. A reader that stalls (a full pipe) costs log lines, counted
//! and reported at the end, never service or memory.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A worker hands its lines over at this size even while it has work, and
/// the writer is woken at once when this much waits.
const BATCH: usize = 64 << 10;
/// Lines waiting for the writer beyond this are dropped (and counted).
const MAX_BACKLOG: usize = 16 << 20;
/// How often the writer looks for lines while they come...
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// ...and at most how long it sleeps when none came.
const LONGEST_NAP: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Shared {
    /// Lines handed over, not yet taken by the writer.
    handed: Mutex<String>,
    /// Bytes handed over and not written yet.
    backlog: AtomicUsize,
    dropped_lines: AtomicU64,
    /// The server is stopping: write what is handed over, then end.
    closing: AtomicBool,
}

impl Shared {
    fn take_handed(&self) -> String {
        std::mem::take(&mut *self.handed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What the log lost: lines dropped while serving, and bytes still
/// unwritten when the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnd {
    pub dropped_lines: u64,
    pub unwritten_bytes: usize,
}

impl std::fmt::Display for LogEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.dropped_lines, self.unwritten_bytes) {
            (0, 0) => f.write_str("every log line written"),
            (lines, 0) => write!(f, "{lines} log lines dropped: stdout was not read fast enough (or not at all)"),
            (lines, bytes) => write!(
                f,
                "{lines} log lines dropped and {bytes} bytes of lines unwritten at the end: stdout is not being read"
            ),
        }
    }
}

/// The writer thread; [`LineLog::sink`] gives the workers' side.
#[derive(Debug)]
pub struct LineLog {
    sink: LineSink,
    thread: JoinHandle<()>,
}

/// Where a worker queues its lines (cheap to clone, one per worker).
#[derive(Debug, Clone)]
pub struct LineSink {
    shared: Arc<Shared>,
    /// The writer, woken when a full batch waits or the server stops.
    writer: std::thread::Thread,
}

thread_local! {
    /// This thread's lines not handed over yet.
    static PENDING: RefCell<String> = const { RefCell::new(String::new()) };
}

impl LineLog {
    /// Starts the writer, writing to `out`.
    pub fn start(mut out: impl Write + Send + 'static) -> std::io::Result<LineLog> {
        let shared = Arc::new(Shared::default());
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new().name("log".into()).spawn(move || {
            let shared = writer_shared;
            let mut broken = false;
            let mut nap = WRITE_EVERY;
            loop {
                // Read before taking: lines handed over before the close are in this take.
                let closing = shared.closing.load(Ordering::Acquire);
                let lines = shared.take_handed();
                if lines.is_empty() {
                    if closing {
                        return;
                    }
                    nap = (nap * 2).min(LONGEST_NAP);
                    std::thread::park_timeout(nap);
                    continue;
                }
                // After a write error (the reader is gone) lines are only counted.
                broken = broken || out.write_all(lines.as_bytes()).and_then(|()| out.flush()).is_err();
                if broken {
                    let n = lines.matches('\n').count() as u64;
                    shared.dropped_lines.fetch_add(n, Ordering::Relaxed);
                }
                shared.backlog.fetch_sub(lines.len(), Ordering::Relaxed);
                if !closing {
                    nap = WRITE_EVERY;
                    std::thread::park_timeout(nap);
                }
            }
        })?;
        let writer = thread.thread().clone();
        Ok(LineLog { sink: LineSink { shared, writer }, thread })
    }

    pub fn sink(&self) -> LineSink {
        self.sink.clone()
    }

    /// Writes what was handed over, for `patience` at most (stdout may be a
    /// pipe nobody reads: a server must still stop), and says what was lost.
    pub fn finish(self, patience: Duration) -> LogEnd {
        self.sink.shared.closing.store(true, Ordering::Release);
        self.sink.writer.unpark();
        let deadline = Instant::now() + patience;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = self.thread.is_finished();
        if finished {
            let _ = self.thread.join();
        }
        LogEnd {
            dropped_lines: self.sink.shared.dropped_lines.load(Ordering::Relaxed),
            // A writer stuck in a write: what it holds and what waits behind it.
            unwritten_bytes: if finished { 0 } else { self.sink.shared.backlog.load(Ordering::Relaxed) },
        }
    }
}

impl LineSink {
    /// Queues one line on this thread; handed over at 64 KiB (`BATCH`).
    pub fn queue(&self, line: &str) {
        PENDING.with_borrow_mut(|pending| {
            pending.push_str(line);
            pending.push('\n');
            if pending.len() >= BATCH {
                self.hand_over(std::mem::take(pending));
            }
        });
    }

    /// Hands this thread's queued lines to the writer (a worker's idle hook).
    pub fn flush(&self) {
        let lines = PENDING.with_borrow_mut(std::mem::take);
        if !lines.is_empty() {
            self.hand_over(lines);
        }
    }

    fn hand_over(&self, lines: String) {
        let backlog = self.shared.backlog.fetch_add(lines.len(), Ordering::Relaxed);
        if backlog + lines.len() > MAX_BACKLOG {
            self.shared.backlog.fetch_sub(lines.len(), Ordering::Relaxed);
            self.shared.dropped_lines.fetch_add(lines.matches('\n').count() as u64, Ordering::Relaxed);
            return;
        }
        let waiting = {
            let mut handed = self.shared.handed.lock().unwrap_or_else(PoisonError::into_inner);
            if handed.is_empty() {
                *handed = lines;
            } else {
                handed.push_str(&lines);
            }
            handed.len()
        };
        if waiting >= BATCH {
            self.writer.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer whose first write waits until released: a reader that stalls.
    struct Stalled(Option<mpsc::Receiver<()>>, Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.0.take() {
                let _ = gate.recv();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_a_stalled_reader_costs_lines_not_memory() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = LineLog::start(SharedVec(written.clone())).unwrap();
        let sink = log.sink();
        sink.queue("one");
        sink.queue("two");
        sink.flush();
        assert_eq!(log.finish(Duration::from_secs(5)), LogEnd { dropped_lines: 0, unwritten_bytes: 0 });
        assert_eq!(&*written.lock().unwrap(), b"one\ntwo\n");

        // The writer is stuck in its first write: everything past the backlog cap is dropped.
        let (release, gate) = mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = LineLog::start(Stalled(Some(gate), written.clone())).unwrap();
        let sink = log.sink();
        let line = "x".repeat(1023);
        let lines = 2 * MAX_BACKLOG / 1024;
        for _ in 0..lines {
            sink.queue(&line);
        }
        sink.flush();
        assert!(sink.shared.backlog.load(Ordering::Relaxed) <= MAX_BACKLOG);
        release.send(()).unwrap();
        let dropped = log.finish(Duration::from_secs(60)).dropped_lines;
        let kept = written.lock().unwrap().len() / 1024;
        assert!(dropped > 0 && kept > 0, "dropped {dropped}, kept {kept}");
        assert_eq!(dropped as usize + kept, lines, "every line written or counted");
    }

    #[test]
    fn a_reader_that_never_reads_does_not_stop_the_end() {
        let (_never, gate) = mpsc::channel();
        let log = LineLog::start(Stalled(Some(gate), Arc::default())).unwrap();
        log.sink().queue("stuck");
        log.sink().flush();
        let started = Instant::now();
        let end = log.finish(Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(end, LogEnd { dropped_lines: 0, unwritten_bytes: 6 });
        assert!(end.to_string().contains("stdout is not being read"), "{end}");
    }

    /// Lines handed over are written by the writer's own rounds, while the
    /// server runs (a `tail -f` of the log sees them), not only at the end.
    #[test]
    fn lines_are_written_while_the_server_runs() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = LineLog::start(SharedVec(written.clone())).unwrap();
        let sink = log.sink();
        for round in 0..3 {
            // After a quiet spell, too: the writer's longer naps end.
            std::thread::sleep(LONGEST_NAP * round);
            sink.queue(&format!("line {round}"));
            sink.flush();
            let deadline = Instant::now() + Duration::from_secs(10);
            let expected = format!("line {round}\n");
            while !String::from_utf8_lossy(&written.lock().unwrap()).ends_with(&expected) {
                assert!(Instant::now() < deadline, "line {round} not written while running");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(log.finish(Duration::from_secs(5)), LogEnd { dropped_lines: 0, unwritten_bytes: 0 });
        assert_eq!(&*written.lock().unwrap(), b"line 0\nline 1\nline 2\n");
    }

    /// A writer into a shared buffer.
    struct SharedVec(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedVec {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
