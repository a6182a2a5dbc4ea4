//! `verify`: proves a build's FIPS behaviour in its runtime image, as the image's non-root user.
//!
//! `verify/checks.py` is copied into a container of the image (never bind-mounted) and run with
//! the image's own user and `PATH`; it prints one JSON row per check. This side renders the rows
//! as a table, writes them as JSON, and fails if any row failed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::cache::Cache;
use crate::engine::{ContainerSpec, Engine};
use crate::flags;
use crate::image::{
    self, LABEL_OPENSSL, LABEL_PROVIDER, LABEL_TARBALL, LABEL_VERSION, RuntimeImage,
};
use crate::progress::{Reporter, Terminal};
use crate::python::{Artifact, Build};

const CHECKS: &str = include_str!("verify/checks.py");
/// Where the checks script lands in the container.
const CHECKS_PATH: &str = "/tmp/python-fips-checks.py";
const ROW_PREFIX: &str = "python-fips-check ";
const DONE_LINE: &str = "python-fips-checks-done";

/// One check: what it is, whether it held, and what was seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The outcome of `verify`, as written to `<tarball>.verify.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The image as named on the command line, or its first tag.
    pub image: String,
    pub image_id: String,
    pub tarball_sha256: Option<String>,
    pub passed: bool,
    pub checks: Vec<Row>,
}

impl Verdict {
    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name.as_str())
            .collect()
    }

    /// An error naming the failed checks, if any failed.
    pub fn ensure_passed(&self, json: Option<&Path>) -> Result<()> {
        let failed = self.failed();
        if failed.is_empty() {
            return Ok(());
        }
        let record = match json {
            Some(path) => format!(" and in {}", path.display()),
            None => String::new(),
        };
        bail!(
            "verify failed: {} of {} checks of {} failed ({}); details in the table above{record}",
            failed.len(),
            self.checks.len(),
            self.image,
            failed.join(", ")
        )
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

impl flags::Verify {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let engine = Engine::detect(sh, self.engine.as_deref())?;
        let cache = Cache::open(self.cache.as_deref())?;
        let (image, json) = match Target::of(&self.target)? {
            Target::Tarball(target) => {
                let _lock = cache.lock(&ui)?;
                let image = image::for_tarball(sh, &engine, &cache, &target, &ui)?;
                let json = self.json.clone().unwrap_or_else(|| json_beside(&target));
                (image.tags.first().cloned().unwrap_or(image.id), Some(json))
            }
            Target::Image(name) => (name, self.json.clone()),
        };
        let verdict = check(sh, &engine, &cache, &image, &ui)?;
        print!("{}", render(&verdict.checks));
        if let Some(path) = &json {
            verdict.write(path)?;
        }
        verdict.ensure_passed(json.as_deref())
    }
}

/// What `verify` was given.
#[derive(Debug, PartialEq)]
enum Target {
    Tarball(PathBuf),
    Image(String),
}

impl Target {
    /// A regular file is a tarball; a name that ends like an archive or exists as anything
    /// else is a mistake, not an image name.
    fn of(target: &str) -> Result<Target> {
        let path = Path::new(target);
        let archive = [".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar"]
            .iter()
            .any(|ext| target.ends_with(ext));
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Target::Tarball(path.to_path_buf())),
            Ok(_) => bail!(
                "{target} is not a tarball (it is a directory or a special file)\nhint: give the tarball `python` made (dist/python-fips-*.tar.gz) or an image name"
            ),
            Err(_) if archive => bail!(
                "there is no tarball {target}\nhint: check the path, or build it with `cargo xtask python`"
            ),
            Err(_) => Ok(Target::Image(target.to_string())),
        }
    }
}

/// `<tarball>.verify.json`.
pub fn json_beside(tarball: &Path) -> PathBuf {
    let mut name = tarball.file_name().unwrap_or_default().to_os_string();
    name.push(".verify.json");
    tarball.with_file_name(name)
}

impl Build<'_> {
    /// Verifies this build's runtime image, shows the table and writes `<tarball>.verify.json`.
    /// A failed check is in the verdict, not an error: the caller decides when to fail.
    pub fn verify(
        &self,
        artifact: &Artifact,
        image: &RuntimeImage,
        ui: &Terminal,
    ) -> Result<(Verdict, PathBuf)> {
        let mut verdict = check(self.sh, &self.engine, &self.ctx.cache, &image.id, ui)?;
        if let Some(tag) = image.tags.first() {
            verdict.image = tag.clone();
        }
        for line in render(&verdict.checks).lines() {
            ui.message(line);
        }
        let mut json = json_beside(&artifact.tarball);
        if self.args.runtime == crate::flags::Runtime::Distroless {
            // Beside the base image's record, not over it.
            let name = json.file_name().unwrap_or_default().to_string_lossy();
            json = json.with_file_name(name.replace(".verify.json", ".distroless.verify.json"));
        }
        verdict.write(&json)?;
        Ok((verdict, json))
    }
}

/// Runs the checks in a fresh container of `image` and collects their rows.
pub fn check(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    image: &str,
    ui: &Terminal,
) -> Result<Verdict> {
    let labels = engine.image_labels(sh, image)?;
    let id = engine
        .image_id(sh, image)?
        .with_context(|| format!("there is no image {image}"))?;
    let label = |key: &str| -> Result<String> {
        labels.get(key).cloned().with_context(|| {
            format!(
                "{image} has no label {key}; is it a runtime image made by `cargo xtask image`?"
            )
        })
    };
    let env = vec![
        (
            "PYTHON_FIPS_EXPECT_PYTHON".to_string(),
            label(LABEL_VERSION)?,
        ),
        (
            "PYTHON_FIPS_EXPECT_OPENSSL".to_string(),
            label(LABEL_OPENSSL)?,
        ),
        (
            "PYTHON_FIPS_EXPECT_PROVIDER".to_string(),
            label(LABEL_PROVIDER)?,
        ),
    ];
    // A foreign image (an aarch64 tree's, on an x86_64 engine) runs under QEMU user emulation.
    let image_arch = engine.image_arch(sh, &id)?.unwrap_or_default();
    if let Ok(target) = crate::arch::parse(&image_arch)
        && target.name != engine.arch(sh)?
    {
        crate::arch::ensure_emulation(target)?;
    }
    let short = id.trim_start_matches("sha256:");
    let short = &short[..short.len().min(12)];
    let container = format!("python-fips-verify-{short}-{}", std::process::id());
    let log = cache.dir("logs").join(format!("verify-{short}.log"));
    let _ = std::fs::remove_file(&log);
    engine.create(
        sh,
        &ContainerSpec {
            name: container.clone(),
            image: id.clone(),
            env,
            labels: crate::pipeline::labels(cache),
            // The image's own user, PATH and working directory: exactly what an application gets.
            command: vec!["python3".into(), CHECKS_PATH.into()],
            ..ContainerSpec::default()
        },
    )?;
    let started = std::time::Instant::now();
    let spinner = ui.spinner("verify");
    if spinner.is_none() {
        ui.message(&format!(
            "{:<14} running (log: {})",
            "verify",
            log.display()
        ));
    }
    let mut lines = Vec::new();
    let result = (|| -> Result<bool> {
        let (dir, file) = CHECKS_PATH.rsplit_once('/').expect("an absolute path");
        engine.put_file(&container, dir, file, CHECKS.as_bytes(), 0o644)?;
        engine.start_logged(&container, &log, |line| {
            if let Some(s) = &spinner {
                s.set_message(line.to_string());
            }
            lines.push(line.to_string());
        })
    })();
    if let Some(s) = &spinner {
        s.finish_and_clear();
    }
    engine.remove(sh, &container);
    let ok = result.with_context(|| format!("cannot run the checks in {image}"))?;
    ui.message(&format!(
        "{:<14} ran    {:>7.1} s",
        "verify",
        started.elapsed().as_secs_f64()
    ));
    let checks = parse_rows(&lines, ok, &log);
    Ok(Verdict {
        image: image.to_string(),
        image_id: id,
        tarball_sha256: labels.get(LABEL_TARBALL).cloned(),
        passed: checks.iter().all(|r| r.passed),
        checks,
    })
}

/// The rows in the checks' output. A script that did not run to its end adds a failed row, so
/// that a crash can never look like a pass.
pub fn parse_rows(lines: &[String], exited_ok: bool, log: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut done = false;
    for line in lines {
        if let Some(json) = line.strip_prefix(ROW_PREFIX) {
            rows.push(serde_json::from_str(json).unwrap_or_else(|e| Row {
                name: "checks output".into(),
                passed: false,
                detail: format!("unreadable row ({e}): {json}"),
            }));
        } else if line == DONE_LINE {
            done = true;
        }
    }
    if !done || !exited_ok || rows.is_empty() {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .filter(|l| !l.starts_with(ROW_PREFIX))
            .take(3)
            .map(String::as_str)
            .collect();
        rows.push(Row {
            name: "checks ran to the end".into(),
            passed: false,
            detail: format!(
                "the checks script stopped early; last lines: {}; full log: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                log.display()
            ),
        });
    }
    rows
}

/// The plain-text table: one aligned line per check, then a summary line.
pub fn render(rows: &[Row]) -> String {
    const DETAIL_MAX: usize = 160;
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .chain(["check".len()])
        .max()
        .unwrap_or(0);
    let mut out = format!("{:<width$}  {:<6}  {}\n", "check", "result", "detail");
    for r in rows {
        let mut detail = r.detail.split_whitespace().collect::<Vec<_>>().join(" ");
        if detail.chars().count() > DETAIL_MAX {
            detail = detail.chars().take(DETAIL_MAX - 3).collect::<String>() + "...";
        }
        let result = if r.passed { "PASS" } else { "FAIL" };
        out.push_str(&format!("{:<width$}  {result:<6}  {detail}\n", r.name));
    }
    let passed = rows.iter().filter(|r| r.passed).count();
    out.push_str(&format!("{passed} of {} checks passed\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn row(name: &str, passed: bool, detail: &str) -> Row {
        Row {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }

    #[test]
    fn table_is_aligned_and_flattens_details() {
        let rows = vec![
            row("ssl.OPENSSL_VERSION", true, "OpenSSL 3.5.7 1 Jul 2025"),
            row("blake2 refuses", false, "allowed:\n  hashlib.blake2b()"),
            row("x", true, &"long ".repeat(100)),
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        let column = lines[0].find("result").unwrap();
        for (line, want) in lines[1..4].iter().zip(["PASS", "FAIL", "PASS"]) {
            assert_eq!(&line[column..column + 4], want, "misaligned:\n{table}");
            assert!(line.chars().count() <= column + 8 + 160, "too long: {line}");
        }
        assert!(lines[2].ends_with("allowed: hashlib.blake2b()"), "{table}");
        assert!(lines[3].ends_with("..."));
        assert_eq!(lines[4], "2 of 3 checks passed");
    }

    #[test]
    fn rows_come_from_prefixed_lines_and_a_crash_is_a_failure() {
        let log = Path::new("/cache/logs/verify.log");
        let good: Vec<String> = vec![
            "some warning".into(),
            r#"python-fips-check {"name": "a", "passed": true, "detail": "d"}"#.into(),
            DONE_LINE.into(),
        ];
        assert_eq!(parse_rows(&good, true, log), vec![row("a", true, "d")]);

        let crashed: Vec<String> = vec![
            r#"python-fips-check {"name": "a", "passed": true, "detail": "d"}"#.into(),
            "Segmentation fault".into(),
        ];
        let rows = parse_rows(&crashed, false, log);
        assert_eq!(rows.len(), 2);
        assert!(!rows[1].passed);
        assert!(
            rows[1].detail.contains("Segmentation fault"),
            "{:?}",
            rows[1]
        );

        let garbled: Vec<String> = vec!["python-fips-check {oops".into(), DONE_LINE.into()];
        let rows = parse_rows(&garbled, true, log);
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].passed);
    }

    #[test]
    fn json_record_has_name_passed_detail_per_check() {
        let dir = TempDir::new("verify-json");
        let verdict = Verdict {
            image: "python-fips:3.13.15".into(),
            image_id: "sha256:1".into(),
            tarball_sha256: Some("ab".into()),
            passed: false,
            checks: vec![row("a", true, "d1"), row("b", false, "d2")],
        };
        let path = json_beside(&dir.path().join("t.tar.gz"));
        assert_eq!(path.file_name().unwrap(), "t.tar.gz.verify.json");
        verdict.write(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["checks"][1]["name"], "b");
        assert_eq!(v["checks"][1]["passed"], false);
        assert_eq!(v["checks"][1]["detail"], "d2");
        let err = verdict.ensure_passed(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("1 of 2 checks"), "{err}");
        assert!(err.contains("(b)"), "{err}");
    }

    /// A fake engine CLI that knows no image: the error names the image and how to list them.
    #[test]
    fn verify_of_a_missing_image_says_so() {
        let dir = TempDir::new("fake-docker");
        let fake = dir.path().join("docker");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"Error: No such image: $5\" >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let sh = Shell::new().unwrap();
        let engine = Engine {
            program: fake.display().to_string(),
        };
        let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
        let err = check(&sh, &engine, &cache, "python-fips:nope", &Terminal::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("there is no image python-fips:nope"), "{err}");
        assert!(err.contains("No such image"), "{err}");
        assert!(err.contains("images`"), "{err}");
    }

    #[test]
    fn a_target_that_names_a_path_is_never_taken_for_an_image() {
        let dir = TempDir::new("verify-target");
        let tarball = dir.path().join("python-fips-3.13.15.tar.gz");
        std::fs::write(&tarball, b"").unwrap();
        assert_eq!(
            Target::of(&tarball.display().to_string()).unwrap(),
            Target::Tarball(tarball.clone())
        );
        assert_eq!(
            Target::of("python-fips:3.13").unwrap(),
            Target::Image("python-fips:3.13".into())
        );
        let missing = |name: &str| dir.path().join(name).display().to_string();
        for target in [
            missing("dist/python.tgz"),
            missing("python.tar.xz"),
            missing("python.tar.gz"),
            dir.path().display().to_string(),
        ] {
            let err = match Target::of(&target) {
                Ok(t) => panic!("{target} was taken for {t:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(&target), "{err}");
        }
    }
}
