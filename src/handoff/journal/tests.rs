use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn config(dir: &Path) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 256,
        sync: SyncPolicy::Always,
    }
}

fn open(config: JournalConfig) -> io::Result<(Journal, JournalReader, RecoveryReport)> {
    Journal::open(config, &Health::default())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn append(journal: &Journal, payloads: &[&[u8]]) {
    let payloads = payloads.iter().map(|p| p.to_vec()).collect();
    journal.append(payloads).unwrap().await.unwrap();
}

fn read_all(reader: &mut JournalReader) -> Vec<ReadRecord> {
    let mut all = Vec::new();
    loop {
        let batch = reader.read(7).unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

fn payloads(records: &[ReadRecord]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.clone()).collect()
}

/// The segment files, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// The last segment written to (the spare after it is empty).
fn last_segment(dir: &Path) -> PathBuf {
    segments(dir)
        .into_iter()
        .rfind(|p| fs::metadata(p).unwrap().len() > 0)
        .unwrap()
}

#[tokio::test]
async fn the_next_segment_is_made_ahead_and_an_unused_one_is_removed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut reader, _) = open(config(dir.path())).unwrap();
    let payload = [7u8; 100];
    for _ in 0..5 {
        append(&journal, &[&payload]).await;
    }
    // The spare is made by a thread of its own: give it a moment.
    let spare = |files: &[PathBuf]| {
        let empty: Vec<_> = files
            .iter()
            .filter(|p| fs::metadata(p).unwrap().len() == 0)
            .collect();
        empty.len() == 1 && Some(empty[0]) == files.last()
    };
    let started = std::time::Instant::now();
    while !spare(&segments(dir.path())) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "one spare, after the open segment: {:?}",
            segments(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(read_all(&mut reader).len(), 5);
    journal.close().await;
    drop((journal, reader));

    let (_journal, mut reader, report) = open(config(dir.path())).unwrap();
    assert_eq!(report.torn_bytes, 0);
    assert!(report.quarantined.is_empty());
    assert_eq!(read_all(&mut reader).len(), 5);
}

#[tokio::test]
async fn appended_records_are_read_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut reader, _) = open(config(dir.path())).unwrap();
    let expected: Vec<Vec<u8>> = (0..50).map(|i| format!("event {i}").into_bytes()).collect();
    for chunk in expected.chunks(3) {
        let chunk: Vec<&[u8]> = chunk.iter().map(|p| p.as_slice()).collect();
        append(&journal, &chunk).await;
    }
    assert!(reader.has_unread());
    assert_eq!(payloads(&read_all(&mut reader)), expected);
    assert!(!reader.has_unread());
    assert!(
        fs::read_dir(dir.path()).unwrap().count() > 3,
        "several segments were used"
    );
}

/// The released position is not written down: after a restart, the released records of the
/// segment that was still open come back (stored again harmlessly: `ON CONFLICT (event_id)`),
/// and the segments released whole are gone for good.
#[tokio::test]
async fn released_segments_are_deleted_and_nothing_released_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut reader, _) = open(config(dir.path())).unwrap();
    for i in 0..20 {
        append(&journal, &[format!("first {i}").as_bytes()]).await;
    }
    let records = read_all(&mut reader);
    reader.release(records.last().unwrap().end).await.unwrap();
    assert_eq!(journal.used_bytes(), 0, "every byte released");
    append(&journal, &[b"after"]).await;
    // Dropped without a close: as a killed process leaves it.
    drop((journal, reader));

    let (journal, mut reader, report) = open(config(dir.path())).unwrap();
    assert_eq!(payloads(&read_all(&mut reader)), vec![b"after".to_vec()]);
    assert_eq!(report.torn_bytes, 0);
    assert_eq!(report.released, records.last().unwrap().end);
    assert!(journal.used_bytes() > 0 && journal.used_bytes() < 64);
}

#[tokio::test]
async fn a_released_position_recovery_cannot_trust_is_ignored_and_everything_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut reader, _) = open(config(dir.path())).unwrap();
    append(&journal, &[b"one", b"two"]).await;
    let records = read_all(&mut reader);
    // Released to the middle of a record, as a mark from another journal would say.
    let mid = Position {
        segment: records[0].end.segment,
        offset: records[0].end.offset - 2,
    };
    reader.release(mid).await.unwrap();
    drop((journal, reader));
    let (_journal, mut reader, report) = open(config(dir.path())).unwrap();
    assert_eq!(report.released.offset, 0, "not trusted");
    assert_eq!(
        payloads(&read_all(&mut reader)),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
}

#[tokio::test]
async fn a_panic_while_holding_the_segment_map_does_not_take_the_journal_down() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut reader, _) = open(config(dir.path())).unwrap();
    append(&journal, &[b"before"]).await;
    let shared = journal.shared.clone();
    let panicked = std::thread::spawn(move || {
        let _held = shared.segments.lock();
        panic!("a bug while holding the lock");
    })
    .join();
    assert!(panicked.is_err());
    append(&journal, &[b"after"]).await;
    assert_eq!(
        payloads(&read_all(&mut reader)),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
}

#[tokio::test]
async fn a_full_journal_refuses_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 100;
    let (journal, mut reader, _) = open(cfg).unwrap();
    append(&journal, &[&[1; 60]]).await;
    assert!(matches!(
        journal.append(vec![vec![2; 60]]),
        Err(AppendError::Full { .. })
    ));
    assert_eq!(read_all(&mut reader).len(), 1);
}

#[tokio::test]
async fn released_bytes_are_free_again_even_inside_the_open_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 100;
    cfg.segment_bytes = 1 << 20;
    let (journal, mut reader, _) = open(cfg).unwrap();
    for round in 0..10u8 {
        append(&journal, &[&[round; 60]]).await;
        let records = read_all(&mut reader);
        assert_eq!(payloads(&records), vec![vec![round; 60]]);
        reader.release(records[0].end).await.unwrap();
        assert_eq!(journal.used_bytes(), 0);
    }
}

#[tokio::test]
async fn the_interval_policy_acknowledges_before_the_flush_and_flushes_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let interval = Duration::from_millis(300);
    cfg.sync = SyncPolicy::Interval(interval);
    let (journal, mut reader, _) = open(cfg.clone()).unwrap();
    let started = std::time::Instant::now();
    append(&journal, &[b"a", b"b"]).await;
    let flushes = || journal.shared.flushes.load(Ordering::SeqCst);
    if started.elapsed() < interval {
        assert_eq!(flushes(), 0, "acknowledged before any flush");
    }
    assert_eq!(read_all(&mut reader).len(), 2, "readable at once");
    while flushes() == 0 {
        assert!(
            started.elapsed() < interval * 10,
            "no flush within ten intervals"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    append(&journal, &[b"c"]).await;
    journal.close().await;
    assert_eq!(flushes(), 2, "closing flushes what is written");
    drop((journal, reader));
    let (_journal, mut reader, _) = open(cfg).unwrap();
    assert_eq!(
        payloads(&read_all(&mut reader)),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_journal() {
    let dir = tempfile::tempdir().unwrap();
    let _open = open(config(dir.path())).unwrap();
    let error = open(config(dir.path())).err().unwrap();
    assert!(error.to_string().contains("in use"), "{error}");
}

#[tokio::test]
async fn damage_in_the_middle_is_quarantined_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1 << 20;
    let (journal, reader, _) = open(cfg.clone()).unwrap();
    append(&journal, &[b"one", b"two", b"three"]).await;
    journal.close().await;
    drop((journal, reader));
    let segment = last_segment(dir.path());
    let mut data = fs::read(&segment).unwrap();
    data[record::encoded_len(3) + record::HEADER_BYTES] ^= 0xff; // inside "two"
    fs::write(&segment, data).unwrap();

    let (_journal, mut reader, report) = open(cfg).unwrap();
    assert_eq!(
        payloads(&read_all(&mut reader)),
        vec![b"one".to_vec(), b"three".to_vec()]
    );
    assert_eq!(report.quarantined.len(), 1);
    assert!(report.quarantined[0].exists());
}

/// Appends `batches`, simulates a stop by the given `crash`, reopens, and returns what was
/// acknowledged and what recovery hands back.
fn append_crash_recover(batches: &[Vec<Vec<u8>>], crash: Crash) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let acknowledged: Vec<Vec<u8>> = runtime().block_on(async {
        let (journal, _reader, _) = open(cfg.clone()).unwrap();
        for batch in batches {
            journal.append(batch.clone()).unwrap().await.unwrap();
        }
        journal.close().await;
        batches.concat()
    });
    let segment = last_segment(dir.path());
    match crash {
        Crash::TornWrite(payload, keep) => {
            let mut torn = Vec::new();
            record::encode(&payload, &mut torn).unwrap();
            torn.truncate(keep.index(torn.len()));
            OpenOptions::new()
                .append(true)
                .open(&segment)
                .unwrap()
                .write_all(&torn)
                .unwrap();
        }
        Crash::Truncate(at) => {
            let len = fs::metadata(&segment).unwrap().len() as usize;
            let file = OpenOptions::new().write(true).open(&segment).unwrap();
            file.set_len(at.index(len + 1) as u64).unwrap();
        }
    }
    let recovered = runtime().block_on(async {
        let (_journal, mut reader, _) = open(cfg).unwrap();
        payloads(&read_all(&mut reader))
    });
    (acknowledged, recovered)
}

#[derive(Debug, Clone)]
enum Crash {
    /// The write in flight at the stop reached the disk only in part.
    TornWrite(Vec<u8>, prop::sample::Index),
    /// The last segment lost an arbitrary tail (beyond what any flush promises).
    Truncate(prop::sample::Index),
}

fn batches() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    let payload = prop::collection::vec(any::<u8>(), 0..48);
    prop::collection::vec(prop::collection::vec(payload, 1..4), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_torn_write_never_costs_an_acknowledged_record(
        batches in batches(),
        torn in prop::collection::vec(any::<u8>(), 0..48),
        keep in any::<prop::sample::Index>(),
    ) {
        let (acknowledged, recovered) = append_crash_recover(&batches, Crash::TornWrite(torn, keep));
        prop_assert_eq!(recovered, acknowledged);
    }

    #[test]
    fn a_cut_anywhere_returns_only_whole_records_in_order(
        batches in batches(),
        at in any::<prop::sample::Index>(),
    ) {
        let (acknowledged, recovered) = append_crash_recover(&batches, Crash::Truncate(at));
        // What comes back is a prefix of what went in: nothing corrupt, nothing reordered, and
        // every segment before the cut one comes back whole.
        prop_assert!(recovered.len() <= acknowledged.len());
        prop_assert_eq!(&acknowledged[..recovered.len()], &recovered[..]);
    }
}
