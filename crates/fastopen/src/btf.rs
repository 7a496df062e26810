//! Finding a type in the kernel's BTF (`/sys/kernel/btf/vmlinux`) by kind
//! and name: all that attaching a tracing program to a raw tracepoint needs
//! (the id of its `btf_trace_<name>` typedef). Pure: bytes in, an id out;
//! any malformed input is an error, never a panic.

/// Why a BTF blob could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// Not BTF (wrong magic), or a header or section that does not fit.
    #[error("not a BTF blob, or a truncated one: {0}")]
    Malformed(&'static str),
    /// A type of a kind this reader does not know (a newer kernel).
    #[error("BTF type kind {0} is unknown to this reader")]
    UnknownKind(u32),
}

/// The BTF kind of a typedef (`include/uapi/linux/btf.h`).
pub const KIND_TYPEDEF: u32 = 8;
const KIND_STRUCT: u32 = 4;

const MAGIC: u16 = 0xeb9f;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The byte offset of `member` in the struct named `strukt` (a direct member,
/// not a bitfield), if both are there.
pub fn member_offset(btf: &[u8], strukt: &str, member: &str) -> Result<Option<u32>, BtfError> {
    let mut found = None;
    walk(btf, |kind, name, vlen, info_flag, body, name_of| {
        if kind != KIND_STRUCT || name != strukt.as_bytes() {
            return false;
        }
        for m in 0..vlen {
            let at = m * 12;
            let (Some(name_off), Some(offset)) = (u32_at(body, at), u32_at(body, at + 8)) else { break };
            if name_of(name_off as usize) == Some(member.as_bytes()) {
                let bits = if info_flag { offset & 0x00ff_ffff } else { offset };
                found = (bits % 8 == 0).then_some(bits / 8);
                return true;
            }
        }
        true
    })?;
    Ok(found)
}

/// The id of the first type of `kind` named `name`, if any.
pub fn find_type(btf: &[u8], kind: u32, name: &str) -> Result<Option<u32>, BtfError> {
    let mut id = 0u32;
    let mut found = None;
    walk(btf, |this_kind, this_name, _, _, _, _| {
        id += 1;
        if this_kind == kind && this_name == name.as_bytes() {
            found = Some(id);
            return true;
        }
        false
    })?;
    Ok(found)
}

/// Calls `visit(kind, name, vlen, kind_flag, body, name_of)` for each type
/// in id order until it returns true.
fn walk<'b>(
    btf: &'b [u8],
    mut visit: impl FnMut(u32, &'b [u8], usize, bool, &'b [u8], &dyn Fn(usize) -> Option<&'b [u8]>) -> bool,
) -> Result<(), BtfError> {
    let magic = btf.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
    if magic != Some(MAGIC) {
        return Err(BtfError::Malformed("no BTF magic"));
    }
    let field = |at| u32_at(btf, at).map(|v| v as usize).ok_or(BtfError::Malformed("short header"));
    let hdr_len = field(4)?;
    let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
    let section = |off: usize, len: usize| {
        let start = hdr_len.checked_add(off)?;
        btf.get(start..start.checked_add(len)?)
    };
    let types = section(type_off, type_len).ok_or(BtfError::Malformed("type section out of bounds"))?;
    let strings = section(str_off, str_len).ok_or(BtfError::Malformed("string section out of bounds"))?;
    let name_at = |off: usize| -> Option<&[u8]> {
        let rest = strings.get(off..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    };
    let mut at = 0usize;
    while at < types.len() {
        let name_off = u32_at(types, at).ok_or(BtfError::Malformed("cut type"))? as usize;
        let info = u32_at(types, at + 4).ok_or(BtfError::Malformed("cut type"))?;
        let this_kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        // The fixed 12 bytes, then what the kind carries.
        let extra = match this_kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION members; DATASEC; ENUM64
            6 | 13 => vlen * 8,           // ENUM; FUNC_PROTO params
            0 | 2 | 7..=12 | 16 | 18 => 0,
            other => return Err(BtfError::UnknownKind(other)),
        };
        let body_start = at + 12;
        let body = types.get(body_start..(body_start + extra).min(types.len())).unwrap_or_default();
        let name = name_at(name_off).unwrap_or_default();
        if visit(this_kind, name, vlen, info & (1 << 31) != 0, body, &name_at) {
            return Ok(());
        }
        at = at.checked_add(12 + extra).ok_or(BtfError::Malformed("type section overflows"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types` (each already encoded) and `strings`.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]); // version, flags
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    fn ty(name_off: u32, kind: u32, vlen: u32, size_or_type: u32, extra: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&name_off.to_le_bytes());
        t.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
        t.extend_from_slice(&size_or_type.to_le_bytes());
        t.extend_from_slice(extra);
        t
    }

    #[test]
    fn finds_a_typedef_after_types_of_every_size() {
        let strings = b"\0int\0sock\0btf_trace_inet_sock_set_state\0";
        let mut types = Vec::new();
        types.extend(ty(1, 1, 0, 4, &[0; 4])); // 1: INT int
        types.extend(ty(5, 4, 2, 16, &[0; 24])); // 2: STRUCT sock, two members
        types.extend(ty(0, 2, 0, 2, &[])); // 3: PTR
        types.extend(ty(0, 13, 3, 0, &[0; 24])); // 4: FUNC_PROTO, three params
        types.extend(ty(10, 8, 0, 3, &[])); // 5: TYPEDEF btf_trace_inet_sock_set_state
        let b = blob(&types, strings);
        assert_eq!(find_type(&b, KIND_TYPEDEF, "btf_trace_inet_sock_set_state"), Ok(Some(5)));
        assert_eq!(find_type(&b, KIND_TYPEDEF, "sock"), Ok(None), "sock is a struct, not a typedef");
        assert_eq!(find_type(&b, 4, "sock"), Ok(Some(2)));
    }

    #[test]
    fn finds_a_member_offset_in_bytes() {
        let strings = b"\0task\0pid\0comm\0";
        let mut members = Vec::new();
        for (name, bits) in [(6u32, 64u32), (10, 1024)] {
            members.extend_from_slice(&name.to_le_bytes());
            members.extend_from_slice(&1u32.to_le_bytes());
            members.extend_from_slice(&bits.to_le_bytes());
        }
        let b = blob(&ty(1, 4, 2, 200, &members), strings);
        assert_eq!(member_offset(&b, "task", "comm"), Ok(Some(128)));
        assert_eq!(member_offset(&b, "task", "pid"), Ok(Some(8)));
        assert_eq!(member_offset(&b, "task", "absent"), Ok(None));
        assert_eq!(member_offset(&b, "other", "pid"), Ok(None));
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        assert!(find_type(b"", KIND_TYPEDEF, "x").is_err());
        assert!(find_type(&[0x9f, 0xeb, 1, 0, 24, 0, 0], KIND_TYPEDEF, "x").is_err());
        let mut b = blob(&ty(1, 4, 1000, 0, &[]), b"\0x\0");
        assert!(find_type(&b, KIND_TYPEDEF, "none").is_ok(), "a member list cut short ends the scan");
        b[12] = 0xff; // type_len beyond the blob
        assert!(find_type(&b, KIND_TYPEDEF, "x").is_err());
        assert_eq!(find_type(&blob(&ty(1, 31, 0, 0, &[]), b"\0x\0"), 8, "y"), Err(BtfError::UnknownKind(31)));
        for cut in 0..40 {
            let full = blob(&ty(1, 8, 0, 0, &[]), b"\0abc\0");
            let _ = find_type(&full[..cut.min(full.len())], KIND_TYPEDEF, "abc");
        }
    }

    #[test]
    fn the_running_kernel_names_the_tracepoint_when_it_has_btf() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let id = find_type(&btf, KIND_TYPEDEF, "btf_trace_inet_sock_set_state").unwrap();
        assert!(id.is_some_and(|id| id > 1000), "{id:?}");
        assert!(member_offset(&btf, "task_struct", "comm").unwrap().is_some());
        assert!(member_offset(&btf, "task_struct", "group_leader").unwrap().is_some());
    }
}
