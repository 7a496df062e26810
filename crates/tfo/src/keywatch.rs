//! Following a key file: `tfo serve --key-file` reloads when the file
//! changes, as well as on SIGHUP. The file may be replaced by rename (`tfo key
//! rotate`, editors), written in place, or be a symlink whose target is
//! swapped (a Kubernetes Secret volume renames a `..data` symlink): inotify
//! watches the directory that holds the path as given and the one that holds
//! its target, and any event there makes the server read the file again.
//! A thread blocks on the inotify descriptor and wakes the server's task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

/// How long to let a burst of events settle (a rename after a create, a
/// write after a truncate) before reading the file.
const SETTLE: Duration = Duration::from_millis(50);

/// Events in a watched directory that may mean the key file changed.
fn interesting() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB
}

/// The directories to watch for `path`: its own, and its target's.
fn directories(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let target_dir = parent(&target);
        if std::fs::canonicalize(&dirs[0]).ok() != Some(target_dir.clone()) {
            dirs.push(target_dir);
        }
    }
    dirs
}

/// Wakes when the key file may have changed.
pub(crate) struct KeyFileWatch {
    inotify: Arc<Inotify>,
    events: mpsc::UnboundedReceiver<std::io::Result<()>>,
    path: PathBuf,
}

impl KeyFileWatch {
    /// Watches the directories of `path` (its target's too, if a symlink).
    pub(crate) fn new(path: &Path) -> std::io::Result<KeyFileWatch> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let (tx, events) = mpsc::unbounded_channel();
        let reader = inotify.clone();
        std::thread::Builder::new().name("key-file-watch".into()).spawn(move || loop {
            let read = reader.read_events().map(|_| ()).map_err(std::io::Error::from);
            let failed = read.is_err();
            if tx.send(read).is_err() || failed {
                return;
            }
        })?;
        let watch = KeyFileWatch { inotify, events, path: path.to_path_buf() };
        watch.rewatch()?;
        Ok(watch)
    }

    /// (Re)adds the watches: after a symlink swap the target's directory is new.
    fn rewatch(&self) -> std::io::Result<()> {
        for dir in directories(&self.path) {
            self.inotify.add_watch(&dir, interesting())?;
        }
        Ok(())
    }

    /// Waits for events, lets them settle, and drains them.
    pub(crate) async fn changed(&mut self) -> std::io::Result<()> {
        match self.events.recv().await {
            Some(result) => result?,
            None => return Err(std::io::Error::other("the inotify thread ended")),
        }
        tokio::time::sleep(SETTLE).await;
        while let Ok(result) = self.events.try_recv() {
            result?;
        }
        // A swapped symlink may now point into a new directory.
        let _ = self.rewatch();
        Ok(())
    }
}

/// Waits until the watched key file may have changed; never, without a watch.
pub(crate) async fn file_changed(watch: &mut Option<KeyFileWatch>) -> std::io::Result<()> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}
