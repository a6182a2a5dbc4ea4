//! The cache: its layout, its lock, and the one way entries appear in it (rename from `tmp/`).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::catalog::Source;
use crate::progress::Reporter;

/// The cache root and the places inside it.
///
/// Layout: `downloads/<sha256>/<file>`, `trees/<key>/`, `stages/<stage>-<key>/`, `logs/`,
/// and `tmp/` where every entry is assembled before a rename publishes it.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Held while a run uses the cache; released on drop (also when the process dies).
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl Cache {
    /// Opens (and creates) the cache at `root`, or `cache/` in the project when `None`.
    pub fn open(root: Option<&Path>) -> Result<Cache> {
        let root = match root {
            Some(r) if r.is_absolute() => r.to_path_buf(),
            Some(r) => std::env::current_dir()?.join(r),
            None => crate::project_root().join("cache"),
        };
        for dir in ["downloads", "tmp", "logs"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create the cache directory {}", d.display()))?;
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the cache lock, waiting (and saying so to `reporter`) while another run holds it.
    pub fn lock(&self, reporter: &dyn Reporter) -> Result<CacheLock> {
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the cache lock {}", path.display()))?;
        if file.try_lock().is_err() {
            reporter.message(&format!(
                "waiting for another run to release the cache lock {}",
                path.display()
            ));
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        // Whatever a dead run left half-written in tmp/ is garbage now that we hold the lock.
        let tmp = self.root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot clean {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(CacheLock { _file: file })
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
        let tmp = self.root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
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

/// Publishes `from` (a file or directory inside the cache's `tmp/`) at `to` by rename.
/// If `to` already exists, another run published the same content first and `from` is discarded.
pub fn publish(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if to.exists() {
        remove(from)?;
        return Ok(());
    }
    std::fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}

/// Writes `bytes` to `path` through a sibling temporary file and a rename, so a reader (or a run
/// killed mid-write) never sees half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn the_lock_excludes_other_runs_and_clears_what_a_dead_run_left() {
        let dir = TempDir::new("cache-lock");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let leftover = cache.scratch("stage").unwrap();
        std::fs::write(leftover.join("output.tar"), b"half").unwrap();

        let held = cache.lock(&crate::progress::Silent).unwrap();
        assert!(!leftover.exists(), "taking the lock must clear tmp/");
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
        let dir = TempDir::new("cache-publish");
        let cache = Cache::open(Some(dir.path())).unwrap();
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
