//! Walking a tar archive (plain or gzip) entry by entry, with errors naming the archive and the entry.
//!
//! Extraction does not use this: it has its own loop for its checks on every entry
//! (`extract.rs`).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// How an archive file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain `.tar` (a stage output).
    None,
    /// A `.tar.gz`.
    Gzip,
}

/// An entry of an archive opened by [`for_each_entry`].
pub type FileEntry<'a> = tar::Entry<'a, Box<dyn Read>>;

/// Calls `f` with the path (lossy UTF-8, as the archive spells it) and the entry of every entry of
/// the archive file `archive`, in archive order, until `f` returns `Some`.
pub fn for_each_entry<T>(
    archive: &Path,
    compression: Compression,
    f: impl FnMut(&str, &mut FileEntry<'_>) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
    };
    walk(reader, &archive.display().to_string(), f)
}

/// [`for_each_entry`] over a tar stream; `name` says what it is in errors.
pub fn walk<R: Read, T>(
    reader: R,
    name: &str,
    mut f: impl FnMut(&str, &mut tar::Entry<'_, R>) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive
        .entries()
        .with_context(|| format!("cannot read {name}"))?
    {
        let mut entry = entry.with_context(|| format!("cannot read {name}"))?;
        let path = entry
            .path()
            .with_context(|| format!("cannot read an entry's path in {name}"))?
            .to_string_lossy()
            .into_owned();
        match f(&path, &mut entry) {
            Ok(None) => {}
            Ok(Some(found)) => return Ok(Some(found)),
            // A read of the entry (or its header) failed: say which. The caller's own errors
            // stand as they are.
            Err(e) if e.root_cause().is::<std::io::Error>() => {
                return Err(e.context(format!("at entry {path} of {name}")));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(path: &Path, files: &[(&str, &[u8])]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn walks_in_order_and_stops_when_asked() {
        let dir = crate::testutil::TempDir::new("tarwalk");
        let path = dir.path().join("t.tar.gz");
        tarball(&path, &[("a", b"1"), ("b", b"22"), ("c", b"333")]);
        let mut seen = Vec::new();
        let found = for_each_entry(&path, Compression::Gzip, |p, entry| {
            seen.push(p.to_string());
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            Ok((p == "b").then_some(data))
        })
        .unwrap();
        assert_eq!(found, Some(b"22".to_vec()));
        assert_eq!(seen, ["a", "b"]);
    }

    #[test]
    fn errors_name_the_archive_and_the_entry() {
        let dir = crate::testutil::TempDir::new("tarwalk");
        let missing = dir.path().join("missing.tar.gz");
        let err = for_each_entry(&missing, Compression::Gzip, |_, _| Ok(Some(())))
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("cannot open {}", missing.display()));

        // A truncated archive fails while its second entry's bytes are read.
        let path = dir.path().join("t.tar.gz");
        let mut noise = Vec::with_capacity(100_000);
        let mut x = 1u32;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            noise.push((x >> 16) as u8);
        }
        tarball(&path, &[("small", b"x"), ("big", &noise)]);
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.tar.gz");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = for_each_entry(&cut, Compression::Gzip, |_, entry| {
            entry.read_to_end(&mut Vec::new())?;
            Ok(None::<()>)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("at entry big of {}", cut.display())
        );
    }
}
