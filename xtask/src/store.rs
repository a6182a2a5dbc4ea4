//! The stage cache behind one interface: `StageCache::lookup` before a stage runs and
//! `StageCache::publish` after. The local cache directory always answers first and always
//! keeps what runs here; further backends (`Remote`: a shared cache elsewhere) are asked on a
//! local miss and given every new entry. A remote only ever accelerates: when it fails, the
//! run says so in one line and goes on locally.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::cache::{self, Cache};
use crate::progress::Reporter;

pub use crate::build_info::Origin;

/// The files of a stage entry.
const ENTRY_FILES: &[&str] = &["output.tar", "meta.json"];

/// A shared stage cache somewhere else.
pub trait Remote {
    /// The backend as messages name it.
    fn name(&self) -> String;
    /// Writes the entry `stage`-`key`, which must be exactly the files `files`, into the empty
    /// directory `into` and returns the digest its bytes were checked against, or `None` when
    /// the backend does not have it.
    fn fetch(&self, stage: &str, key: &str, files: &[&str], into: &Path) -> Result<Option<String>>;
    /// Whether the backend has the entry `stage`-`key` (a backend that cannot tell says yes,
    /// so that nothing is sent to it).
    fn has(&self, stage: &str, key: &str) -> Result<bool>;
    /// Stores the local entry directory `entry` (every file in it) under `stage`-`key`. Storing
    /// a key that is there already must be harmless.
    fn push(&self, stage: &str, key: &str, entry: &Path) -> Result<()>;
}

/// The local stage entries and the remotes, asked in that order.
pub struct StageCache<'a> {
    cache: &'a Cache,
    remotes: &'a [Box<dyn Remote + Sync>],
}

impl<'a> StageCache<'a> {
    pub fn new(cache: &'a Cache, remotes: &'a [Box<dyn Remote + Sync>]) -> StageCache<'a> {
        StageCache { cache, remotes }
    }

    /// `stages/<stage>-<key>`: where the entry lives locally.
    pub fn entry(&self, stage: &str, key: &str) -> PathBuf {
        self.cache.dir("stages").join(format!("{stage}-{key}"))
    }

    /// The local entry of `stage`-`key` and where it came from, if the local cache or a remote
    /// has it. A remote's entry is published into the local cache first, like a local result.
    pub fn lookup(&self, stage: &str, key: &str, ui: &dyn Reporter) -> Result<Option<Origin>> {
        let entry = self.entry(stage, key);
        if entry.join("output.tar").is_file() {
            // A remote that lacks it gets it: a warm machine fills an empty shared cache.
            self.give(stage, key, &entry, ui);
            return Ok(Some(Origin::Local));
        }
        for remote in self.remotes {
            let scratch = self.cache.scratch(stage)?;
            let fetched = remote
                .fetch(stage, key, ENTRY_FILES, &scratch)
                .and_then(|digest| {
                    if digest.is_some() {
                        check_entry(&scratch, stage, key)?;
                    }
                    Ok(digest)
                });
            match fetched {
                Ok(Some(digest)) => {
                    cache::publish(&scratch, &entry)?;
                    return Ok(Some(Origin::Remote {
                        remote: remote.name(),
                        digest,
                    }));
                }
                Ok(None) => cache::remove(&scratch)?,
                Err(e) => {
                    cache::remove(&scratch)?;
                    ui.message(&format!(
                        "warning: the stage cache {} did not give {stage}-{}: {e:#}; building here",
                        remote.name(),
                        &key[..key.len().min(12)]
                    ));
                }
            }
        }
        Ok(None)
    }

    /// Publishes the finished entry assembled in `scratch` (by rename, so it appears whole)
    /// and gives it to every remote; returns the local entry.
    pub fn publish(
        &self,
        stage: &str,
        key: &str,
        scratch: &Path,
        ui: &dyn Reporter,
    ) -> Result<PathBuf> {
        let entry = self.entry(stage, key);
        cache::publish(scratch, &entry)?;
        self.give(stage, key, &entry, ui);
        Ok(entry)
    }

    /// Gives the local entry `entry` to every remote (a remote that has the key keeps its own).
    fn give(&self, stage: &str, key: &str, entry: &Path, ui: &dyn Reporter) {
        for remote in self.remotes {
            if let Err(e) = remote.push(stage, key, entry) {
                ui.message(&format!(
                    "warning: the stage cache {} did not take {stage}-{}: {e:#}; the build goes on",
                    remote.name(),
                    &key[..key.len().min(12)]
                ));
            }
        }
    }
}

/// Checks that the entry a remote gave in `dir` has an `output.tar` and is `stage`-`key` by its
/// own `meta.json`: an entry filed under another key is not that key's output.
fn check_entry(dir: &Path, stage: &str, key: &str) -> Result<()> {
    /// The fields of `meta.json` that name its entry.
    #[derive(serde::Deserialize)]
    struct Named {
        stage: String,
        key: String,
    }
    if !dir.join("output.tar").is_file() {
        bail!("its entry has no output.tar");
    }
    let meta = dir.join("meta.json");
    let len = std::fs::metadata(&meta).map_or(0, |m| m.len());
    if len > META_CAP {
        bail!("its meta.json is larger than {} KiB", META_CAP >> 10);
    }
    let text = std::fs::read(&meta).context("its entry has no meta.json")?;
    let named: Named = serde_json::from_slice(&text)
        .map_err(|e| anyhow!("its meta.json is not the JSON of a stage entry: {e}"))?;
    if (named.stage.as_str(), named.key.as_str()) != (stage, key) {
        let named = format!("{}-{}", named.stage, named.key);
        bail!("its meta.json names {named:?}, not {stage}-{key}");
    }
    Ok(())
}

/// The largest `meta.json` read: ours are a few kilobytes.
const META_CAP: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Recorder;
    use crate::testutil::TempDir;
    use std::sync::Mutex;

    /// A remote kept in a directory, which can be told to fail or to hand out broken entries.
    struct Dir {
        root: PathBuf,
        broken: bool,
        down: bool,
        pushed: Mutex<Vec<String>>,
    }

    impl Remote for Dir {
        fn name(&self) -> String {
            format!("dir:{}", self.root.display())
        }
        fn fetch(&self, stage: &str, key: &str, _: &[&str], into: &Path) -> Result<Option<String>> {
            if self.down {
                anyhow::bail!("connection refused");
            }
            let from = self.root.join(format!("{stage}-{key}"));
            if !from.is_dir() {
                return Ok(None);
            }
            if !self.broken {
                for file in ["output.tar", "meta.json"] {
                    std::fs::copy(from.join(file), into.join(file))?;
                }
            }
            Ok(Some("sha256:ab".into()))
        }
        fn has(&self, stage: &str, key: &str) -> Result<bool> {
            Ok(self.root.join(format!("{stage}-{key}")).is_dir())
        }
        fn push(&self, stage: &str, key: &str, entry: &Path) -> Result<()> {
            if self.down {
                anyhow::bail!("connection refused");
            }
            let to = self.root.join(format!("{stage}-{key}"));
            std::fs::create_dir_all(&to)?;
            for file in ["output.tar", "meta.json"] {
                std::fs::copy(entry.join(file), to.join(file))?;
            }
            self.pushed.lock().unwrap().push(format!("{stage}-{key}"));
            Ok(())
        }
    }

    fn remote(dir: &TempDir, broken: bool, down: bool) -> Vec<Box<dyn Remote + Sync>> {
        vec![Box::new(Dir {
            root: dir.path().to_path_buf(),
            broken,
            down,
            pushed: Mutex::new(Vec::new()),
        })]
    }

    fn scratch_with_output(cache: &Cache, key: &str) -> PathBuf {
        let scratch = cache.scratch("openssl").unwrap();
        std::fs::write(scratch.join("output.tar"), b"tar bytes").unwrap();
        let meta = serde_json::json!({ "stage": "openssl", "key": key, "seconds": 1.0 });
        std::fs::write(scratch.join("meta.json"), meta.to_string()).unwrap();
        scratch
    }

    #[test]
    fn a_result_published_on_one_machine_is_found_on_another_through_the_remote() {
        let (a, b, shared) = (
            TempDir::new("store-a"),
            TempDir::new("store-b"),
            TempDir::new("store-remote"),
        );
        let remotes = remote(&shared, false, false);
        let lines = Recorder::default();
        let cache_a = Cache::open(Some(a.path())).unwrap();
        let store_a = StageCache::new(&cache_a, &remotes);
        assert_eq!(store_a.lookup("openssl", "k1", &lines).unwrap(), None);
        let entry = store_a
            .publish(
                "openssl",
                "k1",
                &scratch_with_output(&cache_a, "k1"),
                &lines,
            )
            .unwrap();
        assert!(entry.join("output.tar").is_file());
        assert_eq!(
            store_a.lookup("openssl", "k1", &lines).unwrap(),
            Some(Origin::Local)
        );

        let cache_b = Cache::open(Some(b.path())).unwrap();
        let store_b = StageCache::new(&cache_b, &remotes);
        let origin = store_b.lookup("openssl", "k1", &lines).unwrap();
        assert!(
            matches!(&origin, Some(Origin::Remote { digest, .. }) if digest == "sha256:ab"),
            "{origin:?}"
        );
        assert_eq!(
            std::fs::read(store_b.entry("openssl", "k1").join("output.tar")).unwrap(),
            b"tar bytes"
        );
        // Once pulled, it is a local entry like any other.
        assert_eq!(
            store_b.lookup("openssl", "k1", &lines).unwrap(),
            Some(Origin::Local)
        );
        assert!(lines.lines().is_empty(), "{:?}", lines.lines());
    }

    #[test]
    fn a_failing_or_broken_remote_costs_a_warning_and_never_a_result() {
        let (local, shared) = (TempDir::new("store-l"), TempDir::new("store-r"));
        let cache = Cache::open(Some(local.path())).unwrap();
        std::fs::create_dir_all(shared.path().join("openssl-k2")).unwrap();

        // Broken: the entry it gives has no output; nothing is published locally.
        let broken = remote(&shared, true, false);
        let lines = Recorder::default();
        let store = StageCache::new(&cache, &broken);
        assert_eq!(store.lookup("openssl", "k2", &lines).unwrap(), None);
        assert!(!store.entry("openssl", "k2").exists());
        assert!(lines.lines()[0].1.contains("has no output.tar"));

        // Down: a miss with a warning naming it, and publishing still succeeds locally.
        let down = remote(&shared, false, true);
        let lines = Recorder::default();
        let store = StageCache::new(&cache, &down);
        assert_eq!(store.lookup("openssl", "k3", &lines).unwrap(), None);
        let entry = store
            .publish("openssl", "k3", &scratch_with_output(&cache, "k3"), &lines)
            .unwrap();
        assert!(entry.join("output.tar").is_file());
        let said: Vec<String> = lines.lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said.iter()
                .all(|l| l.starts_with("warning: the stage cache dir:")
                    && l.contains("connection refused")),
            "{said:?}"
        );
        // No scratch entry is left behind.
        let tmp = cache.dir("python-fips-tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_remote_entry_whose_meta_json_is_not_its_own_is_refused() {
        let (local, shared) = (TempDir::new("store-meta-l"), TempDir::new("store-meta-r"));
        let cache = Cache::open(Some(local.path())).unwrap();
        let remotes = remote(&shared, false, false);
        for (key, meta, says) in [
            ("k1", "not json".to_string(), "its meta.json is not"),
            (
                "k2",
                r#"{"stage":"openssl","key":"k9"}"#.into(),
                "names \"openssl-k9\"",
            ),
            (
                "k3",
                r#"{"stage":"python","key":"k3"}"#.into(),
                "names \"python-k3\"",
            ),
            ("k4", " ".repeat(2 << 20), "larger than"),
        ] {
            let dir = shared.path().join(format!("openssl-{key}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("output.tar"), b"tar").unwrap();
            std::fs::write(dir.join("meta.json"), meta).unwrap();
            let lines = Recorder::default();
            let store = StageCache::new(&cache, &remotes);
            assert_eq!(store.lookup("openssl", key, &lines).unwrap(), None, "{key}");
            assert!(!store.entry("openssl", key).exists(), "{key}");
            let said = &lines.lines()[0].1;
            assert!(
                said.contains(says) && said.contains("building here"),
                "{said}"
            );
        }
    }
}
