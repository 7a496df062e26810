//! `tfo serve`: an echo server with TFO, one log line per connection.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fastopen::keyfile::KeyFile;
use fastopen::{FastOpenKey, ListenerBuilder};
use std::sync::Arc;

use crate::addr;
use crate::client_opts::parse_timeout;
use crate::report;
use fastopen_tools::echo::{self, Protocol};
use fastopen_tools::linelog::LineLog;
use fastopen_tools::workers::{self, Listeners, Workers};

/// Echo server with TCP Fast Open (the walkthrough's server, done properly).
///
/// Listens with TCP_FASTOPEN set and echoes what each client sends. Each
/// connection gets one log line saying whether its data came in the SYN
/// ("data in SYN: 9 bytes") or by a regular handshake. With --http it answers
/// each request with a valid HTTP/1.1 200 whose body is the request, so that
/// `curl --tcp-fastopen` works against it.
///
/// Server TFO must be on in this network namespace (bit 0x2 of
/// net.ipv4.tcp_fastopen); if it is not, tfo serve says so and serves plain TCP.
///
/// Limits: at most --max-connections at once per worker (4096; the rest wait
/// in the listen queue); a connection with no traffic for --idle-timeout is
/// closed, and none lives longer than --max-lifetime; an HTTP request must
/// arrive whole within --request-timeout (else 408) with a body of at most
/// --max-body bytes (else 413) and a head of at most 64 KiB (else 431), parsed
/// once when whole; `Expect: 100-continue` is answered; HEAD gets no body;
/// CONNECT gets 405. At
/// the file descriptor limit the server backs off 100 ms between accepts and
/// logs the problem once every 5 s.
///
/// Workers: one per core (--workers N), each a thread with its own listener
/// on the address (one SO_REUSEPORT group, as nginx's `reuseport`; an address
/// already in use is still refused). --queue is per worker. Log lines are
/// written in batches by a thread of their own; if stdout is not read, lines
/// are dropped and counted, and serving goes on.
///
/// Keys: --key-file names a file holding a key (32 hex digits, or the sysctl
/// form w-w-w-w) or "primary,backup". Send SIGHUP to re-read it: a new single
/// key becomes primary and the previous one the backup, so cookies already
/// given out keep working (rotation).
///
/// Signals: SIGINT and SIGTERM stop it (connections in progress get 5 s);
/// SIGHUP reloads --key-file, and is ignored (with a line on stderr) without one.
///
/// Examples:
///   tfo serve                      # 127.0.0.1:8000, raw echo
///   tfo serve 0.0.0.0:8080 --http  # then: curl --tcp-fastopen http://127.0.0.1:8080/
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Address to listen on: PORT, IP:PORT or [IPv6]:PORT.
    #[arg(default_value = "127.0.0.1:8000", value_parser = addr::parse)]
    addr: SocketAddr,
    /// Answer HTTP/1.1: 200, body = the request as received, Connection: close.
    #[arg(long)]
    http: bool,
    /// TFO queue length: pending TFO connections allowed (0 turns TFO off).
    #[arg(long, default_value_t = fastopen::DEFAULT_QUEUE_LEN, value_name = "N")]
    queue: u32,
    /// Cookie key file (this listener's own key instead of the namespace's):
    /// "PRIMARY" or "PRIMARY,BACKUP". Followed: when the file changes (also by
    /// rename or a symlink swap, as a Kubernetes Secret volume does), or on
    /// SIGHUP, the keys are reloaded, the previous key kept as backup; a bad
    /// file keeps the running keys and says why.
    #[arg(long, value_name = "FILE", conflicts_with = "key_secret")]
    key_file: Option<PathBuf>,
    /// Derive the keys from a fleet's shared secret instead (see `tfo key
    /// --help`): this period's key as primary, the neighbour's as backup,
    /// changing every --rotate; servers with the same secret agree.
    #[arg(long, value_name = "FILE")]
    key_secret: Option<PathBuf>,
    /// With --key-secret: the key changes every DURATION.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_timeout, requires = "key_secret")]
    rotate: Duration,
    /// Accept data in the SYN without a cookie (TCP_FASTOPEN_NO_COOKIE).
    #[arg(long)]
    no_cookie: bool,
    /// Log JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// No line per connection (the summary at the end stays), as nginx's
    /// `access_log off`. It also spares each connection whose data came in
    /// the SYN the wait after its reply for the client's final ACK, which
    /// only the log reports (`confirmed`): the cheapest way to serve.
    /// --early-data wait still waits where it must.
    #[arg(long)]
    no_log: bool,
    /// Close a connection when no byte moves either way for this long.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// HTTP: the whole request must arrive within this (else 408).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_timeout)]
    request_timeout: Duration,
    /// HTTP: the largest request body echoed, in bytes (else 413).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_body: usize,
    /// Data that came in the SYN may be a replay (a duplicated SYN creates a
    /// new connection and delivers the data again). `wait`: hold it until the
    /// client's final ACK confirms the handshake (a replay never is; costs the
    /// round trip TFO saved); `reject`: refuse it (HTTP 425 Too Early); `allow`:
    /// handle it at once (a replay is handled twice). With --http, GET, HEAD
    /// and OPTIONS always run at once.
    #[arg(long, value_enum, default_value = "wait", value_name = "POLICY")]
    early_data: crate::client_opts::EarlyDataArg,
    /// `--early-data wait`: how long to wait for the client's final ACK
    /// before dropping the data unhandled (a replay's ACK never comes).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_timeout)]
    confirm_timeout: Duration,
    /// Connections served at once, per worker; more wait in the kernel's
    /// listen queue until one closes (memory per connection: 64 KiB raw; up
    /// to --max-body plus a 64 KiB head with --http).
    #[arg(long, default_value_t = echo::DEFAULT_MAX_CONNECTIONS as u32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// The longest a connection lives, however busy (the idle timeout alone
    /// lets a client that sends a byte now and then stay for ever).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_timeout)]
    max_lifetime: Duration,
    /// Raw mode: write TEXT and CRLF at accept, before reading (a server that
    /// speaks first, as SMTP, FTP and SSH do), then echo as usual. A client
    /// that sent its cookie without data (`tfo send --read-first`) gets it one
    /// round trip sooner: the log says "greeting sent in SYN_RECV".
    #[arg(long, value_name = "TEXT", conflicts_with = "http")]
    banner: Option<String>,
    /// TLS: the certificate chain (PEM, leaf first). With --tls-key, every
    /// connection is TLS 1.3 or 1.2 (with TFO, the ClientHello comes in the
    /// SYN); TLS 1.3 early data (0-RTT) on resumed sessions is accepted and
    /// falls under --early-data like data in the SYN: `wait` holds it until
    /// the handshake ends, `reject` answers 425, `allow` answers at once (one
    /// round trip in all). The log says tls, resumed, early data bytes and
    /// what the policy did.
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "banner")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Exit after serving N connections.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Worker threads, each with its own listener on the address (one
    /// SO_REUSEPORT group; --queue is per worker). Default: one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// `tfo serve --json`'s first line (then one [`echo::ConnectionLog`] per connection).
#[derive(Debug, serde::Serialize)]
struct Listening {
    event: &'static str,
    addr: SocketAddr,
    http: bool,
    /// TLS on every connection (`--tls-cert`), early data accepted up to this many bytes.
    tls: bool,
    tls_max_early_data: Option<u32>,
    tfo_queue: u32,
    workers: usize,
    own_keys: usize,
    tcp_fastopen: u32,
    server_tfo: bool,
}

/// Reads the key file, warning when others than its owner can read it.
fn read_keys(path: &Path) -> anyhow::Result<(FastOpenKey, Option<FastOpenKey>)> {
    let file = KeyFile::read(path)?;
    crate::key_opts::warn_if_exposed("tfo serve", "key file", path, file.exposed_mode);
    Ok((file.primary, file.backup))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let schedule = args.key_secret.as_deref().map(|s| crate::key_opts::load_schedule(s, args.rotate)).transpose()?;
    let keys = match &schedule {
        Some(schedule) => {
            let now = schedule.now();
            Some((now.primary, Some(now.backup)))
        }
        None => args.key_file.as_deref().map(read_keys).transpose()?,
    };
    let protocol = if args.http { Protocol::Http } else { Protocol::Raw };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(fastopen_tools::tls_serve::server_config(cert, key, args.http)?),
        _ => None,
    };
    let tls_on = tls.is_some();
    let limits = echo::Limits {
        idle: args.idle_timeout,
        request: args.request_timeout,
        max_body: args.max_body,
        early_data: args.early_data.into(),
        confirm_timeout: args.confirm_timeout,
        lifetime: args.max_lifetime,
        max_connections: args.max_connections as usize,
        // Lives as long as the server: leaked once.
        banner: args.banner.as_ref().map(|b| &*Box::leak(format!("{b}\r\n").into_bytes().into_boxed_slice())),
    };
    let mode = fastopen::host::read_mode()?;
    if !mode.server() {
        errln!(
            "tfo serve: warning: TFO server mode is off in this network namespace: net.ipv4.tcp_fastopen={}; \
             serving plain TCP. Run `tfo doctor --fix` or `sysctl -w net.ipv4.tcp_fastopen=3`.",
            mode.sysctl_value()
        );
    }
    let mut builder = ListenerBuilder::new(args.addr).queue_len(args.queue).no_cookie(args.no_cookie);
    if let Some((primary, backup)) = keys {
        builder = builder.keys(primary, backup);
    }
    let workers = args.workers.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let group = builder.bind_group(workers).map_err(|e| bind_hint(e, args.addr))?;
    let log = LineLog::start(std::io::stdout())?;
    let sink = log.sink();
    let group = Workers::new(group, Arc::new(move || sink.flush()))?;
    let listeners = group.listeners();
    // Signals, key changes and the end: on a small runtime of their own.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let local = listeners.first().local_addr()?;
        let tfo = listeners.first().tfo()?;
        // Caught before "listening" is said: without the handler a SIGHUP would
        // kill the server. With --key-file it reloads the keys; without, it is ignored.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        print_line(if args.json {
            serde_json::to_string(&Listening {
                event: "listening",
                addr: local,
                http: args.http,
                tls: tls_on,
                tls_max_early_data: tls_on.then_some(fastopen_tools::tls_serve::MAX_EARLY_DATA),
                tfo_queue: tfo.queue_len,
                workers,
                own_keys: tfo.own_keys,
                tcp_fastopen: mode.0,
                server_tfo: mode.server(),
            })?
        } else {
            format!(
                "listening on {local} ({}{}, TFO queue {} per worker, {workers} worker{}, net.ipv4.tcp_fastopen={mode}); Ctrl-C stops",
                if args.http { "HTTP" } else { "raw echo" },
                if tls_on { " over TLS, 0-RTT accepted" } else { "" },
                tfo.queue_len,
                if workers == 1 { "" } else { "s" },
            )
        })?;
        if let Some(path) = args.key_file.clone() {
            // Without inotify (or a directory to watch) SIGHUP still works.
            let watch = crate::keywatch::KeyFileWatch::new(&path)
                .map_err(|e| {
                    errln!("tfo serve: not following {} for changes ({e}); SIGHUP reloads it", path.display())
                })
                .ok();
            tokio::spawn(follow_key_file(hup, watch, listeners.clone(), path, keys));
        } else {
            // Nothing to reload: a SIGHUP (a closed terminal, a reload by habit) must not end service.
            let mut hup = hup;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    errln!("tfo serve: SIGHUP ignored: there is no --key-file to reload");
                }
            });
        }
        if let Some(schedule) = schedule {
            tokio::spawn(follow_schedule(listeners.clone(), schedule));
        }
        use tokio::signal::unix::{signal, SignalKind};
        let (mut int, mut term) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
        let counters_at_start = fastopen::FastOpenCounters::read().ok();
        let tally = Arc::new(Tally::default());
        let counted = tally.clone();
        let (json, no_log) = (args.json, args.no_log);
        let sink = log.sink();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving = workers::Serving {
            service: echo::Service { protocol, tls, limits, log_confirmation: !args.no_log },
            notices: Arc::new(|line| errln!("tfo serve: {line}")),
            budget: Arc::new(echo::Budget::new(args.count)),
            stop: stopped,
            on_connection: Arc::new(move |log: echo::ConnectionLog| {
                counted.count(&log);
                if no_log {
                    return;
                }
                sink.queue(&if json { serde_json::to_string(&log).unwrap_or_default() } else { report::connection_line(&log) });
            }),
        };
        let threads = group.spawn(serving)?;
        let mut joined = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).collect::<Vec<_>>());
        let results = tokio::select! {
            results = &mut joined => results?,
            _ = int.recv() => { let _ = stop.send(true); joined.await? }
            _ = term.recv() => { let _ = stop.send(true); joined.await? }
        };
        for result in results {
            result.map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
        }
        let log_end = log.finish(Duration::from_secs(2));
        if log_end.dropped_lines > 0 || log_end.unwritten_bytes > 0 {
            errln!("tfo serve: {log_end}");
        }
        errln!("tfo serve: {}", tally.summary(counters_at_start.as_ref(), tfo.queue_len));
        Ok(ExitCode::SUCCESS)
    })
}

/// What the connections got, for the summary at shutdown.
#[derive(Debug, Default)]
struct Tally {
    connections: std::sync::atomic::AtomicU64,
    in_syn: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn count(&self, log: &echo::ConnectionLog) {
        use std::sync::atomic::Ordering::Relaxed;
        self.connections.fetch_add(1, Relaxed);
        self.in_syn.fetch_add(u64::from(log.outcome.data_in_syn), Relaxed);
        self.errors.fetch_add(u64::from(log.error.is_some()), Relaxed);
    }

    /// One line: how many connections, how many had data in the SYN, and
    /// why the others did not, from the namespace's counters over the run.
    fn summary(&self, at_start: Option<&fastopen::FastOpenCounters>, queue: u32) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let (n, in_syn, errors) =
            (self.connections.load(Relaxed), self.in_syn.load(Relaxed), self.errors.load(Relaxed));
        let mut line = format!("{n} connections, {in_syn} with data in the SYN, {errors} with errors");
        let delta = at_start.zip(fastopen::FastOpenCounters::read().ok()).map(|(before, now)| &now - before);
        if let Some(d) = delta {
            line += &format!(
                "; in this namespace meanwhile: TCPFastOpenPassive +{}, CookieReqd +{} (SYNs asking for a cookie)",
                d.passive, d.cookie_reqd
            );
            if d.listen_overflow > 0 {
                line += &format!(
                    ", ListenOverflow +{} (SYNs with data handled as plain SYNs: the TFO queue of {queue} was full; raise --queue)",
                    d.listen_overflow
                );
            }
            if d.passive_fail > 0 {
                line += &format!(", PassiveFail +{} (cookies that matched no key)", d.passive_fail);
            }
        }
        line
    }
}

/// Adds what to do when binding a low port was refused.
fn bind_hint(e: fastopen::Error, addr: SocketAddr) -> anyhow::Error {
    let denied = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
    if denied && addr.port() < 1024 {
        anyhow::Error::new(e).context(format!(
            "cannot listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE (or a lower net.ipv4.ip_unprivileged_port_start); pick a port of 1024 or more, e.g. {}",
            std::net::SocketAddr::new(addr.ip(), 8000)
        ))
    } else {
        e.into()
    }
}

fn print_line(line: String) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// The longest sleep between two looks at the clock: a clock that is set
/// (NTP, a VM resumed) is noticed within this.
const SCHEDULE_RECHECK: Duration = Duration::from_secs(60);

/// Keeps `--key-secret`'s keys current: at each half-period the backup
/// changes, at each period the primary. The keys are never printed.
async fn follow_schedule(listener: Listeners, schedule: fastopen::KeySchedule) {
    let mut current = schedule.now();
    let mut retry: Option<Duration> = None;
    loop {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        tokio::time::sleep(schedule_wait(current.next_change, since_epoch, retry)).await;
        let next = schedule.now();
        if next == current {
            continue;
        }
        match listener.set_keys(&next.primary, Some(&next.backup)) {
            Ok(()) => {
                errln!(
                    "tfo serve: keys rotated: primary of period {}, backup of period {}",
                    next.period,
                    next.backup_period
                );
                current = next;
                retry = None;
            }
            Err(e) => {
                let again = retry.map_or(SCHEDULE_RETRY_FIRST, |r| (r * 2).min(SCHEDULE_RECHECK));
                errln!(
                    "tfo serve: setting the derived keys failed, keeping the old ones (trying again in {} s): {e:#}",
                    again.as_secs()
                );
                retry = Some(again);
            }
        }
    }
}

/// The first wait before setting the derived keys again after a failure
/// (doubling up to [`SCHEDULE_RECHECK`]).
const SCHEDULE_RETRY_FIRST: Duration = Duration::from_secs(1);

/// How long to sleep before the next look at the schedule: until its next
/// change (at most [`SCHEDULE_RECHECK`]); after a failure to set the keys,
/// the retry's wait, never zero (the change is already due: no spin).
fn schedule_wait(next_change: Duration, now: Duration, retry: Option<Duration>) -> Duration {
    match retry {
        Some(retry) => retry,
        None => next_change.saturating_sub(now).min(SCHEDULE_RECHECK),
    }
}

/// Reloads `--key-file` on SIGHUP and whenever the file changes, keeping
/// the previous primary key as backup when the file names none. A file that
/// did not change is left alone (a write triggers both); a bad one keeps the
/// running keys and says why.
async fn follow_key_file(
    mut hup: tokio::signal::unix::Signal,
    mut watch: Option<crate::keywatch::KeyFileWatch>,
    listener: Listeners,
    path: PathBuf,
    mut loaded: Option<(FastOpenKey, Option<FastOpenKey>)>,
) {
    loop {
        let signalled = tokio::select! {
            signal = hup.recv() => match signal {
                Some(()) => true,
                None => return,
            },
            changed = crate::keywatch::file_changed(&mut watch) => {
                if let Err(e) = changed {
                    errln!("tfo serve: stopped following {} ({e}); SIGHUP still reloads it", path.display());
                    watch = None;
                }
                false
            }
        };
        let result = read_keys(&path).and_then(|keys| {
            if loaded == Some(keys) {
                return Ok(None);
            }
            let (primary, backup) = keys;
            let backup = backup.or(loaded.map(|(old, _)| old).filter(|old| *old != primary));
            listener.set_keys(&primary, backup.as_ref())?;
            loaded = Some(keys);
            Ok(Some(backup.is_some()))
        });
        match result {
            Ok(Some(with_backup)) => errln!(
                "tfo serve: keys reloaded from {}{}{}",
                path.display(),
                if signalled { " (SIGHUP)" } else { " (the file changed)" },
                if with_backup { " (previous key kept as backup)" } else { "" }
            ),
            Ok(None) if signalled => errln!("tfo serve: keys in {} unchanged", path.display()),
            Ok(None) => {}
            Err(e) => errln!("tfo serve: key reload failed, keeping the old keys: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rotation_waits_before_trying_again() {
        let due = Duration::from_secs(100);
        let later = Duration::from_secs(150);
        assert_eq!(schedule_wait(due, later, None), Duration::ZERO, "due: look now");
        assert_eq!(schedule_wait(due, later, Some(SCHEDULE_RETRY_FIRST)), SCHEDULE_RETRY_FIRST, "failed: no spin");
        assert_eq!(schedule_wait(due, Duration::from_secs(10), None), SCHEDULE_RECHECK);
    }
}
