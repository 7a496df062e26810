//! Whether a preload can reach a program, told before it runs: a statically
//! linked binary (Go) or one for another C library (musl) never loads a glibc
//! shim, and the loader ignores `LD_PRELOAD` for a setuid or setgid program
//! run by someone else. Read from the file's ELF program headers (pure; any
//! bytes are safe) and its mode.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a program file is, for a preload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Linkage {
    /// Not an ELF file (a script: its interpreter is what runs).
    NotElf,
    /// No program interpreter: statically linked.
    Static,
    /// Dynamically linked through this loader.
    Dynamic(String),
}

/// Why a preload will not reach the program, as a sentence; `None` when it will.
pub(crate) fn obstacle(program: &Path) -> Option<String> {
    let meta = std::fs::metadata(program).ok()?;
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if (meta.mode() & 0o4000 != 0 && meta.uid() != euid) || (meta.mode() & 0o2000 != 0 && meta.gid() != egid) {
        return Some(format!(
            "{} is setuid or setgid: the loader ignores LD_PRELOAD for it, so it runs without TFO (tfo proxy can serve it instead)",
            program.display()
        ));
    }
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(program).ok()?.take(64 * 1024).read_to_end(&mut head).ok()?;
    match linkage(&head) {
        Linkage::Static => Some(format!(
            "{} is statically linked (Go programs are): a preload cannot reach it, so it runs without TFO; tfo proxy can serve it instead",
            program.display()
        )),
        Linkage::Dynamic(loader) if loader.contains("musl") => Some(format!(
            "{} uses musl ({loader}); the shim needs glibc, so it runs without TFO; tfo proxy can serve it instead",
            program.display()
        )),
        _ => None,
    }
}

/// `program` as the shell would find it: a path as given, a bare name in `PATH`.
pub(crate) fn find(program: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// The program interpreter named by an ELF file's headers.
pub(crate) fn linkage(bytes: &[u8]) -> Linkage {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Linkage::NotElf;
    }
    let big = bytes.get(5) == Some(&2);
    let wide = bytes.get(4) == Some(&2);
    let u16_at = |at: usize| -> Option<u64> {
        let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
        Some(if big { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    };
    let interp = || -> Option<Linkage> {
        let (phoff, entsize, count) = if wide {
            (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?)
        } else {
            (u32_at(0x1c)?, u16_at(0x2a)?, u16_at(0x2c)?)
        };
        for i in 0..count {
            let at = usize::try_from(phoff.checked_add(i.checked_mul(entsize)?)?).ok()?;
            if u32_at(at)? != 3 {
                continue; // not PT_INTERP
            }
            let (offset, size) =
                if wide { (u64_at(at + 8)?, u64_at(at + 0x20)?) } else { (u32_at(at + 4)?, u32_at(at + 16)?) };
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            let name = bytes.get(start..end)?;
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            return Some(Linkage::Dynamic(String::from_utf8_lossy(name).into_owned()));
        }
        Some(Linkage::Static)
    };
    interp().unwrap_or(Linkage::Static)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_interpreter_of_real_binaries() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        match linkage(&me) {
            Linkage::Dynamic(loader) => assert!(loader.contains("ld-linux"), "{loader}"),
            other => panic!("the test binary is dynamically linked: {other:?}"),
        }
        assert_eq!(linkage(b"#!/bin/sh\n"), Linkage::NotElf);
    }

    #[test]
    fn a_binary_without_an_interpreter_is_static() {
        let mut me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Turn every PT_INTERP (3) program header into PT_NULL (0).
        let phoff = u64::from_le_bytes(me[0x20..0x28].try_into().unwrap()) as usize;
        let (size, count) =
            (u16::from_le_bytes([me[0x36], me[0x37]]) as usize, u16::from_le_bytes([me[0x38], me[0x39]]));
        for i in 0..count as usize {
            let at = phoff + i * size;
            if me[at..at + 4] == 3u32.to_le_bytes() {
                me[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        assert_eq!(linkage(&me), Linkage::Static);
    }

    #[test]
    fn hostile_headers_never_panic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let head = &me[..4096.min(me.len())];
        for cut in 0..head.len() {
            let _ = linkage(&head[..cut]);
        }
        for i in 0..128 {
            let mut b = head.to_vec();
            b[i] = 0xff;
            let _ = linkage(&b);
        }
    }

    #[test]
    fn finds_programs_like_the_shell() {
        assert!(find("sh".as_ref()).is_some());
        assert!(find("no-such-program-tfokit".as_ref()).is_none());
        assert!(find("./no/such".as_ref()).is_none());
    }
}
