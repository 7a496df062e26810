//! Which process made each client connection, even one that is gone by the
//! time anyone looks (`tfo watch`'s eBPF backend). A small BPF program on
//! the `inet_sock_set_state` tracepoint (a `tp_btf` tracing program, no
//! tracefs needed) runs when a socket enters SYN_SENT, which happens in the
//! connecting process (connect(), or the first write of a TFO connect): it
//! stores the process id, its name and its cgroup under the socket's cookie
//! (the same cookie sock_diag reports) in an LRU map, which is read here.
//!
//! The program is a few instructions built here (no clang, no object file):
//! `program` (private) is pure and tested; loading and the map calls are in `sys`.
//! Dropping [`ConnectOwners`] detaches the program and frees the map: nothing
//! stays attached after exit, and nothing is pinned.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys::bpf;

/// The process that connected a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOwner {
    /// The process id (the thread group's).
    pub pid: u32,
    /// Its name (`comm`), as the kernel keeps it (at most 15 bytes).
    pub comm: String,
    /// Its cgroup v2 id (the inode of its cgroup directory).
    pub cgroup_id: u64,
}

/// Why the BPF backend cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    /// No `/sys/kernel/btf/vmlinux` (a kernel without BTF).
    #[error("the kernel has no BTF (/sys/kernel/btf/vmlinux): {0}")]
    NoBtf(io::Error),
    /// BTF without the tracepoint (a kernel older than 4.16, or a different
    /// build), or without `task_struct.group_leader` / `comm`.
    #[error("the kernel's BTF has no inet_sock_set_state tracepoint (or no task_struct comm)")]
    NoTracepoint,
    /// BTF that could not be read.
    #[error(transparent)]
    Btf(#[from] crate::btf::BtfError),
    /// Not allowed (needs CAP_BPF and CAP_PERFMON, or root).
    #[error("loading BPF programs needs CAP_BPF and CAP_PERFMON (or root): {0}")]
    Permission(io::Error),
    /// The kernel refused the map, the program or the attachment.
    #[error("{what}: {source}")]
    Kernel {
        /// Which step.
        what: &'static str,
        /// The kernel's answer (with the verifier's last line for the program).
        source: io::Error,
    },
}

/// Sockets remembered at once (least recently used ones go first).
pub const MAX_SOCKETS: u32 = 65_536;

const MAP_TYPE_LRU_HASH: u32 = 9;
const PROG_TYPE_TRACING: u32 = 26;
const TRACE_RAW_TP: u32 = 23;
const KEY_SIZE: usize = 8;
const VALUE_SIZE: usize = 32;

/// The loaded and attached program, and its map.
#[derive(Debug)]
pub struct ConnectOwners {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl ConnectOwners {
    /// Loads the program and attaches it (needs CAP_BPF + CAP_PERFMON, BTF).
    pub fn attach() -> Result<ConnectOwners, OwnersError> {
        let btf = std::fs::read("/sys/kernel/btf/vmlinux").map_err(OwnersError::NoBtf)?;
        let id = crate::btf::find_type(&btf, crate::btf::KIND_TYPEDEF, "btf_trace_inet_sock_set_state")?
            .ok_or(OwnersError::NoTracepoint)?;
        let kernel = |what| {
            move |source: io::Error| {
                if bpf::is_permission(&source) {
                    OwnersError::Permission(source)
                } else {
                    OwnersError::Kernel { what, source }
                }
            }
        };
        let map = bpf::map_create(MAP_TYPE_LRU_HASH, KEY_SIZE as u32, VALUE_SIZE as u32, MAX_SOCKETS)
            .map_err(kernel("creating the map"))?;
        let field = |name| {
            crate::btf::member_offset(&btf, "task_struct", name)?
                .and_then(|o| i32::try_from(o).ok())
                .ok_or(OwnersError::NoTracepoint)
        };
        let task = TaskOffsets { group_leader: field("group_leader")?, comm: field("comm")? };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&map);
        let insns = program(fd, task);
        let prog = bpf::prog_load(&bpf::Program {
            prog_type: PROG_TYPE_TRACING,
            expected_attach_type: TRACE_RAW_TP,
            attach_btf_id: id,
            insns: &insns,
            license: b"Dual MIT/GPL\0",
        })
        .map_err(kernel("loading the program"))?;
        let link = bpf::raw_tracepoint_open(prog.as_fd()).map_err(kernel("attaching to inet_sock_set_state"))?;
        Ok(ConnectOwners { map, _prog: prog, _link: link })
    }

    /// The process that connected the socket with this cookie (sock_diag's
    /// `cookie`), if the program saw it (clients only; taken out of the map).
    pub fn take(&self, cookie: u64) -> io::Result<Option<ConnectOwner>> {
        let key = cookie.to_ne_bytes();
        let mut value = [0u8; VALUE_SIZE];
        if !bpf::map_lookup(self.map.as_fd(), &key, &mut value)? {
            return Ok(None);
        }
        bpf::map_delete(self.map.as_fd(), &key)?;
        Ok(Some(decode(&value)))
    }
}

/// The map's value: tgid (u32), 4 bytes of padding, cgroup id (u64), comm (16 bytes).
fn decode(value: &[u8; VALUE_SIZE]) -> ConnectOwner {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&value[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    let comm = &value[16..32];
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    ConnectOwner {
        pid: (word(0) & 0xffff_ffff) as u32,
        comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        cgroup_id: word(8),
    }
}

/// One eBPF instruction, as the kernel reads it (little-endian hosts).
fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(op) | (u64::from(dst | (src << 4)) << 8) | (u64::from(off as u16) << 16) | (u64::from(imm as u32) << 32)
}

/// Where the process's name is: `task_struct.group_leader` and
/// `task_struct.comm`, from the kernel's BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskOffsets {
    pub(crate) group_leader: i32,
    pub(crate) comm: i32,
}

/// The program, with the map's descriptor in its one map load. In C:
///
/// ```c
/// SEC("tp_btf/inet_sock_set_state")
/// int on_state(u64 *ctx) {            /* ctx: sk, oldstate, newstate */
///     if (ctx[2] != TCP_SYN_SENT || !ctx[0]) return 0;
///     u64 key = bpf_get_socket_cookie((struct sock *)ctx[0]);
///     struct { u32 tgid, pad; u64 cgroup; char comm[16]; } v;
///     v.tgid = bpf_get_current_pid_tgid() >> 32; v.pad = 0;
///     v.cgroup = bpf_get_current_cgroup_id();
///     /* the process's name: its thread group leader's comm, not the thread's */
///     struct task_struct *leader;
///     bpf_probe_read_kernel(&leader, 8, (void *)bpf_get_current_task() + GROUP_LEADER);
///     bpf_probe_read_kernel(v.comm, 16, (void *)leader + COMM);
///     bpf_map_update_elem(&owners, &key, &v, BPF_ANY);
///     return 0;
/// }
/// ```
pub(crate) fn program(map_fd: i32, task: TaskOffsets) -> Vec<u64> {
    const MOV64_REG: u8 = 0xbf;
    const MOV64_IMM: u8 = 0xb7;
    const ADD64_IMM: u8 = 0x07;
    const RSH64_IMM: u8 = 0x77;
    const LDX_DW: u8 = 0x79;
    const STX_DW: u8 = 0x7b;
    const STX_W: u8 = 0x63;
    const ST_W: u8 = 0x62;
    const JNE_IMM: u8 = 0x55;
    const JEQ_IMM: u8 = 0x15;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    const LD_IMM64: u8 = 0x18;
    const PSEUDO_MAP_FD: u8 = 1;
    const MAP_UPDATE_ELEM: i32 = 2;
    const GET_CURRENT_PID_TGID: i32 = 14;
    const GET_CURRENT_TASK: i32 = 35;
    const GET_SOCKET_COOKIE: i32 = 46;
    const GET_CURRENT_CGROUP_ID: i32 = 80;
    const PROBE_READ_KERNEL: i32 = 113;
    const TCP_SYN_SENT: i32 = 2;
    /// Jumps to the end ("return 0"), patched once the end is known.
    const TO_END: i16 = i16::MAX;
    // Stack: the leader pointer at fp-48, the key at fp-40, the value at
    // fp-32 (tgid), fp-28 (pad), fp-24 (cgroup), fp-16 (comm).
    let mut code = vec![
        insn(MOV64_REG, 6, 1, 0, 0),                 // r6 = ctx
        insn(LDX_DW, 2, 6, 16, 0),                   // r2 = newstate
        insn(JNE_IMM, 2, 0, TO_END, TCP_SYN_SENT),   // not SYN_SENT: done
        insn(LDX_DW, 1, 6, 0, 0),                    // r1 = sk
        insn(JEQ_IMM, 1, 0, TO_END, 0),              // no socket: done
        insn(CALL, 0, 0, 0, GET_SOCKET_COOKIE),      //
        insn(STX_DW, 10, 0, -40, 0),                 // key = cookie
        insn(CALL, 0, 0, 0, GET_CURRENT_PID_TGID),   //
        insn(RSH64_IMM, 0, 0, 0, 32),                // the tgid
        insn(STX_W, 10, 0, -32, 0),                  //
        insn(ST_W, 10, 0, -28, 0),                   // pad = 0
        insn(CALL, 0, 0, 0, GET_CURRENT_CGROUP_ID),  //
        insn(STX_DW, 10, 0, -24, 0),                 //
        insn(CALL, 0, 0, 0, GET_CURRENT_TASK),       // r0 = current
        insn(MOV64_REG, 3, 0, 0, 0),                 //
        insn(ADD64_IMM, 3, 0, 0, task.group_leader), // r3 = &current->group_leader
        insn(MOV64_REG, 1, 10, 0, 0),                //
        insn(ADD64_IMM, 1, 0, 0, -48),               //
        insn(MOV64_IMM, 2, 0, 0, 8),                 //
        insn(CALL, 0, 0, 0, PROBE_READ_KERNEL),      // leader (zero if it failed)
        insn(LDX_DW, 3, 10, -48, 0),                 //
        insn(ADD64_IMM, 3, 0, 0, task.comm),         // r3 = leader->comm
        insn(MOV64_REG, 1, 10, 0, 0),                //
        insn(ADD64_IMM, 1, 0, 0, -16),               //
        insn(MOV64_IMM, 2, 0, 0, 16),                //
        insn(CALL, 0, 0, 0, PROBE_READ_KERNEL),      // comm (zeros if it failed)
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd), // r1 = the map
        insn(0, 0, 0, 0, 0),                         // (the load's second half)
        insn(MOV64_REG, 2, 10, 0, 0),                //
        insn(ADD64_IMM, 2, 0, 0, -40),               // r2 = &key
        insn(MOV64_REG, 3, 10, 0, 0),                //
        insn(ADD64_IMM, 3, 0, 0, -32),               // r3 = &value
        insn(MOV64_IMM, 4, 0, 0, 0),                 // BPF_ANY
        insn(CALL, 0, 0, 0, MAP_UPDATE_ELEM),        //
    ];
    let end = code.len();
    code.push(insn(MOV64_IMM, 0, 0, 0, 0)); // return 0
    code.push(insn(EXIT, 0, 0, 0, 0));
    for (at, i) in code.iter_mut().enumerate() {
        if (*i >> 16) as u16 as i16 == TO_END && matches!(*i as u8, JNE_IMM | JEQ_IMM) {
            let off = (end - at - 1) as i16;
            *i = (*i & !(0xffff << 16)) | (u64::from(off as u16) << 16);
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r6 = r1: opcode 0xbf, dst 6, src 1.
        assert_eq!(insn(0xbf, 6, 1, 0, 0).to_le_bytes(), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        // *(u64 *)(r10 - 40) = r0: a negative offset in two bytes.
        assert_eq!(insn(0x7b, 10, 0, -40, 0).to_le_bytes(), [0x7b, 0x0a, 0xd8, 0xff, 0, 0, 0, 0]);
        // r1 += -16: a negative immediate in four bytes.
        assert_eq!(insn(0x07, 1, 0, 0, -16).to_le_bytes(), [0x07, 0x01, 0, 0, 0xf0, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn the_program_jumps_to_its_end_and_loads_the_map_it_is_given() {
        let p = program(42, TaskOffsets { group_leader: 2000, comm: 3000 });
        let exit = p.len() - 2; // "return 0"
        for (at, &i) in p.iter().enumerate() {
            let op = i as u8;
            if op == 0x55 || op == 0x15 {
                let off = (i >> 16) as u16 as i16;
                assert_eq!(at as i64 + 1 + i64::from(off), exit as i64, "the jump at {at}");
            }
        }
        let map_load = p.iter().position(|&i| i as u8 == 0x18).unwrap();
        assert_eq!((p[map_load] >> 32) as i32, 42);
        assert_eq!((p[map_load] >> 12) & 0xf, 1, "a map descriptor (BPF_PSEUDO_MAP_FD)");
        assert_eq!(p[map_load + 1], 0);
        assert_eq!(*p.last().unwrap() as u8, 0x95, "ends with exit");
        let adds: Vec<i32> = p.iter().filter(|&&i| i as u8 == 0x07).map(|&i| (i >> 32) as i32).collect();
        assert!(adds.contains(&2000) && adds.contains(&3000), "the task offsets are used: {adds:?}");
    }

    #[test]
    fn values_decode_with_their_name_cut_at_nul() {
        let mut v = [0u8; VALUE_SIZE];
        v[0..4].copy_from_slice(&4242u32.to_ne_bytes());
        v[8..16].copy_from_slice(&77u64.to_ne_bytes());
        v[16..20].copy_from_slice(b"curl");
        assert_eq!(decode(&v), ConnectOwner { pid: 4242, comm: "curl".into(), cgroup_id: 77 });
        v[16..32].copy_from_slice(b"sixteen-bytes-xx"); // no NUL at all
        assert_eq!(decode(&v).comm, "sixteen-bytes-xx");
    }
}
