//! The members of a zip archive, enough of the format to read wheels: stored or deflated entries,
//! read one at a time from the file, never the whole archive in memory.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result, bail};

use super::{Candidate, read_candidate};

/// The largest central directory read: 65,535 records with names of 1 KiB fit.
const MAX_DIRECTORY: u64 = 64 << 20;

/// One member, as its central directory record describes it.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    method: u16,
    compressed: u64,
    /// The uncompressed size the record claims.
    size: u64,
    /// Where its local header starts.
    local: u64,
    /// Where its data starts, after the local header.
    data: u64,
}

/// The members of the zip archive `file`, refused unless each one's bytes (local header and
/// data) are its own and lie before the central directory.
pub fn entries<R: Read + Seek>(file: &mut R) -> Result<Vec<Entry>> {
    let len = file.seek(SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65535);
    let tail = read_at(file, len - tail_len, tail_len)?;
    let Some(eocd) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))
    else {
        bail!("not a zip archive (no end of central directory)");
    };
    let count = u16_at(&tail, eocd + 10)?;
    let size = u32_at(&tail, eocd + 12)?;
    let offset = u32_at(&tail, eocd + 16)?;
    if count == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
        bail!("it is a ZIP64 archive, which audit cannot read");
    }
    if size > MAX_DIRECTORY || offset + size > len {
        bail!(
            "damaged zip archive: its central directory ({size} bytes at byte {offset}) is out of bounds"
        );
    }
    let directory = read_at(file, offset, size)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut at = 0;
    for _ in 0..count {
        if !directory
            .get(at..)
            .is_some_and(|d| d.starts_with(b"PK\x01\x02"))
        {
            bail!(
                "damaged zip central directory at byte {}",
                offset + at as u64
            );
        }
        let name_len = u16_at(&directory, at + 28)? as usize;
        let name = directory
            .get(at + 46..at + 46 + name_len)
            .context("truncated zip central directory")?;
        let local = u32_at(&directory, at + 42)?;
        let header = read_at(file, local, 30).ok();
        let Some(header) = header.filter(|h| h.starts_with(b"PK\x03\x04")) else {
            bail!("damaged zip entry {}", String::from_utf8_lossy(name));
        };
        out.push(Entry {
            name: String::from_utf8_lossy(name).into_owned(),
            method: u16_at(&directory, at + 10)? as u16,
            compressed: u32_at(&directory, at + 20)?,
            size: u32_at(&directory, at + 24)?,
            local,
            data: local + 30 + u16_at(&header, 26)? + u16_at(&header, 28)?,
        });
        at += 46
            + name_len
            + u16_at(&directory, at + 30)? as usize
            + u16_at(&directory, at + 32)? as usize;
    }
    ensure_apart(&out, offset)?;
    Ok(out)
}

/// Refuses members that share bytes (several records pointing at one stream inflate it once
/// each) or run into the central directory at `directory`.
fn ensure_apart(entries: &[Entry], directory: u64) -> Result<()> {
    let mut spans: Vec<(u64, u64, &str)> = entries
        .iter()
        .map(|e| (e.local, e.data + e.compressed, e.name.as_str()))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
        if start < end {
            bail!(
                "zip entries {first} and {second} overlap: a zip archive that a tool wrote never \
                 has members sharing bytes, so audit refuses it"
            );
        }
    }
    if let Some(&(_, end, name)) = spans.last()
        && end > directory
    {
        bail!("damaged zip entry {name}: its data runs into the central directory");
    }
    Ok(())
}

impl Entry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }

    /// The member's bytes if it starts with `\x7fELF`, inflated no further than `cap`.
    pub fn read_elf<R: Read + Seek>(&self, file: &mut R, cap: u64) -> Result<Candidate> {
        file.seek(SeekFrom::Start(self.data))?;
        let raw = file.take(self.compressed);
        let reader: Box<dyn Read + '_> = match self.method {
            0 => Box::new(raw),
            8 => Box::new(flate2::read::DeflateDecoder::new(raw)),
            m => bail!(
                "zip entry {} uses compression method {m}, which audit cannot read",
                self.name
            ),
        };
        let candidate = read_candidate(reader, self.size, cap)
            .with_context(|| format!("cannot inflate {}", self.name))?;
        if let Candidate::Elf(data) = &candidate
            && data.len() as u64 != self.size
        {
            bail!(
                "damaged zip entry {}: it inflates to {} bytes, not the {} its record says",
                self.name,
                data.len(),
                self.size
            );
        }
        Ok(candidate)
    }
}

fn read_at<R: Read + Seek>(file: &mut R, at: u64, len: u64) -> Result<Vec<u8>> {
    file.seek(SeekFrom::Start(at))?;
    let mut out = vec![0; len as usize];
    file.read_exact(&mut out).context("truncated zip archive")?;
    Ok(out)
}

fn u16_at(data: &[u8], at: usize) -> Result<u64> {
    let b = data.get(at..at + 2).context("truncated zip archive")?;
    Ok(u16::from_le_bytes([b[0], b[1]]).into())
}

fn u32_at(data: &[u8], at: usize) -> Result<u64> {
    let b = data.get(at..at + 4).context("truncated zip archive")?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]).into())
}
