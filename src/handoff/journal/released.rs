//! How far the writer has released the journal, kept on disk (`RELEASED`), so that a restart
//! after a crash re-delivers at most what was in flight, not every stored event of the segments
//! still on disk.
//!
//! Cheap by design: each release overwrites one of two 32-byte slots in place, alternately, with
//! no flush. A killed process leaves the last write in the kernel's page cache, which reaches the
//! disk on its own; a power cut may lose the latest writes, or tear one slot, and the other slot
//! (or none) is read instead: an older position, so more re-deliveries, never fewer events. The
//! position is written only after PostgreSQL has committed what lies before it, so it is never
//! ahead of what is stored; recovery checks it against the segments before it trusts it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Position;

const MAGIC: &[u8; 4] = b"EIRP";
const SLOT: usize = 32;

/// The `RELEASED` file, open for writing.
pub struct ReleasedMark {
    file: File,
    /// The sequence number of the last write; the slot is its parity.
    seq: u32,
}

impl ReleasedMark {
    /// Opens (creating if needed) the file in `dir`, and reads the last position written.
    pub fn open(dir: &Path) -> io::Result<(Self, Option<Position>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("RELEASED"))?;
        let mut slots = [0u8; 2 * SLOT];
        let read = read_up_to(&file, &mut slots)?;
        let latest = slots[..read]
            .chunks_exact(SLOT)
            .filter_map(decode)
            .max_by_key(|(seq, _)| *seq);
        let seq = latest.map_or(0, |(seq, _)| seq);
        Ok((Self { file, seq }, latest.map(|(_, position)| position)))
    }

    /// Records `position` as released, in the slot not written last; no flush.
    pub fn write(&mut self, position: Position) -> io::Result<()> {
        let seq = self.seq.wrapping_add(1);
        let slot = encode(seq, position);
        self.file
            .write_all_at(&slot, u64::from(seq % 2) * SLOT as u64)?;
        self.seq = seq;
        Ok(())
    }
}

fn read_up_to(file: &File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match file.read_at(&mut buffer[read..], read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

fn encode(seq: u32, position: Position) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..4].copy_from_slice(MAGIC);
    slot[4..8].copy_from_slice(&seq.to_le_bytes());
    slot[8..16].copy_from_slice(&position.segment.to_le_bytes());
    slot[16..24].copy_from_slice(&position.offset.to_le_bytes());
    let crc = crc32fast::hash(&slot[..24]);
    slot[24..28].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// A slot's sequence number and position, if it is whole.
fn decode(slot: &[u8]) -> Option<(u32, Position)> {
    let u32_at = |at: usize| u32::from_le_bytes(slot[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    if &slot[..4] != MAGIC || u32_at(24) != crc32fast::hash(&slot[..24]) {
        return None;
    }
    Some((
        u32_at(4),
        Position {
            segment: u64_at(8),
            offset: u64_at(16),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    #[test]
    fn the_last_position_written_is_read_back_and_a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let (mut mark, none) = ReleasedMark::open(dir.path()).unwrap();
        assert_eq!(none, None);
        for offset in [10, 20, 30] {
            mark.write(at(1, offset)).unwrap();
        }
        drop(mark);
        let (mut mark, last) = ReleasedMark::open(dir.path()).unwrap();
        assert_eq!(last, Some(at(1, 30)));
        mark.write(at(2, 5)).unwrap();
        // Tear the slot just written: the one before it stands.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("RELEASED"))
            .unwrap();
        let torn_slot = u64::from(mark.seq % 2) * SLOT as u64;
        file.write_all_at(&[0xff; 7], torn_slot + 10).unwrap();
        let (_, last) = ReleasedMark::open(dir.path()).unwrap();
        assert_eq!(last, Some(at(1, 30)));
    }
}
