//! The python-fips build tool: `cargo xtask <command>`.

use anyhow::Result;
use clap::Parser;
use xtask::{flags, project_root};

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {}", xtask::error_text(&err));
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
        flags::Cmd::VerifyCache(cmd) => cmd.run(&sh),
        flags::Cmd::Channel(cmd) => cmd.run(&sh),
        flags::Cmd::Publish(cmd) => cmd.run(&sh),
        flags::Cmd::Rebuild(cmd) => cmd.run(&sh),
    }
}
