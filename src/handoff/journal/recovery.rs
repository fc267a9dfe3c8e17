//! Start-up recovery: every segment is scanned and left holding whole records only.
//!
//! - Empty segment files (the spare the appender makes ahead) are removed.
//! - A torn tail (the process or the machine stopped mid-write) can only be at the end of the last
//!   segment: it is cut off with a warning. Nothing in it was acknowledged.
//! - Damage anywhere else is copied to `quarantine/` and reported; the segment is rewritten with
//!   the records around it. Recovery never fails on bad bytes, so a damaged journal cannot put the
//!   service into a crash loop.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Piece};
use super::{Position, quarantine, segment_path, sync_dir};

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Segments kept, with their lengths.
    pub segments: BTreeMap<u64, u64>,
    /// Whole records in them.
    pub records: u64,
    /// Bytes of torn tail cut off.
    pub torn_bytes: u64,
    /// Files in `quarantine/` made for damaged stretches.
    pub quarantined: Vec<PathBuf>,
    /// Segments rewritten without their damage: offsets into them have moved.
    pub rewritten: Vec<u64>,
    /// Where the writer resumes: the released position kept in `RELEASED`, if recovery trusts
    /// it, else the first segment's start. Everything before it was stored before the stop.
    pub released: Position,
}

pub(super) fn recover(dir: &Path) -> io::Result<RecoveryReport> {
    remove_unfinished_rewrites(dir)?;
    let ids = remove_empty_segments(dir)?;
    let last = ids.last().copied();
    let mut report = RecoveryReport::default();
    for id in ids {
        let path = segment_path(dir, id);
        let data = fs::read(&path)?;
        let mut pieces = record::scan(&data);
        if Some(id) == last
            && let Some(Piece::Damaged(torn)) = pieces.last().cloned()
        {
            pieces.pop();
            report.torn_bytes += torn.len() as u64;
            tracing::warn!(
                segment = %path.display(),
                offset = torn.start,
                bytes = torn.len(),
                "the journal ends in a torn record (the last write before a stop); cut off"
            );
        }
        let mut kept = Vec::with_capacity(data.len());
        for piece in &pieces {
            match piece {
                Piece::Record(range) => {
                    report.records += 1;
                    kept.extend_from_slice(&data[range.clone()]);
                }
                Piece::Damaged(range) => {
                    let name = format!("segment-{id:020}-at-{}.bin", range.start);
                    let saved = quarantine(&dir.join("quarantine"), &name, &data[range.clone()])?;
                    tracing::error!(
                        segment = %path.display(),
                        offset = range.start,
                        bytes = range.len(),
                        quarantine = %saved.display(),
                        "damaged bytes in the journal were set aside; the records around them are kept"
                    );
                    report.quarantined.push(saved);
                }
            }
        }
        if kept.is_empty() {
            fs::remove_file(&path)?;
        } else {
            if kept.len() != data.len() {
                rewrite(&path, &kept)?;
                report.rewritten.push(id);
            }
            report.segments.insert(id, kept.len() as u64);
        }
    }
    sync_dir(dir)?;
    Ok(report)
}

/// Whether `released`, read from the `RELEASED` mark, lies on a record boundary of a segment as
/// recovery left it; a position that does not is not trusted (the segment was rewritten, cut
/// shorter by a power cut, or the mark is from another journal).
pub(super) fn is_boundary(dir: &Path, report: &RecoveryReport, released: Position) -> bool {
    let Some(&len) = report.segments.get(&released.segment) else {
        return false;
    };
    if report.rewritten.contains(&released.segment) || released.offset > len {
        return false;
    }
    if released.offset == len {
        return true;
    }
    // The bytes from the position on must begin with a whole record.
    let Ok(file) = fs::File::open(segment_path(dir, released.segment)) else {
        return false;
    };
    let mut head = vec![0; (len - released.offset).min(1 << 20) as usize];
    use std::os::unix::fs::FileExt;
    if file.read_exact_at(&mut head, released.offset).is_err() {
        return false;
    }
    matches!(record::scan(&head).first(), Some(Piece::Record(range)) if range.start == 0)
}

/// Segment ids in the directory, ascending.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".log").and_then(|stem| stem.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Removes the empty segment files (a spare made ahead and never used, or a segment begun with
/// nothing written); returns the ids of the others, ascending.
fn remove_empty_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut kept = Vec::new();
    for id in segment_ids(dir)? {
        let path = segment_path(dir, id);
        if fs::metadata(&path)?.len() == 0 {
            fs::remove_file(&path)?;
        } else {
            kept.push(id);
        }
    }
    Ok(kept)
}

/// A `*.rewrite` file is a rewrite a crash interrupted: its segment was not replaced, and is
/// recovered again.
fn remove_unfinished_rewrites(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rewrite") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Replaces the segment at `path` with `data`, atomically.
fn rewrite(path: &Path, data: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("rewrite");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}
