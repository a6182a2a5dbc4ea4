//! The python-fips build tool as a library: every command's logic, used by the `xtask` binary
//! (`main.rs`) and by the end-to-end tests, which drive the engine and the test servers through
//! the same code.

pub mod arch;
pub mod audit;
pub mod base_image;
pub mod bench;
pub mod build;
pub mod builder;
pub mod cache;
pub mod catalog;
pub mod date;
pub mod digest;
pub mod download;
pub mod elf;
pub mod engine;
pub mod extract;
pub mod flags;
pub mod image;
pub mod package;
pub mod patch;
pub mod pipeline;
pub mod prepare;
pub mod progress;
pub mod python;
pub mod repro;
pub mod sbom;
pub mod shell;
/// Test support (temporary directories, the loopback HTTP server), for the unit and the
/// end-to-end tests alike.
pub mod testutil;
pub mod timings;
pub mod verify;
pub mod wheels;

/// The repository root: the parent of the xtask crate.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}
