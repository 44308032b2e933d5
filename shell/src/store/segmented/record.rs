//! The framing of one record inside a segment file: how an entry is laid out, checked and read
//! back.
//!
//! A record is `[len: u32 LE][crc: u32 LE][payload: len bytes]`. `crc` is the CRC-32 (IEEE, as
//! computed by `crc32fast`) of the four length bytes followed by the payload: covering the length
//! too means a flipped bit there is caught even when the wrong length happens to land on
//! plausible bytes. The payload is
//! `[order: u64 LE][id_len: u32 LE][message id, UTF-8][content_len: u32 LE][content, UTF-8]`, and
//! `8 + 4 + id_len + 4 + content_len` must equal `len`.
//!
//! Nothing here touches the file system beyond the [`Read`] it is handed, so the framing rules
//! can be tested on byte slices.

use replog_common::entry::Entry;
use replog_common::ids::{MessageId, Order};
use std::io::{self, Read};

/// Bytes of the `[len][crc]` header in front of every payload.
pub(super) const HEADER_LEN: u64 = 8;

/// The smallest payload that can hold an order and two length prefixes: anything shorter is
/// damage, not a record.
const MIN_PAYLOAD_LEN: u64 = 8 + 4 + 4;

/// The bytes `entry` takes on disk, header included, or `None` when its payload would not fit
/// the `u32` length field.
pub(super) fn encoded_len(entry: &Entry) -> Option<u64> {
    let payload =
        MIN_PAYLOAD_LEN + entry.message_id.as_str().len() as u64 + entry.content.len() as u64;
    (payload <= u64::from(u32::MAX)).then_some(HEADER_LEN + payload)
}

/// Appends the record of `entry` to `buf`. The caller has checked [`encoded_len`].
pub(super) fn encode(entry: &Entry, buf: &mut Vec<u8>) {
    let id = entry.message_id.as_str().as_bytes();
    let content = entry.content.as_bytes();
    // Both casts are covered by the caller's `encoded_len` check: each part is at most the
    // whole payload, which fits a u32.
    let payload_len = (MIN_PAYLOAD_LEN as usize + id.len() + content.len()) as u32;
    let len_bytes = payload_len.to_le_bytes();

    let header_at = buf.len();
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&[0; 4]); // the checksum, filled in once the payload is in place
    let payload_at = buf.len();
    buf.extend_from_slice(&entry.order.get().to_le_bytes());
    buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
    buf.extend_from_slice(id);
    buf.extend_from_slice(&(content.len() as u32).to_le_bytes());
    buf.extend_from_slice(content);

    let crc = checksum(len_bytes, &buf[payload_at..]);
    buf[header_at + 4..payload_at].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// What is wrong with the bytes where a record should start: the signs of a write that was cut
/// short by a crash (or of damage that cannot be told apart from one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailDamage {
    /// The file ends inside the header or inside the payload the header announces.
    Incomplete,
    /// The header announces a payload too short to be a record.
    BadLength,
    /// The checksum does not match the length and payload.
    ChecksumMismatch,
}

impl std::fmt::Display for TailDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TailDamage::Incomplete => "the file ends inside a record",
            TailDamage::BadLength => "a record header has an impossible length",
            TailDamage::ChecksumMismatch => "a record fails its checksum",
        })
    }
}

/// One step of [`RecordReader::next`].
#[derive(Debug)]
pub(super) enum Frame<'a> {
    /// An intact record starting at `offset`; `payload` passed its checksum.
    Record {
        /// Where the record's header starts in the file.
        offset: u64,
        /// The checked payload.
        payload: &'a [u8],
    },
    /// The reader reached `end` exactly on a record boundary.
    End,
    /// The bytes at `offset` are not an intact record.
    Damaged {
        /// Where the damaged record starts: everything before it is intact.
        offset: u64,
        /// What is wrong.
        damage: TailDamage,
    },
}

/// Walks the records of a segment from a known record boundary up to a known end offset, checking
/// every checksum. Knowing the end up front means a torn header is recognised without reading
/// past it, and a garbage length can never make us allocate more than the file holds.
pub(super) struct RecordReader<R> {
    /// The segment's bytes, positioned at `offset`.
    inner: R,
    /// Where the next record starts.
    offset: u64,
    /// Where the readable bytes stop: the file length at start-up, the durable end for reads.
    end: u64,
    /// Reused for every payload so that a scan allocates once per segment, not once per record.
    payload: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    /// A reader over `inner`, which is positioned at the record boundary `offset`.
    pub(super) fn new(inner: R, offset: u64, end: u64) -> RecordReader<R> {
        RecordReader {
            inner,
            offset,
            end,
            payload: Vec::new(),
        }
    }

    /// The next record, the end, or the damage that stops the walk. An I/O error means the file
    /// could not be read (or is shorter than `end`), not that the record is damaged.
    pub(super) fn next(&mut self) -> io::Result<Frame<'_>> {
        let offset = self.offset;
        let remaining = self.end.saturating_sub(offset);
        if remaining == 0 {
            return Ok(Frame::End);
        }
        let damaged = |damage| Ok(Frame::Damaged { offset, damage });
        if remaining < HEADER_LEN {
            return damaged(TailDamage::Incomplete);
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.inner.read_exact(&mut header)?;
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u64::from(u32::from_le_bytes(len_bytes));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len < MIN_PAYLOAD_LEN {
            return damaged(TailDamage::BadLength);
        }
        if len > remaining - HEADER_LEN {
            return damaged(TailDamage::Incomplete);
        }
        // `len` is at most the bytes left before `end`, so this cannot balloon.
        self.payload.resize(len as usize, 0);
        self.inner.read_exact(&mut self.payload)?;
        if checksum(len_bytes, &self.payload) != crc {
            return damaged(TailDamage::ChecksumMismatch);
        }
        self.offset = offset + HEADER_LEN + len;
        Ok(Frame::Record {
            offset,
            payload: &self.payload,
        })
    }
}

/// The parts of a checked payload, borrowed from it.
pub(super) struct Parts<'a> {
    /// The entry's order.
    pub(super) order: Order,
    /// The message id, already checked against [`MessageId`]'s rules.
    pub(super) message_id: &'a str,
    /// The content.
    pub(super) content: &'a str,
}

/// Splits a payload that passed its checksum. An error here means the record was written wrong
/// (a checksum does not lie about torn writes), so callers treat it as corruption, not as a tail
/// to cut.
pub(super) fn parse(payload: &[u8]) -> Result<Parts<'_>, String> {
    let (order, rest) = split(payload, 8)?;
    let order = Order(u64::from_le_bytes(
        order.try_into().map_err(|_| "short order")?,
    ));
    let (id, rest) = prefixed(rest)?;
    let (content, rest) = prefixed(rest)?;
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the content", rest.len()));
    }
    let message_id =
        std::str::from_utf8(id).map_err(|e| format!("message id is not UTF-8: {e}"))?;
    if message_id.is_empty() || message_id.len() > MessageId::MAX_LEN {
        return Err(format!(
            "message id of {} bytes is out of bounds",
            message_id.len()
        ));
    }
    let content = std::str::from_utf8(content).map_err(|e| format!("content is not UTF-8: {e}"))?;
    Ok(Parts {
        order,
        message_id,
        content,
    })
}

/// Decodes a payload that passed its checksum into an owned entry.
pub(super) fn decode(payload: &[u8]) -> Result<Entry, String> {
    let parts = parse(payload)?;
    Ok(Entry {
        order: parts.order,
        message_id: MessageId::parse(parts.message_id).ok_or("message id out of bounds")?,
        content: parts.content.to_owned(),
    })
}

fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), String> {
    if bytes.len() < at {
        return Err(format!("needed {at} bytes, {} left", bytes.len()));
    }
    Ok(bytes.split_at(at))
}

fn prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = split(bytes, 4)?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| "short length prefix")?);
    split(rest, len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64, content: &str) -> Entry {
        Entry {
            order: Order(order),
            message_id: MessageId::parse(&format!("id-{order}")).unwrap(),
            content: content.to_owned(),
        }
    }

    fn frames(bytes: &[u8]) -> Vec<Result<Entry, TailDamage>> {
        let mut reader = RecordReader::new(bytes, 0, bytes.len() as u64);
        let mut out = Vec::new();
        loop {
            match reader.next().unwrap() {
                Frame::Record { payload, .. } => out.push(Ok(decode(payload).unwrap())),
                Frame::End => return out,
                Frame::Damaged { damage, .. } => {
                    out.push(Err(damage));
                    return out;
                }
            }
        }
    }

    #[test]
    fn records_round_trip_and_their_length_is_announced() {
        let entries = [entry(1, "hello"), entry(2, ""), entry(3, "héllo wörld")];
        let mut buf = Vec::new();
        for e in &entries {
            let before = buf.len() as u64;
            encode(e, &mut buf);
            assert_eq!(buf.len() as u64 - before, encoded_len(e).unwrap());
        }
        let decoded: Vec<Entry> = frames(&buf).into_iter().map(Result::unwrap).collect();
        assert_eq!(decoded, entries);
    }

    #[test]
    fn zeroed_bytes_are_not_a_record() {
        // A file extended by the file system but never written reads back as zeros.
        assert_eq!(frames(&[0; 64]), vec![Err(TailDamage::BadLength)]);
    }

    #[test]
    fn a_flipped_length_bit_is_caught() {
        let mut buf = Vec::new();
        encode(&entry(1, "some content here"), &mut buf);
        encode(&entry(2, "more"), &mut buf);
        // Shorten the first record's announced length by one: without the length under the
        // checksum this could only be caught by the payload parser.
        buf[0] -= 1;
        assert_eq!(frames(&buf), vec![Err(TailDamage::ChecksumMismatch)]);
    }
}
