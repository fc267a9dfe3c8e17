//! The on-disk record format, and the scanner that tells whole records from damage.
//!
//! A record is a 12-byte header and a payload:
//!
//! ```text
//! magic  u32 LE  "EVJ1"
//! len    u32 LE  payload length in bytes
//! crc    u32 LE  CRC-32 of the len field and the payload
//! payload
//! ```
//!
//! The magic lets the scanner find the next whole record after a damaged stretch; the checksum
//! covers the length too, so a torn or flipped header cannot pass for a record.

use std::ops::Range;

pub const MAGIC: u32 = u32::from_le_bytes(*b"EVJ1");
pub const HEADER_BYTES: usize = 12;
/// Largest payload accepted; anything bigger is damage, not a record.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Bytes a payload of `payload_len` takes on disk.
pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len
}

/// A payload over [`MAX_PAYLOAD_BYTES`]: the scanner would take it for damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a journal record holds at most {MAX_PAYLOAD_BYTES} bytes (this one: {0})")]
pub struct TooLarge(pub usize);

/// Checks that `payload` fits one record.
pub fn check(payload: &[u8]) -> Result<(), TooLarge> {
    if payload.len() <= MAX_PAYLOAD_BYTES {
        Ok(())
    } else {
        Err(TooLarge(payload.len()))
    }
}

/// Appends one record holding `payload` to `out`; refuses (writing nothing) a payload too large.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
    check(payload)?;
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn checksum(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

/// What a stretch of a segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A whole record; the range covers header and payload.
    Record(Range<usize>),
    /// Bytes that are not a whole record: a torn write, or damage.
    Damaged(Range<usize>),
}

impl Piece {
    pub fn range(&self) -> &Range<usize> {
        match self {
            Piece::Record(range) | Piece::Damaged(range) => range,
        }
    }
}

/// The payload of the record that `range` (from [`scan`]) covers.
pub fn payload<'a>(data: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    &data[range.start + HEADER_BYTES..range.end]
}

/// Splits `data` into whole records and damaged stretches, in order, covering every byte.
pub fn scan(data: &[u8]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        if let Some(len) = record_at(data, pos) {
            pieces.push(Piece::Record(pos..pos + len));
            pos += len;
            continue;
        }
        let start = pos;
        pos += 1;
        while pos < data.len() && record_at(data, pos).is_none() {
            pos += 1;
        }
        pieces.push(Piece::Damaged(start..pos));
    }
    pieces
}

/// The length of the whole record starting at `pos`, if one does.
fn record_at(data: &[u8], pos: usize) -> Option<usize> {
    let header = data.get(pos..pos + HEADER_BYTES)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return None;
    }
    let payload = data.get(pos + HEADER_BYTES..pos + HEADER_BYTES + len)?;
    let len_bytes: [u8; 4] = header[4..8].try_into().unwrap();
    (checksum(&len_bytes, payload) == word(8)).then_some(HEADER_BYTES + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(p, &mut out).unwrap();
        }
        out
    }

    fn payloads_of(data: &[u8]) -> Vec<Vec<u8>> {
        scan(data)
            .iter()
            .filter_map(|piece| match piece {
                Piece::Record(range) => Some(payload(data, range).to_vec()),
                Piece::Damaged(_) => None,
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let payloads = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        let data = encode_all(&payloads);
        assert_eq!(payloads_of(&data), payloads);
        assert!(scan(&data).iter().all(|p| matches!(p, Piece::Record(_))));
    }

    #[test]
    fn a_payload_too_large_is_refused_with_nothing_written() {
        let mut out = b"before".to_vec();
        let huge = vec![0; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            encode(&huge, &mut out),
            Err(TooLarge(MAX_PAYLOAD_BYTES + 1))
        );
        assert_eq!(out, b"before");
    }

    #[test]
    fn a_torn_tail_is_one_damaged_piece_at_the_end() {
        let data = encode_all(&[b"whole".to_vec(), b"torn".to_vec()]);
        let cut = &data[..data.len() - 2];
        let pieces = scan(cut);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1], Piece::Damaged(encoded_len(5)..cut.len()));
    }

    #[test]
    fn damage_in_the_middle_spares_the_records_after_it() {
        let mut data = encode_all(&[b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]);
        let second = encoded_len(5);
        data[second + HEADER_BYTES + 1] ^= 0xff;
        assert_eq!(
            payloads_of(&data),
            vec![b"first".to_vec(), b"third".to_vec()]
        );
    }

    proptest! {
        #[test]
        fn scanning_covers_every_byte_in_order(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut pos = 0;
            for piece in scan(&data) {
                prop_assert_eq!(piece.range().start, pos);
                pos = piece.range().end;
            }
            prop_assert_eq!(pos, data.len());
        }

        #[test]
        fn a_flipped_byte_never_yields_a_wrong_record(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut data = encode_all(&payloads);
            let at = flip.index(data.len());
            data[at] ^= 1 << bit;
            for found in payloads_of(&data) {
                prop_assert!(payloads.contains(&found));
            }
            prop_assert!(payloads_of(&data).len() >= payloads.len() - 1);
        }
    }
}
