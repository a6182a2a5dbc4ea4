//! The python-fips build tool as a library: every command's logic, used by the `xtask` binary
//! (`main.rs`) and by the end-to-end tests, which drive the engine and the test servers through
//! the same code. Only what those two use is public, so that the compiler still finds dead code
//! in the rest.

mod arch;
mod audit;
mod base_image;
mod bench;
mod build;
mod build_info;
mod builder;
mod cache;
mod catalog;
mod config;
mod date;
pub mod digest;
mod download;
mod elf;
pub mod engine;
mod extract;
pub mod flags;
mod graph;
mod image;
mod package;
pub mod patch;
mod pipeline;
mod prepare;
mod progress;
mod python;
mod registry;
mod repro;
mod sbom;
mod shell;
mod store;
mod tarwalk;
/// Test support (temporary directories, the loopback HTTP server), for the unit and the
/// end-to-end tests alike.
pub mod testutil;
mod timings;
mod verify;
mod wheels;

/// The repository root: the parent of the xtask crate.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}
