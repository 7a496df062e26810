//! `tfo key`: TFO cookie keys: generate, compute a cookie, rotate on a running server.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fastopen::FastOpenKey;

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
/// Examples:
///   tfo key generate > tfo.key
///   tfo key cookie --key-file tfo.key --client 198.18.0.1 --server 198.18.0.2
///   tfo key rotate --key-file tfo.key --pid $(pidof tfo)   # tfo serve --key-file tfo.key
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
        /// The key, as text.
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
    Rotate {
        /// The key file of the server.
        #[arg(long)]
        key_file: PathBuf,
        /// The server's process id (without it, only the file changes).
        #[arg(long)]
        pid: Option<i32>,
    },
}

fn random_key() -> anyhow::Result<FastOpenKey> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(FastOpenKey(bytes))
}

fn read_key_file(path: &PathBuf) -> anyhow::Result<(FastOpenKey, Option<FastOpenKey>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    FastOpenKey::parse_pair(&text).with_context(|| format!("in {}", path.display()))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Generate { sysctl } => {
            let key = random_key()?;
            println!("{}", if sysctl { key.to_sysctl_form() } else { key.to_string() });
        }
        Action::Cookie { key, key_file, client, server } => {
            let key = match (key, key_file) {
                (Some(text), _) => FastOpenKey::parse(&text)?,
                (None, Some(path)) => read_key_file(&path)?.0,
                (None, None) => anyhow::bail!("give --key or --key-file"),
            };
            let cookie = key.cookie(client, server).with_context(|| {
                format!(
                    "{client} and {server} are of different families; a cookie covers two IPv4 or two IPv6 addresses"
                )
            })?;
            println!("{}", cookie.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        Action::Rotate { key_file, pid } => {
            let (old, _) = read_key_file(&key_file)?;
            let new = random_key()?;
            let tmp = key_file.with_extension("tmp");
            std::fs::write(&tmp, format!("{new},{old}\n")).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &key_file).with_context(|| format!("replacing {}", key_file.display()))?;
            println!("{}: new primary key, the previous one kept as backup", key_file.display());
            if let Some(pid) = pid {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP)
                    .with_context(|| format!("signalling process {pid} (is it running, and yours?)"))?;
                println!("sent SIGHUP to {pid}: it reloads the keys");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
