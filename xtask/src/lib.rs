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
mod channel;
mod config;
mod date;
pub mod digest;
mod download;
mod elf;
pub mod engine;
mod extract;
pub mod flags;
mod graph;
mod host;
mod image;
mod oci;
mod package;
pub mod patch;
mod pipeline;
mod prepare;
mod progress;
mod publish;
mod python;
mod rebuild;
mod registry;
mod repro;
mod sbom;
mod shell;
mod ship;
mod sign;
mod store;
mod tarwalk;
/// Test support (temporary directories, the loopback HTTP server), for the unit and the
/// end-to-end tests alike.
pub mod testutil;
mod timings;
mod verify;
mod verify_cache;
mod wheels;

/// The repository root: the parent of the xtask crate.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}

/// The text of an error as the user sees it: its chain of causes joined by `: `, then every
/// `hint:` line of any of them on its own line, so that no hint runs into the cause after it.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut causes = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let (hint, kept): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("hint:"));
        for line in hint {
            if !hints.iter().any(|h| h == line) {
                hints.push(line.to_string());
            }
        }
        if !kept.is_empty() {
            causes.push(kept.join("\n"));
        }
    }
    let mut out = causes.join(": ");
    for hint in hints {
        out.push('\n');
        out.push_str(&hint);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_go_on_their_own_lines_after_the_cause() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let err = anyhow::Error::new(io)
            .context(
                "cannot write dest/big (an I/O error: the disk is full)\nhint: free space in dest",
            )
            .context("cannot extract a.tar.gz");
        let text = super::error_text(&err);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(
                "cannot extract a.tar.gz: cannot write dest/big (an I/O error: the disk is full): "
            ),
            "{text}"
        );
        assert_eq!(lines[1], "hint: free space in dest", "{text}");
    }
}
