//! What hostile use and a code review found (issue 9): each test fails
//! without its fix. Through the real binary, in private namespaces.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

const KEY: &str = "00112233445566778899aabbccddeeff";

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_rotate_refuses_any_pid_but_its_own_server_and_then_changes_nothing() {
    in_netns("hardening_rotate_pid", 3, || {
        let dir = tempdir("rotate-pid");
        let key_file = dir.join("server.key");
        std::fs::write(&key_file, KEY).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let kf = key_file.to_str().unwrap();
        for pid in ["--pid=-1", "--pid=0"] {
            let o = run_tfo(&["key", "rotate", "--key-file", kf, pid]);
            assert_eq!(o.status.code(), Some(2), "{pid}: {}", stderr(&o));
        }
        // A live process that is not a tfo serve: refused, not signalled.
        let mut sleeper = Guard(Command::new("sleep").arg("30").spawn().unwrap());
        let o = run_tfo(&["key", "rotate", "--key-file", kf, "--pid", &sleeper.0.id().to_string()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("is not a `tfo serve"), "{}", stderr(&o));
        assert!(sleeper.0.try_wait().unwrap().is_none(), "sleep was signalled");
        // A tfo serve with another key file: refused too.
        let other = dir.join("other.key");
        std::fs::write(&other, KEY).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let server = Server::start(&["--key-file", other.to_str().unwrap()]);
        let o = run_tfo(&["key", "rotate", "--key-file", kf, "--pid", &server.guard.0.id().to_string()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("another key file"), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), KEY, "the key changed though rotation was refused");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn key_rotate_writes_0600_keeps_neighbours_and_symlinks() {
    let dir = tempdir("rotate-file");
    std::fs::create_dir_all(dir.join("secret")).unwrap();
    let real = dir.join("secret/key");
    std::fs::write(&real, KEY).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.join("tfo.key");
    std::os::unix::fs::symlink("secret/key", &link).unwrap();
    let neighbour = dir.join("tfo.tmp");
    std::fs::write(&neighbour, "not ours").unwrap();
    let o = run_tfo(&["key", "rotate", "--key-file", link.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(mode_of(&real), 0o600);
    assert!(std::fs::read_to_string(&real).unwrap().trim().ends_with(&format!(",{KEY}")));
    assert_eq!(std::fs::read_to_string(&neighbour).unwrap(), "not ours");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_warns_on_a_readable_key_and_never_prints_a_broken_one() {
    in_netns("hardening_key_files", 3, || {
        let dir = tempdir("serve-keys");
        let key_file = dir.join("open.key");
        std::fs::write(&key_file, KEY).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let server = Server::start(&["--key-file", key_file.to_str().unwrap()]);
        let err = server.stop_and_stderr();
        assert!(err.contains("readable by group or others") && err.contains("chmod 600"), "{err}");

        let broken = "0011223344556677SECRETaabbccddee";
        std::fs::write(&key_file, broken).unwrap();
        let o = run_tfo(&["serve", "127.0.0.1:0", "--key-file", key_file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("open.key") && !stderr(&o).contains("SECRET"), "{}", stderr(&o));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
