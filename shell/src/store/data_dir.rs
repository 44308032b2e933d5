//! A node's data directory: its log, small marks beside it, and a lock so that one process
//! owns it.
//!
//! ```text
//! <data-dir>/LOCK        held (flock) while a node runs
//! <data-dir>/INCARNATION this directory's incarnation id, chosen when it was created
//! <data-dir>/log/        the segmented log (see SegmentedLog)
//! <data-dir>/<mark>      small atomic files, e.g. the master's last confirmed order
//! ```

use super::segmented::{Recovery, SegmentedLog, SegmentedLogOptions};
use super::StoreError;
use replog_common::ids::{Incarnation, Order};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An opened, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Where it is.
    path: PathBuf,
    /// Chosen at random when the directory was created: a node whose data was lost comes back
    /// as a new incarnation, and nobody keeps counting what the old one held.
    incarnation: Incarnation,
    /// Holds the exclusive lock for as long as the node runs; released when dropped or when the
    /// process dies, so a `kill -9` never leaves a stale lock.
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and locks it; fails if another process holds it.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        fs::create_dir_all(path)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))?;
        lock.try_lock().map_err(|error| match error {
            fs::TryLockError::WouldBlock => StoreError::Locked(path.to_path_buf()),
            fs::TryLockError::Error(error) => StoreError::Io(error),
        })?;
        let incarnation = read_or_create_incarnation(path)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            incarnation,
            _lock: lock,
        })
    }

    /// This directory's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (and, after a crash, repairs) the log kept in `log/`.
    pub fn open_log(&self) -> Result<(SegmentedLog, Recovery), StoreError> {
        SegmentedLog::open(&self.path.join("log"), SegmentedLogOptions::default())
    }

    /// Reads an order kept in the file `name`; `None` if there is none yet.
    pub fn read_mark(&self, name: &str) -> Result<Option<Order>, StoreError> {
        match fs::read_to_string(self.path.join(name)) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map(|order| Some(Order(order)))
                .map_err(|_| StoreError::Corrupt(format!("{name} holds {text:?}, not an order"))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Opens the mark `name` for repeated writes (creating it if needed); see [`Mark`].
    pub fn open_mark(&self, name: &str) -> Result<Mark, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        // Older versions wrote `<order>\n`, never longer than a record: a record written over
        // it leaves nothing behind. Anything longer is not a mark; it is read as garbage.
        if file.metadata()?.len() > MARK_WIDTH as u64 {
            return Err(StoreError::Corrupt(format!("{name} is longer than a mark")));
        }
        Ok(Mark { file })
    }

    /// Writes the order kept in `name` once (see [`Mark::write`]).
    pub fn write_mark(&self, name: &str, order: Order) -> Result<(), StoreError> {
        self.open_mark(name)?.write(order)
    }
}

/// An open mark file, rewritten in place: one `pwrite` of a fixed-width record at offset 0, so
/// a write never changes the file's size or its directory entry (no create, no rename, no
/// journal work: the master rewrites its `confirmed` mark hundreds of times a second). A
/// record is 21 bytes inside the first sector, so a process crash leaves the old or the new
/// one, never a mix. Not fsynced: marks are hints whose loss costs extra work, never
/// correctness.
#[derive(Debug)]
pub struct Mark {
    /// The mark's file, open for the node's lifetime.
    file: File,
}

/// A mark's record: the order in 20 zero-padded digits (every `u64` fits) and a newline.
const MARK_WIDTH: usize = 21;

impl Mark {
    /// Replaces the order the mark holds.
    pub fn write(&self, order: Order) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let record = format!("{:020}\n", order.get());
        debug_assert_eq!(record.len(), MARK_WIDTH);
        self.file.write_all_at(record.as_bytes(), 0)?;
        Ok(())
    }
}

/// The file holding the incarnation id.
const INCARNATION_FILE: &str = "INCARNATION";

/// Reads the directory's incarnation, or chooses one and makes it durable (written, synced,
/// renamed into place, directory synced) before the node uses it.
fn read_or_create_incarnation(dir: &Path) -> Result<Incarnation, StoreError> {
    let path = dir.join(INCARNATION_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .parse()
            .map_err(|error: String| StoreError::Corrupt(format!("{}: {error}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let incarnation = Incarnation::random();
            let temporary = dir.join(format!("{INCARNATION_FILE}.tmp"));
            let mut file = File::create(&temporary)?;
            writeln!(file, "{incarnation}")?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temporary, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(incarnation)
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(first);
        DataDir::open(dir.path()).unwrap();
    }

    #[test]
    fn the_incarnation_is_kept_and_a_new_directory_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap().incarnation();
        assert_eq!(DataDir::open(dir.path()).unwrap().incarnation(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DataDir::open(other.path()).unwrap().incarnation(), first);
        fs::write(dir.path().join(INCARNATION_FILE), "garbage").unwrap();
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn marks_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.read_mark("confirmed").unwrap(), None);
        data.write_mark("confirmed", Order(42)).unwrap();
        assert_eq!(data.read_mark("confirmed").unwrap(), Some(Order(42)));
        fs::write(dir.path().join("confirmed"), "garbage").unwrap();
        assert!(data.read_mark("confirmed").is_err());
    }

    #[test]
    fn a_mark_is_rewritten_in_place_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        // An older version's mark: shorter than a record.
        fs::write(dir.path().join("confirmed"), "7\n").unwrap();
        assert_eq!(data.read_mark("confirmed").unwrap(), Some(Order(7)));
        let mark = data.open_mark("confirmed").unwrap();
        for order in [Order(123_456), Order(9), Order(u64::MAX), Order(5)] {
            mark.write(order).unwrap();
            assert_eq!(data.read_mark("confirmed").unwrap(), Some(order));
        }
        let on_disk = fs::read_to_string(dir.path().join("confirmed")).unwrap();
        assert_eq!(
            on_disk, "00000000000000000005\n",
            "one fixed-width record, nothing after it"
        );
    }
}
