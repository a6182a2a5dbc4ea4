//! The package stage: two deterministic `.tar.gz` files of `/opt/python-fips` with its manifest.
//!
//! Written here rather than by `tar` in a container so that the bytes depend on nothing but the
//! tree: entries sorted, mtimes clamped to SOURCE_DATE_EPOCH, owner 0:0 without names,
//! normalized modes, no atime/ctime, and a gzip header without name or time. The tree is split
//! in two ([`part_of`]): the runtime tarball, and the development one (headers, static
//! libraries, debug information, the test suite) that unpacks on top of it.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};

use crate::tarwalk;

/// One entry of the tree, held in memory while the archive is sorted.
struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// Which of the two tarballs an entry of the tree goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// What runs: the interpreter, the stdlib, the shared libraries, the OpenSSL command.
    Runtime,
    /// What builds against the tree or debugs and tests it.
    Dev,
}

/// The part of a path below the tree root (`include/python3.13/Python.h`). The development part
/// is what building against the tree, debugging it or testing it needs: headers, static
/// libraries and linker symlinks, pkg-config and `python3-config` data, the debug files the
/// finalize stage split off, man pages, the stdlib's test suites and its test-only extensions,
/// and the `.pyc` files of `python -O` and `-OO` (the runtime part has the default level's).
pub fn part_of(rel: &str) -> Part {
    let c: Vec<&str> = rel.split('/').collect();
    let dev = match c.as_slice() {
        ["include", ..] | ["lib", "debug" | "pkgconfig" | "cmake", ..] | ["share", "man", ..] => {
            true
        }
        // The unversioned `libcrypto.so` is for the linker; the loader asks for the soname.
        ["lib", file] => file.ends_with(".a") || file.ends_with(".so"),
        ["bin", file] => file.starts_with("python") && file.ends_with("-config"),
        ["lib", stdlib, rest @ ..] if stdlib.starts_with("python") => match rest {
            [config, ..] if config.starts_with("config-") => true,
            ["site-packages", ..] => false,
            ["lib-dynload", file] => {
                let stem = file.split('.').next().unwrap_or(file);
                stem.starts_with("_test")
                    || stem.starts_with("_xxtest")
                    || ["_ctypes_test", "xxlimited", "xxlimited_35", "xxsubtype"].contains(&stem)
            }
            _ => rest
                .iter()
                .any(|d| ["test", "tests", "idle_test"].contains(d)),
        },
        _ => false,
    };
    // The caches of `python -O` and `-OO`: a third of the stdlib's size for a mode few run.
    let optimized = rel.ends_with(".opt-1.pyc") || rel.ends_with(".opt-2.pyc");
    if dev || optimized || rel.ends_with(".a") {
        Part::Dev
    } else {
        Part::Runtime
    }
}

/// A finalize stage's output read into memory, ready to be written as either part.
pub struct Tree {
    entries: Vec<Entry>,
}

impl Tree {
    /// Reads a stage output tar (entries `python-fips/...`); every entry moves under `opt/`.
    pub fn read(stage_tar: &Path) -> Result<Tree> {
        let mut entries = Vec::new();
        tarwalk::for_each_entry(stage_tar, tarwalk::Compression::None, |path, entry| {
            let header = entry.header();
            let kind = header.entry_type();
            let path = path.trim_end_matches('/').to_string();
            if !(path == "python-fips" || path.starts_with("python-fips/")) {
                bail!(
                    "{} has an entry outside python-fips/: {path}",
                    stage_tar.display()
                );
            }
            let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
            let mode = header.mode()?;
            let mtime = header.mtime()?;
            let mut data = Vec::new();
            if kind.is_file() {
                entry.read_to_end(&mut data)?;
            }
            let link = match (kind, link) {
                // Hard links name another entry of the archive, which moves under opt/ too.
                (tar::EntryType::Link, Some(l)) => {
                    Some(format!("opt/{}", l.trim_start_matches('/')))
                }
                (_, l) => l,
            };
            entries.push(Entry {
                path: format!("opt/{path}"),
                kind,
                mode,
                mtime,
                link,
                data,
            });
            Ok(None::<()>)
        })?;
        Ok(Tree { entries })
    }

    /// Writes the entries of `part` to `out`, plus `extra` files (paths relative to the tree root,
    /// e.g. `BUILD-INFO.json`, which belong to the runtime part). Each part holds the directories
    /// above its files, so either unpacks alone and the two unpack in either order.
    pub fn write(&self, part: Part, extra: &[(&str, &[u8])], epoch: u64, out: &Path) -> Result<()> {
        let (mut entries, parents) = self.entries_of(part, extra)?;
        let extra = extra_entries(extra, epoch);
        if part == Part::Runtime {
            entries.extend(&extra);
        } else if !extra.is_empty() {
            bail!("extra files belong to the runtime part");
        }
        let dirs = self.missing_parents(&parents, &entries, epoch);
        entries.extend(&dirs);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        write_tar_gz(&entries, epoch, out)
    }

    /// The entries of `part`, but not those `extra` replaces, and every directory above them.
    fn entries_of(
        &self,
        part: Part,
        extra: &[(&str, &[u8])],
    ) -> Result<(Vec<&Entry>, BTreeSet<String>)> {
        let of = |path: &str| match path.strip_prefix("opt/python-fips/") {
            Some(rel) => part_of(rel),
            None => Part::Runtime,
        };
        let mut entries: Vec<&Entry> = Vec::new();
        let mut parents = BTreeSet::new();
        for e in &self.entries {
            if extra
                .iter()
                .any(|(rel, _)| e.path == format!("opt/python-fips/{rel}"))
            {
                continue;
            }
            if of(&e.path) == part {
                entries.push(e);
                let mut at = e.path.as_str();
                while let Some((parent, _)) = at.rsplit_once('/') {
                    parents.insert(parent.to_string());
                    at = parent;
                }
            } else if e.kind == tar::EntryType::Link {
                bail!(
                    "{} is a hard link across the runtime and development parts",
                    e.path
                );
            }
        }
        Ok((entries, parents))
    }

    /// The directories above this part's entries, where the other part holds them.
    fn missing_parents(
        &self,
        parents: &BTreeSet<String>,
        entries: &[&Entry],
        epoch: u64,
    ) -> Vec<Entry> {
        parents
            .iter()
            .filter(|p| !entries.iter().any(|e| &e.path == *p))
            .map(|p| {
                let mtime = self
                    .entries
                    .iter()
                    .find(|e| &e.path == p)
                    .map_or(epoch, |e| e.mtime);
                Entry {
                    path: p.clone(),
                    kind: tar::EntryType::Directory,
                    mode: 0o755,
                    mtime,
                    link: None,
                    data: vec![],
                }
            })
            .collect()
    }
}

/// The `extra` files as entries of the tree, dated `epoch`.
fn extra_entries(extra: &[(&str, &[u8])], epoch: u64) -> Vec<Entry> {
    extra
        .iter()
        .map(|(rel, bytes)| Entry {
            path: format!("opt/python-fips/{rel}"),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            mtime: epoch,
            link: None,
            data: bytes.to_vec(),
        })
        .collect()
}

/// Writes `entries`, in their order, as a reproducible `.tar.gz` at `out`, through a partial
/// file renamed into place once synced.
fn write_tar_gz(entries: &[&Entry], epoch: u64, out: &Path) -> Result<()> {
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(file, Compression::default());
    let mut tar = tar::Builder::new(gz);
    let write = || format!("cannot write {}", tmp.display());
    for e in entries {
        append(&mut tar, e, epoch).with_context(write)?;
    }
    let gz = tar.into_inner().with_context(write)?;
    let file = gz.finish().with_context(write)?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    Ok(())
}

/// The sha256 of each regular file among `paths` (relative to the tree root) in a stage output
/// tar; paths that are missing or not regular files are left out.
pub fn sha256_of_entries(
    stage_tar: &Path,
    paths: &[String],
) -> Result<std::collections::BTreeMap<String, String>> {
    use sha2::{Digest, Sha256};
    let mut out = std::collections::BTreeMap::new();
    tarwalk::for_each_entry(stage_tar, tarwalk::Compression::None, |path, entry| {
        if !entry.header().entry_type().is_file() {
            return Ok(None::<()>);
        }
        let Some(rel) = path.strip_prefix("python-fips/") else {
            return Ok(None);
        };
        if paths.iter().any(|p| p == rel) {
            let mut h = Sha256::new();
            std::io::copy(entry, &mut h)?;
            out.insert(rel.to_string(), crate::digest::hex(&h.finalize()));
        }
        Ok(None)
    })?;
    Ok(out)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, e: &Entry, epoch: u64) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(e.kind);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(e.mtime.min(epoch));
    let executable = e.mode & 0o111 != 0;
    let mode = match e.kind {
        tar::EntryType::Directory => 0o755,
        tar::EntryType::Symlink => 0o777,
        _ if executable => 0o755,
        _ => 0o644,
    };
    header.set_mode(mode);
    match e.kind {
        tar::EntryType::Symlink | tar::EntryType::Link => {
            let target = e
                .link
                .as_deref()
                .with_context(|| format!("link {} has no target", e.path))?;
            header.set_size(0);
            tar.append_link(&mut header, &e.path, target)?;
        }
        tar::EntryType::Directory => {
            header.set_size(0);
            tar.append_data(&mut header, format!("{}/", e.path), std::io::empty())?;
        }
        _ => {
            header.set_size(e.data.len() as u64);
            tar.append_data(&mut header, &e.path, e.data.as_slice())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage_tar(dir: &Path, mtime: u64, order: &[&str]) -> std::path::PathBuf {
        let path = dir.join(format!(
            "stage-{mtime}-{}.tar",
            order.join("_").replace('/', "-")
        ));
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for name in order {
            let mut h = tar::Header::new_ustar();
            h.set_size(3);
            h.set_mode(0o700);
            h.set_uid(1234);
            h.set_mtime(mtime);
            b.append_data(&mut h, format!("python-fips/{name}"), &b"abc"[..])
                .unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn same_tree_gives_same_bytes_whatever_the_order_and_times() {
        let dir = std::env::temp_dir().join(format!("pf-package-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = stage_tar(&dir, 2_000_000_000, &["bin/python3", "lib/a"]);
        let b = stage_tar(&dir, 2_100_000_000, &["lib/a", "bin/python3"]);
        let (out_a, out_b) = (dir.join("a.tar.gz"), dir.join("b.tar.gz"));
        let info: &[(&str, &[u8])] = &[("BUILD-INFO.json", b"{}")];
        let tree_a = Tree::read(&a).unwrap();
        tree_a
            .write(Part::Runtime, info, 1_000_000_000, &out_a)
            .unwrap();
        let tree_b = Tree::read(&b).unwrap();
        tree_b
            .write(Part::Runtime, info, 1_000_000_000, &out_b)
            .unwrap();
        let (bytes_a, bytes_b) = (
            std::fs::read(&out_a).unwrap(),
            std::fs::read(&out_b).unwrap(),
        );
        assert_eq!(bytes_a, bytes_b);
        // gzip header: no file name flag, mtime zero.
        assert_eq!(bytes_a[3] & 0x08, 0);
        assert_eq!(&bytes_a[4..8], &[0, 0, 0, 0]);

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes_a.as_slice()));
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.uid().unwrap(), 0);
            assert!(h.mtime().unwrap() <= 1_000_000_000);
            assert!(h.username().unwrap().unwrap_or("").is_empty());
            names.push(e.path().unwrap().to_string_lossy().into_owned());
            if names.last().unwrap().ends_with("python3") {
                assert_eq!(h.mode().unwrap(), 0o755);
            }
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"opt/python-fips/BUILD-INFO.json".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn names(tarball: &Path) -> Vec<String> {
        let file = std::fs::File::open(tarball).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let entries = archive.entries().unwrap();
        entries
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn parts_split_the_tree_and_each_holds_its_parent_directories() {
        for (rel, part) in [
            ("bin/python3.13", Part::Runtime),
            ("bin/python3.13-config", Part::Dev),
            ("bin/openssl", Part::Runtime),
            ("include/python3.13/Python.h", Part::Dev),
            ("include", Part::Dev),
            ("lib/libcrypto.so.3", Part::Runtime),
            ("lib/libcrypto.so", Part::Dev),
            ("lib/libcrypto.a", Part::Dev),
            ("lib/ossl-modules/fips.so", Part::Runtime),
            ("lib/pkgconfig/libssl.pc", Part::Dev),
            ("lib/debug/.build-id/ab/cd.debug", Part::Dev),
            ("lib/python3.13/os.py", Part::Runtime),
            (
                "lib/python3.13/__pycache__/os.cpython-313.pyc",
                Part::Runtime,
            ),
            (
                "lib/python3.13/__pycache__/os.cpython-313.opt-1.pyc",
                Part::Dev,
            ),
            (
                "lib/python3.13/__pycache__/os.cpython-313.opt-2.pyc",
                Part::Dev,
            ),
            ("lib/cmake/OpenSSL/OpenSSLConfig.cmake", Part::Dev),
            ("lib/python3.13/test", Part::Dev),
            ("lib/python3.13/test/test_ssl.py", Part::Dev),
            ("lib/python3.13/idlelib/idle_test/htest.py", Part::Dev),
            ("lib/python3.13/unittest/__init__.py", Part::Runtime),
            (
                "lib/python3.13/config-3.13-x86_64-linux-gnu/Makefile",
                Part::Dev,
            ),
            (
                "lib/python3.13/lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so",
                Part::Runtime,
            ),
            (
                "lib/python3.13/lib-dynload/_testcapi.cpython-313-x86_64-linux-gnu.so",
                Part::Dev,
            ),
            (
                "lib/python3.13/lib-dynload/xxlimited.cpython-313-x86_64-linux-gnu.so",
                Part::Dev,
            ),
            ("lib/python3.13/site-packages/tests/x.py", Part::Runtime),
            ("share/man/man1/python3.13.1", Part::Dev),
            ("share/python-fips/ld.so.conf", Part::Runtime),
        ] {
            assert_eq!(part_of(rel), part, "{rel}");
        }

        let dir = crate::testutil::TempDir::new("package-parts");
        let stage = stage_tar(
            dir.path(),
            1,
            &[
                "bin/python3",
                "include/python3.13/Python.h",
                "lib/python3.13/test/t.py",
            ],
        );
        let tree = Tree::read(&stage).unwrap();
        let (runtime, dev) = (dir.path().join("r.tar.gz"), dir.path().join("d.tar.gz"));
        tree.write(Part::Runtime, &[("SBOM.cdx.json", b"{}")], 1, &runtime)
            .unwrap();
        tree.write(Part::Dev, &[], 1, &dev).unwrap();
        assert_eq!(
            names(&runtime),
            [
                "opt/",
                "opt/python-fips/",
                "opt/python-fips/SBOM.cdx.json",
                "opt/python-fips/bin/",
                "opt/python-fips/bin/python3",
            ]
        );
        assert_eq!(
            names(&dev),
            [
                "opt/",
                "opt/python-fips/",
                "opt/python-fips/include/",
                "opt/python-fips/include/python3.13/",
                "opt/python-fips/include/python3.13/Python.h",
                "opt/python-fips/lib/",
                "opt/python-fips/lib/python3.13/",
                "opt/python-fips/lib/python3.13/test/",
                "opt/python-fips/lib/python3.13/test/t.py",
            ]
        );
    }
}
