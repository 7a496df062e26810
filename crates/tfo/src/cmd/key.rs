//! `tfo key`: TFO cookie keys: generate, compute a cookie, rotate on a running server.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use std::time::Duration;

use fastopen::keyfile::KeyFile;
use fastopen::FastOpenKey;

use crate::key_opts::load_schedule;

/// TFO cookie keys: generate one, compute the cookie a key gives, rotate.
///
/// A TFO server makes each client's cookie as SipHash-2-4 over (client
/// address, server address) with its key. Servers behind one address (a load
/// balancer) must share the key; rotating it without breaking cookies already
/// handed out means: new key as primary, old key as backup, for a while.
///
/// Key text is 32 hex digits (the 16 bytes in order) or the sysctl form
/// w-w-w-w of net.ipv4.tcp_fastopen_key (little-endian 32-bit words).
///
/// A fleet can also derive its keys from one shared secret, per period of
/// --rotate (HKDF-SHA256; primary = this period's key, backup = the
/// neighbour period's), so hosts with the same secret and a sane clock agree
/// without talking to each other: `tfo serve --key-secret FILE`, or `tfo key
/// apply` for servers tfokit does not run (nginx uses the namespace's key).
///
/// Examples:
///   tfo key generate > tfo.key
///   tfo key cookie --key-file tfo.key --client 198.18.0.1 --server 198.18.0.2
///   tfo key rotate --key-file tfo.key --pid $(pidof tfo)   # tfo serve --key-file tfo.key
///   head -c 32 /dev/urandom > fleet.secret; chmod 600 fleet.secret
///   tfo key derive --key-secret fleet.secret --rotate 1h
///   sudo tfo key apply --key-secret fleet.secret --rotate 1h   # for nginx
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print a new random key (from the kernel's random source).
    Generate {
        /// Print the sysctl form (w-w-w-w) instead of hex.
        #[arg(long)]
        sysctl: bool,
    },
    /// Print the cookie a server with this key gives a client.
    Cookie {
        /// The key, as text, or `-` to read it from standard input. A key given
        /// here is visible to every user in `ps`: prefer --key-file or `-`.
        #[arg(long, conflicts_with = "key_file", required_unless_present = "key_file")]
        key: Option<String>,
        /// A file holding the key (the first key if it holds "primary,backup").
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The client's address (the SYN's source).
        #[arg(long)]
        client: IpAddr,
        /// The server's address (the SYN's destination).
        #[arg(long)]
        server: IpAddr,
    },
    /// Put a new primary key in a key file, keep the old one as backup, and
    /// tell a running `tfo serve --key-file FILE` (SIGHUP) to load them.
    ///
    /// The file is replaced atomically with mode 0600 (a symlink is followed and
    /// kept). With --pid, the process must be a `tfo serve` started with
    /// --key-file naming this same file (checked in /proc/PID/cmdline); otherwise
    /// nothing is changed and nothing is signalled.
    Rotate {
        /// The key file of the server.
        #[arg(long)]
        key_file: PathBuf,
        /// The server's process id (without it, only the file changes).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        pid: Option<i32>,
    },
    /// Print the keys a shared secret gives now (or at --at), as every
    /// `tfo serve --key-secret` with that secret uses them.
    Derive {
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// The moment, in seconds since the Unix epoch (default: now; at most
        /// 253402300799, the end of year 9999: later times do not fit the schedule's arithmetic).
        #[arg(long, value_name = "UNIX_SECONDS", value_parser = clap::value_parser!(u64).range(..=253_402_300_799))]
        at: Option<u64>,
        /// Print the keys in the sysctl form (w-w-w-w).
        #[arg(long)]
        sysctl: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set this network namespace's key (net.ipv4.tcp_fastopen_key): used by
    /// every TFO listener without a key of its own (nginx, ...). Needs root.
    /// The keys are not printed.
    Apply {
        /// A key file ("PRIMARY" or "PRIMARY,BACKUP").
        #[arg(long, conflicts_with = "key_secret", required_unless_present = "key_secret")]
        key_file: Option<PathBuf>,
        #[command(flatten)]
        schedule: OptionalScheduleArgs,
    },
}

/// Where derived keys come from.
#[derive(Debug, clap::Args)]
pub(crate) struct ScheduleArgs {
    /// A file holding the fleet's shared secret (at least 16 bytes; mode 0600).
    #[arg(long, value_name = "FILE")]
    key_secret: PathBuf,
    /// The key changes every DURATION, at multiples of it since the Unix epoch.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = crate::client_opts::parse_timeout)]
    rotate: Duration,
}

/// [`ScheduleArgs`] when a key file may be given instead.
#[derive(Debug, clap::Args)]
pub(crate) struct OptionalScheduleArgs {
    /// A file holding the fleet's shared secret (at least 16 bytes; mode 0600).
    #[arg(long, value_name = "FILE")]
    pub(crate) key_secret: Option<PathBuf>,
    /// With --key-secret: the key changes every DURATION.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = crate::client_opts::parse_timeout)]
    pub(crate) rotate: Duration,
}

/// `tfo key derive --json`.
#[derive(Debug, serde::Serialize)]
struct DerivedReport {
    period: u64,
    rotate_s: f64,
    primary: String,
    backup_period: u64,
    backup: String,
    next_change_unix: f64,
}

fn random_key() -> anyhow::Result<FastOpenKey> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(FastOpenKey(bytes))
}

/// Proves that `pid` is a `tfo serve` that reads `key_file`: its command line
/// is `tfo serve ... --key-file PATH` and PATH, taken from the process's
/// working directory, is the same file (same device and inode).
/// A process's start time (clock ticks after boot, /proc/PID/stat field 22):
/// with the pid, it names one process for ever (a reused pid starts later).
fn start_time(pid: i32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} does not exist (or /proc is not mounted)"))?;
    // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_comm
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("reading the start time of process {pid}"))
}

/// Sends `signal` to `pid` only if it is still the process checked (same
/// start time): a server that exited meanwhile, its pid reused, is never
/// signalled.
fn signal_same_process(pid: i32, started: u64, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
    if start_time(pid).ok() != Some(started) {
        anyhow::bail!(
            "process {pid} exited after the check (the key file was rotated; start the server again, it reads the new keys)"
        );
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("signalling process {pid} (is it running, and yours?)"))
}

/// Checks that `pid` is a `tfo serve --key-file KEY_FILE`; returns its start time.
fn check_server(pid: i32, key_file: &Path) -> anyhow::Result<u64> {
    let started = start_time(pid)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("process {pid} does not exist (or /proc is not mounted)"))?;
    let argv: Vec<String> =
        cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let is_tfo =
        argv.first().and_then(|a| Path::new(a).file_name()).is_some_and(|n| n.to_string_lossy().starts_with("tfo"));
    let not_server =
        || anyhow::anyhow!("process {pid} is not a `tfo serve --key-file {}`; nothing was changed", key_file.display());
    if !is_tfo || argv.get(1).map(String::as_str) != Some("serve") {
        return Err(not_server());
    }
    let served = argv.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--key-file=") {
        Some(p) => Some(p.to_string()),
        None if a == "--key-file" => argv.get(i + 1).cloned(),
        None => None,
    });
    let served = served.ok_or_else(not_server)?;
    let served = Path::new(&format!("/proc/{pid}/cwd")).join(served);
    let same = |a: &Path, b: &Path| -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
        Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
    };
    if !same(&served, key_file).unwrap_or(false) {
        anyhow::bail!(
            "process {pid} is a `tfo serve` with another key file ({}); nothing was changed",
            served.display()
        );
    }
    Ok(started)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Generate { sysctl } => {
            let key = random_key()?;
            outln!("{}", if sysctl { key.to_sysctl_form() } else { key.to_string() })?;
        }
        Action::Cookie { key, key_file, client, server } => {
            let key = match (key, key_file) {
                (Some(text), _) if text == "-" => {
                    let mut input = String::new();
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(std::io::stdin(), fastopen::keyfile::KEY_FILE_LIMIT),
                        &mut input,
                    )
                    .context("reading the key from standard input")?;
                    FastOpenKey::parse(&input)?
                }
                (Some(text), _) => FastOpenKey::parse(&text)?,
                (None, Some(path)) => KeyFile::read(&path)?.primary,
                (None, None) => anyhow::bail!("give --key or --key-file"),
            };
            let cookie = key.cookie(client, server).with_context(|| {
                format!(
                    "{client} and {server} are of different families; a cookie covers two IPv4 or two IPv6 addresses"
                )
            })?;
            outln!("{}", fastopen_wire::options::hex(&cookie))?;
        }
        Action::Rotate { key_file, pid } => {
            // Check the server, rotate, check it is still that process, signal; print last.
            let server = pid.map(|pid| check_server(pid, &key_file).map(|started| (pid, started))).transpose()?;
            let rotated = fastopen::keyfile::rotate(&key_file, &random_key()?)?;
            if let Some((pid, started)) = server {
                signal_same_process(pid, started, nix::sys::signal::Signal::SIGHUP)?;
            }
            outln!(
                "{}: new primary key, the previous one kept as backup (owner, group and mode kept)",
                rotated.written.display()
            )?;
            if let Some((pid, _)) = server {
                outln!("sent SIGHUP to {pid}: it reloads the keys")?;
            }
        }
        Action::Derive { schedule, at, sysctl, json } => {
            let keys = load_schedule(&schedule.key_secret, schedule.rotate)?;
            let keys = match at {
                Some(seconds) => keys.at(Duration::from_secs(seconds)),
                None => keys.now(),
            };
            let text = |k: &FastOpenKey| if sysctl { k.to_sysctl_form() } else { k.to_string() };
            if json {
                let report = DerivedReport {
                    period: keys.period,
                    rotate_s: schedule.rotate.as_secs_f64(),
                    primary: text(&keys.primary),
                    backup_period: keys.backup_period,
                    backup: text(&keys.backup),
                    next_change_unix: keys.next_change.as_secs_f64(),
                };
                outln!("{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                outln!("period {} (of {} s since the Unix epoch)", keys.period, schedule.rotate.as_secs_f64())?;
                outln!("primary {}", text(&keys.primary))?;
                outln!("backup  {} (period {})", text(&keys.backup), keys.backup_period)?;
                outln!("these keys change at {} (Unix seconds)", keys.next_change.as_secs())?;
            }
        }
        Action::Apply { key_file, schedule } => {
            let (primary, backup, what) = match (key_file, schedule.key_secret) {
                (Some(path), _) => {
                    let keys = KeyFile::read(&path)?;
                    (keys.primary, keys.backup, format!("from {}", path.display()))
                }
                (None, Some(secret)) => {
                    let keys = load_schedule(&secret, schedule.rotate)?.now();
                    let what = format!(
                        "derived from {}: period {} primary, period {} backup; run again when they change (Unix second {})",
                        secret.display(),
                        keys.period,
                        keys.backup_period,
                        keys.next_change.as_secs()
                    );
                    (keys.primary, Some(keys.backup), what)
                }
                (None, None) => anyhow::bail!("give --key-file or --key-secret"),
            };
            let value = match backup {
                Some(b) => format!("{},{}", primary.to_sysctl_form(), b.to_sysctl_form()),
                None => primary.to_sysctl_form(),
            };
            std::fs::write("/proc/sys/net/ipv4/tcp_fastopen_key", value)
                .context("writing net.ipv4.tcp_fastopen_key (needs root, in this network namespace)")?;
            outln!("net.ipv4.tcp_fastopen_key set in this network namespace, {what}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
