//! `verify-cache`: checks what the cache holds against what its names and records say (each
//! download's sha256 against its directory's name, each stage entry against its `meta.json` and
//! `SHA256SUMS`), reports the damaged entries and, with `--evict`, moves them out by rename.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use xshell::Shell;

use crate::cache::Cache;
use crate::digest::sha256_file;
use crate::flags;
use crate::progress::Terminal;
use crate::tarwalk;

/// An entry of the cache that is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The entry: `downloads/<sha256>` or `stages/<stage>-<key>`.
    pub path: PathBuf,
    pub why: String,
}

/// What `check` looked at.
#[derive(Debug, Default)]
pub struct Findings {
    pub checked: usize,
    pub damaged: Vec<Damaged>,
}

/// Why an entry is damaged, or nothing.
type EntryCheck = fn(&Path) -> Result<(), String>;

/// Checks every download (`downloads/<sha256>/`) and stage entry (`stages/<name>/`) of `cache`.
pub fn check(cache: &Cache) -> Result<Findings> {
    let mut findings = Findings::default();
    let kinds: [(&str, EntryCheck); 2] = [("downloads", check_download), ("stages", check_stage)];
    for (dir, check_one) in kinds {
        for path in entries(&cache.dir(dir))? {
            findings.checked += 1;
            if let Err(why) = check_one(&path) {
                findings.damaged.push(Damaged { path, why });
            }
        }
    }
    Ok(findings)
}

/// The entries of `dir` that are published entries: directories not named with a leading dot
/// (`downloads/.partial/` holds resumable downloads, never hits).
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A download entry holds one file, whose sha256 is the entry's name.
fn check_download(dir: &Path) -> Result<(), String> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list it: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let [file] = files.as_slice() else {
        return Err(format!(
            "it holds {} entries instead of one file",
            files.len()
        ));
    };
    if !std::fs::symlink_metadata(file).is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", name_of(file)));
    }
    let actual = sha256_file(file).map_err(|e| format!("{e:#}"))?;
    let expected = name_of(dir);
    if actual != expected {
        return Err(format!(
            "{} has sha256 {actual}, not the {expected} it is filed under",
            name_of(file)
        ));
    }
    Ok(())
}

/// A stage entry is what it records: `meta.json` names this entry's stage and key,
/// `output.tar` reads to its end, and every file `SHA256SUMS` lists has its sha256.
fn check_stage(dir: &Path) -> Result<(), String> {
    let meta = dir.join("meta.json");
    if meta.exists() {
        let text = std::fs::read(&meta).map_err(|e| format!("cannot read its meta.json: {e}"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("its meta.json is not JSON: {e}"))?;
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
        let named = format!("{}-{}", field("stage"), field("key"));
        if named != name_of(dir) {
            return Err(format!("its meta.json names the entry {named:?}"));
        }
    }
    let output = dir.join("output.tar");
    if output.exists() {
        read_through(&output).map_err(|e| format!("its output.tar is damaged: {e:#}"))?;
    }
    let sums = dir.join("SHA256SUMS");
    if sums.exists() {
        let text = std::fs::read_to_string(&sums)
            .map_err(|e| format!("cannot read its SHA256SUMS: {e}"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((expected, file)) = line.split_once("  ") else {
                return Err(format!("its SHA256SUMS has a malformed line {line:?}"));
            };
            let actual = sha256_file(&dir.join(file)).map_err(|e| format!("{e:#}"))?;
            if actual != expected {
                return Err(format!(
                    "{file} has sha256 {actual}, not the {expected} its SHA256SUMS records"
                ));
            }
        }
    }
    Ok(())
}

/// Reads every entry of a tar file to its end: a truncated or corrupt one fails.
fn read_through(tar: &Path) -> Result<()> {
    tarwalk::for_each_entry(tar, tarwalk::Compression::None, |path, entry| {
        let size = entry.header().size()?;
        let read = std::io::copy(entry, &mut std::io::sink())?;
        if read != size {
            bail!("{path} ends after {read} of its {size} bytes");
        }
        Ok(None::<()>)
    })?;
    Ok(())
}

/// Moves each damaged entry out of the cache by rename, into the scratch directory, which the
/// cache lock's owner (`--evict` takes it) empties. The caller holds the exclusive lock.
pub fn evict(cache: &Cache, damaged: &[Damaged]) -> Result<()> {
    if damaged.is_empty() {
        return Ok(());
    }
    let scratch = cache.scratch("evicted")?;
    for (n, entry) in damaged.iter().enumerate() {
        let to = scratch.join(format!("{n}-{}", name_of(&entry.path)));
        std::fs::rename(&entry.path, &to)
            .with_context(|| format!("cannot move {} out of the cache", entry.path.display()))?;
    }
    crate::cache::sync(&scratch)
}

impl flags::VerifyCache {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let (cache, _lock) = if self.evict {
            let cache = Cache::open(self.cache.as_deref())?;
            let lock = cache.lock(&ui)?;
            (cache, lock)
        } else {
            let cache = Cache::open_read_only(self.cache.as_deref())?;
            let lock = cache.lock_shared(&ui)?;
            (cache, lock)
        };
        let findings = check(&cache)?;
        for entry in &findings.damaged {
            crate::progress::answer!("damaged: {}: {}", entry.path.display(), entry.why);
        }
        let damaged = findings.damaged.len();
        crate::progress::answer!("{} entries checked, {damaged} damaged", findings.checked);
        if self.evict {
            evict(&cache, &findings.damaged)?;
            if damaged > 0 {
                crate::progress::answer!(
                    "moved {damaged} damaged entries out; the next run makes them again"
                );
            }
        } else if damaged > 0 {
            bail!(
                "{damaged} damaged entries in the cache {}\nhint: run `cargo xtask verify-cache --evict` to move them out, so that the next run makes them again",
                cache.root().display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hex;
    use crate::testutil::TempDir;
    use sha2::{Digest, Sha256};

    /// A stage entry `stages/<name>/` holding `files`.
    fn entry(cache: &Cache, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = cache.dir("stages").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        dir
    }

    fn meta(stage: &str, key: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "stage": stage, "key": key, "inputs": {}, "seconds": 1.0,
            "script_seconds": 1.0, "log": "/logs/x.log"
        }))
        .unwrap()
    }

    fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    /// A cache with one good and one damaged entry of each kind; returns the damaged paths.
    fn damaged_cache(cache: &Cache) -> Vec<PathBuf> {
        let good = b"a verified tarball";
        let sha = hex(&Sha256::digest(good));
        let dl = cache.dir("downloads").join(&sha);
        std::fs::create_dir_all(&dl).unwrap();
        std::fs::write(dl.join("good.tgz"), good).unwrap();
        let bad = cache.dir("downloads").join("0f".repeat(32));
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("bad.tgz"), b"bit rot").unwrap();

        let key = "ab".repeat(32);
        let other = "cd".repeat(32);
        let tar = tar_of("out/file", &[7u8; 3000]);
        entry(
            cache,
            &format!("openssl-{key}"),
            &[("meta.json", &meta("openssl", &key)), ("output.tar", &tar)],
        );
        let renamed = entry(
            cache,
            &format!("python-{key}"),
            &[("meta.json", &meta("python", &other)), ("output.tar", &tar)],
        );
        let cut = entry(
            cache,
            &format!("finalize-{key}"),
            &[
                ("meta.json", &meta("finalize", &key)),
                ("output.tar", &tar[..1500]),
            ],
        );
        let torn = entry(
            cache,
            &format!("openssl-{other}"),
            &[("meta.json", b"{\"stage\": \"openssl\"")],
        );
        let tarball = b"the runtime tarball";
        let sums = format!(
            "{}  a.tar.gz\n{}  b.tar.gz\n",
            hex(&Sha256::digest(tarball)),
            "00".repeat(32)
        );
        let package = entry(
            cache,
            &format!("package-{key}"),
            &[
                ("a.tar.gz", tarball),
                ("b.tar.gz", b"changed"),
                ("SHA256SUMS", sums.as_bytes()),
            ],
        );
        vec![bad, renamed, cut, torn, package]
    }

    #[test]
    fn damaged_downloads_and_stage_entries_are_found() {
        let dir = TempDir::new("verify-cache");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let mut want = damaged_cache(&cache);
        want.sort();
        let findings = check(&cache).unwrap();
        let mut found: Vec<PathBuf> = findings.damaged.iter().map(|d| d.path.clone()).collect();
        found.sort();
        assert_eq!(found, want, "{:#?}", findings.damaged);
        assert_eq!(findings.checked, 7);
        let why = |p: &Path| {
            findings
                .damaged
                .iter()
                .find(|d| d.path == p)
                .unwrap()
                .why
                .clone()
        };
        assert!(why(&want[0]).contains("sha256"), "{}", why(&want[0]));
        assert!(
            findings.damaged.iter().any(|d| d.why.contains("b.tar.gz")),
            "{:#?}",
            findings.damaged
        );
    }

    #[test]
    fn evict_moves_only_the_damaged_entries_out() {
        let dir = TempDir::new("verify-cache-evict");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let lock = cache.lock(&crate::progress::Silent).unwrap();
        let damaged = damaged_cache(&cache);
        let findings = check(&cache).unwrap();
        evict(&cache, &findings.damaged).unwrap();
        for path in &damaged {
            assert!(!path.exists(), "{} was kept", path.display());
        }
        let after = check(&cache).unwrap();
        assert!(after.damaged.is_empty(), "{:#?}", after.damaged);
        assert_eq!(after.checked, 2, "a good entry was evicted");
        drop(lock);
    }
}
