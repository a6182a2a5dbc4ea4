//! The members of a zip archive, enough of the format to read wheels: stored or deflated entries.

use std::io::Read;

use anyhow::{Context, Result, bail};

/// The members of a zip archive (a wheel) with their uncompressed bytes.
pub fn zip_members(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let u16_at = |at: usize| -> Result<usize> {
        let b = data.get(at..at + 2).context("truncated zip archive")?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| -> Result<usize> {
        let b = data.get(at..at + 4).context("truncated zip archive")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let window = data.len().saturating_sub(22 + 65535);
    let Some(eocd) = (window..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
    else {
        bail!("not a zip archive (no end of central directory)");
    };
    let count = u16_at(eocd + 10)?;
    let mut at = u32_at(eocd + 16)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if !data.get(at..).is_some_and(|d| d.starts_with(b"PK\x01\x02")) {
            bail!("damaged zip central directory at byte {at}");
        }
        let method = u16_at(at + 10)?;
        let compressed = u32_at(at + 20)?;
        let size = u32_at(at + 24)?;
        let name_len = u16_at(at + 28)?;
        let extra_len = u16_at(at + 30)?;
        let comment_len = u16_at(at + 32)?;
        let local = u32_at(at + 42)?;
        let name = String::from_utf8_lossy(
            data.get(at + 46..at + 46 + name_len)
                .context("truncated zip archive")?,
        )
        .into_owned();
        at += 46 + name_len + extra_len + comment_len;
        if name.ends_with('/') {
            continue;
        }
        if !data
            .get(local..)
            .is_some_and(|d| d.starts_with(b"PK\x03\x04"))
        {
            bail!("damaged zip entry {name}");
        }
        let start = local + 30 + u16_at(local + 26)? + u16_at(local + 28)?;
        let raw = data
            .get(start..start + compressed)
            .with_context(|| format!("truncated zip entry {name}"))?;
        let bytes = match method {
            0 => raw.to_vec(),
            8 => {
                let mut bytes = Vec::with_capacity(size);
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot inflate {name}"))?;
                bytes
            }
            m => bail!("zip entry {name} uses compression method {m}, which audit cannot read"),
        };
        out.push((name, bytes));
    }
    Ok(out)
}
