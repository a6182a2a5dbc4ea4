//! The package stage: a deterministic `.tar.gz` of `/opt/python-fips` with its build manifest.
//!
//! Written here rather than by `tar` in a container so that the bytes depend on nothing but the
//! tree: entries sorted, mtimes clamped to SOURCE_DATE_EPOCH, owner 0:0 without names,
//! normalized modes, no atime/ctime, and a gzip header without name or time.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};

/// One entry of the tree, held in memory while the archive is sorted.
struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// Reads a stage output tar (entries `python-fips/...`) and writes `out` with every entry under
/// `opt/`, plus `extra` files (paths relative to the tree root, e.g. `BUILD-INFO.json`).
pub fn write(stage_tar: &Path, extra: &[(&str, &[u8])], epoch: u64, out: &Path) -> Result<()> {
    let file = std::fs::File::open(stage_tar)
        .with_context(|| format!("cannot open {}", stage_tar.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header();
        let kind = header.entry_type();
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
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
            (tar::EntryType::Link, Some(l)) => Some(format!("opt/{}", l.trim_start_matches('/'))),
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
    }
    for (rel, bytes) in extra {
        entries.retain(|e| e.path != format!("opt/python-fips/{rel}"));
        entries.push(Entry {
            path: format!("opt/python-fips/{rel}"),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            mtime: epoch,
            link: None,
            data: bytes.to_vec(),
        });
    }
    entries.push(Entry {
        path: "opt".into(),
        kind: tar::EntryType::Directory,
        mode: 0o755,
        mtime: epoch,
        link: None,
        data: vec![],
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);

    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(file, Compression::default());
    let mut tar = tar::Builder::new(gz);
    for e in &entries {
        append(&mut tar, e, epoch)?;
    }
    let gz = tar.into_inner()?;
    let file = gz.finish()?;
    file.sync_all()?;
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
    let file = std::fs::File::open(stage_tar)
        .with_context(|| format!("cannot open {}", stage_tar.display()))?;
    let mut out = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(file).entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let Some(rel) = path.strip_prefix("python-fips/") else {
            continue;
        };
        if paths.iter().any(|p| p == rel) {
            let mut h = Sha256::new();
            std::io::copy(&mut entry, &mut h)?;
            out.insert(rel.to_string(), crate::prepare::hex(&h.finalize()));
        }
    }
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
        write(&a, &[("BUILD-INFO.json", b"{}")], 1_000_000_000, &out_a).unwrap();
        write(&b, &[("BUILD-INFO.json", b"{}")], 1_000_000_000, &out_b).unwrap();
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
}
