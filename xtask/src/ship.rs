//! The package step: BUILD-INFO.json, the SBOM and the two tarballs made from the finalize
//! output, cached by key, then shipped to the output directory with a `.sha256` each and this
//! run's provenance beside them. It reads the build only through its `Facts` and its runner.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::build::{Build, Facts, Stages};
use crate::build_info::{self, BuildInfo, Cmvp};
use crate::cache::write_if_changed;
use crate::catalog::Recipe;
use crate::digest::{Key, sha256_file};
use crate::pipeline::StageSpec;
use crate::progress::{Reporter, StepEvent};
use crate::tarwalk::{self, Compression};
use crate::{graph, package, sbom};

/// Where the SBOM goes inside the tree, next to BUILD-INFO.json.
pub const SBOM_IN_TREE: &str = "SBOM.cdx.json";

/// The package entry's record of its tarballs' sha256s, in `sha256sum` format.
const SUMS: &str = "SHA256SUMS";

/// The shipped tarballs (the runtime tree and the development tree), their checksums and the SBOM.
pub struct Artifact {
    pub tarball: PathBuf,
    pub sha256: String,
    /// `<artifact>-dev.tar.gz`, unpacked over the runtime tree.
    pub dev_tarball: PathBuf,
    pub dev_sha256: String,
    pub sbom: PathBuf,
    /// `<artifact>.build-info.json`: the tree's BUILD-INFO.json with each stage's origin in
    /// this run (`build_info::Origin`), which the tree's own copy cannot hold and stay
    /// reproducible.
    pub build_info: PathBuf,
    /// Whether the package step found its output cached.
    pub cached: bool,
}

/// The names of one artifact's files.
struct Names {
    /// `<artifact>.tar.gz`, `<artifact>-dev.tar.gz`, `<artifact>.cdx.json` and
    /// `<artifact>.build-info.json`.
    runtime: String,
    dev: String,
    sbom: String,
    build_info: String,
}

impl Names {
    fn of(artifact: &str) -> Names {
        Names {
            runtime: format!("{artifact}.tar.gz"),
            dev: format!("{artifact}-dev.tar.gz"),
            sbom: format!("{artifact}.cdx.json"),
            build_info: format!("{artifact}.build-info.json"),
        }
    }
}

/// The package step of `build` over the outcomes `done`: makes the package entry unless it is
/// cached, then ships its files to the output directory.
pub fn package(build: &Build, done: &Stages, ui: &dyn Reporter) -> Result<Artifact> {
    let facts = build.facts();
    let recipe = build.recipe();
    let finalize = done.of(graph::Stage::Finalize)?;
    let info = build_info(facts, recipe, done);
    let info_json = info.to_json()?;
    let sbom_input = sbom_input(facts, recipe, builder_packages(build, ui)?);
    let started = Instant::now();
    let key = Key::new()
        .set("stage", "package")
        .set_sha256("code", include_str!("package.rs"))
        .set("dep:finalize", finalize.key.clone())
        .set_sha256("build-info", &info_json)
        // The SBOM without the tarballs' hashes (outputs of this step) and without the
        // shipped files' hashes: those come from the finalize output, which `dep:finalize`
        // already keys, so a cached package never reads that output.
        .set_sha256("sbom", serde_json::to_vec(&sbom::cyclonedx(&sbom_input))?)
        .hex();
    let names = Names::of(&facts.artifact);
    let entry = build.runner().entry("package", &key);
    let cached = entry.join(&names.sbom).is_file();
    if !cached {
        let scratch = build.cache().scratch("package")?;
        let tree = Tree {
            output: &finalize.output,
            recipe,
            epoch: facts.source_date_epoch,
            info: &info_json,
        };
        tree.write_entry(sbom_input, &names, &scratch)?;
        crate::cache::publish(&scratch, &entry)?;
    }
    let shipped = ship_entry(&entry, &names, &facts.out)?;
    let (sbom, build_info) = write_provenance(&entry, &names, &facts.out, &info, done)?;
    match cached {
        true => ui.step("package", StepEvent::Skipped { what: "cached" }),
        false => {
            let seconds = started.elapsed().as_secs_f64();
            ui.step(
                "package",
                StepEvent::Ran {
                    seconds,
                    note: None,
                },
            )
        }
    }
    let [runtime, dev] = shipped;
    Ok(Artifact {
        tarball: runtime.0,
        sha256: runtime.1,
        dev_tarball: dev.0,
        dev_sha256: dev.1,
        sbom,
        build_info,
        cached,
    })
}

/// The finalize output and what the package entry adds to it.
struct Tree<'a> {
    output: &'a Path,
    recipe: &'a Recipe,
    epoch: u64,
    /// The bytes of BUILD-INFO.json.
    info: &'a [u8],
}

impl Tree<'_> {
    /// Writes the package entry's files into `scratch`: the development tarball, the runtime
    /// tarball (with BUILD-INFO.json and the SBOM inside), the SBOM beside them and SHA256SUMS.
    fn write_entry(
        &self,
        mut sbom_input: sbom::Input,
        names: &Names,
        scratch: &Path,
    ) -> Result<()> {
        let wanted: Vec<String> = (sbom::shipped_files(self.recipe).into_iter())
            .map(|(_, p)| p)
            .collect();
        sbom_input.files = package::sha256_of_entries(self.output, &wanted)?;
        let tree = package::Tree::read(self.output)?;
        tree.write(
            package::Part::Dev,
            &[],
            self.epoch,
            &scratch.join(&names.dev),
        )?;
        let dev_sha256 = sha256_file(&scratch.join(&names.dev))?;
        sbom_input.tarballs = Some(sbom::Tarballs {
            runtime: names.runtime.clone(),
            dev: names.dev.clone(),
            dev_sha256: dev_sha256.clone(),
        });
        let mut bom = sbom::cyclonedx(&sbom_input);
        tree.write(
            package::Part::Runtime,
            &[
                ("BUILD-INFO.json", self.info),
                (SBOM_IN_TREE, &serde_json::to_vec_pretty(&bom)?),
            ],
            self.epoch,
            &scratch.join(&names.runtime),
        )?;
        let sha256 = sha256_file(&scratch.join(&names.runtime))?;
        sbom::add_runtime_sha256(&mut bom, &sha256);
        write_new(
            &scratch.join(&names.sbom),
            &serde_json::to_vec_pretty(&bom)?,
        )?;
        let sums = format!("{sha256}  {}\n{dev_sha256}  {}\n", names.runtime, names.dev);
        write_new(&scratch.join(SUMS), sums.as_bytes())
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Copies the entry's two tarballs to `out` with a `.sha256` each; returns each shipped
/// tarball with its sha256 (the entry's own record of it, or for an entry made before it kept
/// one, the hash).
fn ship_entry(entry: &Path, names: &Names, out: &Path) -> Result<[(PathBuf, String); 2]> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let sums = std::fs::read_to_string(entry.join(SUMS)).unwrap_or_default();
    let one = |file: &str| -> Result<(PathBuf, String)> {
        let sha256 = match (sums.lines()).find_map(|l| l.strip_suffix(&format!("  {file}"))) {
            Some(sha256) => sha256.to_string(),
            None => sha256_file(&entry.join(file))?,
        };
        ship(&entry.join(file), &out.join(file))?;
        write_if_changed(
            &out.join(format!("{file}.sha256")),
            format!("{sha256}  {file}\n").as_bytes(),
        )?;
        Ok((out.join(file), sha256))
    };
    Ok([one(&names.runtime)?, one(&names.dev)?])
}

/// Writes, beside the tarball, what the tree cannot hold and stay reproducible: the SBOM with a
/// property per stage saying where it came from in this run, and BUILD-INFO.json with each
/// stage's origin. Returns their paths.
fn write_provenance(
    entry: &Path,
    names: &Names,
    out: &Path,
    info: &BuildInfo,
    done: &Stages,
) -> Result<(PathBuf, PathBuf)> {
    let origins: Vec<(String, String)> = (done.iter())
        .filter_map(|d| Some((d.name.clone(), d.origin.as_ref()?.describe())))
        .collect();
    let sbom_path = out.join(&names.sbom);
    let in_entry = entry.join(&names.sbom);
    let bom =
        std::fs::read(&in_entry).with_context(|| format!("cannot read {}", in_entry.display()))?;
    let mut bom: serde_json::Value = serde_json::from_slice(&bom)
        .with_context(|| format!("{} is not JSON", in_entry.display()))?;
    sbom::add_provenance(&mut bom, &origins);
    write_if_changed(&sbom_path, &serde_json::to_vec_pretty(&bom)?)?;

    let mut beside = info.clone();
    for stage in &mut beside.stages {
        stage.origin = done.by_name(&stage.name).and_then(|d| d.origin.clone());
    }
    let build_info_path = out.join(&names.build_info);
    write_if_changed(&build_info_path, &beside.to_json()?)?;
    Ok((sbom_path, build_info_path))
}

/// The packages installed in the builder image, listed once per image by a small stage.
fn builder_packages(build: &Build, ui: &dyn Reporter) -> Result<Vec<sbom::Package>> {
    let stage = StageSpec {
        name: "packages",
        script: include_str!("pipeline/packages.sh"),
        env: vec![],
        inputs: vec![],
        deps: vec![],
        files: vec![],
        output: "/out/packages",
        source_date_epoch: None,
        reuse: false,
    };
    let done = build.runner().run(&stage, ui)?;
    let found = tarwalk::for_each_entry(&done.output, Compression::None, |path, entry| {
        if !Path::new(path).ends_with("packages.tsv") {
            return Ok(None);
        }
        let mut text = String::new();
        std::io::Read::read_to_string(entry, &mut text)?;
        Ok(Some(text))
    })?;
    match found {
        Some(text) => Ok(sbom::parse_packages(&text)),
        None => anyhow::bail!(
            "the packages stage wrote no packages.tsv; see its log under {}",
            build.cache().dir("logs").display()
        ),
    }
}

/// What the CycloneDX SBOM of the tree says, but the tarballs. The shipped files' hashes are
/// left empty: the package step fills them in when it writes.
fn sbom_input<'s>(
    facts: &'s Facts,
    recipe: &'s Recipe,
    packages: Vec<sbom::Package>,
) -> sbom::Input<'s> {
    sbom::Input {
        artifact: &facts.artifact,
        recipe,
        patches: facts.patches.clone(),
        builder: sbom::BuilderImage {
            base_image: recipe.builder.base_image.clone(),
            id: facts.builder_id.clone(),
            packages,
        },
        files: Default::default(),
        arch: facts.arch.name,
        source_date_epoch: facts.source_date_epoch,
        reproducible: !recipe.python_build.pgo,
        tarballs: None,
    }
}

/// The tree's BUILD-INFO.json: what it was built from, how, and every stage's key.
fn build_info(facts: &Facts, r: &Recipe, done: &Stages) -> BuildInfo {
    let source = |s: &crate::catalog::Source| build_info::Source {
        version: s.version.clone(),
        file: s.file.clone(),
        sha256: s.sha256.clone(),
        license: s.license.clone(),
        carries: s.carries.as_ref().map(|c| build_info::Carried {
            release: c.release.clone(),
            what: c.what.clone(),
        }),
    };
    let patches = (facts.patches.iter())
        .map(|p| build_info::Patch {
            file: p.file.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    BuildInfo {
        python: source(&r.python),
        openssl: source(&r.openssl),
        fips_provider: build_info::FipsProvider {
            source: source(&r.fips_provider),
            cmvp: cmvp(r, facts.source_date_epoch),
        },
        patches,
        configure: build_info::Configure {
            python: (r.python_build.configure.iter())
                .map(|f| build_info::ConfigureFlag {
                    flag: f.flag.clone(),
                    why: f.why.clone(),
                })
                .collect(),
            enable_shared: r.python_build.enable_shared,
            pgo: r.python_build.pgo,
        },
        builder_image: build_info::BuilderImage {
            base: r.builder.base_image.clone(),
            id: facts.builder_id.clone(),
            base_id: facts.base_id.clone(),
            base_key: facts.base_key.clone(),
        },
        arch: facts.arch.name.to_string(),
        build_arch: facts.build_arch.name.to_string(),
        source_date_epoch: facts.source_date_epoch,
        reproducible: !r.python_build.pgo,
        sbom: SBOM_IN_TREE.to_string(),
        stages: (done.iter())
            .map(|d| build_info::StageKey {
                name: d.name.clone(),
                key: d.key.to_string(),
                origin: None,
            })
            .collect(),
        revision: facts.revision.clone(),
    }
}

/// The provider's certificate and its status on the build's day (SOURCE_DATE_EPOCH), as the
/// SBOM gives it.
fn cmvp(r: &Recipe, source_date_epoch: u64) -> Cmvp {
    let day = crate::date::day_of(source_date_epoch);
    match &r.fips_provider.cmvp {
        Some(c) => Cmvp::Validated(build_info::Certificate {
            certificate: c.certificate.clone(),
            standard: c.standard.clone(),
            historical_from: c.historical_from.clone(),
            status: r.fips_provider.cmvp_status(&day).as_str().to_string(),
            status_as_of: day,
        }),
        None => Cmvp::NotValidated,
    }
}

/// Copies the cached file `from` to `to` (through a synced temporary file and a rename), unless
/// `to` already holds the same bytes: a no-op run rewrites nothing in the output directory.
fn ship(from: &Path, to: &Path) -> Result<()> {
    if same_bytes(from, to)? {
        return Ok(());
    }
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.partial"));
    std::fs::copy(from, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    crate::cache::sync(&tmp)?;
    std::fs::rename(&tmp, to)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), to.display()))?;
    crate::cache::sync(to.parent().unwrap_or(to))
}

/// Whether the regular file `b` exists and has the same bytes as `a`.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (Ok(meta_a), Ok(meta_b)) = (std::fs::metadata(a), std::fs::symlink_metadata(b)) else {
        return Ok(false);
    };
    if !meta_b.is_file() || meta_a.len() != meta_b.len() {
        return Ok(false);
    }
    let open =
        |p: &Path| std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        // A file that shrank under us is simply not the same.
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn shipping_an_unchanged_file_again_rewrites_nothing() {
        let dir = TempDir::new("ship");
        let from = dir.path().join("entry.tar.gz");
        let to = dir.path().join("dist.tar.gz");
        std::fs::write(&from, vec![7u8; 3 << 20]).unwrap();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());
        let inode = std::fs::metadata(&to).unwrap().ino();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::metadata(&to).unwrap().ino(), inode, "rewritten");
        // A changed byte at the end, or another length: replaced.
        let mut bytes = std::fs::read(&from).unwrap();
        *bytes.last_mut().unwrap() = 8;
        std::fs::write(&to, &bytes).unwrap();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());
        std::fs::write(&to, b"short").unwrap();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());

        let sums = dir.path().join("x.sha256");
        write_if_changed(&sums, b"a  x\n").unwrap();
        let inode = std::fs::metadata(&sums).unwrap().ino();
        write_if_changed(&sums, b"a  x\n").unwrap();
        assert_eq!(std::fs::metadata(&sums).unwrap().ino(), inode);
        write_if_changed(&sums, b"b  x\n").unwrap();
        assert_eq!(std::fs::read(&sums).unwrap(), b"b  x\n");
    }
}
