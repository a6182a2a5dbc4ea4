//! `recipes`, `fetch` and `prepare`: from a version to verified sources and a patched tree.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::cache::{self, Cache};
use crate::catalog::{self, Catalog, Recipe};
use crate::config::SourceConfig;
use crate::digest::hex;
use crate::download::{Fetcher, RetryPolicy};
use crate::flags;
use crate::progress::{Reporter, Terminal};
use crate::{extract, patch};

impl flags::Recipes {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let dir = catalog::recipes_dir();
        let catalog = Catalog::load(&dir, None)?;
        // Only read: a listing neither makes, marks nor adopts a cache.
        let cache = Cache::open_read_only(self.cache.as_deref())?;
        let cached = |name: &str, version: &str| -> Result<&'static str> {
            let source = catalog.get(name, version)?;
            Ok(if cache.download_path(source).exists() {
                "cached"
            } else {
                "not cached"
            })
        };
        // Certificate status as of today: #4985 is active until 2030-03-10, #4282 historical.
        let today = crate::date::today();
        crate::progress::answer!(
            "{:<6} {:<22} {:<22} {:<66} builder",
            "minor",
            "cpython",
            "openssl",
            "fips provider (CMVP status today)"
        );
        for (minor, r) in catalog::summaries(&dir)? {
            let source = catalog.get("openssl", &r.fips_provider)?;
            let provider = format!("{} ({})", r.fips_provider, source.cmvp_summary(&today));
            crate::progress::answer!(
                "{minor:<6} {:<22} {:<22} {:<66} {}",
                format!("{} ({})", r.python, cached("cpython", &r.python)?),
                format!("{} ({})", r.openssl, cached("openssl", &r.openssl)?),
                format!("{provider} ({})", cached("openssl", &r.fips_provider)?),
                r.builder.base_image,
            );
        }
        Ok(())
    }
}

impl flags::Fetch {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let ctx = Resolved::new(&SourceConfig::from_args(&self.sources))?;
        let reporter = Terminal::new();
        let _lock = ctx.lock(&reporter)?;
        // The command that says "these files are good" re-hashes what it finds in the cache.
        let mut fetcher = ctx.fetcher(&reporter);
        fetcher.rehash = true;
        for path in fetcher.fetch_all(&ctx.recipe.sources())? {
            crate::progress::answer!("{}", path.display());
        }
        Ok(())
    }
}

impl flags::Prepare {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let ctx = Resolved::new(&SourceConfig::from_args(&self.sources))?;
        let reporter = Terminal::new();
        let _lock = ctx.lock(&reporter)?;
        let tree = ctx.prepare(&reporter)?;
        crate::progress::answer!("{}", tree.root.display());
        Ok(())
    }
}

/// A resolved recipe together with the cache and the fetch settings.
pub struct Resolved {
    /// The catalog the recipe was resolved in.
    pub catalog: Catalog,
    pub recipe: Recipe,
    pub cache: Cache,
    pub mirrors: Vec<String>,
    pub offline: bool,
}

impl Resolved {
    pub fn new(args: &SourceConfig) -> Result<Resolved> {
        let recipes = catalog::recipes_dir();
        let catalog = Catalog::load(&recipes, args.source_catalog.as_deref())?;
        let recipe = catalog::resolve(&catalog, &recipes, &args.patches, &args.request)?;
        let cache = Cache::open(args.cache.as_deref())?;
        if args.offline && cache.is_fresh() {
            // Only just made, so nothing of the user's is in it.
            let _ = cache::remove(cache.root());
            anyhow::bail!(
                "--offline needs a cache, and there is none at {}\nhint: check --cache and PYTHON_FIPS_CACHE, or drop --offline to fill a new cache",
                cache.root().display()
            );
        }
        Ok(Resolved {
            catalog,
            recipe,
            cache,
            mirrors: args.mirrors.clone(),
            offline: args.offline,
        })
    }

    /// Takes the cache lock: shared (nothing written) under `--offline`, so that a read-only
    /// copy of a warm cache serves.
    pub fn lock(&self, reporter: &dyn Reporter) -> Result<cache::CacheLock> {
        if self.offline {
            self.cache.lock_shared(reporter)
        } else {
            self.cache.lock(reporter)
        }
    }

    /// Downloads and verifies every source of the recipe.
    pub fn fetch(&self, reporter: &dyn Reporter) -> Result<Vec<PathBuf>> {
        self.fetcher(reporter).fetch_all(&self.recipe.sources())
    }

    /// Downloads and verifies one source of the catalog (the wheels' PostgreSQL, say).
    pub fn fetch_one(&self, source: &catalog::Source, reporter: &dyn Reporter) -> Result<PathBuf> {
        self.fetcher(reporter).fetch(source)
    }

    fn fetcher<'a>(&'a self, reporter: &'a dyn Reporter) -> Fetcher<'a> {
        Fetcher {
            cache: &self.cache,
            mirrors: self.mirrors.clone(),
            offline: self.offline,
            reporter,
            retry: RetryPolicy::default(),
            rehash: false,
        }
    }

    /// The patched CPython tree, made once per (source, patches) content and reused after.
    /// Only the CPython tarball is fetched for it.
    pub fn prepare(&self, reporter: &dyn Reporter) -> Result<SourceTree> {
        self.fetcher(reporter).fetch(&self.recipe.python)?;
        let key = tree_key(&self.recipe)?;
        let dir = self.cache.dir("trees").join(&key);
        let tree = SourceTree {
            root: dir.join(format!("Python-{}", self.recipe.python.version)),
            source_date_epoch: self.recipe.source_date_epoch.unwrap_or(0),
            key,
        };
        if tree.root.is_dir() {
            return tree.with_derived_epoch(&dir);
        }
        let scratch = self.cache.scratch("tree")?;
        let archive = self.cache.download_path(&self.recipe.python);
        extract_verified(&archive, &self.recipe.python, &scratch)?;
        make_tree(
            &archive,
            &self.recipe.python.version,
            &self.recipe.patches,
            &scratch,
            reporter,
        )?;
        cache::publish(&scratch, &dir)?;
        tree.with_derived_epoch(&dir)
    }
}

/// Extracts the cached `archive` of `source` into `dest`. When that fails, the archive is
/// hashed again: one that no longer matches its pin (damaged on disk) is evicted, and the error
/// says so.
fn extract_verified(archive: &Path, source: &catalog::Source, dest: &Path) -> Result<()> {
    let Err(error) = extract::extract(archive, dest) else {
        return Ok(());
    };
    let actual = std::fs::File::open(archive).and_then(|mut f| {
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex(&h.finalize()))
    });
    match actual {
        Ok(actual) if actual != source.sha256 => {
            cache::remove(archive)?;
            Err(error.context(format!(
                "the cached {} is damaged: its sha256 is now {actual}, not {}; it was evicted from the cache\nhint: run again to download it again",
                source.file, source.sha256
            )))
        }
        _ => Err(error),
    }
}

/// Turns `scratch`, holding the extracted tarball, into a tree entry: `Python-<version>/`
/// patched, and `SOURCE_DATE_EPOCH` beside it.
fn make_tree(
    archive: &Path,
    version: &str,
    patches: &[PathBuf],
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<()> {
    let top = format!("Python-{version}");
    let src = scratch.join(&top);
    if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
        anyhow::bail!("{} does not contain {top}/", archive.display());
    }
    // Anything beside the tree could collide with what the cache keeps there.
    let list = || format!("cannot list {}", scratch.display());
    for entry in std::fs::read_dir(scratch).with_context(list)? {
        let name = entry
            .with_context(list)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != top {
            anyhow::bail!(
                "{} has an unexpected entry {name:?} beside {top}/; a CPython release has nothing else",
                archive.display()
            );
        }
    }
    // Taken before patching, so that it depends on the upstream tarball alone.
    let newest = newest_mtime(&src)?;
    let epoch = scratch.join("SOURCE_DATE_EPOCH");
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&epoch)
        .and_then(|mut f| std::io::Write::write_all(&mut f, newest.to_string().as_bytes()))
        .with_context(|| format!("cannot write {}", epoch.display()))?;
    let outcomes = patch::apply_all(&src, patches)?;
    for (file, outcome) in patches.iter().zip(outcomes) {
        if outcome == patch::Outcome::AlreadyApplied {
            reporter.message(&format!("{} is already applied", file.display()));
        }
    }
    Ok(())
}

/// A patched CPython source tree in the cache.
#[derive(Debug, Clone)]
pub struct SourceTree {
    pub root: PathBuf,
    /// Content key: the tarball's sha256 and the patches' bytes.
    pub key: String,
    /// The recipe's `source_date_epoch`, or else the newest mtime in the upstream tarball.
    pub source_date_epoch: u64,
}

impl SourceTree {
    fn with_derived_epoch(mut self, dir: &Path) -> Result<SourceTree> {
        if self.source_date_epoch == 0 {
            let path = dir.join("SOURCE_DATE_EPOCH");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            self.source_date_epoch = text
                .trim()
                .parse()
                .with_context(|| format!("{} is not a number", path.display()))?;
        }
        Ok(self)
    }
}

/// The newest modification time (seconds) of anything below `dir`, links not followed.
fn newest_mtime(dir: &Path) -> Result<u64> {
    let mut newest = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", d.display()))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            if let Ok(t) = meta.modified() {
                let secs = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                newest = newest.max(secs);
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(newest)
}

/// Content key of a patched tree: the CPython tarball and the bytes of every patch.
pub fn tree_key(recipe: &Recipe) -> Result<String> {
    let mut h = Sha256::new();
    h.update(recipe.python.sha256.as_bytes());
    for p in &recipe.patches {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        h.update(file_name(p).as_bytes());
        h.update(Sha256::digest(&bytes));
    }
    Ok(hex(&h.finalize()))
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::tests::{archive, dir, file, link};
    use crate::flags::SourceArgs;
    use crate::testutil::TempDir;
    use tar::EntryType;

    fn source_of(archive: &Path) -> catalog::Source {
        let bytes = std::fs::read(archive).unwrap();
        catalog::Source {
            name: "cpython".into(),
            version: "3.99.0".into(),
            file: file_name(archive),
            urls: vec![],
            sha256: hex(&Sha256::digest(&bytes)),
            size: Some(bytes.len() as u64),
            license: "PSF-2.0".into(),
            cmvp: None,
            carries: None,
        }
    }

    #[test]
    fn an_archive_that_no_longer_matches_its_sha256_is_evicted_when_it_fails_to_extract() {
        let tmp = TempDir::new("prep-evict");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = archive(
            tmp.path(),
            "Python-3.99.0.tgz",
            &[
                dir("Python-3.99.0/"),
                file("Python-3.99.0/big", &body, 0o644),
            ],
        );
        let source = source_of(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        bytes.truncate(len / 2);
        std::fs::write(&path, &bytes).unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();

        let err = extract_verified(&path, &source, &dest).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("sha256"), "{text}");
        assert!(
            !path.exists(),
            "the damaged archive stayed in the cache: {text}"
        );
    }

    #[test]
    fn source_date_epoch_is_not_written_through_a_link_from_the_archive() {
        let tmp = TempDir::new("prep-epoch");
        let path = archive(
            tmp.path(),
            "Python-3.99.0.tgz",
            &[
                dir("Python-3.99.0/"),
                file("Python-3.99.0/README", b"upstream readme\n", 0o644),
                link(
                    "SOURCE_DATE_EPOCH",
                    EntryType::Symlink,
                    "Python-3.99.0/README",
                ),
            ],
        );
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let source = source_of(&path);
        let result = extract_verified(&path, &source, &scratch)
            .and_then(|()| make_tree(&path, "3.99.0", &[], &scratch, &crate::progress::Silent));
        let readme = std::fs::read_to_string(scratch.join("Python-3.99.0/README"));
        assert!(
            readme.as_deref().unwrap_or("upstream readme\n") == "upstream readme\n",
            "SOURCE_DATE_EPOCH went through the archive's link: README is now {readme:?}"
        );
        let err = result.expect_err("an unexpected top-level entry was accepted");
        assert!(format!("{err:#}").contains("SOURCE_DATE_EPOCH"), "{err:#}");
    }

    #[test]
    fn offline_with_a_cache_that_did_not_exist_is_an_error() {
        let tmp = TempDir::new("prep-offline");
        let typo = tmp.path().join("cahce");
        let args = SourceArgs {
            version: Some("3.13".into()),
            offline: true,
            cache: Some(typo.clone()),
            ..SourceArgs::default()
        };
        let err = match Resolved::new(&SourceConfig::from_args(&args)) {
            Ok(_) => panic!(
                "--offline silently used a new, empty cache at {}",
                typo.display()
            ),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&typo.display().to_string()), "{err}");
        assert!(!typo.exists(), "{err}");
    }
}
