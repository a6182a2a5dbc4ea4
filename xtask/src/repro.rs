//! `python --check-reproducible`: a second build in a fresh cache, compared byte for byte.
//!
//! The second build shares only the verified downloads (hard-linked) and the builder image (found
//! again by its content tag) with the first, so every stage runs again. When the tarballs differ,
//! the entries are compared one by one here, and diffoscope, in a container, explains the first
//! few files that differ.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::build::Build;
use crate::cache::{self, Cache};
use crate::catalog::Recipe;
use crate::config::BuildConfig;
use crate::digest::hex;
use crate::pipeline::{Input, StageSpec};
use crate::progress::Reporter;
use crate::ship::{self, Artifact};
use crate::tarwalk::{self, Compression};

/// How many differing files diffoscope is run on.
const DIFFOSCOPE_FILES: usize = 5;
/// How many differing paths the error message lists (the report has them all).
const SHOWN: usize = 20;

/// The outcome of the check, also written to `--report` as `reproducible`.
#[derive(Debug, Serialize)]
pub struct Check {
    pub first: String,
    pub second: String,
    pub identical: bool,
    /// The second build's tarball, kept beside the first on a mismatch.
    pub second_tarball: Option<PathBuf>,
    pub differences: Vec<Difference>,
    /// The directory of diffoscope's text reports.
    pub diffoscope: Option<PathBuf>,
    /// Why diffoscope could not run, if it could not.
    pub diffoscope_error: Option<String>,
}

/// One path whose entry differs between two tarballs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// Refuses to check a build that is known not to be reproducible, instead of failing later.
pub fn refuse_unreproducible(recipe: &Recipe) -> Result<()> {
    if recipe.python_build.pgo {
        bail!(
            "the recipe for CPython {} enables profile-guided optimization (pgo = true in \
             [python_build]), whose output differs from build to build: BUILD-INFO.json says \
             \"reproducible\": false and there is nothing to check; set pgo = false to get a \
             reproducible build",
            recipe.minor
        );
    }
    Ok(())
}

/// Builds again in a fresh cache and compares the result with `artifact`.
pub fn check(sh: &Shell, first: &Build, artifact: &Artifact, ui: &dyn Reporter) -> Result<Check> {
    let root = first.cache().scratch("reproducible")?;
    let fresh = Cache::open(Some(&root))?;
    share_downloads(first, &fresh)?;
    // A cross build's interpreter for its Python steps is a build tool, like the compilers of
    // the builder image: the second build gets the first's (a native build has none).
    if first.facts().cross() {
        share_build_python(first, &fresh, ui)?;
    }
    let mut config = first.config().in_cache(root.clone());
    config.sources.offline = true;
    ui.message(&format!(
        "second build, in a fresh cache that shares only the downloads and the builder image \
         (and a cross build's build interpreter): {}",
        root.display()
    ));
    let second = second_build(sh, first, &config, ui)?;
    if second.sha256 == artifact.sha256 {
        ui.message(&format!(
            "reproducible: both builds give sha256 {}",
            second.sha256
        ));
        cache::remove(&root)?;
        return Ok(Check {
            first: artifact.sha256.clone(),
            second: second.sha256,
            identical: true,
            second_tarball: None,
            differences: vec![],
            diffoscope: None,
            diffoscope_error: None,
        });
    }
    mismatch(first, artifact, second, ui)
}

/// The tarballs of the second build and the runtime one's sha256.
struct Second {
    sha256: String,
    tarball: PathBuf,
    dev_tarball: PathBuf,
}

/// Hard-links (or copies) `from` to `to`.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Gives the fresh cache the first build's verified downloads.
fn share_downloads(first: &Build, fresh: &Cache) -> Result<()> {
    for source in first.recipe().sources() {
        let from = first.cache().download_path(source);
        // Like every entry, it appears by rename from the fresh cache's scratch.
        let to = fresh.download_path(source);
        let dir = to.parent().expect("a download has a directory");
        let scratch = fresh.scratch("download")?;
        link_or_copy(&from, &scratch.join(&source.file))?;
        cache::publish(&scratch, dir)?;
    }
    Ok(())
}

/// Gives the fresh cache the first build's build interpreter stages (a cross build's).
fn share_build_python(first: &Build, fresh: &Cache, ui: &dyn Reporter) -> Result<()> {
    for tool in first.build_python(ui)? {
        let entry = tool
            .output
            .parent()
            .expect("a stage output lies in its entry");
        let name = entry.file_name().expect("an entry has a name");
        let scratch = fresh.scratch("tool")?;
        for file in ["output.tar", "meta.json"] {
            link_or_copy(&entry.join(file), &scratch.join(file))?;
        }
        cache::publish(&scratch, &fresh.dir("stages").join(name))?;
    }
    Ok(())
}

/// Runs the second build with `config` and packages it, on the first build's builder image.
fn second_build(
    sh: &Shell,
    first: &Build,
    config: &BuildConfig,
    ui: &dyn Reporter,
) -> Result<Second> {
    let second = Build::start(sh, config, ui)?;
    let (ids, first_id) = (&second.facts().builder_id, &first.facts().builder_id);
    if ids != first_id {
        bail!(
            "the second build got builder image {} where the first had {}; was the base image \
             {} replaced during the check?",
            ids,
            first_id,
            first.recipe().builder.base_image
        );
    }
    let done = second.run_all(ui)?;
    let a = ship::package(&second, &done, ui)?;
    Ok(Second {
        sha256: a.sha256,
        tarball: a.tarball,
        dev_tarball: a.dev_tarball,
    })
}

/// The check of builds that differ: keeps the second build's tarballs beside the first's, names
/// the entries that differ and has diffoscope explain the first few.
fn mismatch(
    first: &Build,
    artifact: &Artifact,
    second: Second,
    ui: &dyn Reporter,
) -> Result<Check> {
    let tarball = keep_second(first, &second.tarball, "")?;
    let dev_tarball = keep_second(first, &second.dev_tarball, "-dev")?;
    // The runtime tarball's SBOM holds the development tarball's sha256, so a difference in
    // either shows in the runtime one: compare both to name the files.
    let differences = diff_pairs(&[
        (&artifact.tarball, &tarball),
        (&artifact.dev_tarball, &dev_tarball),
    ])?;
    let facts = first.facts();
    let reports = (facts.out).join(format!("{}.diffoscope", facts.artifact));
    let (diffoscope, diffoscope_error) = match explain(
        first,
        &[&artifact.tarball, &artifact.dev_tarball],
        &[&tarball, &dev_tarball],
        &differences,
        &reports,
        ui,
    ) {
        Ok(Some(dir)) => (Some(dir), None),
        Ok(None) => (None, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(Check {
        first: artifact.sha256.clone(),
        second: second.sha256,
        identical: false,
        second_tarball: Some(tarball),
        differences,
        diffoscope,
        diffoscope_error,
    })
}

/// Keeps a second build's tarball beside the first, out of tmp/ (which the next run empties),
/// for a closer look.
fn keep_second(first: &Build, from: &Path, suffix: &str) -> Result<PathBuf> {
    let facts = first.facts();
    let kept = (facts.out).join(format!("{}{suffix}.second-build.tar.gz", facts.artifact));
    std::fs::rename(from, &kept)
        .or_else(|_| std::fs::copy(from, &kept).map(|_| ()))
        .with_context(|| format!("cannot keep {} as {}", from.display(), kept.display()))?;
    Ok(kept)
}

impl Check {
    /// An error naming what differs, unless both builds were identical.
    pub fn verdict(&self) -> Result<()> {
        if self.identical {
            return Ok(());
        }
        let mut lines: Vec<String> = self
            .differences
            .iter()
            .take(SHOWN)
            .map(|d| format!("  {}: {}", d.path, d.what))
            .collect();
        if self.differences.len() > SHOWN {
            lines.push(format!(
                "  ... and {} more (all of them are in --report)",
                self.differences.len() - SHOWN
            ));
        }
        let explained = match (&self.diffoscope, &self.diffoscope_error) {
            (Some(dir), _) => format!("diffoscope's reports: {}", dir.display()),
            (None, Some(e)) => format!("diffoscope could not run: {e}"),
            (None, None) => "no file differs in content, so diffoscope did not run".to_string(),
        };
        bail!(
            "the build is not reproducible: two builds of the same inputs differ\n  first:  {}\n  \
             second: {} ({})\n{} differing entries:\n{}\n{explained}\nthe stage scripts \
             (xtask/src/pipeline/*.sh) or package.rs must make these paths independent of the time \
             and the machine of the build",
            self.first,
            self.second,
            self.second_tarball
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.differences.len(),
            lines.join("\n")
        )
    }
}

/// What identifies an entry of a tarball, its bytes by their sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    kind: u8,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    link: Option<String>,
    size: u64,
    sha256: String,
}

/// The entries of a `.tar.gz`, in archive order.
fn summarize(tarball: &Path) -> Result<Vec<(String, Summary)>> {
    let mut out = Vec::new();
    tarwalk::for_each_entry(tarball, Compression::Gzip, |path, entry| {
        let h = entry.header().clone();
        let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        let mut sha = Sha256::new();
        std::io::copy(entry, &mut sha)?;
        out.push((
            path.to_string(),
            Summary {
                kind: h.entry_type().as_byte(),
                mode: h.mode()?,
                owner: (h.uid().unwrap_or(0), h.gid().unwrap_or(0)),
                mtime: h.mtime()?,
                link,
                size: h.size()?,
                sha256: hex(&sha.finalize()),
            },
        ));
        Ok(None::<()>)
    })?;
    Ok(out)
}

/// The differences of each pair of tarballs (first build, second build), leaving out the pairs
/// whose bytes are identical: `diff_tarballs` of two identical files would report that they
/// differ in compression.
fn diff_pairs(pairs: &[(&Path, &Path)]) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    for (a, b) in pairs {
        if crate::digest::sha256_file(a)? != crate::digest::sha256_file(b)? {
            out.extend(diff_tarballs(a, b)?);
        }
    }
    Ok(out)
}

/// The entries that differ between two `.tar.gz` files, by path; if every entry is the same,
/// a single difference saying the archives differ in order or compression.
pub fn diff_tarballs(a: &Path, b: &Path) -> Result<Vec<Difference>> {
    let (list_a, list_b) = (summarize(a)?, summarize(b)?);
    let map_a: BTreeMap<&str, &Summary> = list_a.iter().map(|(p, s)| (p.as_str(), s)).collect();
    let map_b: BTreeMap<&str, &Summary> = list_b.iter().map(|(p, s)| (p.as_str(), s)).collect();
    let mut paths: Vec<&str> = map_a.keys().chain(map_b.keys()).copied().collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let what = match (map_a.get(path), map_b.get(path)) {
            (Some(_), None) => "only in the first build".to_string(),
            (None, Some(_)) => "only in the second build".to_string(),
            (Some(x), Some(y)) if x != y => describe(x, y),
            _ => continue,
        };
        out.push(Difference {
            path: path.to_string(),
            what,
        });
    }
    if out.is_empty() {
        let order_a: Vec<&str> = list_a.iter().map(|(p, _)| p.as_str()).collect();
        let order_b: Vec<&str> = list_b.iter().map(|(p, _)| p.as_str()).collect();
        out.push(Difference {
            path: "(the archive)".into(),
            what: if order_a != order_b {
                "the same entries in another order".into()
            } else {
                "the same entries, compressed differently".into()
            },
        });
    }
    Ok(out)
}

fn describe(x: &Summary, y: &Summary) -> String {
    let mut what = Vec::new();
    if x.kind != y.kind {
        what.push(format!(
            "entry type {:?} vs {:?}",
            x.kind as char, y.kind as char
        ));
    }
    if x.sha256 != y.sha256 {
        what.push(format!("content ({} vs {} bytes)", x.size, y.size));
    }
    if x.link != y.link {
        what.push(format!("link target {:?} vs {:?}", x.link, y.link));
    }
    if x.mode != y.mode {
        what.push(format!("mode {:o} vs {:o}", x.mode, y.mode));
    }
    if x.mtime != y.mtime {
        what.push(format!("mtime {} vs {}", x.mtime, y.mtime));
    }
    if x.owner != y.owner {
        what.push(format!("owner {:?} vs {:?}", x.owner, y.owner));
    }
    what.join(", ")
}

/// The bytes of the regular files `paths` in a `.tar.gz`.
fn read_files(tarball: &Path, paths: &[&str]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    tarwalk::for_each_entry(tarball, Compression::Gzip, |path, entry| {
        if entry.header().entry_type().is_file() && paths.contains(&path) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            out.insert(path.to_string(), data);
        }
        Ok(None::<()>)
    })?;
    Ok(out)
}

/// Runs diffoscope on the first few files whose content differs, in a container made from the
/// builder image plus diffoscope, and puts its text reports in `reports`.
pub(crate) fn explain(
    first: &Build,
    a: &[&Path],
    b: &[&Path],
    differences: &[Difference],
    reports: &Path,
    ui: &dyn Reporter,
) -> Result<Option<PathBuf>> {
    let paths: Vec<&str> = differences
        .iter()
        .filter(|d| d.what.contains("content"))
        .map(|d| d.path.as_str())
        .take(DIFFOSCOPE_FILES)
        .collect();
    if paths.is_empty() {
        return Ok(None);
    }
    let read_all = |tarballs: &[&Path]| -> Result<BTreeMap<String, Vec<u8>>> {
        let mut files = BTreeMap::new();
        for t in tarballs {
            files.extend(read_files(t, &paths)?);
        }
        Ok(files)
    };
    let (files_a, files_b) = (read_all(a)?, read_all(b)?);
    let dir = first.cache().scratch("diffoscope")?.join("diff");
    let content = lay_out_pairs(&dir, &paths, &files_a, &files_b)?;
    // Its output explains one comparison: nothing to share.
    let builder = first
        .helper_runner(
            "diffoscope",
            vec!["diffoscope-minimal".into()],
            vec!["diffoscope".into()],
            ui,
        )
        .context("cannot make an image with diffoscope (apt-get install diffoscope-minimal)")?;
    let done = builder.run(&diffoscope_stage(dir, content), ui)?;
    save_reports(&done.output, reports)?;
    ui.message(&format!("diffoscope's reports: {}", reports.display()));
    Ok(Some(reports.to_path_buf()))
}

/// Writes each differing file of both builds under `dir` (`a/<n>/<name>`, `b/<n>/<name>`) and
/// `names.tsv` of what `<n>` was; returns the sha256 of all of it, the stage input's content.
fn lay_out_pairs(
    dir: &Path,
    paths: &[&str],
    files_a: &BTreeMap<String, Vec<u8>>,
    files_b: &BTreeMap<String, Vec<u8>>,
) -> Result<String> {
    let mut names = String::new();
    let mut content = Sha256::new();
    for (n, path) in paths.iter().enumerate() {
        let name = path.rsplit('/').next().unwrap_or(path);
        for (side, files) in [("a", files_a), ("b", files_b)] {
            let bytes = files.get(*path).map(Vec::as_slice).unwrap_or_default();
            let at = dir.join(side).join(n.to_string());
            std::fs::create_dir_all(&at)
                .with_context(|| format!("cannot create {}", at.display()))?;
            let file = at.join(name);
            std::fs::write(&file, bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
            content.update(Sha256::digest(bytes));
        }
        names.push_str(&format!("{n}\t{path}\n"));
    }
    let names_file = dir.join("names.tsv");
    std::fs::write(&names_file, &names)
        .with_context(|| format!("cannot write {}", names_file.display()))?;
    content.update(names.as_bytes());
    Ok(hex(&content.finalize()))
}

/// The builder image plus diffoscope, made if it is not there yet.
/// The stage that runs diffoscope on the files laid out in `dir`, whose sha256 is `content`.
fn diffoscope_stage(dir: PathBuf, content: String) -> StageSpec {
    StageSpec {
        name: "diffoscope",
        script: include_str!("pipeline/diffoscope.sh"),
        env: vec![],
        inputs: vec![Input {
            dest: "diff".into(),
            host: dir,
            content,
        }],
        deps: vec![],
        files: vec![],
        output: "/out/diffoscope",
        source_date_epoch: None,
        reuse: false,
    }
}

/// Replaces `reports` with the regular files of the diffoscope stage's output tar.
fn save_reports(output: &Path, reports: &Path) -> Result<()> {
    let _ = cache::remove(reports);
    std::fs::create_dir_all(reports)
        .with_context(|| format!("cannot create {}", reports.display()))?;
    tarwalk::for_each_entry(output, Compression::None, |path, entry| {
        let Some(name) = Path::new(path).file_name() else {
            return Ok(None::<()>);
        };
        if !entry.header().entry_type().is_file() {
            return Ok(None);
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let report = reports.join(name);
        std::fs::write(&report, data)
            .with_context(|| format!("cannot write {}", report.display()))?;
        Ok(None)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn tarball(path: &Path, entries: &[(&str, &[u8], u64)]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, data, mtime) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(*mtime);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn one_entry_differing_in_content_is_the_one_listed() {
        let dir = TempDir::new("repro-diff");
        let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
        tarball(
            &a,
            &[
                ("opt/x", b"same", 1),
                ("opt/stamp", b"12:00", 1),
                ("opt/z", b"z", 1),
            ],
        );
        tarball(
            &b,
            &[
                ("opt/x", b"same", 1),
                ("opt/stamp", b"12:01", 1),
                ("opt/z", b"z", 1),
            ],
        );
        let d = diff_tarballs(&a, &b).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "opt/stamp");
        assert!(d[0].what.contains("content"), "{}", d[0].what);
    }

    #[test]
    fn a_pair_of_identical_tarballs_adds_no_difference() {
        let dir = TempDir::new("repro-pairs");
        let p = |n: &str| dir.path().join(n);
        tarball(&p("a.tar.gz"), &[("opt/stamp", b"12:00", 1)]);
        tarball(&p("b.tar.gz"), &[("opt/stamp", b"12:01", 1)]);
        tarball(&p("dev-a.tar.gz"), &[("opt/include/x.h", b"x", 1)]);
        tarball(&p("dev-b.tar.gz"), &[("opt/include/x.h", b"x", 1)]);
        let d = diff_pairs(&[
            (&p("a.tar.gz"), &p("b.tar.gz")),
            (&p("dev-a.tar.gz"), &p("dev-b.tar.gz")),
        ])
        .unwrap();
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["opt/stamp"], "{d:?}");
    }

    #[test]
    fn missing_entries_and_metadata_changes_are_listed() {
        let dir = TempDir::new("repro-diff");
        let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
        tarball(&a, &[("opt/gone", b"1", 1), ("opt/t", b"t", 1)]);
        tarball(&b, &[("opt/new", b"1", 1), ("opt/t", b"t", 2)]);
        let d = diff_tarballs(&a, &b).unwrap();
        let got: Vec<(&str, &str)> = d
            .iter()
            .map(|d| (d.path.as_str(), d.what.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("opt/gone", "only in the first build"),
                ("opt/new", "only in the second build"),
                ("opt/t", "mtime 1 vs 2"),
            ]
        );
    }

    #[test]
    fn same_entries_in_another_order_are_named_as_such() {
        let dir = TempDir::new("repro-diff");
        let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
        tarball(&a, &[("opt/a", b"1", 1), ("opt/b", b"2", 1)]);
        tarball(&b, &[("opt/b", b"2", 1), ("opt/a", b"1", 1)]);
        let d = diff_tarballs(&a, &b).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].what, "the same entries in another order");
    }

    #[test]
    fn a_failed_check_names_the_paths_and_a_pgo_recipe_is_refused() {
        let check = Check {
            first: "a".repeat(64),
            second: "b".repeat(64),
            identical: false,
            second_tarball: Some(PathBuf::from("/c/tmp/second.tar.gz")),
            differences: vec![Difference {
                path: "opt/python-fips/share/python-fips/build-time".into(),
                what: "content (21 vs 21 bytes)".into(),
            }],
            diffoscope: None,
            diffoscope_error: Some("no network".into()),
        };
        let err = format!("{:#}", check.verdict().unwrap_err());
        assert!(err.contains("not reproducible"), "{err}");
        assert!(
            err.contains("opt/python-fips/share/python-fips/build-time: content"),
            "{err}"
        );
        assert!(
            err.contains("diffoscope could not run: no network"),
            "{err}"
        );

        let mut recipe = crate::catalog::resolve(
            &crate::catalog::Catalog::load(&crate::catalog::recipes_dir(), None).unwrap(),
            &crate::catalog::recipes_dir(),
            Path::new("/nonexistent"),
            &crate::catalog::Request {
                version: Some("3.13".into()),
                no_fips_patch: true,
                ..Default::default()
            },
        )
        .unwrap();
        refuse_unreproducible(&recipe).unwrap();
        recipe.python_build.pgo = true;
        let err = format!("{:#}", refuse_unreproducible(&recipe).unwrap_err());
        assert!(err.contains("profile-guided optimization"), "{err}");
    }
}
