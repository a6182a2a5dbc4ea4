//! The source catalog (`recipes/sources.toml`) and the per-minor recipes (`recipes/<minor>.toml`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One upstream tarball, pinned by checksum.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `cpython`, `openssl` or `postgresql`.
    pub name: String,
    pub version: String,
    /// The upstream file name; mirrors are searched for exactly this name.
    pub file: String,
    pub urls: Vec<String>,
    pub sha256: String,
    pub size: Option<u64>,
    pub license: String,
    pub cmvp: Option<Cmvp>,
    /// Set when `file` is not the release's own tarball but another archive carrying the
    /// release's tree. Only an extra catalog (`--source-catalog`) may hold such an entry, under a
    /// version of its own, so a build never takes it in place of the release tarball.
    pub carries: Option<Carries>,
}

/// What an archive that is not a release tarball carries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Carries {
    /// The upstream release whose tree it holds (`3.1.2`).
    pub release: String,
    /// The directory in the archive that holds the tree.
    pub dir: String,
    /// What the archive is, for BUILD-INFO, the SBOM and warnings.
    pub what: String,
}

/// A CMVP certificate covering a FIPS provider built from this release.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cmvp {
    pub certificate: String,
    pub standard: String,
    /// The day (`YYYY-MM-DD`) the certificate moves, or moved, to the CMVP Historical list: its
    /// sunset date, or the day every FIPS 140-2 certificate moved. From then on existing systems
    /// may keep the module but new ones should not use it.
    pub historical_from: String,
}

/// Where a FIPS provider's release stands with the CMVP on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmvpStatus {
    /// Covered by a certificate on the Active list.
    Active,
    /// Covered by a certificate on the Historical list: not for new systems.
    Historical,
    /// No certificate covers this release (in review, or never submitted).
    NotValidated,
}

impl CmvpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CmvpStatus::Active => "active",
            CmvpStatus::Historical => "historical",
            CmvpStatus::NotValidated => "not validated",
        }
    }
}

impl Source {
    /// The upstream release the source's tree is (for a release tarball, its version).
    pub fn release(&self) -> &str {
        self.carries
            .as_ref()
            .map_or(self.version.as_str(), |c| c.release.as_str())
    }

    /// The directory in the archive that holds the tree (`openssl-3.5.7`).
    pub fn tree_dir(&self) -> String {
        match &self.carries {
            Some(c) => c.dir.clone(),
            None => format!("{}-{}", self.name, self.version),
        }
    }

    /// The CMVP status, on `day` (`YYYY-MM-DD`), of a FIPS provider built from this release.
    pub fn cmvp_status(&self, day: &str) -> CmvpStatus {
        match &self.cmvp {
            None => CmvpStatus::NotValidated,
            // ISO dates order as strings.
            Some(c) if c.historical_from.as_str() <= day => CmvpStatus::Historical,
            Some(_) => CmvpStatus::Active,
        }
    }

    /// `#4985, FIPS 140-3, active until 2030-03-10`, as of `day`.
    pub fn cmvp_summary(&self, day: &str) -> String {
        match (&self.cmvp, self.cmvp_status(day)) {
            (Some(c), CmvpStatus::Active) => format!(
                "#{}, {}, active until {}",
                c.certificate, c.standard, c.historical_from
            ),
            (Some(c), _) => format!(
                "#{}, {}, historical since {}",
                c.certificate, c.standard, c.historical_from
            ),
            (None, _) => "not validated".to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    source: Vec<Source>,
}

fn read_catalog(path: &Path) -> Result<Vec<Source>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the source catalog {}", path.display()))?;
    let file: CatalogFile =
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    Ok(file.source)
}

/// Every source any recipe or override may name.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub sources: Vec<Source>,
}

impl Catalog {
    /// The shipped catalog (`recipes/sources.toml`), and `extra` after it when given.
    pub fn load(recipes_dir: &Path, extra: Option<&Path>) -> Result<Catalog> {
        let path = recipes_dir.join("sources.toml");
        let mut sources = read_catalog(&path)?;
        if let Some(s) = sources.iter().find(|s| s.carries.is_some()) {
            bail!(
                "{}: {s} carries another release's tree; the shipped catalog names release tarballs only (put such an entry in a --source-catalog file)",
                path.display()
            );
        }
        let shipped = sources.len();
        if let Some(extra) = extra {
            sources.extend(read_catalog(extra)?);
        }
        let catalog = Catalog { sources };
        catalog.check(shipped).with_context(|| {
            let extra = extra.map(|e| format!(" with {}", e.display()));
            format!(
                "{}{} is inconsistent",
                path.display(),
                extra.unwrap_or_default()
            )
        })?;
        Ok(catalog)
    }

    /// `shipped`: how many of the sources come from the shipped catalog, whose entries must
    /// name upstream URLs (an extra catalog's may be found in mirrors only).
    fn check(&self, shipped: usize) -> Result<()> {
        for (i, s) in self.sources.iter().enumerate() {
            if s.sha256.len() != 64
                || !s
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                bail!(
                    "{s}: sha256 must be 64 lowercase hex characters, got {:?}",
                    s.sha256
                );
            }
            if s.urls.is_empty() && i < shipped {
                bail!("{s}: no urls");
            }
            if s.file.contains('/') || s.file.starts_with('.') {
                bail!("{s}: file must be a plain file name, got {:?}", s.file);
            }
            if let Some(c) = &s.carries
                && (c
                    .dir
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
                    || c.release == s.version)
            {
                bail!(
                    "{s}: carries needs a relative dir without . or .. and a version other than its release {}",
                    c.release
                );
            }
            if self
                .sources
                .iter()
                .filter(|o| o.name == s.name && o.version == s.version)
                .count()
                > 1
            {
                bail!("{s} is listed twice");
            }
        }
        Ok(())
    }

    /// The entry for `name` at `version`, or an error listing the known versions.
    pub fn get(&self, name: &str, version: &str) -> Result<&Source> {
        if let Some(s) = self
            .sources
            .iter()
            .find(|s| s.name == name && s.version == version)
        {
            return Ok(s);
        }
        let known = self.versions(name).join(", ");
        bail!(
            "unknown {name} version {version}; known versions: {known} (add an entry to recipes/sources.toml to use another)"
        )
    }

    /// Why building with `provider` on `day` deserves a warning (a test source, a historical
    /// certificate, or none), naming the certificate and the validated alternative; `None` if it
    /// is an active one's release tarball.
    pub fn provider_warning(&self, provider: &Source, day: &str) -> Option<String> {
        if let Some(c) = &provider.carries {
            return Some(format!(
                "the FIPS provider is built from {} ({}), not from openssl-{}.tar.gz, the release \
                 tarball its security policy names: a test build, never to be shipped as the \
                 validated module",
                provider.file, c.what, c.release
            ));
        }
        let alternative = self
            .sources
            .iter()
            .filter(|s| {
                s.name == "openssl"
                    && s.carries.is_none()
                    && s.cmvp_status(day) == CmvpStatus::Active
            })
            .map(|s| format!("--fips-provider {} ({})", s.version, s.cmvp_summary(day)))
            .collect::<Vec<_>>();
        let alternative = match alternative.is_empty() {
            true => "no provider in recipes/sources.toml has an active certificate".to_string(),
            false => format!(
                "for a validated module build with {}",
                alternative.join(" or ")
            ),
        };
        match (&provider.cmvp, provider.cmvp_status(day)) {
            (_, CmvpStatus::Active) => None,
            (Some(c), _) => Some(format!(
                "the FIPS provider {} is covered by CMVP certificate #{} ({}), on the Historical \
                 list since {}: existing systems may keep it, new ones should not use it; {alternative}",
                provider.version, c.certificate, c.standard, c.historical_from
            )),
            (None, _) => Some(format!(
                "the FIPS provider {} is not a CMVP-validated module (no certificate covers that \
                 release); {alternative}",
                provider.version
            )),
        }
    }

    pub fn versions(&self, name: &str) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.version.as_str())
            .collect()
    }
}

/// A recipe file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    pub python: String,
    pub openssl: String,
    pub fips_provider: String,
    pub source_date_epoch: Option<u64>,
    pub builder: BuilderSpec,
    pub runtime: RuntimeSpec,
    pub python_build: PythonBuild,
    /// The toolchain `cargo xtask wheels` adds to the builder image (absent: none).
    #[serde(default)]
    pub wheels: WheelsSpec,
}

/// Packages of the wheels toolchain image, per package family; the builder image is its base.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WheelsSpec {
    #[serde(default)]
    pub apt: Vec<String>,
    #[serde(default)]
    pub dnf: Vec<String>,
    /// The PostgreSQL release (a `postgresql` entry of the catalog) whose libpq is built against
    /// the tree for the packages that link it (psycopg2).
    #[serde(default)]
    pub postgresql: Option<String>,
}

/// The image the build stages run in: a base image plus build dependencies per package family.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderSpec {
    pub base_image: String,
    #[serde(default)]
    pub apt: Vec<String>,
    #[serde(default)]
    pub dnf: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub base_image: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PythonBuild {
    pub enable_shared: bool,
    /// Profile-guided optimization (`--enable-optimizations`). Off by default: the profile
    /// depends on timing, so the output differs from build to build and is not reproducible.
    #[serde(default)]
    pub pgo: bool,
    #[serde(default)]
    pub configure: Vec<ConfigureFlag>,
}

/// A configure flag and the reason the recipe passes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureFlag {
    pub flag: String,
    pub why: String,
}

/// A recipe with every version resolved to a catalog entry and every override applied.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// `3.13`.
    pub minor: String,
    pub python: Source,
    pub openssl: Source,
    pub fips_provider: Source,
    pub source_date_epoch: Option<u64>,
    pub builder: BuilderSpec,
    pub runtime: RuntimeSpec,
    pub python_build: PythonBuild,
    pub wheels: WheelsSpec,
    /// The patch files to apply, in order; empty with `--no-fips-patch`.
    pub patches: Vec<PathBuf>,
}

impl Recipe {
    /// Every source the recipe needs, without duplicates.
    pub fn sources(&self) -> Vec<&Source> {
        let mut out = vec![&self.python, &self.openssl];
        if self.fips_provider != self.openssl {
            out.push(&self.fips_provider);
        }
        out
    }

    /// Whether fips.so comes from a different release than the libraries.
    pub fn separate_provider(&self) -> bool {
        self.fips_provider != self.openssl
    }
}

/// The recipes directory of the project.
pub fn recipes_dir() -> PathBuf {
    crate::project_root().join("recipes")
}

/// The minors that have a recipe, sorted.
pub fn minors(recipes_dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(recipes_dir)
        .with_context(|| format!("cannot list {}", recipes_dir.display()))?
    {
        let name = entry
            .with_context(|| format!("cannot list {}", recipes_dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(minor) = name.strip_suffix(".toml")
            && minor != "sources"
        {
            out.push(minor.to_string());
        }
    }
    out.sort_by_key(|m| version_key(m));
    Ok(out)
}

/// Sort key for dotted versions: `3.9` < `3.10`.
pub fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

pub fn load_recipe_file(recipes_dir: &Path, minor: &str) -> Result<RecipeFile> {
    let path = recipes_dir.join(format!("{minor}.toml"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read recipe {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("cannot parse recipe {}", path.display()))
}

/// What a user asks to build: a CPython minor or release, and the releases that override the
/// recipe's (each named by its flag in messages).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--version`: a minor (`3.12`) or a full release (`3.12.15`).
    pub version: Option<String>,
    /// `--python`: the CPython release.
    pub python: Option<String>,
    /// `--openssl`: the release of libcrypto, libssl and the openssl command.
    pub openssl: Option<String>,
    /// `--fips-provider`: the release fips.so is built from.
    pub fips_provider: Option<String>,
    /// `--no-fips-patch`: build without the project's patches.
    pub no_fips_patch: bool,
}

/// Resolves the recipe asked for: `--version` (minor or full), then the overrides.
pub fn resolve(
    catalog: &Catalog,
    recipes_dir: &Path,
    patches_dir: &Path,
    args: &Request,
) -> Result<Recipe> {
    let minors = minors(recipes_dir)?;
    let requested = args.version.as_deref().or(args.python.as_deref());
    let Some(requested) = requested else {
        bail!(
            "no version given; pass --version with one of: {}",
            minors.join(", ")
        );
    };
    let minor = minor_of(requested);
    if !minors.contains(&minor) {
        bail!(
            "no recipe for CPython {minor}; recipes exist for: {}",
            minors.join(", ")
        );
    }
    let file = load_recipe_file(recipes_dir, &minor)?;

    // A full `--version` is a CPython override; `--python` wins if both are given and agree.
    let full_version = args
        .version
        .as_deref()
        .filter(|v| v.split('.').count() == 3);
    let python_version = match (args.python.as_deref(), full_version) {
        (Some(p), Some(v)) if p != v => {
            bail!("--version {v} and --python {p} disagree; pass one of them")
        }
        (Some(p), _) => p,
        (None, Some(v)) => v,
        (None, None) => file.python.as_str(),
    };
    if minor_of(python_version) != minor {
        bail!(
            "--python {python_version} is not a CPython {minor} release; pass --version {} instead",
            minor_of(python_version)
        );
    }
    let python = catalog.get("cpython", python_version)?.clone();
    let openssl = catalog
        .get("openssl", args.openssl.as_deref().unwrap_or(&file.openssl))?
        .clone();
    let fips_provider = catalog
        .get(
            "openssl",
            args.fips_provider.as_deref().unwrap_or(&file.fips_provider),
        )?
        .clone();

    let patches = if args.no_fips_patch {
        Vec::new()
    } else {
        patch_files(&patches_dir.join(&minor))?
    };
    Ok(Recipe {
        minor,
        python,
        openssl,
        fips_provider,
        source_date_epoch: file.source_date_epoch,
        builder: file.builder,
        runtime: file.runtime,
        wheels: file.wheels,
        python_build: file.python_build,
        patches,
    })
}

/// `3.13.15` -> `3.13`; `3.13` -> `3.13`.
pub fn minor_of(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The `*.patch` files of one minor's patch directory, sorted by name.
pub fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot list the patch directory {} (pass --no-fips-patch to build without patches)",
            dir.display()
        )
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "patch") {
            out.push(path);
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("{} holds no *.patch file", dir.display());
    }
    Ok(out)
}

/// Per-minor recipe summaries for `cargo xtask recipes`.
pub fn summaries(recipes_dir: &Path) -> Result<BTreeMap<String, RecipeFile>> {
    let mut out = BTreeMap::new();
    for minor in minors(recipes_dir)? {
        out.insert(minor.clone(), load_recipe_file(recipes_dir, &minor)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> (Catalog, PathBuf, PathBuf) {
        let dir = recipes_dir();
        (
            Catalog::load(&dir, None).unwrap(),
            dir,
            crate::project_root().join("patches"),
        )
    }

    fn args(version: &str) -> Request {
        Request {
            version: Some(version.into()),
            ..Request::default()
        }
    }

    #[test]
    fn every_recipe_resolves_and_every_source_is_pinned() {
        let (catalog, dir, _) = project();
        let minors = minors(&dir).unwrap();
        assert_eq!(minors, ["3.11", "3.12", "3.13", "3.14"]);
        for minor in &minors {
            let file = load_recipe_file(&dir, minor).unwrap();
            for (name, version) in [
                ("cpython", &file.python),
                ("openssl", &file.openssl),
                ("openssl", &file.fips_provider),
            ] {
                let s = catalog.get(name, version).unwrap();
                assert_eq!(s.sha256.len(), 64);
                assert!(s.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            assert_eq!(minor_of(&file.python), *minor);
            assert!(!file.python_build.configure.is_empty());
        }
        // The FIPS provider defaults to a validated module.
        let provider = catalog
            .get(
                "openssl",
                &load_recipe_file(&dir, "3.13").unwrap().fips_provider,
            )
            .unwrap();
        assert!(
            provider.cmvp.is_some(),
            "the default provider {provider} has no CMVP certificate"
        );
        // Every default recipe stays on 3.1.2 (#4985), active on the day this was checked.
        for minor in &minors {
            let file = load_recipe_file(&dir, minor).unwrap();
            assert_eq!(file.fips_provider, "3.1.2", "{minor}");
            let provider = catalog.get("openssl", &file.fips_provider).unwrap();
            assert_eq!(provider.cmvp_status("2026-11-30"), CmvpStatus::Active);
            assert_eq!(catalog.provider_warning(provider, "2026-11-30"), None);
        }
    }

    #[test]
    fn certificates_have_a_lifecycle() {
        let (catalog, _, _) = project();
        let status = |v: &str, day: &str| catalog.get("openssl", v).unwrap().cmvp_status(day);
        assert_eq!(status("3.0.9", "2026-09-20"), CmvpStatus::Active);
        assert_eq!(status("3.0.9", "2026-09-21"), CmvpStatus::Historical);
        assert_eq!(status("3.0.8", "2026-11-30"), CmvpStatus::Historical);
        assert_eq!(status("3.1.2", "2030-03-09"), CmvpStatus::Active);
        assert_eq!(status("3.1.2", "2030-03-10"), CmvpStatus::Historical);
        assert_eq!(status("3.0.20", "2026-11-30"), CmvpStatus::NotValidated);
        let provider = catalog.get("openssl", "3.1.2").unwrap();
        assert_eq!(
            provider.cmvp_summary("2026-11-30"),
            "#4985, FIPS 140-3, active until 2030-03-10"
        );
        let historical = catalog.get("openssl", "3.0.9").unwrap();
        let warning = catalog.provider_warning(historical, "2026-11-30").unwrap();
        assert!(warning.contains("#4282"), "{warning}");
        assert!(
            warning.contains("Historical list since 2026-09-21"),
            "{warning}"
        );
        assert!(
            warning.contains("--fips-provider 3.1.2 (#4985"),
            "{warning}"
        );
        let unvalidated = catalog.get("openssl", "3.0.20").unwrap();
        let warning = catalog.provider_warning(unvalidated, "2026-11-30").unwrap();
        assert!(warning.contains("not a CMVP-validated module"), "{warning}");
        assert!(warning.contains("--fips-provider 3.1.2"), "{warning}");
    }

    #[test]
    fn every_patch_parses() {
        let (_, dir, patches) = project();
        for minor in minors(&dir).unwrap() {
            for p in patch_files(&patches.join(&minor)).unwrap() {
                let files = crate::patch::check_parses(&p).unwrap();
                assert!(files > 0, "{} touches no file", p.display());
            }
        }
    }

    #[test]
    fn full_versions_and_overrides_resolve() {
        let (catalog, dir, patches) = project();
        let r = resolve(&catalog, &dir, &patches, &args("3.13.15")).unwrap();
        assert_eq!(
            (r.minor.as_str(), r.python.version.as_str()),
            ("3.13", "3.13.15")
        );
        let mut a = args("3.13");
        a.openssl = Some("3.5.7".into());
        a.fips_provider = Some("3.0.20".into());
        a.no_fips_patch = true;
        let r = resolve(&catalog, &dir, &patches, &a).unwrap();
        assert_eq!(r.openssl.version, "3.5.7");
        assert!(r.separate_provider());
        assert!(r.patches.is_empty());
        assert_eq!(r.sources().len(), 3);
    }

    #[test]
    fn unknown_versions_are_errors_that_list_the_known_ones() {
        let (catalog, dir, patches) = project();
        let err = resolve(&catalog, &dir, &patches, &args("3.9"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no recipe for CPython 3.9") && err.contains("3.11, 3.12, 3.13, 3.14"),
            "{err}"
        );
        let err = resolve(&catalog, &dir, &patches, &args("3.13.99"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown cpython version 3.13.99") && err.contains("3.13.15"),
            "{err}"
        );
        let mut a = args("3.13");
        a.openssl = Some("1.1.1".into());
        let err = resolve(&catalog, &dir, &patches, &a)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown openssl version 1.1.1") && err.contains("3.5.7"),
            "{err}"
        );
        let mut a = args("3.13");
        a.python = Some("3.12.15".into());
        let err = resolve(&catalog, &dir, &patches, &a)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a CPython 3.13 release"), "{err}");
    }

    #[test]
    fn a_test_source_is_named_by_its_own_version_and_warned_about() {
        let dir = recipes_dir();
        let extra = crate::project_root().join("tests/sources.toml");
        let catalog = Catalog::load(&dir, Some(&extra)).unwrap();
        let patches = crate::project_root().join("patches");
        // The recipe's 3.1.2 stays the release tarball; the test source is asked for by name.
        let recipe = resolve(&catalog, &dir, &patches, &args("3.13")).unwrap();
        assert_eq!(recipe.fips_provider.file, "openssl-3.1.2.tar.gz");
        assert_eq!(
            catalog.provider_warning(&recipe.fips_provider, "2026-12-06"),
            None
        );
        let mut a = args("3.13");
        a.fips_provider = Some("3.1.2-openssl-src".into());
        let p = resolve(&catalog, &dir, &patches, &a).unwrap().fips_provider;
        assert_eq!(p.release(), "3.1.2");
        assert_eq!(p.tree_dir(), "openssl-src-300.1.3+3.1.2/openssl");
        assert_eq!(p.cmvp_status("2026-12-06"), CmvpStatus::Active);
        let warning = catalog.provider_warning(&p, "2026-12-06").unwrap();
        assert!(
            warning.contains("openssl-src-300.1.3+3.1.2.crate")
                && warning.contains("openssl-3.1.2.tar.gz")
                && warning.contains("never to be shipped"),
            "{warning}"
        );
        // A not-validated provider's warning never offers a test source as the alternative.
        let old = catalog.get("openssl", "3.0.20").unwrap();
        let warning = catalog.provider_warning(old, "2026-12-06").unwrap();
        assert!(
            warning.contains("--fips-provider 3.1.2 (") && !warning.contains("openssl-src"),
            "{warning}"
        );
        // Without the extra catalog the name is unknown.
        let shipped = Catalog::load(&dir, None).unwrap();
        assert!(resolve(&shipped, &dir, &patches, &a).is_err());
    }

    #[test]
    fn carried_trees_stay_out_of_the_shipped_catalog_and_versions_stay_unique() {
        let dir = std::env::temp_dir().join(format!("pf-carries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let test =
            std::fs::read_to_string(crate::project_root().join("tests/sources.toml")).unwrap();
        std::fs::write(dir.join("sources.toml"), &test).unwrap();
        let err = format!("{:#}", Catalog::load(&dir, None).unwrap_err());
        assert!(
            err.contains("shipped catalog names release tarballs only"),
            "{err}"
        );

        let shipped = std::fs::read_to_string(recipes_dir().join("sources.toml")).unwrap();
        std::fs::write(dir.join("sources.toml"), &shipped).unwrap();
        let extra = dir.join("extra.toml");
        std::fs::write(
            &extra,
            test.replace("release = \"3.1.2\"", "release = \"3.1.2-openssl-src\""),
        )
        .unwrap();
        let err = format!("{:#}", Catalog::load(&dir, Some(&extra)).unwrap_err());
        assert!(
            err.contains("extra.toml") && err.contains("carries"),
            "{err}"
        );
        std::fs::write(&extra, test.replace("3.1.2-openssl-src", "3.0.20")).unwrap();
        let err = format!("{:#}", Catalog::load(&dir, Some(&extra)).unwrap_err());
        assert!(err.contains("openssl 3.0.20 is listed twice"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_catalog_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("pf-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = std::fs::read_to_string(recipes_dir().join("sources.toml"))
            .unwrap()
            .replacen("sha256 = \"", "sha256 = \"XYZ", 1);
        std::fs::write(dir.join("sources.toml"), bad).unwrap();
        let err = format!("{:#}", Catalog::load(&dir, None).unwrap_err());
        assert!(
            err.contains("sources.toml") && err.contains("64 lowercase hex"),
            "{err}"
        );
        std::fs::write(dir.join("sources.toml"), "[[source]]\nname = 1\n").unwrap();
        let err = format!("{:#}", Catalog::load(&dir, None).unwrap_err());
        assert!(
            err.contains("cannot parse") && err.contains("sources.toml"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
