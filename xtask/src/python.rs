//! `python`: the main job. Builds the stages, packages, then proves the result in its runtime
//! image and checks reproducibility, in that order, and writes the report.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use xshell::Shell;

use crate::arch;
use crate::build::{Build, Stages};
use crate::config::BuildConfig;
use crate::flags;
use crate::image::{ImageInputs, RuntimeImage, runtime_image};
use crate::pipeline::Done;
use crate::progress::{Reporter, Terminal};
use crate::repro;
use crate::ship::{self, Artifact};
use crate::timings::{Step, Timeline};
use crate::verify::{Verdict, verify_image};

impl flags::Python {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if let Some(each) = arch::per_arch(&self.build)? {
            for build in each {
                flags::Python {
                    build,
                    check_reproducible: self.check_reproducible,
                    dry_run: self.dry_run,
                    timings: self.timings,
                }
                .run(sh)?;
            }
            return Ok(());
        }
        let ui = Terminal::new();
        let mut build = Build::start(sh, &BuildConfig::from_args(&self.build)?, &ui)?;
        if self.check_reproducible {
            repro::refuse_unreproducible(build.recipe())?;
        }
        if self.dry_run {
            build.set_dry_run();
            let done = build.run_all(&ui)?;
            if let Some(path) = &self.build.report {
                let plan = serde_json::json!({ "stages": done.into_vec() });
                crate::cache::write_atomic(path, &serde_json::to_vec_pretty(&plan)?)?;
            }
            return Ok(());
        }
        let Outcome {
            done,
            artifact,
            proof,
            timeline,
        } = build_and_prove(&build, &ui)?;
        crate::progress::answer!("{}", artifact.tarball.display());
        if self.timings {
            let page = timings_path(self.build.report.as_deref(), &artifact.tarball);
            crate::cache::write_atomic(&page, timeline.html(None).as_bytes())?;
            ui.message(&format!("timings: {}", page.display()));
        }
        let check = match self.check_reproducible {
            true => Some(repro::check(sh, &build, &artifact, &ui)?),
            false => None,
        };
        if let Some(path) = &self.build.report {
            let report = Report {
                stages: done.iter().cloned().collect(),
                artifact: artifact.tarball.clone(),
                sha256: artifact.sha256.clone(),
                dev_artifact: artifact.dev_tarball.clone(),
                dev_sha256: artifact.dev_sha256.clone(),
                image: proof.as_ref().map(|(image, ..)| image.clone()),
                verify: proof.as_ref().map(|(_, verdict, json)| ReportVerify {
                    passed: verdict.passed,
                    failed: verdict.failed().iter().map(|s| s.to_string()).collect(),
                    json: json.clone(),
                    cached: verdict.cached,
                }),
                sbom: artifact.sbom.clone(),
                build_info: artifact.build_info.clone(),
                timings: &timeline,
                reproducible: check.as_ref(),
            };
            crate::cache::write_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
        }
        if let Some((_, verdict, json)) = &proof {
            verdict.ensure_passed(Some(json))?;
        }
        match check {
            Some(check) => check.verdict(),
            None => Ok(()),
        }
    }
}

/// `image`: the same build and package as `python`, then the runtime image under the tags asked
/// for, verified unless `--no-verify`.
impl flags::Image {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if let Some(each) = crate::arch::per_arch(&self.build)? {
            for build in each {
                // Tags given by hand name one image per architecture.
                let arch = build.arch.clone().unwrap_or_default();
                let tag = self.tag.iter().map(|t| format!("{t}-{arch}")).collect();
                flags::Image { build, tag }.run(sh)?;
            }
            return Ok(());
        }
        let ui = Terminal::new();
        let build = Build::start(sh, &BuildConfig::from_args(&self.build)?, &ui)?;
        let done = build.run_all(&ui)?;
        let artifact = ship::package(&build, &done, &ui)?;
        let inputs = ImageInputs::of(&build);
        let image = runtime_image(&inputs, &artifact, &self.tag, &ui)?;
        let verdict = match self.build.no_verify {
            true => None,
            false => Some(verify_image(&inputs, &artifact, &image, &ui)?),
        };
        for tag in &image.tags {
            crate::progress::answer!("{tag}");
        }
        match verdict {
            Some((verdict, json)) => verdict.ensure_passed(Some(&json)),
            None => Ok(()),
        }
    }
}

/// What `--report` writes.
#[derive(Serialize)]
struct Report<'a> {
    stages: Vec<Done>,
    artifact: PathBuf,
    sha256: String,
    /// The development tarball and its sha256.
    dev_artifact: PathBuf,
    dev_sha256: String,
    /// The runtime image (absent with `--no-verify`).
    image: Option<RuntimeImage>,
    verify: Option<ReportVerify>,
    sbom: PathBuf,
    /// `<artifact>.build-info.json`, with each stage's origin.
    build_info: PathBuf,
    /// Every step on one time axis: the stages, package, image and verify.
    timings: &'a Timeline,
    /// The outcome of `--check-reproducible`, when it was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    reproducible: Option<&'a repro::Check>,
}

#[derive(Serialize)]
struct ReportVerify {
    passed: bool,
    /// The names of the checks that failed.
    failed: Vec<String>,
    /// `<tarball>.verify.json`.
    json: PathBuf,
    /// The verdict was the one cached for this image, not a new run of the checks.
    cached: bool,
}

/// What a build that users run ends with: its stages, the tarballs, the runtime image with its
/// verdict (none under `--no-verify`) and when each step ran.
pub struct Outcome {
    pub done: Stages,
    pub artifact: Artifact,
    pub proof: Option<(RuntimeImage, Verdict, PathBuf)>,
    pub timeline: Timeline,
}

/// Everything `python` does after `start`: every stage, the package, then (unless
/// `--no-verify`) the runtime image and its verification, each step timed from `started`.
/// A failed check is in the verdict, not an error. `bench` times this same path.
pub fn build_and_prove(build: &Build, ui: &dyn Reporter) -> Result<Outcome> {
    let done = build.run_all(ui)?;
    let mut steps = vec![Step::new("start", false, 0.0, build.start_seconds())];
    steps.extend(done.iter().map(Step::of_stage));
    let at = || build.started().elapsed().as_secs_f64();
    let start = at();
    let artifact = ship::package(build, &done, ui)?;
    steps.push(Step::new("package", artifact.cached, start, at() - start));
    // Every build proves itself in its runtime image unless told not to.
    let proof = match build.config().verify {
        false => None,
        true => {
            let start = at();
            let inputs = ImageInputs::of(build);
            let image = runtime_image(&inputs, &artifact, &[], ui)?;
            steps.push(Step::new("image", image.cached, start, at() - start));
            let start = at();
            let (verdict, json) = verify_image(&inputs, &artifact, &image, ui)?;
            steps.push(Step::new("verify", verdict.cached, start, at() - start));
            Some((image, verdict, json))
        }
    };
    let timeline = Timeline {
        title: build.facts().artifact.clone(),
        steps,
        seconds: at(),
    };
    Ok(Outcome {
        done,
        artifact,
        proof,
        timeline,
    })
}

/// Where `--timings` writes its page: beside the report, else beside the tarball.
pub fn timings_path(report: Option<&Path>, tarball: &Path) -> PathBuf {
    let (beside, stem) = match report {
        Some(report) => (report, report.file_stem()),
        None => (tarball, None),
    };
    let stem = stem
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            let name = tarball.file_name().unwrap_or_default().to_string_lossy();
            name.strip_suffix(".tar.gz").unwrap_or(&name).to_string()
        });
    beside.with_file_name(format!("{stem}.timings.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timings_page_goes_beside_the_report_else_beside_the_tarball() {
        let tarball = Path::new("/d/python-fips-3.13.15-linux-x86_64.tar.gz");
        assert_eq!(
            timings_path(Some(Path::new("/r/report-x86_64.json")), tarball),
            Path::new("/r/report-x86_64.timings.html")
        );
        assert_eq!(
            timings_path(None, tarball),
            Path::new("/d/python-fips-3.13.15-linux-x86_64.timings.html")
        );
    }
}
