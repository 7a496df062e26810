//! Capture files: reading pcap and pcapng (from any tool), writing pcap.
//! Parsing borrows from the input bytes (for pcap, no copy per packet).

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapParser, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::DataLink;

use crate::packet::{LinkType, WireError};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// Capture time (since the Unix epoch, as the file stores it).
    pub timestamp: Duration,
    /// The link layer the frame starts with; `None` for link types we cannot read.
    pub link: Option<LinkType>,
    /// The file's link-layer type number for this frame; `None` when a pcapng
    /// packet names an interface the file never declared.
    pub linktype: Option<u32>,
    /// The captured bytes.
    pub data: Cow<'a, [u8]>,
    /// The frame's length on the wire (more than `data` when the capture was cut short).
    pub orig_len: u32,
}

enum Format {
    Pcap(PcapParser),
    PcapNg(PcapNgParser),
}

/// Reads frames from the bytes of a pcap or pcapng file.
pub struct CaptureReader<'a> {
    format: Format,
    rest: &'a [u8],
    failed: bool,
}

impl std::fmt::Debug for CaptureReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader").field("remaining_bytes", &self.rest.len()).finish()
    }
}

fn link_of(dl: DataLink) -> Option<LinkType> {
    LinkType::from_pcap(u32::from(dl))
}

impl<'a> CaptureReader<'a> {
    /// Recognises the format by its magic number.
    pub fn new(bytes: &'a [u8]) -> Result<CaptureReader<'a>, WireError> {
        let magic = bytes.get(..4).ok_or_else(|| WireError::Malformed("capture file shorter than 4 bytes".into()))?;
        if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
            let (rest, parser) = PcapNgParser::new(bytes).map_err(|e| WireError::Malformed(format!("pcapng: {e}")))?;
            Ok(CaptureReader { format: Format::PcapNg(parser), rest, failed: false })
        } else {
            let (rest, parser) =
                PcapParser::new(bytes).map_err(|e| WireError::Malformed(format!("not a pcap or pcapng file ({e})")))?;
            Ok(CaptureReader { format: Format::Pcap(parser), rest, failed: false })
        }
    }

    /// The link type of a pcap file (pcapng has one per interface).
    pub fn pcap_link(&self) -> Option<LinkType> {
        match &self.format {
            Format::Pcap(p) => link_of(p.header().datalink),
            Format::PcapNg(_) => None,
        }
    }
}

impl<'a> Iterator for CaptureReader<'a> {
    type Item = Result<Frame<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match &mut self.format {
            Format::Pcap(parser) => match parser.next_raw_packet(self.rest) {
                Ok((rest, raw)) => {
                    self.rest = rest;
                    Some(Ok(pcap_frame(parser.header(), raw)))
                }
                Err(e) => {
                    self.failed = true;
                    Some(Err(WireError::Malformed(format!("pcap record: {e}"))))
                }
            },
            Format::PcapNg(parser) => loop {
                match parser.next_block(self.rest) {
                    Ok((rest, block)) => {
                        self.rest = rest;
                        let frame = match block {
                            Block::EnhancedPacket(p) => {
                                let interface = parser.packet_interface(&p);
                                Frame {
                                    timestamp: interface.map_or(p.timestamp, |i| scale_timestamp(p.timestamp, i)),
                                    link: interface.and_then(|i| link_of(i.linktype)),
                                    linktype: interface.map(|i| u32::from(i.linktype)),
                                    data: p.data,
                                    orig_len: p.original_len,
                                }
                            }
                            Block::SimplePacket(p) => {
                                let interface = parser.interfaces().first();
                                Frame {
                                    timestamp: Duration::ZERO,
                                    link: interface.and_then(|i| link_of(i.linktype)),
                                    linktype: interface.map(|i| u32::from(i.linktype)),
                                    data: p.data,
                                    orig_len: p.original_len,
                                }
                            }
                            _ => {
                                if self.rest.is_empty() {
                                    return None;
                                }
                                continue;
                            }
                        };
                        return Some(Ok(frame));
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(WireError::Malformed(format!("pcapng block: {e}"))));
                    }
                }
            },
        }
    }
}

/// A pcap record as a frame. Records are taken as they are: a snap-length cut
/// (`orig_len` above the file's snap length, as `tcpdump -s 80` writes) is
/// normal, and a fraction of a second out of range is clamped, not fatal.
fn pcap_frame<'a>(header: PcapHeader, raw: pcap_file::pcap::RawPcapPacket<'a>) -> Frame<'a> {
    let nanos = match header.ts_resolution {
        pcap_file::TsResolution::MicroSecond => raw.ts_frac.min(999_999).saturating_mul(1000),
        pcap_file::TsResolution::NanoSecond => raw.ts_frac.min(999_999_999),
    };
    Frame {
        timestamp: Duration::new(u64::from(raw.ts_sec), nanos),
        link: link_of(header.datalink),
        linktype: Some(u32::from(header.datalink)),
        data: raw.data,
        orig_len: raw.orig_len,
    }
}

/// A pcapng timestamp in the interface's units. pcap-file hands the raw
/// 64-bit count over as nanoseconds; the unit is the interface's `if_tsresol`
/// (10^-N, or 2^-N when the high bit is set), and microseconds when the option
/// is absent (pcapng spec; tshark and editcap write such files).
fn scale_timestamp(
    raw: Duration,
    interface: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock<'_>,
) -> Duration {
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    let resolution = interface
        .options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    timestamp_from_units(raw.as_nanos(), resolution)
}

/// `units` ticks of the resolution `if_tsresol` names, as a duration.
fn timestamp_from_units(units: u128, tsresol: u8) -> Duration {
    let nanos = if tsresol & 0x80 == 0 {
        let exp = u32::from(tsresol);
        if exp <= 9 {
            units.saturating_mul(10u128.pow(9 - exp))
        } else {
            units / 10u128.saturating_pow(exp - 9)
        }
    } else {
        let exp = u32::from(tsresol & 0x7f).min(127);
        units.saturating_mul(1_000_000_000) >> exp
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The largest pcap record read (tcpdump's and Wireshark's largest snap length).
pub const MAX_RECORD: u32 = 262_144;

/// A push parser for pcap files read in chunks: give it the bytes read so far,
/// it hands out every complete record and says how many bytes it used; keep
/// the rest and append the next chunk. No I/O here, and no copy per packet.
#[derive(Debug, Default)]
pub struct PcapChunks {
    parser: Option<PcapParser>,
}

impl PcapChunks {
    /// A parser that expects the file header first.
    pub fn new() -> PcapChunks {
        PcapChunks::default()
    }

    /// Whether the file header has been read.
    pub fn has_header(&self) -> bool {
        self.parser.is_some()
    }

    /// The link type, once the header has been read.
    pub fn link(&self) -> Option<LinkType> {
        self.parser.as_ref().and_then(|p| link_of(p.header().datalink))
    }

    /// Parses as many complete records of `buf` as there are, calling `f` for
    /// each; returns the number of bytes consumed.
    pub fn feed<'a>(&mut self, buf: &'a [u8], mut f: impl FnMut(Frame<'a>)) -> Result<usize, WireError> {
        let mut rest = buf;
        if self.parser.is_none() {
            match PcapParser::new(rest) {
                Ok((r, p)) => {
                    rest = r;
                    self.parser = Some(p);
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => return Ok(0),
                Err(e) => return Err(WireError::Malformed(format!("not a pcap file ({e})"))),
            }
        }
        let Some(parser) = &self.parser else { return Ok(0) };
        loop {
            // The record's declared length, before the parser waits for that
            // many bytes: a hostile 4 GiB length must not make the caller buffer it.
            if let Some(len_bytes) = rest.get(8..12) {
                let bytes = [len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]];
                let incl_len = match parser.header().endianness {
                    pcap_file::Endianness::Big => u32::from_be_bytes(bytes),
                    pcap_file::Endianness::Little => u32::from_le_bytes(bytes),
                };
                if incl_len > MAX_RECORD {
                    return Err(WireError::Malformed(format!(
                        "a pcap record of {incl_len} bytes (more than {MAX_RECORD}, the largest snap length)"
                    )));
                }
            }
            match parser.next_raw_packet(rest) {
                Ok((r, raw)) => {
                    rest = r;
                    f(pcap_frame(parser.header(), raw));
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => return Ok(buf.len() - rest.len()),
                Err(e) => return Err(WireError::Malformed(format!("pcap record: {e}"))),
            }
        }
    }
}

/// A pcap-file write error as the I/O error it is (or invalid data).
fn write_error(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(io) => io,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// Writes a pcap file (microsecond timestamps) that Wireshark, tshark and tcpdump read.
pub struct CaptureWriter<W: Write> {
    inner: PcapWriter<W>,
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaptureWriter")
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a pcap file with the given link type. Errors are the writer's I/O errors.
    pub fn new(writer: W, link: LinkType) -> std::io::Result<CaptureWriter<W>> {
        let header = PcapHeader { datalink: DataLink::from(link.to_pcap()), snaplen: 262_144, ..PcapHeader::default() };
        let inner = PcapWriter::with_header(writer, header).map_err(write_error)?;
        Ok(CaptureWriter { inner })
    }

    /// Appends one frame (at most 262 144 bytes of it are kept, the snap length).
    pub fn write(&mut self, timestamp: Duration, data: &[u8]) -> std::io::Result<()> {
        let kept = &data[..data.len().min(262_144)];
        let packet = PcapPacket::new(timestamp, data.len() as u32, kept);
        self.inner.write_packet(&packet).map(drop).map_err(write_error)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner.into_writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::build_v4;
    use crate::packet::{TcpFlags, TcpPacket};

    #[test]
    fn a_record_longer_than_any_snap_length_is_refused_not_buffered() {
        let mut file = CaptureWriter::new(Vec::new(), LinkType::RawIp).unwrap().into_inner();
        // ts_sec, ts_usec, incl_len = 0xfffffff0, orig_len.
        let big_endian = file[..4] == [0xa1, 0xb2, 0xc3, 0xd4];
        for word in [1u32, 0, 0xffff_fff0, 0xffff_fff0] {
            file.extend_from_slice(&if big_endian { word.to_be_bytes() } else { word.to_le_bytes() });
        }
        let mut chunks = PcapChunks::new();
        let err = chunks.feed(&file, |_| {}).unwrap_err();
        assert!(err.to_string().contains("4294967280 bytes"), "{err}");
    }

    #[test]
    fn write_then_read_back() {
        let syn = build_v4(TcpFlags::SYN, &[0x22, 0x02, 0x01, 0x01], b"");
        let mut w = CaptureWriter::new(Vec::new(), LinkType::RawIp).unwrap();
        w.write(Duration::from_micros(1_500_000), &syn).unwrap();
        w.write(Duration::from_micros(1_600_000), &syn).unwrap();
        let bytes = w.into_inner();
        let r = CaptureReader::new(&bytes).unwrap();
        assert_eq!(r.pcap_link(), Some(LinkType::RawIp));
        let frames: Vec<_> = r.collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].timestamp, Duration::from_micros(1_600_000));
        let p = TcpPacket::parse(frames[0].link.unwrap(), &frames[0].data).unwrap();
        assert!(p.fast_open().is_some());
    }

    #[test]
    fn chunks_give_the_same_frames_as_the_whole_file() {
        let mut w = CaptureWriter::new(Vec::new(), LinkType::RawIp).unwrap();
        for i in 0..50u8 {
            w.write(Duration::from_micros(u64::from(i)), &build_v4(TcpFlags::SYN, &[], &vec![i; usize::from(i)]))
                .unwrap();
        }
        let bytes = w.into_inner();
        let whole: Vec<Vec<u8>> = CaptureReader::new(&bytes).unwrap().map(|f| f.unwrap().data.into_owned()).collect();
        for chunk in [1usize, 7, 24, 100, 4096] {
            let mut parser = PcapChunks::new();
            let (mut pending, mut got) = (Vec::new(), Vec::new());
            for piece in bytes.chunks(chunk) {
                pending.extend_from_slice(piece);
                let used = parser.feed(&pending, |f| got.push(f.data.into_owned())).unwrap();
                pending.drain(..used);
            }
            assert_eq!(got, whole, "chunk size {chunk}");
            assert!(pending.is_empty());
        }
        assert!(PcapChunks::new().feed(b"garbage that is long enough to be a header", |_| {}).is_err());
    }

    #[test]
    fn pcapng_time_units_follow_if_tsresol_and_default_to_microseconds() {
        assert_eq!(timestamp_from_units(1_500_000, 6), Duration::from_millis(1500));
        assert_eq!(timestamp_from_units(1_500_000_000, 9), Duration::from_millis(1500));
        assert_eq!(timestamp_from_units(15, 1), Duration::from_millis(1500));
        assert_eq!(timestamp_from_units(3 << 10, 0x80 | 10), Duration::from_secs(3));
        assert_eq!(timestamp_from_units(u128::MAX, 0), Duration::from_nanos(u64::MAX), "saturates, no panic");
        assert_eq!(timestamp_from_units(123, 200), Duration::ZERO);
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        assert!(CaptureReader::new(b"").is_err());
        assert!(CaptureReader::new(b"not a capture file").is_err());
        let syn = build_v4(TcpFlags::SYN, &[], b"");
        let mut w = CaptureWriter::new(Vec::new(), LinkType::RawIp).unwrap();
        w.write(Duration::ZERO, &syn).unwrap();
        let bytes = w.into_inner();
        let cut = &bytes[..bytes.len() - 5];
        let results: Vec<_> = CaptureReader::new(cut).unwrap().collect();
        assert_eq!(results.len(), 1);
        assert!(results[0].is_err());
    }
}
