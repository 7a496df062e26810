//! Private network namespaces for one thread.
//!
//! On Linux a network namespace belongs to a thread, not a process:
//! `unshare(CLONE_NEWNET)` moves only the calling thread, and threads and
//! processes it starts afterwards inherit it. So a test (or `tfo demo`) can run
//! in its own namespace, with its own `net.ipv4.tcp_fastopen`, its own cookie
//! cache and counters, while the rest of the process and the host are untouched.
//! The namespace disappears by itself when its last thread and process end,
//! so nothing is left behind, even on panic.

use std::fs;
use std::process::Command;

/// Why a namespace could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// Creating namespaces needs CAP_SYS_ADMIN (run as root).
    #[error("creating a network namespace needs root (CAP_SYS_ADMIN); run with sudo")]
    NotRoot,
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("unshare(CLONE_NEWNET) failed: {0}")]
    Unshare(#[source] nix::Error),
    /// `ip link set lo up` failed or `ip` is missing.
    #[error("bringing loopback up in the new namespace failed ({0}); is iproute2 installed?")]
    LoopbackUp(String),
    /// Writing a sysctl inside the namespace failed.
    #[error("setting {name} in the new namespace failed: {source}")]
    Sysctl {
        /// The sysctl.
        name: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Moves the calling thread into a new network namespace, brings loopback up
/// and sets `net.ipv4.tcp_fastopen` there to `tcp_fastopen` (3 = client and server).
pub fn enter_private(tcp_fastopen: u32) -> Result<(), NetnsError> {
    if !is_root() {
        return Err(NetnsError::NotRoot);
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
    loopback_up()?;
    set_sysctl("net.ipv4.tcp_fastopen", &tcp_fastopen.to_string())
}

/// Without root: moves the whole process into a new user namespace (where it
/// is root) and a new network namespace owned by it, with loopback up and
/// `net.ipv4.tcp_fastopen` set. Needs unprivileged user namespaces (the usual
/// default) and a process that has not started any thread yet.
pub fn enter_private_unprivileged(tcp_fastopen: u32) -> Result<(), NetnsError> {
    use nix::sched::CloneFlags;
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
    let map = |path: &'static str, text: String| {
        fs::write(path, text).map_err(|source| NetnsError::Sysctl { name: path, source })
    };
    map("/proc/self/setgroups", "deny".into())?;
    map("/proc/self/uid_map", format!("0 {uid} 1"))?;
    map("/proc/self/gid_map", format!("0 {gid} 1"))?;
    loopback_up()?;
    set_sysctl("net.ipv4.tcp_fastopen", &tcp_fastopen.to_string())
}

/// `ip link set lo up` in the calling thread's namespace.
fn loopback_up() -> Result<(), NetnsError> {
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| NetnsError::LoopbackUp(e.to_string()))?;
    if !status.success() {
        return Err(NetnsError::LoopbackUp(format!("ip exited with {status}")));
    }
    Ok(())
}

/// Writes a sysctl in the calling thread's network namespace.
pub fn set_sysctl(name: &'static str, value: &str) -> Result<(), NetnsError> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::write(path, value).map_err(|source| NetnsError::Sysctl { name, source })
}

/// Runs `f` on a new thread inside a fresh private namespace (see [`enter_private`])
/// and returns its result. A panic in `f` is passed on to the caller.
pub fn run_in_private<T: Send>(tcp_fastopen: u32, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter_private(tcp_fastopen)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Prefix of every namespace the lab names. Whether one is still in use is
/// proven by its [`LabLock`], never guessed from the name.
pub const NAME_PREFIX: &str = "tfokit-";

/// A named network namespace (`/run/netns/NAME`, as `ip netns add` makes),
/// deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    handle: fs::File,
    /// Whether dropping this deletes the namespace (false for [`Netns::of_current_thread`]).
    owned: bool,
    /// Whether `/etc/netns/NAME/` was written (and goes with the namespace).
    etc_written: bool,
}

/// What went wrong with a named namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamedNetnsError {
    /// A command (`ip`, `iptables`) failed.
    #[error("`{command}` failed: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
    /// Opening or entering the namespace failed.
    #[error("entering network namespace {name}: {source}")]
    Enter {
        /// The namespace.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a sysctl inside the namespace failed.
    #[error("setting {name}={value} in {namespace}")]
    Sysctl {
        /// The namespace.
        namespace: String,
        /// The sysctl.
        name: &'static str,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: NetnsError,
    },
    /// Root is needed.
    #[error("the lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces; run with sudo")]
    NotRoot,
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), NamedNetnsError> {
    run_tool(Command::new("ip").args(args), "iproute2")
}

/// Runs `command`, failing with its stderr; `package` names what to install
/// when the program is missing.
fn run_tool(command: &mut Command, package: &str) -> Result<(), NamedNetnsError> {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    let line = words.join(" ");
    let out = command.output().map_err(|e| NamedNetnsError::Tool {
        command: line.clone(),
        detail: format!("{e} (is {package} installed?)"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NamedNetnsError::Tool { command: line, detail: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// A fresh base for the names of one lab's namespaces and its lock: the pid
/// and counter make it readable, the random part keeps it unique across PID
/// namespaces, where pids repeat.
pub(crate) fn unique_base() -> String {
    static BASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = BASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{NAME_PREFIX}{}-{id}-{:04x}", std::process::id(), fastrand::u16(..))
}

impl Netns {
    /// Creates `/run/netns/NAME` with loopback up.
    pub fn create(name: &str) -> Result<Netns, NamedNetnsError> {
        if !is_root() {
            return Err(NamedNetnsError::NotRoot);
        }
        ip(&["netns", "add", name])?;
        let handle = fs::File::open(format!("/run/netns/{name}"))
            .map_err(|source| NamedNetnsError::Enter { name: name.to_string(), source });
        let netns = match handle {
            Ok(handle) => Netns { name: name.to_string(), handle, owned: true, etc_written: false },
            Err(e) => {
                let _ = ip(&["netns", "del", name]);
                return Err(e);
            }
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// A handle on the calling thread's namespace (not deleted on drop), so
    /// that code written for named namespaces can run in a private one too.
    pub fn of_current_thread() -> Result<Netns, NamedNetnsError> {
        let name = "this thread's namespace".to_string();
        let handle = fs::File::open("/proc/thread-self/ns/net")
            .map_err(|source| NamedNetnsError::Enter { name: name.clone(), source })?;
        Ok(Netns { name, handle, owned: false, etc_written: false })
    }

    /// The namespace's name (for `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace (for good).
    pub fn enter(&self) -> Result<(), NamedNetnsError> {
        nix::sched::setns(&self.handle, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| NamedNetnsError::Enter { name: self.name.clone(), source: e.into() })
    }

    /// Runs `f` on a new thread inside this namespace and waits for it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NamedNetnsError> {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                self.enter()?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts a thread inside this namespace. If the thread cannot enter it,
    /// `f` never runs, the thread ends quietly and this returns the error (so
    /// the caller's guards still drop and clean up).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, NamedNetnsError> {
        let handle =
            self.handle.try_clone().map_err(|source| NamedNetnsError::Enter { name: self.name.clone(), source })?;
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let entered = nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET);
            let failed = entered.is_err();
            let _ = tx.send(entered);
            if failed {
                // Never run the caller's code in the wrong namespace. Unwind
                // without the panic hook: nothing is printed, and nobody joins.
                std::panic::resume_unwind(Box::new("setns failed"));
            }
            f()
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => Err(NamedNetnsError::Enter { name, source: e.into() }),
            Err(_) => Err(NamedNetnsError::Enter { name, source: std::io::Error::other("thread died") }),
        }
    }

    /// Whether a TCP socket listens in this namespace (`/proc/net/tcp{,6}` as
    /// the namespace sees it: sockets in LISTEN state).
    pub fn has_listener(&self) -> bool {
        self.run(|| {
            ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
                .iter()
                .any(|path| fs::read_to_string(path).is_ok_and(|t| lists_a_listener(&t)))
        })
        .unwrap_or(false)
    }

    /// Runs `program args` inside this namespace, failing with its stderr;
    /// `package` names what to install when it is missing.
    pub fn exec(&self, program: &str, args: &[&str], package: &str) -> Result<(), NamedNetnsError> {
        run_tool(self.command(program).args(args), package)
    }

    /// A command that runs inside this namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Gives programs run by `ip netns exec` in this namespace their own
    /// `/etc/hosts` (`ip netns exec` bind-mounts `/etc/netns/NAME/hosts` over
    /// it), so names resolve to the namespace's addresses. Removed with the
    /// namespace.
    pub fn set_hosts(&mut self, hosts: &str) -> Result<(), NamedNetnsError> {
        let dir = etc_dir(&self.name);
        let io = |source| NamedNetnsError::Enter { name: self.name.clone(), source };
        fs::create_dir_all(&dir).map_err(io)?;
        self.etc_written = true;
        fs::write(dir.join("hosts"), hosts).map_err(io)
    }

    /// Writes a sysctl inside this namespace.
    pub fn set_sysctl(&self, name: &'static str, value: &str) -> Result<(), NamedNetnsError> {
        self.run(|| set_sysctl(name, value)).and_then(|r| {
            r.map_err(|source| NamedNetnsError::Sysctl {
                namespace: self.name.clone(),
                name,
                value: value.to_string(),
                source,
            })
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        kill_processes_in(&self.name);
        let _ = ip(&["netns", "del", &self.name]);
        if self.etc_written {
            let _ = fs::remove_dir_all(etc_dir(&self.name));
        }
    }
}

/// `/etc/netns/NAME`: files `ip netns exec NAME` mounts over `/etc`'s.
fn etc_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(name)
}

/// A namespace of its own, named like a lab's (`tfokit-...-ROLE`) and owned
/// through its own [`LabLock`], so that if its owner dies the next lab sweeps
/// it: for tools and tests that need one named namespace (`ip netns exec`,
/// `/etc/netns/NAME/hosts`).
#[derive(Debug)]
pub struct LoneNetns {
    netns: Netns,
    _lock: LabLock,
}

impl LoneNetns {
    /// Creates it with loopback up and `net.ipv4.tcp_fastopen` set.
    pub fn create(role: &str, tcp_fastopen: u32) -> Result<LoneNetns, NamedNetnsError> {
        if !is_root() {
            return Err(NamedNetnsError::NotRoot);
        }
        remove_leftovers();
        let base = unique_base();
        let lock = LabLock::acquire(&base)?;
        let netns = Netns::create(&format!("{base}-{role}"))?;
        netns.set_sysctl("net.ipv4.tcp_fastopen", &tcp_fastopen.to_string())?;
        Ok(LoneNetns { netns, _lock: lock })
    }
}

impl std::ops::Deref for LoneNetns {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

impl std::ops::DerefMut for LoneNetns {
    fn deref_mut(&mut self) -> &mut Netns {
        &mut self.netns
    }
}

/// Whether the text of `/proc/net/tcp` or `tcp6` has a socket in state
/// LISTEN (0A, the fourth column).
pub fn lists_a_listener(proc_net_tcp: &str) -> bool {
    proc_net_tcp.lines().skip(1).any(|l| l.split_whitespace().nth(3) == Some("0A"))
}

/// Kills processes still inside a namespace (so that it really goes away).
fn kill_processes_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        if pid != std::process::id() as i32 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A lab's guard: blocks until `owner` reaches end of file (the lab let go
/// of it, or died however it died, `kill -9` included), then kills every
/// process left in the namespaces `names` (grandchildren of its commands
/// too, which no parent-death signal reaches) and removes the namespaces no
/// live lab owns. Run it in a process of its own whose standard input is a
/// pipe that only the lab holds.
pub fn guard_until_owner_exits(names: &[String], mut owner: impl std::io::Read) {
    let mut sink = [0u8; 64];
    while matches!(owner.read(&mut sink), Ok(n) if n > 0) {}
    for name in names {
        kill_processes_in(name);
    }
    // The owner's lock goes with it; give the kernel a moment to drop it.
    for _ in 0..20 {
        remove_leftovers();
        if names.iter().all(|n| !std::path::Path::new("/run/netns").join(n).exists()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Where labs keep their ownership locks (one file per lab, flocked by its owner).
pub const LOCK_DIR: &str = "/run/tfokit";

/// Proof that a lab's namespaces belong to a live process: an exclusive
/// `flock` on `/run/tfokit/BASE.lock`, held as long as this value lives. The
/// kernel drops the lock when the owner dies, however it dies, so liveness is
/// never guessed from a pid (pids repeat across PID namespaces).
#[derive(Debug)]
pub struct LabLock {
    path: std::path::PathBuf,
    _lock: nix::fcntl::Flock<fs::File>,
}

impl LabLock {
    /// Takes the lock of the lab named `base` (namespaces `BASE-client`, `BASE-server`).
    pub fn acquire(base: &str) -> Result<LabLock, NamedNetnsError> {
        let path = std::path::Path::new(LOCK_DIR).join(format!("{base}.lock"));
        let enter = |source| NamedNetnsError::Enter { name: base.to_string(), source };
        fs::create_dir_all(LOCK_DIR).map_err(enter)?;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(enter)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| enter(std::io::Error::from(errno)))?;
        Ok(LabLock { path, _lock: lock })
    }
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The lab a namespace belongs to: `tfokit-X-client` -> `tfokit-X` (and
/// `-server`, a fleet's `-lb` and `-bN`, a lone namespace's role).
/// A base is `tfokit-PID-N-RAND` ([`unique_base`]); the role follows its third dash.
fn lab_base(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let end = rest.match_indices('-').nth(2)?.0;
    (end + 1 < rest.len()).then(|| &name[..NAME_PREFIX.len() + end])
}

/// Whether a live process holds the lab's lock. A lock file someone removed
/// proves nothing either way: the lab then counts as owned while the process
/// its name carries (`tfokit-PID-...`) lives, so a running lab is never torn
/// down because its file went missing.
fn is_owned(base: &str) -> bool {
    let path = std::path::Path::new(LOCK_DIR).join(format!("{base}.lock"));
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return creator_alive(base),
        Err(_) => return false,
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_free) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Whether the process whose pid a lab's base names still exists.
fn creator_alive(base: &str) -> bool {
    let pid = base.strip_prefix(NAME_PREFIX).and_then(|rest| rest.split('-').next());
    pid.and_then(|p| p.parse::<u32>().ok()).is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Lab namespaces (`tfokit-PID-N-RAND-ROLE`) with whether their owner is alive.
fn lab_namespaces() -> Vec<(String, bool)> {
    let Ok(dir) = fs::read_dir("/run/netns") else { return Vec::new() };
    let mut names: Vec<(String, bool)> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let owned = is_owned(lab_base(&name)?);
            Some((name, owned))
        })
        .collect();
    names.sort();
    names
}

/// Lab namespaces whose name ends with `-SUFFIX` (e.g. "client") and whose
/// owner holds its lock: the labs of running `tfo lab` or `tfo bench`.
pub fn running(suffix: &str) -> Vec<String> {
    let suffix = format!("-{suffix}");
    lab_namespaces().into_iter().filter(|(n, owned)| *owned && n.ends_with(&suffix)).map(|(n, _)| n).collect()
}

/// Names of lab namespaces that no live process owns (left by a crash).
pub fn leftovers() -> Vec<String> {
    lab_namespaces().into_iter().filter(|(_, owned)| !owned).map(|(n, _)| n).collect()
}

/// Removes namespaces left by crashed runs, and their lock files; returns their names.
pub fn remove_leftovers() -> Vec<String> {
    let names = leftovers();
    for name in &names {
        kill_processes_in(name);
        let _ = ip(&["netns", "del", name]);
        let _ = fs::remove_dir_all(etc_dir(name));
        if let Some(base) = lab_base(name) {
            let _ = fs::remove_file(std::path::Path::new(LOCK_DIR).join(format!("{base}.lock")));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_cannot_enter_never_runs_and_nothing_aborts() {
        let not_a_namespace = Netns {
            name: "not-a-netns".into(),
            handle: fs::File::open("/dev/null").unwrap(),
            owned: false,
            etc_written: false,
        };
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let result = not_a_namespace.spawn(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(result, Err(NamedNetnsError::Enter { .. })), "{result:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "f ran outside its namespace");
    }

    #[test]
    fn listeners_in_proc_net_tcp() {
        let head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let listening = "   0: 0200A8C6:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n";
        let connected = "   1: 0100007F:9C40 0100007F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert!(lists_a_listener(&format!("{head}{connected}{listening}")));
        assert!(!lists_a_listener(&format!("{head}{connected}")));
        assert!(!lists_a_listener(head), "the header's \"st\" column is not a state");
    }

    #[test]
    fn lab_names() {
        for role in ["client", "server", "lb", "b3", "names"] {
            assert_eq!(lab_base(&format!("tfokit-12-0-ab12-{role}")), Some("tfokit-12-0-ab12"), "{role}");
        }
        assert_eq!(lab_base("tfokit-12-0-ab12-"), None);
        assert_eq!(lab_base("tfokit-12-ab12-client"), None);
        assert_eq!(lab_base("mine-client"), None);
        let base = unique_base();
        assert_eq!(lab_base(&format!("{base}-client")), Some(base.as_str()));
    }
}
