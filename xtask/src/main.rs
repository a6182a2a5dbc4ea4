//! The python-fips build tool: `cargo xtask <command>`.

mod arch;
mod audit;
mod base_image;
mod bench;
mod build;
mod build_info;
mod builder;
mod cache;
mod catalog;
mod date;
mod digest;
mod download;
mod elf;
mod engine;
mod extract;
mod flags;
mod image;
mod package;
mod patch;
mod pipeline;
mod prepare;
mod progress;
mod python;
mod repro;
mod sbom;
mod shell;
#[cfg(test)]
mod testutil;
mod timings;
mod verify;
mod wheels;

use anyhow::Result;
use clap::Parser;

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let flags = flags::Xtask::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(project_root());
    match flags.cmd {
        flags::Cmd::Recipes(cmd) => cmd.run(&sh),
        flags::Cmd::Fetch(cmd) => cmd.run(&sh),
        flags::Cmd::Prepare(cmd) => cmd.run(&sh),
        flags::Cmd::BaseImage(cmd) => cmd.run(&sh),
        flags::Cmd::Bench(cmd) => cmd.run(&sh),
        flags::Cmd::Python(cmd) => cmd.run(&sh),
        flags::Cmd::Image(cmd) => cmd.run(&sh),
        flags::Cmd::Verify(cmd) => cmd.run(&sh),
        flags::Cmd::Shell(cmd) => cmd.run(&sh),
        flags::Cmd::Wheels(cmd) => cmd.run(&sh),
        flags::Cmd::Audit(cmd) => cmd.run(&sh),
    }
}

/// The repository root: the parent of the xtask crate.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}
