//! `bench`: times what users run (every stage, package, image and verify) cold, as a warm no-op,
//! and after a one-word change in a Lib hunk and in a C hunk of the patch; measures the floor
//! (the same stage scripts in one container, nothing cached or orchestrated) in the same run and
//! shows every figure as a ratio to it, with each stage's script time beside its wall time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use xshell::Shell;

use crate::arch::Arch;
use crate::build::Build;
use crate::config::BuildConfig;
use crate::flags;
use crate::pipeline::{Done, Together};
use crate::progress::{Reporter, Terminal};
use crate::python::{Outcome, build_and_prove};
use crate::timings::Timeline;

/// One timed command, as users run it: start, every stage, package, image and verify.
#[derive(Serialize)]
struct Run {
    name: String,
    seconds: f64,
    /// The runtime tarball's sha256.
    sha256: String,
    /// `seconds` over the floor figure it is compared with (`ratio_to`), when there is a floor.
    ratio: Option<f64>,
    /// That floor figure, in seconds.
    floor: Option<f64>,
    ratio_to: &'static str,
    stages: Vec<Done>,
    timeline: Timeline,
}

/// The floor of one target: every stage script in one container, no cache, no orchestration.
#[derive(Serialize)]
struct Floor {
    /// Each script's time, in order, and the whole container run.
    #[serde(flatten)]
    together: Together,
    /// The python stage's script alone: CPython's configure, make and make install.
    python_seconds: f64,
}

/// Everything `--json` keeps.
#[derive(Serialize)]
struct Figures {
    /// One floor per target (none for a cross-compiled target).
    floors: Vec<(String, Option<Floor>)>,
    runs: Vec<Run>,
    /// Per target: the C hunk change's tarball beside a clean build of the same inputs.
    clean: Vec<Clean>,
}

/// The last incremental run's inputs built again from a cache holding only the downloads and the
/// OpenSSL stages (which a patch never changes): no stage output and no reuse directory (no
/// compiler cache, no saved configure results) of the incremental runs.
#[derive(Serialize)]
struct Clean {
    name: String,
    seconds: f64,
    sha256: String,
    incremental_sha256: String,
    identical: bool,
}

/// What a patch-change run changes: a comment line a hunk adds to `Lib/hashlib.py`, or a comment
/// inside a line a hunk adds to a C file (`Modules/_hashopenssl.c` when the patch has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Lib,
    C,
}

impl Change {
    fn run_name(self) -> &'static str {
        match self {
            Change::Lib => "Lib hunk change",
            Change::C => "C hunk change",
        }
    }
}

impl flags::Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let config = BuildConfig::from_args(&self.build)?;
        let main_cache = crate::cache::Cache::open(config.sources.cache.as_deref())?;
        // Downloads come from the main cache; every stage starts cold in a cache of its own.
        {
            let build = Build::start(sh, &config, &ui)?;
            drop(build);
        }
        // `bench/` is a cache of its own whose lock bench holds for the whole run: one bench at a
        // time empties and fills the scratch caches inside it, while builds on the main cache
        // (the floor's among them) take the main cache's lock as usual.
        let bench = crate::cache::Cache::open(Some(&main_cache.dir("bench")))?;
        let _bench_lock = bench.lock(&ui)?;
        let root = bench.dir("scratch");
        scratch_cache(&root, &main_cache.dir("downloads"))?;
        // Beside the scratch cache, not in it: a cache holds only what the tool puts there.
        let patches = bench.dir("patches");
        crate::cache::remove(&patches)?;
        copy_tree(&config.sources.patches, &patches)?;

        let mut scratch = config.clone();
        scratch.sources.cache = Some(root.clone());
        scratch.sources.patches = patches.clone();
        // Not --offline: an offline run writes no verify verdict, so the warm no-op would run
        // the checks again, which a user's does not. The downloads are linked, so nothing is
        // fetched.
        let mut figures = Figures {
            floors: Vec::new(),
            runs: Vec::new(),
            clean: Vec::new(),
        };
        for target in targets(&config) {
            let (args, suffix) = target_args(&scratch, target);
            // The floor runs on the main cache's sources (the same bytes as the cold run's) so
            // that it leaves nothing the cold run could find in the scratch cache.
            let mut floor_args = config.clone();
            floor_args.target = args.target;
            let floor = floor(sh, &floor_args, &ui)?;
            let floor_of = floor.as_ref();
            let run = |name: String, to_python: bool| {
                self.timed_against(sh, name, to_python, &args, floor_of, &ui)
            };
            figures.runs.push(run(format!("cold{suffix}"), false)?);
            figures
                .runs
                .push(run(format!("warm no-op{suffix}"), false)?);
            for change in [Change::Lib, Change::C] {
                let changed = change_patches(&patches, change)?;
                ui.message(&format!("{}: changed {changed}", change.run_name()));
                figures
                    .runs
                    .push(run(format!("{}{suffix}", change.run_name()), true)?);
            }
            let incremental = figures.runs.last().expect("a run was timed");
            let clean = clean_build(sh, &args, &root, &ui)?;
            figures.clean.push(Clean {
                name: format!("clean build of the C hunk change{suffix}"),
                identical: clean.1 == incremental.sha256,
                incremental_sha256: incremental.sha256.clone(),
                seconds: clean.0,
                sha256: clean.1,
            });
            figures.floors.push((format!("native{suffix}"), floor));
        }
        crate::cache::remove(&root)?;
        crate::cache::remove(&patches)?;

        crate::progress::print_answer(render(&figures).trim_end());
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Times the run `name` of `args` and sets its ratio to `floor`: to the floor's python.sh for
    /// a change to CPython's patches (`to_python`), to the whole floor otherwise.
    fn timed_against(
        &self,
        sh: &Shell,
        name: String,
        to_python: bool,
        args: &BuildConfig,
        floor: Option<&Floor>,
        ui: &dyn Reporter,
    ) -> Result<Run> {
        let mut run = timed(sh, name, args, ui)?;
        run.ratio_to = match to_python {
            true => "floor python.sh",
            false => "floor",
        };
        run.floor = floor.map(|f| match to_python {
            true => f.python_seconds,
            false => f.together.seconds,
        });
        run.ratio = run.floor.and_then(|f| ratio_of(run.seconds, f));
        if self.timings {
            write_timings_page(&run, &args.out)?;
        }
        Ok(run)
    }
}

/// The targets bench measures: the build's own without --arch. With --arch, the engine's own
/// architecture is measured first in the same run, so the figures stand side by side (and a
/// cross build's interpreter is the native build's).
fn targets(config: &BuildConfig) -> Vec<Option<Option<&'static Arch>>> {
    let mut targets = vec![None];
    if let Some(arch) = config.target {
        targets = vec![Some(None), Some(Some(arch))];
    }
    targets
}

/// `scratch` set for one target of the bench, and the suffix of its runs' names: ` (native)` or
/// ` (<arch>)` with --arch, nothing without.
fn target_args(
    scratch: &BuildConfig,
    target: Option<Option<&'static Arch>>,
) -> (BuildConfig, String) {
    let mut args = scratch.clone();
    let suffix = match target {
        None => String::new(),
        Some(None) => {
            args.target = None;
            " (native)".to_string()
        }
        Some(Some(arch)) => {
            args.target = Some(arch);
            format!(" ({})", arch.name)
        }
    };
    (args, suffix)
}

/// Writes `run`'s `--timings` page to `out` as `bench-<name>.timings.html`.
fn write_timings_page(run: &Run, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let slug: String = run
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let page = out.join(format!("bench-{slug}.timings.html"));
    let mut timeline = run.timeline.clone();
    timeline.title = format!("{}: {}", run.name, timeline.title);
    crate::cache::write_atomic(
        &page,
        timeline
            .html(run.floor.map(|f| (run.ratio_to, f)))
            .as_bytes(),
    )
}

/// The floor of `args`' build: its stage scripts one after the other in one container, with the
/// compiler cache off. `None` for a cross build.
fn floor(sh: &Shell, args: &BuildConfig, ui: &dyn Reporter) -> Result<Option<Floor>> {
    let build = Build::start(sh, args, ui)?;
    if build.facts().cross() {
        ui.message("floor: not measured for a cross-compiled target");
        return Ok(None);
    }
    let plan = build.stage_plan()?;
    let off = vec![("CCACHE_DISABLE".to_string(), "1".to_string())];
    let together = build.runner().run_together(&plan, &off, ui)?;
    let python_seconds = together
        .script("python")
        .context("the floor did not time the python stage's script")?;
    Ok(Some(Floor {
        together,
        python_seconds,
    }))
}

fn timed(sh: &Shell, name: String, args: &BuildConfig, ui: &dyn Reporter) -> Result<Run> {
    let started = Instant::now();
    let build = Build::start(sh, args, ui)?;
    let Outcome {
        done,
        artifact,
        proof,
        timeline,
    } = build_and_prove(&build, ui)?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some((_, verdict, json)) = &proof {
        verdict.ensure_passed(Some(json))?;
    }
    Ok(Run {
        name,
        seconds,
        sha256: artifact.sha256,
        ratio: None,
        floor: None,
        ratio_to: "floor",
        stages: done.into_vec(),
        timeline,
    })
}

/// Builds `args`' inputs in a new cache beside `root` that holds only `root`'s downloads and its
/// OpenSSL stage entries; returns the seconds it took and the runtime tarball's sha256.
fn clean_build(
    sh: &Shell,
    args: &BuildConfig,
    root: &Path,
    ui: &dyn Reporter,
) -> Result<(f64, String)> {
    let clean = root.with_file_name("clean");
    scratch_cache(&clean, &root.join("downloads"))?;
    let cache = crate::cache::Cache::open(Some(&clean))?;
    let stages = root.join("stages");
    let list = || format!("cannot list {}", stages.display());
    for entry in std::fs::read_dir(&stages).with_context(list)? {
        let entry = entry.with_context(list)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("openssl-") || name.starts_with("fips-provider-") {
            link_entry(&cache, &entry.path(), &clean.join("stages").join(&name))?;
        }
    }
    let mut args = args.in_cache(clean.clone());
    args.verify = false;
    let started = Instant::now();
    let build = Build::start(sh, &args, ui)?;
    let Outcome { artifact, .. } = build_and_prove(&build, ui)?;
    let seconds = started.elapsed().as_secs_f64();
    drop(build);
    crate::cache::remove(&clean)?;
    Ok((seconds, artifact.sha256))
}

/// Makes `root` a new, empty cache (marked as one, so that opening it adopts nothing) whose
/// downloads are hard links to `downloads`.
fn scratch_cache(root: &Path, downloads: &Path) -> Result<()> {
    crate::cache::remove(root)?;
    let cache = crate::cache::Cache::open(Some(root))?;
    let list = || format!("cannot list {}", downloads.display());
    for entry in std::fs::read_dir(downloads).with_context(list)? {
        let entry = entry.with_context(list)?;
        // `.partial/` holds unverified bytes: only verified entries are shared.
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with('.') {
            link_entry(&cache, &entry.path(), &root.join("downloads").join(name))?;
        }
    }
    Ok(())
}

/// Puts the directory `from` into `cache` at `to` as every entry appears there: hard-linked (or
/// copied) into the cache's scratch, then renamed into place.
fn link_entry(cache: &crate::cache::Cache, from: &Path, to: &Path) -> Result<()> {
    let scratch = cache.scratch("bench")?;
    link_tree(from, &scratch)?;
    crate::cache::publish(&scratch, to)
}

/// `seconds / floor`, when the floor is a time at all.
fn ratio_of(seconds: f64, floor: f64) -> Option<f64> {
    (floor > 0.0).then(|| seconds / floor)
}

/// The table `bench` prints.
fn render(figures: &Figures) -> String {
    let mut out = String::new();
    for (target, floor) in &figures.floors {
        let Some(floor) = floor else {
            out.push_str(&format!("floor {target}: not measured\n"));
            continue;
        };
        out.push_str(&format!(
            "floor {target} (all stage scripts in one container, no cache): {:.1} s\n",
            floor.together.seconds
        ));
        for (stage, seconds) in &floor.together.scripts {
            out.push_str(&format!("  {:<22} {seconds:>9.1}\n", format!("{stage}.sh")));
        }
    }
    out.push_str(&format!(
        "{:<24} {:>9} {:>7}  {:<16} {}\n",
        "run / stage", "wall s", "ratio", "of", "sha256 / script s, overhead"
    ));
    for run in &figures.runs {
        let ratio = run.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
        out.push_str(&format!(
            "{:<24} {:>9.1} {ratio:>7}  {:<16} {}\n",
            run.name, run.seconds, run.ratio_to, run.sha256
        ));
        for s in run.timeline.steps.iter() {
            let script = run
                .stages
                .iter()
                .find(|d| d.name == s.name && !d.cached)
                .map(|d| {
                    let overhead =
                        100.0 * (d.seconds - d.script_seconds) / d.seconds.max(f64::EPSILON);
                    format!("{:.1} s, {overhead:.1}%", d.script_seconds)
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<22} {:>9.1} {:>7}  {:<16} {script}\n",
                s.name,
                s.seconds,
                "",
                format!("{:?}", s.source).to_lowercase()
            ));
        }
    }
    for c in &figures.clean {
        out.push_str(&format!(
            "{}: {:.1} s, sha256 {}; the incremental build's {}: {}\n",
            c.name,
            c.seconds,
            c.sha256,
            c.incremental_sha256,
            match c.identical {
                true => "identical",
                false => "DIFFERENT",
            }
        ));
    }
    out
}

/// Applies `change` to every patch under `patches` (`<minor>/*.patch`) that has such a line;
/// fails unless at least one changed. Returns the changed files, for the log.
fn change_patches(patches: &Path, change: Change) -> Result<String> {
    let mut files = Vec::new();
    let list = |dir: &Path| format!("cannot list {}", dir.display());
    for minor in std::fs::read_dir(patches).with_context(|| list(patches))? {
        let minor = minor.with_context(|| list(patches))?.path();
        for p in std::fs::read_dir(&minor).with_context(|| list(&minor))? {
            files.push(p.with_context(|| list(&minor))?.path());
        }
    }
    files.sort();
    let mut changed = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if let Some(new) = change_patch(&text, change) {
            std::fs::write(&file, new)
                .with_context(|| format!("cannot write {}", file.display()))?;
            changed.push(file.display().to_string());
        }
    }
    if changed.is_empty() {
        bail!(
            "no patch under {} has a line to change for the {}",
            patches.display(),
            change.run_name()
        );
    }
    Ok(changed.join(", "))
}

/// `text` (a patch) with one word of one comment in a line a hunk adds changed (its first
/// letter's case flipped), or `None` when it has no such line. Only an added line changes, so
/// the context still matches and the patch still applies; the patched file differs.
fn change_patch(text: &str, change: Change) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    // The file each line belongs to: set by `+++ b/<path>`, none in the header.
    let mut file = None;
    let mut files = Vec::with_capacity(lines.len());
    for line in &lines {
        if let Some(path) = line.strip_prefix("+++ ") {
            file = Some(path.trim_end().to_string());
        } else if line.starts_with("diff --git ") {
            file = None;
        }
        files.push(file.clone());
    }
    let found = |wanted: &dyn Fn(&str) -> bool| -> Option<(usize, usize)> {
        lines.iter().enumerate().find_map(|(i, line)| {
            let file = files[i].as_deref()?;
            if !wanted(file) || !line.starts_with('+') || line.starts_with("+++") {
                return None;
            }
            let comment = match change {
                Change::Lib => line.starts_with("+#").then_some(2)?,
                Change::C => {
                    // A comment's text, never Argument Clinic's markers.
                    let at = line.find("/*")?;
                    if line.contains("[clinic") {
                        return None;
                    }
                    at + 2
                }
            };
            word_at(line, comment).map(|w| (i, w))
        })
    };
    let hit = match change {
        Change::Lib => found(&|f| f.ends_with("Lib/hashlib.py")),
        Change::C => found(&|f| f.ends_with("Modules/_hashopenssl.c"))
            .or_else(|| found(&|f| f.ends_with(".c"))),
    }?;
    let (line, at) = hit;
    let mut bytes = lines[line].as_bytes().to_vec();
    bytes[at] = match bytes[at].is_ascii_lowercase() {
        true => bytes[at].to_ascii_uppercase(),
        false => bytes[at].to_ascii_lowercase(),
    };
    let mut out = String::with_capacity(text.len());
    for (i, l) in lines.iter().enumerate() {
        match i == line {
            true => out.push_str(std::str::from_utf8(&bytes).ok()?),
            false => out.push_str(l),
        }
    }
    Some(out)
}

/// Where the first word of three or more ASCII letters at or after byte `from` of `line` starts.
fn word_at(line: &str, from: usize) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let len = bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            if len >= 3 {
                return Some(i);
            }
            i += len;
        } else {
            i += 1;
        }
    }
    None
}

fn link_tree(from: &Path, to: &Path) -> Result<()> {
    walk(from, to, &|a, b| {
        std::fs::hard_link(a, b).or_else(|_| std::fs::copy(a, b).map(|_| ()))
    })
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    walk(from, to, &|a, b| std::fs::copy(a, b).map(|_| ()))
}

fn walk(from: &Path, to: &Path, file: &dyn Fn(&Path, &Path) -> std::io::Result<()>) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let list = || format!("cannot list {}", from.display());
    for entry in std::fs::read_dir(from).with_context(list)? {
        let entry = entry.with_context(list)?;
        let target: PathBuf = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read the type of {}", entry.path().display()))?;
        if kind.is_dir() {
            walk(&entry.path(), &target, file)?;
        } else {
            file(&entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// The one line `changed` differs from `original` in, as (before, after, file it is in).
    fn the_changed_line(original: &str, changed: &str) -> (String, String, String) {
        let a: Vec<&str> = original.lines().collect();
        let b: Vec<&str> = changed.lines().collect();
        assert_eq!(a.len(), b.len(), "the change adds or drops lines");
        let diffs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(diffs.len(), 1, "exactly one line changes: {diffs:?}");
        let i = diffs[0];
        let file = a[..i]
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("+++ b/"))
            .expect("the line is in a file's hunks")
            .to_string();
        (a[i].to_string(), b[i].to_string(), file)
    }

    fn parses(text: &str, dir: &TempDir, name: &str) -> usize {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        crate::patch::check_parses(&path).unwrap()
    }

    #[test]
    fn copy_errors_name_the_path() {
        let dir = TempDir::new("bench-copy");
        let from = dir.path().join("from");
        std::fs::create_dir_all(&from).unwrap();
        std::fs::write(from.join("a"), b"a").unwrap();
        // A directory cannot be made below a regular file.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let to = file.join("to");
        let err = copy_tree(&from, &to).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot create {}", to.display()));
        let missing = dir.path().join("missing");
        let err = copy_tree(&missing, &dir.path().join("out")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot list {}", missing.display())
        );
    }

    #[test]
    fn the_lib_and_c_changes_change_one_comment_word_in_an_added_line_of_every_minor() {
        let dir = TempDir::new("bench-change");
        let mut minors = 0;
        for minor in std::fs::read_dir(crate::project_root().join("patches")).unwrap() {
            let path = minor.unwrap().path().join("fips.patch");
            let Ok(original) = std::fs::read_to_string(&path) else {
                continue;
            };
            minors += 1;
            let files = parses(&original, &dir, "original.patch");

            let lib = change_patch(&original, Change::Lib).expect("a Lib/hashlib.py comment");
            let (before, after, file) = the_changed_line(&original, &lib);
            assert_eq!(file, "Lib/hashlib.py");
            assert!(
                before.starts_with("+#") && after.starts_with("+#"),
                "{after}"
            );
            assert_eq!(before.to_lowercase(), after.to_lowercase());
            assert_eq!(parses(&lib, &dir, "lib.patch"), files);

            let c = change_patch(&lib, Change::C).expect("a C comment");
            let (before, after, file) = the_changed_line(&lib, &c);
            assert_eq!(file, "Modules/_hashopenssl.c", "{}", path.display());
            assert!(before.starts_with('+') && before.contains("/*"), "{before}");
            assert!(!before.contains("[clinic"));
            let comment = before.find("/*").unwrap();
            assert_eq!(
                before[..comment],
                after[..comment],
                "only the comment changes"
            );
            assert_eq!(before.to_lowercase(), after.to_lowercase());
            assert_eq!(parses(&c, &dir, "c.patch"), files);
        }
        assert!(minors >= 1, "no patches/<minor>/fips.patch found");
    }

    #[test]
    fn a_patch_without_such_lines_is_left_alone() {
        let text =
            "header\n--- a/Lib/os.py\n+++ b/Lib/os.py\n@@ -1 +1,2 @@\n x = 1\n+# a comment\n";
        assert_eq!(change_patch(text, Change::Lib), None);
        assert_eq!(change_patch(text, Change::C), None);
        let clinic =
            "--- a/Modules/x.c\n+++ b/Modules/x.c\n@@ -1 +1,2 @@\n int a;\n+/*[clinic input]\n";
        assert_eq!(change_patch(clinic, Change::C), None);
        let c = "--- a/Modules/x.c\n+++ b/Modules/x.c\n@@ -1 +1,2 @@\n int a;\n+int b; /* an ok note */\n";
        assert_eq!(
            change_patch(c, Change::C).unwrap(),
            c.replace("an ok note", "an ok Note"),
            "the first word of three letters or more"
        );
    }

    #[test]
    fn a_scratch_cache_with_linked_downloads_opens_as_a_cache() {
        let tmp = crate::testutil::TempDir::new("bench-scratch");
        let downloads = tmp.path().join("main/downloads/abc");
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::write(downloads.join("Python-3.13.15.tar.xz"), b"bytes").unwrap();
        let root = tmp.path().join("main/bench");
        std::fs::create_dir_all(root.join("stages/left-over")).unwrap();
        scratch_cache(&root, &tmp.path().join("main/downloads")).unwrap();
        assert!(!root.join("stages/left-over").exists());
        assert_eq!(
            std::fs::read(root.join("downloads/abc/Python-3.13.15.tar.xz")).unwrap(),
            b"bytes"
        );
        crate::cache::Cache::open(Some(&root)).expect("the scratch cache must open as a cache");
    }

    #[test]
    fn ratios_divide_by_the_floor() {
        assert_eq!(ratio_of(90.0, 300.0), Some(0.3));
        assert_eq!(ratio_of(630.0, 600.0), Some(1.05));
        assert_eq!(ratio_of(1.0, 0.0), None);
        let figures = Figures {
            floors: vec![(
                "native".into(),
                Some(Floor {
                    together: Together {
                        scripts: vec![("openssl".into(), 200.0), ("python".into(), 300.0)],
                        seconds: 520.0,
                    },
                    python_seconds: 300.0,
                }),
            )],
            runs: vec![Run {
                name: "C hunk change".into(),
                seconds: 90.0,
                sha256: "ab".repeat(32),
                ratio: ratio_of(90.0, 300.0),
                floor: Some(300.0),
                ratio_to: "floor python.sh",
                stages: vec![],
                timeline: Timeline {
                    title: "t".into(),
                    steps: vec![],
                    seconds: 90.0,
                },
            }],
            clean: vec![Clean {
                name: "clean build of the C hunk change".into(),
                seconds: 400.0,
                sha256: "cd".repeat(32),
                incremental_sha256: "ab".repeat(32),
                identical: false,
            }],
        };
        let text = render(&figures);
        assert!(text.contains("DIFFERENT"), "{text}");
        assert!(text.contains("no cache): 520.0 s"), "{text}");
        assert!(text.contains("python.sh"), "{text}");
        assert!(text.contains("0.30  floor python.sh"), "{text}");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
    }
}
