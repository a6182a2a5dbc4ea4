//! Tests of extraction: hostile archives are refused, normal ones keep modes, links and mtimes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tar::{EntryType, Header};

use super::{Limits, extract, extract_within};
use crate::testutil::TempDir;

const MTIME: u64 = 1_600_000_000;

/// One tar entry, written with raw header fields so that hostile names survive the builder.
pub(crate) struct Entry<'a> {
    path: &'a str,
    kind: EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
}

pub(crate) fn file<'a>(path: &'a str, data: &'a [u8], mode: u32) -> Entry<'a> {
    Entry {
        path,
        kind: EntryType::Regular,
        link: "",
        data,
        mode,
    }
}

pub(crate) fn dir(path: &str) -> Entry<'_> {
    Entry {
        path,
        kind: EntryType::Directory,
        link: "",
        data: b"",
        mode: 0o755,
    }
}

pub(crate) fn link<'a>(path: &'a str, kind: EntryType, target: &'a str) -> Entry<'a> {
    Entry {
        path,
        kind,
        link: target,
        data: b"",
        mode: 0o777,
    }
}

fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        gnu.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(e.mode);
        header.set_mtime(MTIME);
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// `bytes` compressed as a file called `name` is: xz for `.tar.xz`, else gzip.
fn compressed(name: &str, bytes: &[u8]) -> Vec<u8> {
    if name.ends_with(".tar.xz") {
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    } else {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }
}

/// Writes the entries as `name` (`.tar.gz`, `.tgz` or `.tar.xz`) inside `dir`.
pub(crate) fn archive(dir: &Path, name: &str, entries: &[Entry]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, compressed(name, &tar_bytes(entries))).unwrap();
    path
}

/// Extracts into a fresh `dest/` below a fresh `outer/`, returning the error text.
fn refused(name: &str, entries: &[Entry]) -> (String, TempDir) {
    let tmp = TempDir::new("extract-bad");
    let archive = archive(tmp.path(), name, entries);
    let dest = tmp.path().join("outer/dest");
    std::fs::create_dir_all(&dest).unwrap();
    let err = extract(&archive, &dest).expect_err("the archive must be refused");
    let text = format!("{err:#}");
    assert!(text.contains(&archive.display().to_string()), "{text}");
    (text, tmp)
}

#[test]
fn extracts_gz_and_xz_keeping_modes_links_and_mtimes() {
    for name in ["good.tar.gz", "good.tgz", "good.tar.xz"] {
        let tmp = TempDir::new("extract-good");
        let archive = archive(
            tmp.path(),
            name,
            &[
                dir("Python-3.99.0/"),
                file("Python-3.99.0/configure", b"#!/bin/sh\n", 0o755),
                file("./Python-3.99.0/README.rst", b"read me\n", 0o644),
                link(
                    "Python-3.99.0/Doc/readme",
                    EntryType::Symlink,
                    "../README.rst",
                ),
                link(
                    "Python-3.99.0/README.copy",
                    EntryType::Link,
                    "Python-3.99.0/README.rst",
                ),
            ],
        );
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        extract(&archive, &dest).unwrap();

        let root = dest.join("Python-3.99.0");
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("configure"), 0o755, "{name}");
        assert_eq!(mode("README.rst"), 0o644, "{name}");
        assert_eq!(
            std::fs::read(root.join("configure")).unwrap(),
            b"#!/bin/sh\n"
        );
        assert_eq!(
            std::fs::read(root.join("Doc/readme")).unwrap(),
            b"read me\n"
        );
        assert_eq!(
            std::fs::read(root.join("README.copy")).unwrap(),
            b"read me\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("Doc/readme")).unwrap(),
            Path::new("../README.rst")
        );
        for p in ["configure", ""] {
            let mtime = std::fs::metadata(root.join(p)).unwrap().modified().unwrap();
            let secs = mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(secs, MTIME, "{name} {p:?}");
        }
    }
}

#[test]
fn refuses_parent_dir_components_in_gz_and_xz() {
    for name in ["evil.tar.gz", "evil.tar.xz"] {
        let (text, tmp) = refused(name, &[file("pkg/../../evil", b"x", 0o644)]);
        assert!(text.contains("\"pkg/../../evil\""), "{text}");
        assert!(text.contains("`..`"), "{text}");
        assert!(!tmp.path().join("outer/evil").exists());
        assert!(!tmp.path().join("evil").exists());
    }
}

#[test]
fn refuses_absolute_paths() {
    let outside = std::env::temp_dir().join(format!("xtask-abs-evil-{}", std::process::id()));
    let path = outside.display().to_string();
    for name in ["abs.tar.gz", "abs.tar.xz"] {
        let (text, _tmp) = refused(name, &[file(&path, b"x", 0o644)]);
        assert!(text.contains(&format!("{path:?}")), "{text}");
        assert!(text.contains("absolute"), "{text}");
        assert!(!outside.exists());
    }
}

#[test]
fn refuses_symlinks_that_point_outside() {
    for (target, why) in [
        ("../../outer", "outside the extracted tree"),
        ("/etc", "absolute path"),
        ("sub/../../..", "`..` after a name"),
    ] {
        for name in ["link.tar.gz", "link.tar.xz"] {
            let (text, tmp) = refused(
                name,
                &[dir("pkg/"), link("pkg/escape", EntryType::Symlink, target)],
            );
            assert!(text.contains("\"pkg/escape\""), "{text}");
            assert!(text.contains(why), "{target}: {text}");
            assert!(!tmp.path().join("outer/dest/pkg/escape").exists());
        }
    }
}

#[test]
fn refuses_writing_through_a_symlink() {
    // `pkg/up` -> `..` stays inside on its own; an entry written through it must still be refused.
    let (text, tmp) = refused(
        "through.tar.gz",
        &[
            dir("pkg/"),
            link("pkg/up", EntryType::Symlink, ".."),
            file("pkg/up/planted", b"x", 0o644),
        ],
    );
    assert!(text.contains("\"pkg/up/planted\""), "{text}");
    assert!(text.contains("through the symlink pkg/up"), "{text}");
    assert!(!tmp.path().join("outer/dest/planted").exists());
}

#[test]
fn refuses_hard_links_outside_or_to_symlinks() {
    let (text, _tmp) = refused(
        "hard.tar.xz",
        &[link("pkg/passwd", EntryType::Link, "../../etc/passwd")],
    );
    assert!(
        text.contains("\"pkg/passwd\"") && text.contains("`..`"),
        "{text}"
    );

    let (text, _tmp) = refused(
        "hard2.tar.gz",
        &[
            dir("a/b/"),
            link("a/b/up", EntryType::Symlink, "../.."),
            link("top", EntryType::Link, "a/b/up"),
        ],
    );
    assert!(
        text.contains("\"top\"") && text.contains("not a regular file"),
        "{text}"
    );
}

#[test]
fn refuses_unknown_archive_types() {
    let tmp = TempDir::new("extract-zip");
    let archive = tmp.path().join("x.zip");
    std::fs::write(&archive, b"PK").unwrap();
    let err = extract(&archive, tmp.path()).unwrap_err();
    assert!(format!("{err:#}").contains("x.zip"), "{err:#}");
}

#[test]
fn a_truncated_archive_says_so_with_the_whole_cause() {
    let tmp = TempDir::new("extract-truncated");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let path = archive(
        tmp.path(),
        "cut.tar.gz",
        &[
            dir("Python-3.99.0/"),
            file("Python-3.99.0/big", &body, 0o644),
        ],
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();

    let text = format!("{:#}", extract(&path, &dest).unwrap_err());
    assert!(
        !text.contains("cannot be written"),
        "an I/O error reads like a refusal: {text}"
    );
    assert!(text.contains("truncated"), "{text}");
    assert!(
        text.contains("incomplete deflate stream") || text.contains("end of file"),
        "the cause was dropped: {text}"
    );
}

#[test]
fn archives_over_the_size_or_entry_limit_are_refused() {
    let tmp = TempDir::new("extract-bomb");
    let data = vec![0u8; 1000];
    let names: Vec<String> = (0..5).map(|i| format!("Python-3.99.0/f{i}")).collect();
    let mut entries = vec![dir("Python-3.99.0/")];
    entries.extend(names.iter().map(|n| file(n, &data, 0o644)));
    let path = archive(tmp.path(), "bomb.tar.gz", &entries);
    for (limits, want) in [
        (
            Limits {
                bytes: 3000,
                entries: 100,
            },
            "more than 3000 bytes",
        ),
        (
            Limits {
                bytes: 1 << 30,
                entries: 3,
            },
            "more than 3 entries",
        ),
    ] {
        let dest = tmp.path().join(format!("dest-{}", limits.entries));
        std::fs::create_dir(&dest).unwrap();
        let result = extract_within(&path, &dest, limits);
        let text = format!("{:#}", result.expect_err("the limit was not applied"));
        assert!(text.contains(want), "{text}");
    }
    let dest = tmp.path().join("dest-ok");
    std::fs::create_dir(&dest).unwrap();
    extract_within(
        &path,
        &dest,
        Limits {
            bytes: 5000,
            entries: 6,
        },
    )
    .unwrap();
}

#[test]
fn an_archive_that_is_not_a_tar_is_named_without_its_bytes() {
    let tmp = TempDir::new("extract-not-tar");
    // A compressed text file given a tarball's name: its bytes are no tar header.
    let text: Vec<u8> = b"lorem ipsum dolor sit amet, 0123456789 "
        .iter()
        .copied()
        .cycle()
        .take(4000)
        .collect();
    for name in ["text.tar.gz", "text.tar.xz"] {
        let path = tmp.path().join(name);
        std::fs::write(&path, compressed(name, &text)).unwrap();
        let dest = tmp.path().join(format!("dest-{name}"));
        std::fs::create_dir(&dest).unwrap();
        let err = format!("{:#}", extract(&path, &dest).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a tar archive"), "{err}");
        assert!(
            !err.contains("lorem") && !err.contains("0123"),
            "raw bytes printed: {err}"
        );
    }
}

#[test]
fn a_directory_of_mode_000_is_made_usable() {
    let tmp = TempDir::new("extract-mode-000");
    let mut locked = dir("Python-3.99.0/Lib/");
    locked.mode = 0o000;
    let path = archive(
        tmp.path(),
        "locked.tar.gz",
        &[
            dir("Python-3.99.0/"),
            locked,
            file("Python-3.99.0/Lib/os.py", b"import sys\n", 0o644),
        ],
    );
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    extract(&path, &dest).unwrap();
    let lib = dest.join("Python-3.99.0/Lib");
    let mode = std::fs::metadata(&lib).unwrap().permissions().mode() & 0o777;
    // Let the temporary directory be removed whatever happens below.
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(mode & 0o755, 0o755, "the directory kept mode {mode:o}");
}
