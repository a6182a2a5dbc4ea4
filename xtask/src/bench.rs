//! `bench`: times a cold build, a warm no-op and a patch-change rebuild, with each stage's
//! script time beside its wall time so the orchestration overhead can be read off.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::Serialize;
use xshell::Shell;

use crate::flags::{self, BuildArgs};
use crate::pipeline::Done;
use crate::progress::Terminal;
use crate::python::Build;

#[derive(Serialize)]
struct Run {
    name: String,
    seconds: f64,
    stages: Vec<Done>,
}

impl flags::Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let main_cache = crate::cache::Cache::open(self.build.sources.cache.as_deref())?;
        // Downloads come from the main cache; every stage starts cold in a cache of its own.
        {
            let build = Build::start(sh, &self.build, &ui)?;
            drop(build);
        }
        let root = main_cache.dir("bench");
        crate::cache::remove(&root)?;
        link_tree(&main_cache.dir("downloads"), &root.join("downloads"))?;
        let patches = root.join("patches");
        let original = self
            .build
            .sources
            .patches
            .clone()
            .unwrap_or_else(|| crate::project_root().join("patches"));
        copy_tree(&original, &patches)?;

        let mut args = self.build.clone();
        args.sources.cache = Some(root.clone());
        args.sources.patches = Some(patches.clone());
        args.sources.offline = true;
        // With --arch, the engine's own architecture is measured first in the same run, so the
        // figures stand side by side (and a cross build's interpreter is the native build's).
        let mut targets = vec![None];
        if let Some(arch) = &self.build.arch {
            targets = vec![Some(String::new()), Some(arch.clone())];
        }
        let mut runs = Vec::new();
        for target in targets {
            let mut args = args.clone();
            let suffix = match target.as_deref() {
                None => String::new(),
                Some("") => {
                    args.arch = None;
                    " (native)".to_string()
                }
                Some(arch) => {
                    args.arch = Some(arch.to_string());
                    format!(" ({arch})")
                }
            };
            runs.push(timed(sh, format!("cold{suffix}"), &args, &ui)?);
            runs.push(timed(sh, format!("warm no-op{suffix}"), &args, &ui)?);
            flip_a_byte(&patches)?;
            runs.push(timed(sh, format!("patch change{suffix}"), &args, &ui)?);
        }
        crate::cache::remove(&root)?;

        println!(
            "{:<24} {:>9} {:>9} {:>9}",
            "run / stage", "wall s", "script s", "overhead"
        );
        for run in &runs {
            println!("{:<24} {:>9.1}", run.name, run.seconds);
            for s in run.stages.iter().filter(|s| !s.cached) {
                let overhead = 100.0 * (s.seconds - s.script_seconds) / s.seconds.max(f64::EPSILON);
                println!(
                    "  {:<22} {:>9.1} {:>9.1} {:>8.1}%",
                    s.name, s.seconds, s.script_seconds, overhead
                );
            }
        }
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_vec_pretty(&runs)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

fn timed(sh: &Shell, name: String, args: &BuildArgs, ui: &Terminal) -> Result<Run> {
    let started = Instant::now();
    let build = Build::start(sh, args, ui)?;
    let done = build.run_all(ui)?;
    build.package(&done, ui)?;
    Ok(Run {
        name,
        seconds: started.elapsed().as_secs_f64(),
        stages: done.stages,
    })
}

/// Changes one byte of the first patch's header comment: a new patch as far as keys go.
fn flip_a_byte(patches: &Path) -> Result<()> {
    let mut files = Vec::new();
    for minor in std::fs::read_dir(patches)? {
        for p in std::fs::read_dir(minor?.path())? {
            files.push(p?.path());
        }
    }
    files.sort();
    for file in files {
        let mut bytes = std::fs::read(&file)?;
        // The header ends where the first diff starts; change a letter before that.
        let header_end = find(&bytes, b"\n--- ").unwrap_or(0);
        if let Some(at) = bytes[..header_end]
            .iter()
            .position(|b| b.is_ascii_lowercase())
        {
            bytes[at] = bytes[at].to_ascii_uppercase();
            std::fs::write(&file, bytes)?;
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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
    std::fs::create_dir_all(to)?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &target, file)?;
        } else {
            file(&entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
