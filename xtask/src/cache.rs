//! The cache: its layout, its lock, and the one way entries appear in it (rename from its scratch
//! directory, `python-fips-tmp/`).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::catalog::Source;
use crate::progress::Reporter;

/// The scratch directory: named for the tool, since taking the lock empties it.
pub const SCRATCH: &str = "python-fips-tmp";
/// The marker of a cache directory (<https://bford.info/cachedir/>), as cargo writes one.
const MARKER: &str = "CACHEDIR.TAG";
const SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
/// The labels older versions gave their scratch entries, `tmp/<label>.<pid>.<n>`.
const OLD_LABELS: &[&str] = &[
    "tree",
    "stage",
    "openssl",
    "fips-provider",
    "python",
    "finalize",
    "packages",
    "package",
    "image",
    "diffoscope",
    "reproducible",
    "rootfs",
];
/// What a cache made before the marker existed may hold: such a cache is adopted, if it also
/// holds that version's own traces (see `old_cache`).
const OLD_LAYOUT: &[&str] = &[
    ".lock",
    "downloads",
    "logs",
    "tmp",
    "trees",
    "stages",
    "failed.json",
    "bench",
];

/// The cache root and the places inside it.
///
/// Layout: `downloads/<sha256>/<file>`, `trees/<key>/`, `stages/<stage>-<key>/`, `logs/`,
/// and `python-fips-tmp/` where every entry is assembled before a rename publishes it.
/// `CACHEDIR.TAG` marks the directory as this tool's cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// How long `lock` waits for another run before giving up (`PYTHON_FIPS_LOCK_TIMEOUT`,
    /// in seconds; 30 minutes by default).
    pub lock_timeout: Duration,
    /// The directory did not exist: this run made it.
    fresh: bool,
}

/// Held while a run uses the cache; released on drop (also when the process dies). Dropping it
/// also removes the scratch entries this process made while it was held, so that a run that
/// ends, failed or not, leaves no scratch behind even under a shared lock (which never empties
/// the scratch directory as a whole).
#[derive(Debug)]
pub struct CacheLock {
    _file: Option<File>,
    scratch: PathBuf,
    /// This process's scratch entries that were there already when the lock was taken.
    before: Vec<PathBuf>,
}

impl CacheLock {
    fn new(file: Option<File>, root: &Path) -> CacheLock {
        let scratch = root.join(SCRATCH);
        let before = scratch_entries(&scratch)
            .into_iter()
            .filter(|(_, pid)| *pid == std::process::id())
            .map(|(path, _)| path)
            .collect();
        CacheLock {
            _file: file,
            scratch,
            before,
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        for (path, pid) in scratch_entries(&self.scratch) {
            if pid == std::process::id() && !self.before.contains(&path) {
                let _ = remove(&path);
            }
        }
    }
}

/// The entries `<label>.<pid>.<n>` of a scratch directory, with their pids.
fn scratch_entries(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (label, pid) = scratch_label(&name)?;
            (!label.is_empty()).then_some((e.path(), pid))
        })
        .collect()
}

/// The label and the pid of a scratch entry's name `<label>.<pid>.<n>`.
fn scratch_label(name: &str) -> Option<(&str, u32)> {
    let mut parts = name.rsplitn(3, '.');
    let n = parts.next()?;
    let pid = parts.next()?;
    let label = parts.next()?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (digits(n) && digits(pid)).then_some((label, pid.parse().ok()?))
}

/// Whether the process `pid` is alive; `None` when this machine cannot tell (no `/proc`).
fn alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    proc.join("self")
        .exists()
        .then(|| proc.join(pid.to_string()).exists())
}

impl Cache {
    /// Opens the cache at `root`, or `cache/` in the project when `None`.
    ///
    /// A directory is used only if it is empty, carries this tool's `CACHEDIR.TAG`, or holds
    /// nothing but what an older version of the tool made there, with that version's own traces
    /// (its `.lock`, and `downloads/<sha256>/`); anything else is refused untouched. A `root`
    /// that does not exist is made only if its parent exists (a mistyped path is an error, not
    /// a fresh cache).
    pub fn open(root: Option<&Path>) -> Result<Cache> {
        let explicit = root.is_some();
        let root = resolve(root)?;
        let fresh = adopt(&root, explicit)?;
        for dir in ["downloads", "logs"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create the cache directory {}", d.display()))?;
        }
        Ok(Cache {
            root,
            lock_timeout: lock_timeout(),
            fresh,
        })
    }

    /// Opens the cache for a command that only reads it (`recipes`): nothing is made, marked,
    /// adopted or cleaned. A directory that does not exist reads as a fresh, empty cache; one
    /// that is neither this tool's cache nor an older version's is refused like by `open`.
    pub fn open_read_only(root: Option<&Path>) -> Result<Cache> {
        let root = resolve(root)?;
        let fresh = !root.exists();
        if !fresh && !is_marked(&root) && !is_empty_dir(&root) && !old_cache(&root) {
            return Err(not_a_cache(&root));
        }
        Ok(Cache {
            root,
            lock_timeout: lock_timeout(),
            fresh,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this run made the cache directory (so it holds nothing yet).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Takes the cache lock, waiting (and saying so to `reporter`) while another run holds it,
    /// for at most `lock_timeout`; then empties the scratch directory. A cache whose lock file
    /// cannot be written (a read-only copy) is locked for reading only, as by `lock_shared`.
    pub fn lock(&self, reporter: &dyn Reporter) -> Result<CacheLock> {
        let path = self.root.join(".lock");
        let file = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if read_only(&e) => {
                reporter.message(&format!(
                    "the cache {} is read-only: using it without writing",
                    self.root.display()
                ));
                return self.lock_shared(reporter);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open the cache lock {}", path.display()));
            }
        };
        self.wait(&file, &path, false, reporter)?;
        if self.fresh {
            // A mistyped --cache or PYTHON_FIPS_CACHE shows here, before a cold build starts.
            reporter.message(&format!(
                "starting a new, empty cache at {}",
                self.root.display()
            ));
        }
        // Say who holds it, for whoever waits next.
        let mut holder = &file;
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(holder, "pid {}", std::process::id()));
        // Whatever a dead run left half-written in the scratch directory is garbage now that
        // we hold the lock.
        let tmp = self.root.join(SCRATCH);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot clean {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(CacheLock::new(Some(file), &self.root))
    }

    /// Takes the cache lock for reading only (an `--offline` run, or a read-only copy of a
    /// cache): shared with other readers. Nothing in the cache is written but the run's own
    /// scratch (which goes when the lock is dropped) and the removal of the scratch entries of
    /// runs that died (their pids are gone).
    pub fn lock_shared(&self, reporter: &dyn Reporter) -> Result<CacheLock> {
        let path = self.root.join(".lock");
        let file = match File::open(&path) {
            Ok(file) => file,
            // Nobody ever wrote in this cache, so nobody is writing now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CacheLock::new(None, &self.root));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open the cache lock {}", path.display()));
            }
        };
        self.wait(&file, &path, true, reporter)?;
        for (entry, pid) in scratch_entries(&self.root.join(SCRATCH)) {
            if alive(pid) == Some(false) {
                let _ = remove(&entry);
            }
        }
        Ok(CacheLock::new(Some(file), &self.root))
    }

    /// Waits for the lock on `file` for at most `lock_timeout`, naming its holder.
    fn wait(&self, file: &File, path: &Path, shared: bool, reporter: &dyn Reporter) -> Result<()> {
        let take = || {
            if shared {
                file.try_lock_shared()
            } else {
                file.try_lock()
            }
        };
        let holder = || {
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map_or_else(
                    || "another run".to_string(),
                    |t| format!("another run ({t})"),
                )
        };
        let started = Instant::now();
        let mut said = false;
        loop {
            match take() {
                Ok(()) => return Ok(()),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            if started.elapsed() >= self.lock_timeout {
                bail!(
                    "{} still holds the cache lock {} after {}s\nhint: wait for it to finish, or use another cache with --cache (PYTHON_FIPS_LOCK_TIMEOUT sets the wait in seconds)",
                    holder(),
                    path.display(),
                    self.lock_timeout.as_secs()
                );
            }
            if !said {
                said = true;
                reporter.message(&format!(
                    "waiting for {} to release the cache lock {}",
                    holder(),
                    path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where a verified download lives: content-addressed by its sha256.
    pub fn download_path(&self, source: &Source) -> PathBuf {
        self.root
            .join("downloads")
            .join(&source.sha256)
            .join(&source.file)
    }

    /// A fresh, empty scratch directory inside the cache (same filesystem, so rename works).
    pub fn scratch(&self, label: &str) -> Result<PathBuf> {
        let tmp = self.root.join(SCRATCH);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        for n in 0u32.. {
            let dir = tmp.join(format!("{label}.{}.{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", dir.display()));
                }
            }
        }
        unreachable!()
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// `root` made absolute, or `cache/` in the project when `None`.
fn resolve(root: Option<&Path>) -> Result<PathBuf> {
    Ok(match root {
        Some(r) if r.is_absolute() => r.to_path_buf(),
        Some(r) => std::env::current_dir()?.join(r),
        None => crate::project_root().join("cache"),
    })
}

/// `PYTHON_FIPS_LOCK_TIMEOUT` in seconds, 30 minutes by default.
fn lock_timeout() -> Duration {
    std::env::var("PYTHON_FIPS_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs)
}

/// Whether `root` carries this tool's `CACHEDIR.TAG`.
fn is_marked(root: &Path) -> bool {
    let tag = std::fs::read_to_string(root.join(MARKER)).unwrap_or_default();
    tag.starts_with(SIGNATURE) && tag.contains("python-fips")
}

fn is_empty_dir(root: &Path) -> bool {
    std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_none())
}

/// Whether `root` is a cache an older version made before the marker existed: nothing but that
/// version's names, and its own traces: its `.lock` file, and downloads only as
/// `downloads/<sha256>/` (and `downloads/.partial/`), at least one of them.
fn old_cache(root: &Path) -> bool {
    let names = |dir: &Path| -> Option<Vec<(String, bool)>> {
        let entries = std::fs::read_dir(dir).ok()?;
        entries
            .map(|e| {
                let e = e.ok()?;
                let is_dir = e.file_type().ok()?.is_dir();
                Some((e.file_name().to_string_lossy().into_owned(), is_dir))
            })
            .collect()
    };
    let Some(top) = names(root) else {
        return false;
    };
    let Some(downloads) = names(&root.join("downloads")) else {
        return false;
    };
    let sha256 = |n: &str| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit());
    top.iter().all(|(n, _)| OLD_LAYOUT.contains(&n.as_str()))
        && std::fs::symlink_metadata(root.join(".lock")).is_ok_and(|m| m.is_file())
        && downloads.iter().any(|(n, dir)| *dir && sha256(n))
        && downloads
            .iter()
            .all(|(n, dir)| *dir && (sha256(n) || n == ".partial"))
}

fn not_a_cache(root: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is not a python-fips cache: it is not empty and has no CACHEDIR.TAG of this tool, so nothing in it was touched\nhint: pass --cache (or PYTHON_FIPS_CACHE) an empty or new directory",
        root.display()
    )
}

/// Checks that `root` may be used as the cache (see `Cache::open`) and marks it; returns
/// whether it was made now.
fn adopt(root: &Path, explicit: bool) -> Result<bool> {
    match std::fs::symlink_metadata(root) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = root.parent().unwrap_or(root);
            if explicit && !parent.is_dir() {
                bail!(
                    "there is no cache directory {}, and its parent {} does not exist either\nhint: check the path given with --cache or PYTHON_FIPS_CACHE",
                    root.display(),
                    parent.display()
                );
            }
            std::fs::create_dir_all(root)
                .with_context(|| format!("cannot create the cache directory {}", root.display()))?;
            mark(root)?;
            return Ok(true);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the cache directory {}", root.display()));
        }
    }
    std::fs::read_dir(root)
        .with_context(|| format!("cannot read the cache directory {}", root.display()))?;
    if is_marked(root) {
        return Ok(false);
    }
    let old = old_cache(root);
    if is_empty_dir(root) || old {
        // A read-only copy of an old cache stays usable without its marker.
        if mark(root).is_ok() && old {
            clean_old_scratch(root);
        }
        return Ok(false);
    }
    Err(not_a_cache(root))
}

fn mark(root: &Path) -> Result<()> {
    let text = format!(
        "{SIGNATURE}\n# This file is a cache directory tag created by python-fips (cargo xtask).\n# For information about cache directory tags see https://bford.info/cachedir/\n"
    );
    write_atomic(&root.join(MARKER), text.as_bytes())
}

/// Removes what older versions left in their scratch directory `tmp/`: only the entries they
/// named `<label>.<pid>.<n>` with one of their labels, then `tmp/` itself if that emptied it.
fn clean_old_scratch(root: &Path) {
    let tmp = root.join("tmp");
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = scratch_label(&name).is_some_and(|(label, _)| OLD_LABELS.contains(&label));
        if ours {
            let _ = remove(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(&tmp);
}

/// Publishes `from` (a file or directory inside the cache's scratch directory) at `to` by rename.
/// If `to` already exists, another run published the same content first and `from` is discarded.
///
/// Everything in `from` is synced to disk before the rename, and the directory of `to` after it,
/// so that a power loss cannot leave a published entry with empty files.
pub fn publish(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(to);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    if to.exists() {
        remove(from)?;
        return Ok(());
    }
    sync_tree(from)?;
    std::fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    sync(parent)
}

/// `write_atomic`, unless `path` already holds exactly `bytes`: what a no-op run would write
/// again is left as it is.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|have| have == bytes) {
        return Ok(());
    }
    write_atomic(path, bytes)
}

/// Writes `bytes` to `path` through a sibling temporary file and a rename, so a reader (or a run
/// killed mid-write) never sees half of it; synced like `publish`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    sync(&tmp)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    sync(path.parent().unwrap_or(path))
}

/// Syncs a file or a directory (its entries, not what they point to) to disk.
pub fn sync(path: &Path) -> Result<()> {
    #[cfg(test)]
    SYNCED.with(|s| s.borrow_mut().push(path.to_path_buf()));
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {} to disk", path.display()))
}

/// Syncs every regular file and directory below `root` (and `root`), children first.
fn sync_tree(root: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(root)
        .with_context(|| format!("cannot read {}", root.display()))?;
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?
        {
            sync_tree(
                &entry
                    .with_context(|| format!("cannot list {}", root.display()))?
                    .path(),
            )?;
        }
    } else if !meta.is_file() {
        return Ok(());
    }
    sync(root)
}

#[cfg(test)]
thread_local! {
    static SYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Removes a file or a directory tree, if present.
pub fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Every path synced so far on this thread (tests only).
#[cfg(test)]
pub fn synced() -> Vec<PathBuf> {
    SYNCED.with(|s| s.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// A cache in a new temporary directory, returned with it so that it lives as long.
    fn fresh_cache(name: &str) -> (TempDir, Cache) {
        let dir = TempDir::new(name);
        let cache = Cache::open(Some(dir.path())).unwrap();
        (dir, cache)
    }

    /// Runs `f` on a thread and gives up waiting after `secs` (the thread is left behind).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs)).ok()
    }

    #[test]
    fn a_directory_that_is_not_a_cache_is_refused_and_left_alone() {
        let dir = TempDir::new("cache-foreign");
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/precious.txt"), b"user data").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"more user data").unwrap();

        let result = Cache::open(Some(dir.path())).and_then(|c| c.lock(&crate::progress::Silent));
        assert!(
            dir.path().join("tmp/precious.txt").exists(),
            "taking the lock deleted a file the cache did not make"
        );
        let err = result.expect_err("a foreign directory was adopted as a cache");
        let text = format!("{err:#}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("CACHEDIR.TAG"), "{text}");

        // An empty directory is adopted and marked; so is a cache made by an older version.
        let empty = TempDir::new("cache-empty");
        Cache::open(Some(empty.path())).unwrap();
        assert!(empty.path().join("CACHEDIR.TAG").is_file());
        let old = TempDir::new("cache-old");
        let sha = "ab".repeat(32);
        for d in [
            &format!("downloads/{sha}"),
            "logs",
            "tmp/tree.1.0",
            "trees",
            "stages",
        ] {
            std::fs::create_dir_all(old.path().join(d)).unwrap();
        }
        std::fs::write(old.path().join(".lock"), b"").unwrap();
        let cache = Cache::open(Some(old.path())).unwrap();
        drop(cache.lock(&crate::progress::Silent).unwrap());
        assert!(old.path().join("CACHEDIR.TAG").is_file());
        assert!(old.path().join(format!("downloads/{sha}")).is_dir());
        assert!(
            !old.path().join("tmp/tree.1.0").exists(),
            "the old scratch was kept"
        );
    }

    /// A directory laid out as `names` (directories end with `/`), with `bytes` in each file.
    fn layout(dir: &Path, names: &[&str]) {
        for name in names {
            let path = dir.join(name.trim_end_matches('/'));
            if name.ends_with('/') {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, b"bytes").unwrap();
            }
        }
    }

    #[test]
    fn only_the_old_tools_own_traces_make_a_directory_an_old_cache() {
        // The old names without the old tool's traces: somebody's own directory.
        let dir = TempDir::new("cache-lookalike");
        let names = [
            "downloads/holiday.iso",
            "logs/",
            "tmp/photos.2024.06/a.jpg",
            "tmp/report.2023.11",
        ];
        layout(dir.path(), &names);
        let result = Cache::open(Some(dir.path()));
        for name in names {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        assert!(
            !dir.path().join(MARKER).exists(),
            "the directory was marked as a cache"
        );
        let err = result.expect_err("a directory without the tool's traces was adopted");
        assert!(format!("{err:#}").contains("CACHEDIR.TAG"), "{err:#}");

        // With them, it is adopted, and only the old tool's scratch labels are removed.
        let old = TempDir::new("cache-old-traces");
        let sha = "0f".repeat(32);
        layout(
            old.path(),
            &[
                ".lock",
                &format!("downloads/{sha}/Python-3.12.0.tgz"),
                "downloads/.partial/",
                "tmp/tree.4242.0/half",
                "tmp/openssl.4242.1/",
                "tmp/photos.2024.06/a.jpg",
                "tmp/report.2023.11",
            ],
        );
        Cache::open(Some(old.path())).unwrap();
        assert!(old.path().join(MARKER).is_file());
        assert!(!old.path().join("tmp/tree.4242.0").exists());
        assert!(!old.path().join("tmp/openssl.4242.1").exists());
        assert!(old.path().join("tmp/photos.2024.06/a.jpg").is_file());
        assert!(old.path().join("tmp/report.2023.11").is_file());
    }

    #[test]
    fn a_read_only_command_neither_adopts_nor_writes() {
        let old = TempDir::new("cache-ro-cmd");
        let sha = "0f".repeat(32);
        let names = [
            ".lock",
            &format!("downloads/{sha}/f.tgz"),
            "tmp/tree.4242.0/half",
        ];
        layout(old.path(), &names);
        let cache = Cache::open_read_only(Some(old.path())).unwrap();
        assert!(cache.dir("downloads").join(&sha).join("f.tgz").is_file());
        let mut found: Vec<String> = std::fs::read_dir(old.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(
            found,
            [".lock", "downloads", "tmp"],
            "the cache was written"
        );
        assert!(old.path().join("tmp/tree.4242.0/half").is_file());

        // A cache that does not exist is not made.
        let missing = old.path().join("nothing-here");
        let cache = Cache::open_read_only(Some(&missing)).unwrap();
        assert!(cache.is_fresh());
        assert!(!missing.exists(), "a read-only command made a cache");
    }

    /// A pid that no process has: a child that has been waited for.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_runs_own_scratch_goes_when_its_lock_is_dropped() {
        let (_dir, cache) = fresh_cache("cache-guard");
        for shared in [false, true] {
            let lock = match shared {
                true => cache.lock_shared(&crate::progress::Silent),
                false => cache.lock(&crate::progress::Silent),
            }
            .unwrap();
            let scratch = cache.scratch("tree").unwrap();
            std::fs::write(scratch.join("half"), b"118 MB of a failed prepare").unwrap();
            drop(lock);
            assert!(
                !scratch.exists(),
                "a run (shared: {shared}) left its scratch {} behind",
                scratch.display()
            );
        }
    }

    #[test]
    fn a_shared_lock_clears_the_scratch_of_dead_runs_only() {
        let (_dir, cache) = fresh_cache("cache-dead");
        drop(cache.lock(&crate::progress::Silent).unwrap());
        let tmp = cache.dir(SCRATCH);
        let dead = tmp.join(format!("tree.{}.0", dead_pid()));
        let alive = tmp.join("tree.1.0");
        let other = tmp.join("notes");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let held = cache.lock_shared(&crate::progress::Silent).unwrap();
        assert!(!dead.exists(), "a dead run's scratch was kept");
        assert!(alive.exists(), "a live run's scratch was removed");
        assert!(
            other.exists(),
            "a name that is no scratch label was removed"
        );
        drop(held);
    }

    #[test]
    fn a_cache_path_whose_parent_is_missing_is_refused() {
        let dir = TempDir::new("cache-typo");
        let typo = dir.path().join("no-such-dir").join("cache");
        let err = Cache::open(Some(&typo)).expect_err("a mistyped cache path was created");
        assert!(!typo.exists());
        let text = format!("{err:#}");
        assert!(text.contains(&typo.display().to_string()), "{text}");
        assert!(text.contains("PYTHON_FIPS_CACHE"), "{text}");

        // A new directory beside existing ones is made, and the run says so.
        let new = dir.path().join("cache");
        let cache = Cache::open(Some(&new)).unwrap();
        assert!(cache.is_fresh());
        let rec = Said::default();
        drop(cache.lock(&rec).unwrap());
        let said = rec.0.lock().unwrap().clone();
        assert!(
            said.iter()
                .any(|l| l.contains("new, empty cache") && l.contains(&new.display().to_string())),
            "{said:?}"
        );
    }

    #[derive(Default)]
    struct Said(std::sync::Mutex<Vec<String>>);

    impl Reporter for Said {
        fn download_started(
            &self,
            _: &str,
            _: Option<u64>,
            _: u64,
        ) -> Box<dyn crate::progress::Transfer + '_> {
            crate::progress::Silent.download_started("", None, 0)
        }
        fn message(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[test]
    fn a_shared_lock_writes_nothing_so_a_read_only_cache_serves_offline_runs() {
        let (dir, cache) = fresh_cache("cache-ro");
        let leftover = cache.scratch("tree").unwrap();
        std::fs::write(leftover.join("half"), b"x").unwrap();
        std::fs::create_dir_all(cache.dir("downloads/abc")).unwrap();
        std::fs::write(cache.dir("downloads/abc/f.tgz"), b"bytes").unwrap();
        let snapshot = || {
            let mut out = Vec::new();
            let mut stack = vec![dir.path().to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    let m = std::fs::symlink_metadata(&p).unwrap();
                    out.push((p.clone(), m.modified().unwrap(), m.len()));
                    if m.is_dir() {
                        stack.push(p);
                    }
                }
            }
            out.sort();
            out
        };
        let before = snapshot();
        // As the owner of a read-only copy would see it (root is not stopped by the modes).
        chmod_tree(dir.path(), 0o555);

        let root = dir.path().to_path_buf();
        let outcome = within(10, move || -> Result<()> {
            let cache = Cache::open(Some(&root))?;
            let first = cache.lock_shared(&crate::progress::Silent)?;
            let second = cache.lock_shared(&crate::progress::Silent)?;
            drop((first, second));
            Ok(())
        });
        chmod_tree(dir.path(), 0o755);
        let result = outcome.expect("a second reader waited for the first");
        result.unwrap();
        assert_eq!(snapshot(), before, "a shared lock changed the cache");
    }

    fn chmod_tree(dir: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                chmod_tree(&p, mode);
            }
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_wait_for_the_lock_ends_and_names_the_holder() {
        let (_dir, cache) = fresh_cache("cache-wait");
        let held = cache.lock(&crate::progress::Silent).unwrap();
        let mut waiting = cache.clone();
        waiting.lock_timeout = std::time::Duration::from_millis(300);

        let outcome = within(10, move || {
            waiting
                .lock(&crate::progress::Silent)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        });
        drop(held);
        let err = outcome
            .expect("the wait for the lock did not end")
            .expect_err("got the lock while another run held it");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn publish_and_write_atomic_sync_before_and_after_the_rename() {
        let (_dir, cache) = fresh_cache("cache-sync");
        let scratch = cache.scratch("tree").unwrap();
        std::fs::create_dir_all(scratch.join("sub")).unwrap();
        std::fs::write(scratch.join("sub/a"), b"a").unwrap();
        std::fs::write(scratch.join("b"), b"b").unwrap();
        let dest = cache.dir("trees").join("key");
        publish(&scratch, &dest).unwrap();
        let meta = cache.dir("stages").join("meta.json");
        std::fs::create_dir_all(cache.dir("stages")).unwrap();
        write_atomic(&meta, b"{}").unwrap();

        let synced = synced();
        for want in [
            scratch.join("sub/a"),
            scratch.join("b"),
            scratch.join("sub"),
            cache.dir("trees"),
            cache.dir("stages"),
        ] {
            assert!(
                synced.contains(&want),
                "{} not synced: {synced:?}",
                want.display()
            );
        }
        assert!(
            synced
                .iter()
                .any(|p| p.to_string_lossy().contains("meta.json")),
            "{synced:?}"
        );
    }

    #[test]
    fn the_lock_excludes_other_runs_and_clears_what_a_dead_run_left() {
        let (dir, cache) = fresh_cache("cache-lock");
        let leftover = cache.scratch("stage").unwrap();
        std::fs::write(leftover.join("output.tar"), b"half").unwrap();

        let held = cache.lock(&crate::progress::Silent).unwrap();
        assert!(
            !leftover.exists(),
            "taking the lock must clear the scratch directory"
        );
        let other = File::options()
            .write(true)
            .open(dir.path().join(".lock"))
            .unwrap();
        assert!(
            other.try_lock().is_err(),
            "a second run got the lock while the first held it"
        );
        drop(held);
        assert!(
            other.try_lock().is_ok(),
            "the lock was not released with its holder"
        );
    }

    #[test]
    fn publish_is_a_rename_and_keeps_the_first_entry() {
        let (_dir, cache) = fresh_cache("cache-publish");
        let dest = cache.dir("stages").join("python-abc");
        for content in ["first", "second"] {
            let scratch = cache.scratch("python").unwrap();
            std::fs::write(scratch.join("output.tar"), content).unwrap();
            publish(&scratch, &dest).unwrap();
            assert!(!scratch.exists());
        }
        assert_eq!(
            std::fs::read_to_string(dest.join("output.tar")).unwrap(),
            "first"
        );
    }
}
