//! `recipes`, `fetch` and `prepare`: from a version to verified sources and a patched tree.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::cache::{self, Cache};
use crate::catalog::{self, Catalog, Recipe};
use crate::download::{Fetcher, RetryPolicy};
use crate::flags::{self, SourceArgs};
use crate::progress::{Reporter, Terminal};
use crate::{extract, patch};

impl flags::Recipes {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let dir = catalog::recipes_dir();
        let catalog = Catalog::load(&dir)?;
        let cache = Cache::open(self.cache.as_deref())?;
        let cached = |name: &str, version: &str| -> Result<&'static str> {
            let source = catalog.get(name, version)?;
            Ok(if cache.download_path(source).exists() {
                "cached"
            } else {
                "not cached"
            })
        };
        // Certificate status as of today: #4985 is active until 2030-03-10, #4282 historical.
        let today = catalog::today();
        println!(
            "{:<6} {:<22} {:<22} {:<66} builder",
            "minor", "cpython", "openssl", "fips provider (CMVP status today)"
        );
        for (minor, r) in catalog::summaries(&dir)? {
            let source = catalog.get("openssl", &r.fips_provider)?;
            let provider = format!("{} ({})", r.fips_provider, source.cmvp_summary(&today));
            println!(
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
        let ctx = Context::new(&self.sources)?;
        let reporter = Terminal::new();
        let _lock = ctx.cache.lock(&reporter)?;
        for path in ctx.fetch(&reporter)? {
            println!("{}", path.display());
        }
        Ok(())
    }
}

impl flags::Prepare {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let ctx = Context::new(&self.sources)?;
        let reporter = Terminal::new();
        let _lock = ctx.cache.lock(&reporter)?;
        let tree = ctx.prepare(&reporter)?;
        println!("{}", tree.root.display());
        Ok(())
    }
}

/// A resolved recipe together with the cache and the fetch settings.
pub struct Context {
    pub recipe: Recipe,
    pub cache: Cache,
    pub mirrors: Vec<String>,
    pub offline: bool,
}

impl Context {
    pub fn new(args: &SourceArgs) -> Result<Context> {
        let recipes = catalog::recipes_dir();
        let catalog = Catalog::load(&recipes)?;
        let patches = args
            .patches
            .clone()
            .unwrap_or_else(|| crate::project_root().join("patches"));
        let recipe = catalog::resolve(&catalog, &recipes, &patches, args)?;
        let cache = Cache::open(args.cache.as_deref())?;
        Ok(Context {
            recipe,
            cache,
            mirrors: args.mirror.clone(),
            offline: args.offline,
        })
    }

    /// Downloads and verifies every source of the recipe.
    pub fn fetch(&self, reporter: &dyn Reporter) -> Result<Vec<PathBuf>> {
        self.fetcher(reporter).fetch_all(&self.recipe.sources())
    }

    fn fetcher<'a>(&'a self, reporter: &'a dyn Reporter) -> Fetcher<'a> {
        Fetcher {
            cache: &self.cache,
            mirrors: self.mirrors.clone(),
            offline: self.offline,
            reporter,
            retry: RetryPolicy::default(),
        }
    }

    /// The patched CPython tree, made once per (source, patches) content and reused after.
    /// Only the CPython tarball is fetched for it.
    pub fn prepare(&self, reporter: &dyn Reporter) -> Result<Tree> {
        self.fetcher(reporter).fetch(&self.recipe.python)?;
        let key = tree_key(&self.recipe)?;
        let dir = self.cache.dir("trees").join(&key);
        let tree = Tree {
            root: dir.join(format!("Python-{}", self.recipe.python.version)),
            source_date_epoch: self.recipe.source_date_epoch.unwrap_or(0),
            key,
        };
        if tree.root.is_dir() {
            return tree.with_derived_epoch(&dir);
        }
        let scratch = self.cache.scratch("tree")?;
        let archive = self.cache.download_path(&self.recipe.python);
        extract::extract(&archive, &scratch)?;
        let src = scratch.join(format!("Python-{}", self.recipe.python.version));
        if !src.is_dir() {
            anyhow::bail!(
                "{} does not contain Python-{}/",
                archive.display(),
                self.recipe.python.version
            );
        }
        // Taken before patching, so that it depends on the upstream tarball alone.
        let newest = newest_mtime(&src)?;
        std::fs::write(scratch.join("SOURCE_DATE_EPOCH"), newest.to_string())?;
        let outcomes = patch::apply_all(&src, &self.recipe.patches)?;
        for (file, outcome) in self.recipe.patches.iter().zip(outcomes) {
            if outcome == patch::Outcome::AlreadyApplied {
                reporter.message(&format!("{} is already applied", file.display()));
            }
        }
        cache::publish(&scratch, &dir)?;
        tree.with_derived_epoch(&dir)
    }
}

/// A patched CPython source tree in the cache.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    /// Content key: the tarball's sha256 and the patches' bytes.
    pub key: String,
    /// The recipe's `source_date_epoch`, or else the newest mtime in the upstream tarball.
    pub source_date_epoch: u64,
}

impl Tree {
    fn with_derived_epoch(mut self, dir: &Path) -> Result<Tree> {
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
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
