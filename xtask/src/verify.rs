//! `verify`: proves a build's FIPS behaviour in its runtime image, as the image's non-root user.
//!
//! `verify/checks.py` is copied into a container of the image (never bind-mounted) and run with
//! the image's own user and `PATH`; it prints one JSON row per check. This side renders the rows
//! as a table, writes them as JSON, and fails if any row failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::cache::Cache;
use crate::digest::Key;
use crate::engine::{Container, ContainerSpec, Engine};
use crate::flags;
use crate::host::{Host, Scratch, Step};
use crate::image::{
    self, ImageInputs, LABEL_OPENSSL, LABEL_PROVIDER, LABEL_TARBALL, LABEL_VERSION, RuntimeImage,
};
use crate::progress::{Reporter, StepEvent, Terminal};
use crate::ship::Artifact;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// The image as named on the command line, or its first tag.
    pub image: String,
    pub image_id: String,
    pub tarball_sha256: Option<String>,
    pub passed: bool,
    pub checks: Vec<Row>,
    /// Read from the cache of verdicts rather than run now (see `verdict_for`). A fact of this
    /// run, not of the image: never written, so that a run that only reads the verdict leaves
    /// `<tarball>.verify.json` as it was.
    #[serde(default, skip_serializing)]
    pub cached: bool,
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

    /// Writes the verdict to `path`, unless it holds these bytes already.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::cache::write_if_changed(path, &serde_json::to_vec_pretty(self)?)
    }
}

impl flags::Verify {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let engine = Engine::detect(sh, self.host.engine.as_deref())?;
        let cache = Cache::open(self.host.cache.as_deref())?;
        let (image, json) = match Target::of(&self.target)? {
            Target::Tarball(target) => {
                let _lock = cache.lock(&ui)?;
                let image = image::for_tarball(sh, &engine, &cache, &target, &ui)?;
                let json = self.json.clone().unwrap_or_else(|| json_beside(&target));
                (image.tags.first().cloned().unwrap_or(image.id), Some(json))
            }
            Target::Image(name) => (name, self.json.clone()),
        };
        let probes = Probes {
            postgres: self.postgres.clone(),
        };
        let verdict = check_with(sh, &engine, &cache, &image, &probes, &ui)?;
        crate::progress::print_answer(render(&verdict.checks).trim_end());
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

/// Verifies the runtime image of `artifact` (or reads the verdict cached for it), shows the
/// table and writes `<tarball>.verify.json`. A failed check is in the verdict, not an error:
/// the caller decides when to fail.
pub fn verify_image(
    inputs: &ImageInputs,
    artifact: &Artifact,
    image: &RuntimeImage,
    ui: &dyn Reporter,
) -> Result<(Verdict, PathBuf)> {
    let cache = inputs.cache;
    let mut verdict = verdict_for(cache, image, inputs.store, ui, || {
        check(inputs.sh, inputs.engine, cache, &image.id, ui)
    })?;
    if let Some(tag) = image.tags.first() {
        verdict.image = tag.clone();
    }
    for line in render(&verdict.checks).lines() {
        ui.message(line);
    }
    let mut json = json_beside(&artifact.tarball);
    if inputs.runtime == crate::flags::Runtime::Distroless {
        // Beside the base image's record, not over it.
        let name = json.file_name().unwrap_or_default().to_string_lossy();
        json = json.with_file_name(name.replace(".verify.json", ".distroless.verify.json"));
    }
    verdict.write(&json)?;
    Ok((verdict, json))
}

/// The key of an image's verdict: the image (its content key and its id, as a rebuild with the
/// same key may install other package versions) and what checks it.
pub fn verdict_key(image_key: &str, image_id: &str) -> String {
    Key::new()
        .set("image-key", image_key)
        .set("image-id", image_id)
        .set_sha256("checks", CHECKS)
        .set_sha256("code", include_str!("verify.rs"))
        .hex()
}

/// Where an image's verdict is cached: `verdicts/<verdict key>.json`.
fn verdict_path(cache: &Cache, key: &str) -> PathBuf {
    cache.dir("verdicts").join(format!("{key}.json"))
}

/// The verdict of `image`: the one cached for its key, or `run`'s, which is then cached (when
/// `store`, that is unless the run writes nothing in the cache). Only a verdict whose checks
/// ran to their end is cached, passed or failed: a failed one fails every build of that image
/// as it failed the first, while a run that stopped early (the engine, the machine) is run again
/// next time. An image without a content key is always checked.
pub fn verdict_for(
    cache: &Cache,
    image: &RuntimeImage,
    store: bool,
    ui: &dyn Reporter,
    run: impl FnOnce() -> Result<Verdict>,
) -> Result<Verdict> {
    let Some(image_key) = &image.key else {
        return run();
    };
    let key = verdict_key(image_key, &image.id);
    let path = verdict_path(cache, &key);
    // An entry appears whole (by rename), so one that cannot be read is of another version of
    // this tool: it is a miss, and left alone.
    if let Some(mut verdict) = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Verdict>(&bytes).ok())
        .filter(|v| v.image_id == image.id)
    {
        verdict.cached = true;
        let what = match verdict.passed {
            true => "cached (passed)",
            false => "cached (failed)",
        };
        ui.step("verify", StepEvent::Skipped { what });
        return Ok(verdict);
    }
    let verdict = run()?;
    let complete = verdict.checks.iter().all(|r| r.name != STOPPED_EARLY);
    if store && complete {
        // The verdict stands without its cache entry: failing to write one only costs a rerun.
        if let Err(e) = store_verdict(cache, &key, &verdict) {
            ui.message(&format!(
                "warning: cannot cache the verdict of {}: {e:#}",
                image.id
            ));
        }
    }
    Ok(verdict)
}

/// Publishes `verdict` at `verdicts/<key>.json` by rename from the scratch directory.
fn store_verdict(cache: &Cache, key: &str, verdict: &Verdict) -> Result<()> {
    let scratch = Scratch::new(cache, "verdict")?;
    let file = scratch.join("verdict.json");
    std::fs::write(&file, serde_json::to_vec_pretty(verdict)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    scratch.publish("verdict.json", &verdict_path(cache, key))
}

/// The name of the row that says the checks script stopped before its end.
const STOPPED_EARLY: &str = "checks ran to the end";

/// Services outside the image that rows of the checks may use.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// A PostgreSQL server's libpq connection string, reached from the host's network.
    pub postgres: Option<String>,
}

/// Runs the checks in a fresh container of `image` and collects their rows.
pub fn check(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    image: &str,
    ui: &dyn Reporter,
) -> Result<Verdict> {
    check_with(sh, engine, cache, image, &Probes::default(), ui)
}

/// `check`, with the rows that reach the services of `probes`.
pub fn check_with(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    image: &str,
    probes: &Probes,
    ui: &dyn Reporter,
) -> Result<Verdict> {
    let labels = engine.image_labels(sh, image)?;
    let id = engine
        .image_id(sh, image)?
        .with_context(|| format!("there is no image {image}"))?;
    let env = expected(&labels, image, probes)?;
    // A foreign image (an aarch64 tree's, on an x86_64 engine) runs under QEMU user emulation.
    let image_arch = engine.image_arch(sh, &id)?.unwrap_or_default();
    if let Ok(target) = crate::arch::parse(&image_arch)
        && target.name != engine.arch(sh)?
    {
        crate::arch::ensure_emulation(target)?;
    }
    let host = Host::new(sh, engine, cache);
    let short = id.trim_start_matches("sha256:");
    let what = format!("verify-{}", &short[..short.len().min(12)]);
    let log = host.log(&what);
    let spec = ContainerSpec {
        env,
        // The image's own user, PATH and working directory: exactly what an application gets.
        command: vec!["python3".into(), CHECKS_PATH.into()],
        host_network: probes.postgres.is_some(),
        ..host.spec(&what, &id)
    };
    // A failed check is a row of the verdict, not a failed step.
    let step = Step {
        name: "verify",
        doing: "running",
        log: &log,
        exit_fails: false,
    };
    let started = std::time::Instant::now();
    let put = |container: &Container| {
        let (dir, file) = CHECKS_PATH.rsplit_once('/').expect("an absolute path");
        container.put_file(dir, file, CHECKS.as_bytes(), 0o644)
    };
    let mut lines = Vec::new();
    let on_line = |line: &str| lines.push(line.to_string());
    let ok = host
        .run_step(&step, &spec, put, on_line, ui)
        .with_context(|| format!("cannot run the checks in {image}"))?
        .ok;
    ui.step(
        "verify",
        StepEvent::Ran {
            seconds: started.elapsed().as_secs_f64(),
            note: None,
        },
    );
    let checks = parse_rows(&lines, ok, &log);
    Ok(Verdict {
        image: image.to_string(),
        image_id: id,
        tarball_sha256: labels.get(LABEL_TARBALL).cloned(),
        passed: checks.iter().all(|r| r.passed),
        checks,
        cached: false,
    })
}

/// The environment of the checks: the versions `image`'s labels promise, and the services of
/// `probes`.
fn expected(
    labels: &BTreeMap<String, String>,
    image: &str,
    probes: &Probes,
) -> Result<Vec<(String, String)>> {
    let label = |key: &str| -> Result<String> {
        labels.get(key).cloned().with_context(|| {
            format!(
                "{image} has no label {key}; is it a runtime image made by `cargo xtask image`?"
            )
        })
    };
    let mut env = vec![
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
    if let Some(dsn) = &probes.postgres {
        env.push(("PYTHON_FIPS_POSTGRES".to_string(), dsn.clone()));
    }
    Ok(env)
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
            name: STOPPED_EARLY.into(),
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
            cached: false,
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

    fn image(key: Option<&str>, id: &str) -> RuntimeImage {
        RuntimeImage {
            id: id.into(),
            tags: vec!["python-fips:3.13".into()],
            cached: true,
            key: key.map(str::to_string),
        }
    }

    fn verdict(id: &str, checks: Vec<Row>) -> Verdict {
        Verdict {
            image: id.into(),
            image_id: id.into(),
            tarball_sha256: None,
            passed: checks.iter().all(|r| r.passed),
            checks,
            cached: false,
        }
    }

    /// Calls `verdict_for` with a run that counts itself and returns `made`.
    fn verdict_of(
        cache: &Cache,
        image: &RuntimeImage,
        store: bool,
        runs: &std::cell::Cell<u32>,
        made: &Verdict,
    ) -> Verdict {
        verdict_for(cache, image, store, &crate::progress::Silent, || {
            runs.set(runs.get() + 1);
            Ok(made.clone())
        })
        .unwrap()
    }

    #[test]
    fn a_verdict_is_cached_by_the_images_key_and_id() {
        let dir = TempDir::new("verdict-hit");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let runs = std::cell::Cell::new(0);
        let made = verdict("sha256:1", vec![row("a", true, "d")]);
        let first = verdict_of(&cache, &image(Some("k1"), "sha256:1"), true, &runs, &made);
        assert!(!first.cached);
        let again = verdict_of(&cache, &image(Some("k1"), "sha256:1"), true, &runs, &made);
        assert_eq!(runs.get(), 1, "the checks ran again on an unchanged image");
        assert!(again.cached && again.passed);
        assert_eq!(again.checks, made.checks);
        // Another key, another id (the same key rebuilt), or no key at all: the checks run.
        verdict_of(&cache, &image(Some("k2"), "sha256:1"), true, &runs, &made);
        let other = verdict("sha256:2", vec![row("a", true, "d")]);
        verdict_of(&cache, &image(Some("k1"), "sha256:2"), true, &runs, &other);
        verdict_of(&cache, &image(None, "sha256:1"), true, &runs, &made);
        verdict_of(&cache, &image(None, "sha256:1"), true, &runs, &made);
        assert_eq!(runs.get(), 5);
    }

    #[test]
    fn a_run_that_writes_nothing_leaves_no_verdict_and_a_miss_runs() {
        let dir = TempDir::new("verdict-miss");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let runs = std::cell::Cell::new(0);
        let made = verdict("sha256:1", vec![row("a", true, "d")]);
        for _ in 0..2 {
            let v = verdict_of(&cache, &image(Some("k1"), "sha256:1"), false, &runs, &made);
            assert!(!v.cached);
        }
        assert_eq!(runs.get(), 2);
        assert!(!cache.dir("verdicts").exists());
    }

    #[test]
    fn a_cached_failed_verdict_still_fails_and_a_stopped_run_is_not_cached() {
        let dir = TempDir::new("verdict-failed");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let runs = std::cell::Cell::new(0);
        let failed = verdict(
            "sha256:1",
            vec![row("a", true, "d"), row("md5", false, "ok")],
        );
        let img = image(Some("k1"), "sha256:1");
        verdict_of(&cache, &img, true, &runs, &failed);
        let cached = verdict_of(&cache, &img, true, &runs, &failed);
        assert_eq!(runs.get(), 1);
        assert!(cached.cached && !cached.passed);
        let err = cached.ensure_passed(None).unwrap_err().to_string();
        assert!(err.contains("(md5)"), "{err}");

        // A run that stopped early may be the machine's fault: it is run again next time.
        let stopped = verdict("sha256:3", vec![row(STOPPED_EARLY, false, "killed")]);
        let img = image(Some("k1"), "sha256:3");
        for _ in 0..2 {
            let v = verdict_of(&cache, &img, true, &runs, &stopped);
            assert!(!v.cached);
            assert!(v.ensure_passed(None).is_err());
        }
        assert_eq!(runs.get(), 3);
    }

    #[test]
    fn a_verdict_entry_appears_by_rename_from_the_scratch_directory() {
        let dir = TempDir::new("verdict-rename");
        let cache = Cache::open(Some(dir.path())).unwrap();
        let runs = std::cell::Cell::new(0);
        let made = verdict("sha256:1", vec![row("a", true, "d")]);
        verdict_of(&cache, &image(Some("k1"), "sha256:1"), true, &runs, &made);
        let entry = verdict_path(&cache, &verdict_key("k1", "sha256:1"));
        let names: Vec<_> = std::fs::read_dir(cache.dir("verdicts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            names,
            std::slice::from_ref(&entry),
            "only the entry, no partial file"
        );
        // It was written and synced in the scratch directory, then renamed into place.
        let synced = crate::cache::synced();
        let scratch = cache.dir(crate::cache::SCRATCH);
        assert!(
            synced
                .iter()
                .any(|p| p.starts_with(&scratch) && p.ends_with("verdict.json")),
            "{synced:?}"
        );
        assert!(synced.contains(&cache.dir("verdicts")), "{synced:?}");
        assert!(
            std::fs::read_dir(&scratch).unwrap().next().is_none(),
            "the scratch directory kept something"
        );
        let stored: Verdict = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
        assert!(!stored.cached);
        assert_eq!(stored.image_id, "sha256:1");
    }

    /// A fake engine CLI that knows no image: the error names the image and how to list them.
    #[test]
    fn verify_of_a_missing_image_says_so() {
        let dir = TempDir::new("fake-docker");
        let engine = Engine::fake(
            dir.path(),
            "echo \"Error: No such image: $5\" >&2\nexit 1\n",
        );
        let sh = Shell::new().unwrap();
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
