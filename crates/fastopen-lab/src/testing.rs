//! Test support (feature `testing`, for this workspace's tests): how a test
//! that needs root or a tool behaves without it, and a real nginx to test against.

/// For tests that need root: `true` if they can run. Without root, outside CI
/// they are skipped with a message; under `CI=true` this panics, because CI
/// runs as root and a skipped test there would hide a failure.
pub fn root_or_skip(test: &str) -> bool {
    if crate::netns::is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1") {
        panic!("{test} needs root, and CI=true: CI runs as root, so this must not be skipped");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces); run the tests with sudo");
    false
}

/// `true` if `tool` is on PATH (or in /usr/sbin). Missing outside CI: skip
/// with a message; under `CI=true`: panic, because `.ci/run` installs it.
pub fn have_tool(test: &str, tool: &str) -> bool {
    let on_path = |dir: &std::path::Path| dir.join(tool).is_file();
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| on_path(&d)))
        || on_path(std::path::Path::new("/usr/sbin"));
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1") {
        panic!("{test} needs {tool}, and CI=true: .ci/run must install it");
    }
    eprintln!("SKIPPED {test}: {tool} is not installed (.ci/run installs it)");
    false
}

/// A real nginx for interop tests, in the calling thread's network namespace:
/// one `server` answering `location /` with a fixed body, its files in a
/// scratch directory, killed and cleaned up when dropped.
#[derive(Debug)]
pub struct Nginx {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    /// Starts nginx with one `listen LISTEN;` line per entry (e.g.
    /// `"127.0.0.1:8081 fastopen=256"`, `"[::1]:8443 ssl fastopen=256"`),
    /// `server_extra` directives (certificates, protocols), answering 200
    /// with `body`; waits until it listens. `None` when nginx is not installed
    /// (outside CI; under CI that panics).
    pub fn start(test: &str, listens: &[String], server_extra: &str, body: &str) -> Option<Nginx> {
        if !have_tool(test, "nginx") {
            return None;
        }
        // A fresh private directory (mkdtemp: a new name, mode 0700): nginx runs
        // as root with this config, so nobody may have planted the path first.
        let template = std::env::temp_dir().join("tfokit-nginx-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).expect("nginx scratch directory");
        let listen: String = listens.iter().map(|l| format!("    listen {l};\n")).collect();
        let body = body.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  log_format tfokit '$remote_addr \"$request\" $status reused=$ssl_session_reused ssl_early_data=$ssl_early_data';\n  access_log {d}/access.log tfokit;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n{listen}    {server_extra}\n    location / {{ return 200 \"{body}\"; }}\n  }}\n}}\n",
            d = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = std::process::Command::new("nginx")
            .args(["-c", &conf_path.to_string_lossy(), "-p", &dir.to_string_lossy()])
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, dir };
        // nginx writes its pid file after it has opened its listening sockets.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !nginx.dir.join("nginx.pid").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(nginx)
    }
}

impl Nginx {
    /// The access log so far: one line per request, `ADDR "REQUEST" STATUS
    /// reused=r ssl_early_data=1` for a request on a resumed TLS session
    /// (`reused=.` otherwise) that nginx handled as TLS early data, before
    /// the handshake completed (`-` otherwise: on loopback the client's
    /// Finished can win that race even when the server accepted the early
    /// data; across a lab path it cannot).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The access log once it has `n` lines (nginx logs a request when its
    /// connection is done, a moment after the client has the answer), or
    /// as it is after 5 s.
    pub fn access_log_of(&self, n: usize) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.access_log().lines().count() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.access_log()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scratch_directory_is_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let template = std::env::temp_dir().join("tfokit-nginx-XXXXXX");
        let a = nix::unistd::mkdtemp(&template).unwrap();
        let b = nix::unistd::mkdtemp(&template).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o777, 0o700);
        let _ = (std::fs::remove_dir(a), std::fs::remove_dir(b));
    }
}
