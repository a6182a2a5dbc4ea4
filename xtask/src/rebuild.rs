//! `rebuild RECORD`: builds a shipped tarball again from its `BUILD-INFO.json` and compares the
//! result byte for byte with the sha256 it shipped with.
//!
//! The record names everything a build consumes: the sources by sha256, the patches by sha256,
//! the builder image and its base by id, the project revision (recipes and stage scripts), and
//! each stage's content key. The rebuild refuses to start when this checkout or this engine
//! cannot give the same inputs, saying which and how to get them, and checks every stage key of a
//! dry-run plan against the record before anything compiles; it then builds in a fresh cache
//! (whose compiler cache is empty), taking from the shared cache only the images and the stages
//! `--reuse-stage` names, and compares the tarball.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xshell::Shell;

use crate::build::Build;
use crate::build_info::{BuildInfo, Revision};
use crate::builder::Images;
use crate::cache::Cache;
use crate::config::BuildConfig;
use crate::engine::Engine;
use crate::flags::{self, BuildArgs, SourceArgs};
use crate::graph::Stage;
use crate::progress::{Reporter, Terminal};
use crate::repro::{self, Difference};
use crate::store::{Origin, Remote};

/// What `--report` holds.
#[derive(Debug, Serialize)]
struct Outcome {
    record: PathBuf,
    expected: String,
    sha256: String,
    identical: bool,
    /// The stages that ran here, from source.
    recompiled: Vec<String>,
    /// The stages taken from the shared cache by their recorded keys (`--reuse-stage`).
    reused: Vec<String>,
    differences: Vec<Difference>,
    /// The rebuilt tarball, kept when it differs.
    tarball: Option<PathBuf>,
}

impl flags::Rebuild {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let record = Record::read(&self.record, self.sha256.as_deref())?;
        self.check(&record.info)?;
        let engine = Engine::detect(sh, self.host.engine.as_deref())?;
        let remotes = crate::registry::shared_caches(self.cache_registry.as_deref())?;
        let user_cache = Cache::open(self.host.cache.as_deref())?;
        let _lock = user_cache.lock(&ui)?;
        ensure_base(sh, &engine, &user_cache, &remotes, &record.info, &ui)?;
        let root = user_cache.scratch("rebuild")?;
        let config = self.config(&record.info, &root)?;
        let reused: Vec<&str> = self.reuse_stage.iter().map(|s| s.name()).collect();
        ui.message(&format!(
            "rebuilding {} in a fresh cache ({}), taking from the shared cache only the images{}",
            record.path.display(),
            root.display(),
            match reused.is_empty() {
                true => String::new(),
                false => format!(" and {}", reused.join(", ")),
            }
        ));
        let outcome = rebuild(sh, &config, &record, &ui)?;
        if let Some(path) = &self.report {
            crate::cache::write_atomic(path, &serde_json::to_vec_pretty(&outcome)?)?;
        }
        crate::cache::remove(&root)?;
        crate::progress::answer!("{}", outcome.verdict(&record)?);
        Ok(())
    }

    /// Refuses what cannot be rebuilt from here, before anything is fetched or built.
    fn check(&self, info: &BuildInfo) -> Result<()> {
        if !info.reproducible {
            bail!(
                "{} records a build that is not reproducible (profile-guided optimization): \
                 there is nothing to compare a rebuild with",
                self.record.display()
            );
        }
        if !self.reuse_stage.is_empty() && self.cache_registry.is_none() {
            bail!("--reuse-stage takes stages from a shared cache: pass --cache-registry too");
        }
        check_reuse(&self.reuse_stage)?;
        check_revision(
            &info.revision,
            &Revision::of_checkout(&crate::project_root()),
        )
    }

    /// The build the record describes, in the fresh cache `root`.
    fn config(&self, info: &BuildInfo, root: &Path) -> Result<BuildConfig> {
        let python = &info.python.version;
        let minor: String = python.split('.').take(2).collect::<Vec<_>>().join(".");
        let args = BuildArgs {
            sources: SourceArgs {
                version: Some(minor),
                python: Some(python.clone()),
                openssl: Some(info.openssl.version.clone()),
                fips_provider: Some(info.fips_provider.source.version.clone()),
                mirror: self.mirror.clone(),
                source_catalog: self.source_catalog.clone(),
                cache: Some(root.to_path_buf()),
                no_fips_patch: info.patches.is_empty(),
                ..SourceArgs::default()
            },
            engine: self.host.engine.clone(),
            arch: Some(info.arch.clone()),
            jobs: self.jobs,
            cache_registry: self.cache_registry.clone(),
            out: Some(root.join("dist")),
            no_verify: true,
            ..BuildArgs::default()
        };
        let mut config = BuildConfig::from_args(&args)?;
        config.make_builder = false;
        config.shared_stages = Some(
            (self.reuse_stage.iter())
                .map(|s| s.name().to_string())
                .collect::<BTreeSet<_>>(),
        );
        Ok(config)
    }
}

/// A record and the sha256 its tarball shipped with.
struct Record {
    path: PathBuf,
    info: BuildInfo,
    expected: String,
    /// The shipped tarball, when it is at hand: the rebuild is compared with it file by file.
    tarball: Option<PathBuf>,
}

impl Record {
    /// Reads `path`: a runtime tarball (its BUILD-INFO.json, and its own sha256) or the
    /// `<artifact>.build-info.json` beside one (and that tarball's `.sha256` file).
    fn read(path: &Path, sha256: Option<&str>) -> Result<Record> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (info, tarball) = if let Some(artifact) = name.strip_suffix(".build-info.json") {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the record {}", path.display()))?;
            let tarball = path.with_file_name(format!("{artifact}.tar.gz"));
            (BuildInfo::parse(&text), tarball)
        } else if name.ends_with(".tar.gz") {
            let info = crate::image::TreeInfo::read_build_info(path)?;
            (BuildInfo::parse(&info), path.to_path_buf())
        } else {
            bail!(
                "{} is neither a runtime tarball (.tar.gz) nor the .build-info.json beside one",
                path.display()
            );
        };
        let info = info.with_context(|| format!("{} is not a build record", path.display()))?;
        let expected = match sha256 {
            Some(hex) => hex.trim().to_ascii_lowercase(),
            None if tarball.is_file() => crate::digest::sha256_file(&tarball)?,
            None => {
                let sums = PathBuf::from(format!("{}.sha256", tarball.display()));
                let text = std::fs::read_to_string(&sums).with_context(|| {
                    format!(
                        "neither {} nor its {} is here to say what sha256 the rebuild must \
                         reach; pass it with --sha256",
                        tarball.display(),
                        sums.display()
                    )
                })?;
                text.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }
        };
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{expected:?} is not a sha256 (64 hexadecimal digits)");
        }
        Ok(Record {
            path: path.to_path_buf(),
            info,
            expected,
            tarball: tarball.is_file().then_some(tarball),
        })
    }
}

/// Fails unless the stages to reuse include every stage they read (but the build tools of a
/// cross build): a stage compiled here that only a reused one reads would go into nothing the
/// rebuild compares.
fn check_reuse(reuse: &[Stage]) -> Result<()> {
    for stage in reuse {
        if let Some(dep) = (stage.deps().iter()).find(|d| !d.is_native_tool() && !reuse.contains(d))
        {
            bail!(
                "--reuse-stage {stage} without --reuse-stage {dep}: the {stage} entry was made from \
                 the recorded {dep}, so a {dep} compiled here would end up in nothing the rebuild \
                 compares; reuse {dep} too, or let {stage} compile"
            );
        }
    }
    Ok(())
}

/// Fails unless this checkout is the recorded one, unmodified: the recipes, patches and stage
/// scripts are all in it.
fn check_revision(recorded: &Revision, here: &Revision) -> Result<()> {
    if recorded.git_commit.is_empty() {
        bail!(
            "the record names no project revision (it was built outside a git checkout, or by an \
             xtask older than the field), so the recipes and stage scripts it was built with \
             cannot be had again"
        );
    }
    if recorded.modified {
        bail!(
            "the record was built from a modified checkout of {}: the uncommitted changes it was \
             built with cannot be had again",
            recorded.git_commit
        );
    }
    if here.git_commit != recorded.git_commit {
        bail!(
            "the record was built at revision {}, and this checkout is at {}; run `git checkout \
             {}` and rebuild from there",
            recorded.git_commit,
            if here.git_commit.is_empty() {
                "no git revision"
            } else {
                &here.git_commit
            },
            recorded.git_commit
        );
    }
    if here.modified {
        bail!(
            "this checkout of {} has uncommitted changes to what a build consumes (Cargo.toml, \
             Cargo.lock, xtask/, recipes/, patches/); commit or stash them and rebuild",
            here.git_commit
        );
    }
    Ok(())
}

/// Makes sure the engine has the recorded base image: it has it already, or the shared cache
/// gives it by the key `base-image` recorded.
fn ensure_base(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    remotes: &[Box<dyn Remote + Sync>],
    info: &BuildInfo,
    ui: &dyn Reporter,
) -> Result<()> {
    let b = &info.builder_image;
    let have = engine.image_id(sh, &b.base)?;
    if b.base_id.is_empty() || have.as_deref() == Some(b.base_id.as_str()) {
        return Ok(());
    }
    if !b.base_key.is_empty() {
        let images = Images::new(&crate::host::Host::new(sh, engine, cache), remotes, false);
        let pulled = images.pull(crate::base_image::ENTRY, &b.base_key, &b.base, ui)?;
        if pulled.as_deref() == Some(b.base_id.as_str()) {
            if let Some(old) = &have {
                ui.message(&format!(
                    "{} now names the record's base image {} (it named {old})",
                    b.base, b.base_id
                ));
            }
            return Ok(());
        }
    }
    let make = crate::builder::base_image_command(&b.base).map_or(String::new(), |c| {
        format!(
            " `{c} --force` makes it again from the mirror (the same URI) in the state it was \
             made from;"
        )
    });
    bail!(
        "the record's base image {} is {}, and {} has {}:{make} or pass --cache-registry with a \
         registry that holds it",
        b.base,
        b.base_id,
        engine,
        have.map_or("no such image".to_string(), |id| format!(
            "{id} under that name"
        )),
    )
}

/// Runs the build `config` once its inputs are the record's, and compares.
fn rebuild(
    sh: &Shell,
    config: &BuildConfig,
    record: &Record,
    ui: &dyn Reporter,
) -> Result<Outcome> {
    let mut build = Build::start(sh, config, ui)?;
    check_inputs(&mut build, &record.info, ui)?;
    let done = build.run_all(ui)?;
    let artifact = crate::ship::package(&build, &done, ui)?;
    let (mut recompiled, mut reused) = (Vec::new(), Vec::new());
    for d in done.iter() {
        match d.origin {
            Some(Origin::Remote { .. }) => reused.push(d.name.clone()),
            Some(Origin::Ran) => recompiled.push(d.name.clone()),
            _ => {}
        }
    }
    let identical = artifact.sha256 == record.expected;
    let mut outcome = Outcome {
        record: record.path.clone(),
        expected: record.expected.clone(),
        sha256: artifact.sha256.clone(),
        identical,
        recompiled,
        reused,
        differences: vec![],
        tarball: None,
    };
    if !identical {
        // Kept beside the record, out of the scratch cache that goes with this run.
        let kept = record
            .path
            .with_file_name(format!("{}.rebuilt.tar.gz", build.facts().artifact));
        std::fs::copy(&artifact.tarball, &kept)
            .with_context(|| format!("cannot keep the rebuilt tarball as {}", kept.display()))?;
        if let Some(shipped) = &record.tarball {
            outcome.differences = repro::diff_tarballs(shipped, &kept)?;
            let reports = (record.path)
                .with_file_name(format!("{}.rebuild-diffoscope", build.facts().artifact));
            let pair = (&[shipped.as_path()][..], &[kept.as_path()][..]);
            if let Err(e) =
                repro::explain(&build, pair.0, pair.1, &outcome.differences, &reports, ui)
            {
                ui.message(&format!("warning: diffoscope could not run: {e:#}"));
            }
        }
        outcome.tarball = Some(kept);
    }
    Ok(outcome)
}

/// Fails unless the build's sources, builder image and every stage key are the record's: the
/// stages are planned (a dry run, which runs nothing) before any of them runs.
fn check_inputs(build: &mut Build, info: &BuildInfo, ui: &dyn Reporter) -> Result<()> {
    let recipe = build.recipe();
    for (what, recorded, here) in [
        ("CPython", &info.python.sha256, &recipe.python.sha256),
        ("OpenSSL", &info.openssl.sha256, &recipe.openssl.sha256),
        (
            "FIPS provider",
            &info.fips_provider.source.sha256,
            &recipe.fips_provider.sha256,
        ),
    ] {
        if recorded != here {
            bail!(
                "the record's {what} source has sha256 {recorded}, and this checkout's catalog \
                 pins {here} for that version: the sources differ"
            );
        }
    }
    let builder_id = &build.facts().builder_id;
    if *builder_id != info.builder_image.id {
        bail!(
            "the builder image here is {}, and the record's is {}: remove this one (`{}`) and \
             pass --cache-registry with the registry the recorded build gave its builder to",
            builder_id,
            info.builder_image.id,
            (build.engine()).remove_image_hint(builder_id.trim_start_matches("sha256:"))
        );
    }
    let planned = build.plan_keys(ui)?;
    for recorded in &info.stages {
        let here = planned.by_name(&recorded.name).map(|d| d.key.as_str());
        if here != Some(recorded.key.as_str()) {
            bail!(
                "the {} stage's key here is {}, and the record's is {}: its inputs (the patched \
                 tree, the recipe's flags, the stage script) differ from the recorded build's",
                recorded.name,
                here.unwrap_or("missing"),
                recorded.key
            );
        }
    }
    Ok(())
}

impl Outcome {
    /// What was rebuilt when the sha256 is the recorded one; an error naming the differing
    /// files otherwise.
    fn verdict(&self, record: &Record) -> Result<String> {
        if self.identical {
            return Ok(format!(
                "rebuilt: sha256 {} as recorded (recompiled: {}; reused: {})",
                self.sha256,
                self.recompiled.join(", "),
                match self.reused.is_empty() {
                    true => "nothing".to_string(),
                    false => self.reused.join(", "),
                }
            ));
        }
        let files = match &record.tarball {
            Some(_) => (self.differences.iter().take(20))
                .map(|d| format!("\n  {}: {}", d.path, d.what))
                .collect::<String>(),
            None => " (the shipped tarball is not here to compare file by file)".to_string(),
        };
        bail!(
            "the rebuild gives sha256 {} where {} records {}; the files that differ:{files}\n\
             the rebuilt tarball is kept as {} (diffoscope's reports, when it could run, are in \
             <artifact>.rebuild-diffoscope/ beside it)",
            self.sha256,
            record.path.display(),
            self.expected,
            (self.tarball.as_deref()).map_or("(none)".into(), |p| p.display().to_string())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(commit: &str, modified: bool) -> Revision {
        Revision {
            git_commit: commit.into(),
            modified,
        }
    }

    #[test]
    fn a_rebuild_needs_the_recorded_revision_unmodified_on_both_sides() {
        let a = "a".repeat(40);
        assert!(check_revision(&rev(&a, false), &rev(&a, false)).is_ok());
        let err = |r: Revision, h: Revision| format!("{:#}", check_revision(&r, &h).unwrap_err());
        assert!(err(rev("", false), rev(&a, false)).contains("names no project revision"));
        assert!(err(rev(&a, true), rev(&a, false)).contains("modified checkout"));
        let other = err(rev(&a, false), rev(&"b".repeat(40), false));
        assert!(other.contains(&format!("git checkout {a}")), "{other}");
        assert!(err(rev(&a, false), rev(&a, true)).contains("uncommitted changes"));
    }

    #[test]
    fn reused_stages_must_take_what_they_read_with_them() {
        assert!(check_reuse(&[Stage::Openssl, Stage::FipsProvider]).is_ok());
        assert!(check_reuse(&[Stage::Openssl, Stage::FipsProvider, Stage::Python]).is_ok());
        let err = format!("{:#}", check_reuse(&[Stage::Finalize]).unwrap_err());
        assert!(err.contains("--reuse-stage python"), "{err}");
        let err = format!("{:#}", check_reuse(&[Stage::Python]).unwrap_err());
        assert!(err.contains("--reuse-stage openssl"), "{err}");
    }

    #[test]
    fn a_record_beside_a_missing_tarball_takes_its_sha256_file_or_asks_for_one() {
        let dir = crate::testutil::TempDir::new("rebuild-record");
        let record = dir.path().join("python-fips-x.build-info.json");
        let info = BuildInfo {
            reproducible: true,
            ..BuildInfo::default()
        };
        std::fs::write(&record, info.to_json().unwrap()).unwrap();
        let err = format!("{:#}", Record::read(&record, None).err().unwrap());
        assert!(err.contains("--sha256"), "{err}");
        let sums = dir.path().join("python-fips-x.tar.gz.sha256");
        std::fs::write(
            &sums,
            format!("{}  python-fips-x.tar.gz\n", "ab".repeat(32)),
        )
        .unwrap();
        let read = Record::read(&record, None).unwrap();
        assert_eq!(read.expected, "ab".repeat(32));
        assert!(read.tarball.is_none());
        let err = format!("{:#}", Record::read(&record, Some("xyz")).err().unwrap());
        assert!(err.contains("not a sha256"), "{err}");
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, "x").unwrap();
        let err = format!("{:#}", Record::read(&other, None).err().unwrap());
        assert!(err.contains("neither a runtime tarball"), "{err}");
    }
}
