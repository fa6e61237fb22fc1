//! A shard's open rendition and waveform files, like nginx's
//! `open_file_cache`: a hot track is answered without `openat`, `statx`
//! and `close`, which on a 64 KiB range cost about as much as the body.
//!
//! Invariants:
//! - At most `tracks.open_files_max` files are held per shard (0 turns the
//!   cache off); past it one is closed (limit `tracks_open_files`).
//! - An entry is used for `tracks.open_files_ttl_ms`, and only for the
//!   ETag it was opened under: metadata naming a different ETag reopens.
//! - `TrackChanged` drops the track's files and `Resync` drops all; an open
//!   that was in flight across either is not stored (a generation count, as
//!   in [`super::MetaCache`]). A request already holding a file finishes
//!   with it: the descriptor closes when the last holder drops it.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use super::zero_copy;

/// How long a file found wholly in the page cache is taken to stay there
/// before `cachestat` is asked again: one call a second per hot file
/// instead of one per request. A file evicted within that second is read
/// by `sendfile` from disk, as nginx always does.
const RESIDENT_RECHECK: Duration = Duration::from_secs(1);

/// An open file, what `statx` said about it when it was opened, and the
/// header fields every answer from it carries.
pub struct OpenFile {
    /// The file, shared by every request serving it.
    pub file: monoio::fs::File,
    /// Where it is, for the logs.
    pub path: PathBuf,
    /// Its size.
    pub size_bytes: u64,
    /// Its `ETag` value (quoted).
    pub etag: String,
    /// Its `Last-Modified`, in Unix seconds.
    pub last_modified_unix_s: i64,
    /// `Accept-Ranges`, `ETag`, `Last-Modified` (and `Vary` for audio).
    pub fields: Vec<(&'static str, String)>,
    /// The same fields as head lines, ready to copy into each answer.
    pub head_fields: String,
    /// Until when the whole file counts as in the page cache.
    resident_until: Cell<Option<quanta::Instant>>,
}

impl OpenFile {
    /// An open file answered with `fields`.
    pub fn new(
        file: monoio::fs::File,
        path: PathBuf,
        size_bytes: u64,
        etag: String,
        last_modified_unix_s: i64,
        fields: Vec<(&'static str, String)>,
    ) -> Self {
        let head_fields = fields
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        Self {
            file,
            path,
            size_bytes,
            etag,
            last_modified_unix_s,
            fields,
            head_fields,
            resident_until: Cell::new(None),
        }
    }

    /// Whether `range` is in the page cache, so `sendfile` will not wait
    /// for the disk. True when the kernel cannot tell (no `cachestat`).
    pub fn is_cached(&self, range: Range<u64>) -> bool {
        let now = quanta::Instant::now();
        if self.resident_until.get().is_some_and(|until| now < until) {
            return true;
        }
        let fd = self.file.as_raw_fd();
        match zero_copy::is_resident(fd, 0..self.size_bytes) {
            Some(true) => {
                self.resident_until.set(Some(now + RESIDENT_RECHECK));
                true
            }
            Some(false) => zero_copy::is_resident(fd, range) != Some(false),
            None => true,
        }
    }
}

struct Entry {
    file: Rc<OpenFile>,
    track_id: i64,
    etag: String,
    opened_at: quanta::Instant,
}

/// One shard's open files, by path relative to the media directory.
pub struct OpenFileCache {
    entries: HashMap<String, Entry>,
    entries_max: usize,
    ttl: Duration,
    generation: u64,
}

impl OpenFileCache {
    /// An empty cache of at most `entries_max` files (0: nothing is kept).
    pub fn new(entries_max: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            entries_max,
            ttl,
            generation: 0,
        }
    }

    /// The file at `relative_path` if it is open, fresh, and was opened
    /// under `etag`.
    pub fn get(
        &self,
        relative_path: &str,
        etag: &str,
        now: quanta::Instant,
    ) -> Option<Rc<OpenFile>> {
        let entry = self.entries.get(relative_path)?;
        let fresh = now.saturating_duration_since(entry.opened_at) < self.ttl;
        (fresh && entry.etag == etag).then(|| entry.file.clone())
    }

    /// The generation to hand back to [`OpenFileCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Keeps `file` unless the cache is off or an invalidation happened
    /// since `generation`. Returns whether another file was closed to make
    /// room.
    pub fn insert(
        &mut self,
        relative_path: &str,
        track_id: i64,
        etag: &str,
        file: Rc<OpenFile>,
        generation: u64,
        now: quanta::Instant,
    ) -> bool {
        if self.entries_max == 0 || generation != self.generation {
            return false;
        }
        let mut evicted = false;
        if self.entries.len() >= self.entries_max && !self.entries.contains_key(relative_path) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, entry| now.saturating_duration_since(entry.opened_at) < ttl);
            if self.entries.len() >= self.entries_max {
                // The oldest goes: a hot file opened long ago is reopened
                // once, which costs less than tracking every use.
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.opened_at)
                    .map(|(path, _)| path.clone())
                    .expect("the cache is full");
                self.entries.remove(&oldest);
                evicted = true;
            }
        }
        self.entries.insert(
            relative_path.to_owned(),
            Entry {
                file,
                track_id,
                etag: etag.to_owned(),
                opened_at: now,
            },
        );
        evicted
    }

    /// Drops the files of `track_id` (or every file, for `None`).
    pub fn invalidate(&mut self, track_id: Option<i64>) {
        self.generation += 1;
        match track_id {
            Some(track_id) => self.entries.retain(|_, entry| entry.track_id != track_id),
            None => self.entries.clear(),
        }
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_file(runtime_dir: &std::path::Path, name: &str) -> Rc<OpenFile> {
        let path = runtime_dir.join(name);
        std::fs::write(&path, name).unwrap();
        let file = monoio::fs::File::from_std(std::fs::File::open(&path).unwrap()).unwrap();
        Rc::new(OpenFile::new(
            file,
            path,
            name.len() as u64,
            String::new(),
            0,
            Vec::new(),
        ))
    }

    fn with_runtime(test: impl FnOnce(&std::path::Path)) {
        let dir = tempfile::tempdir().unwrap();
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        runtime.block_on(async { test(dir.path()) });
    }

    #[test]
    fn files_are_bounded_expire_and_answer_only_their_etag() {
        with_runtime(|dir| {
            let start = quanta::Instant::now();
            let mut cache = OpenFileCache::new(2, Duration::from_secs(60));
            let generation = cache.generation();
            assert!(!cache.insert("a", 1, "\"a\"", open_file(dir, "a"), generation, start));
            let later = start + Duration::from_secs(1);
            assert!(!cache.insert("b", 2, "\"b\"", open_file(dir, "b"), generation, later));
            assert!(cache.get("a", "\"a\"", later).is_some());
            assert!(
                cache.get("a", "\"other\"", later).is_none(),
                "metadata with a new ETag reopens the file"
            );
            assert!(
                cache.insert("c", 3, "\"c\"", open_file(dir, "c"), generation, later),
                "full: the oldest is closed"
            );
            assert_eq!(cache.len(), 2);
            assert!(cache.get("a", "\"a\"", later).is_none(), "a was the oldest");
            assert!(cache.get("b", "\"b\"", later).is_some());
            assert!(
                cache
                    .get("c", "\"c\"", later + Duration::from_secs(61))
                    .is_none(),
                "expired"
            );
        });
    }

    #[test]
    fn a_track_change_drops_its_files_and_opens_older_than_it_are_not_kept() {
        with_runtime(|dir| {
            let now = quanta::Instant::now();
            let mut cache = OpenFileCache::new(8, Duration::from_secs(60));
            let generation = cache.generation();
            cache.insert("7/64", 7, "\"x\"", open_file(dir, "64"), generation, now);
            cache.insert("7/96", 7, "\"y\"", open_file(dir, "96"), generation, now);
            cache.insert("8/96", 8, "\"z\"", open_file(dir, "896"), generation, now);
            let held = cache.get("7/64", "\"x\"", now).unwrap();
            cache.invalidate(Some(7));
            assert!(cache.get("7/64", "\"x\"", now).is_none());
            assert!(cache.get("7/96", "\"y\"", now).is_none());
            assert!(
                cache.get("8/96", "\"z\"", now).is_some(),
                "other tracks stay"
            );
            assert_eq!(held.size_bytes, 2, "a request holding the file keeps it");

            cache.insert("7/64", 7, "\"x\"", open_file(dir, "64"), generation, now);
            assert!(
                cache.get("7/64", "\"x\"", now).is_none(),
                "an open that started before the change is not kept"
            );
            cache.invalidate(None);
            assert!(cache.is_empty());
        });
    }

    #[test]
    fn a_cache_of_zero_keeps_nothing() {
        with_runtime(|dir| {
            let now = quanta::Instant::now();
            let mut cache = OpenFileCache::new(0, Duration::from_secs(60));
            let generation = cache.generation();
            assert!(!cache.insert("a", 1, "", open_file(dir, "a"), generation, now));
            assert!(cache.is_empty());
        });
    }
}
