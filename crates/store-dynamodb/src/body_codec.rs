//! How message bodies are stored: zstd at level 1 in `body_zst`. Chosen by measurement
//! (`cargo bench -p o365-sync-engine --bench body_codec` on the simulator's bodies): about a sixth
//! of gzip-6's CPU for 6 % more bytes (the target was within 10 %: writes are billed per KB).
//! Items written before keep their gzip `body_gz` and stay readable.

use std::io::Read;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use o365_domain::{DomainError, Result};

use crate::Item;

/// The attribute new bodies go to.
pub(crate) const BODY: &str = "body_zst";
/// Where bodies written before zstd are (gzip).
pub(crate) const LEGACY_BODY: &str = "body_gz";
const LEVEL: i32 = 1;
/// No stored body decompresses beyond this (an item holds at most 400 KB compressed).
pub(crate) const MAX_BODY_BYTES: usize = 16 << 20;

pub(crate) fn compress(text: &str) -> Vec<u8> {
    // A compression context per thread, kept between bodies: creating one costs about as much
    // as compressing a 10 KB body at this level (measured by the body_codec bench).
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        if context.is_none() {
            *context = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        match context.as_mut() {
            Some(c) => c.compress(text.as_bytes()).ok(),
            None => None,
        }
        // Compressing into a Vec cannot fail; if a context could not be made, one-off.
        .unwrap_or_else(|| zstd::bulk::compress(text.as_bytes(), LEVEL).unwrap_or_default())
    })
}

/// The body an item holds, in whichever codec it was written.
pub(crate) fn take_body(item: &mut Item) -> Result<Option<String>> {
    let unreadable =
        |e: std::io::Error| DomainError::Unavailable(format!("stored body unreadable: {e}"));
    if let Some(AttributeValue::B(blob)) = item.remove(BODY) {
        let bytes = zstd::bulk::decompress(blob.as_ref(), MAX_BODY_BYTES).map_err(unreadable)?;
        return String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| DomainError::Unavailable(format!("stored body unreadable: {e}")));
    }
    if let Some(AttributeValue::B(blob)) = item.remove(LEGACY_BODY) {
        let mut out = String::new();
        flate2::read::GzDecoder::new(blob.as_ref())
            .read_to_string(&mut out)
            .map_err(unreadable)?;
        return Ok(Some(out));
    }
    Ok(None)
}

pub(crate) fn body_value(compressed: Vec<u8>) -> AttributeValue {
    AttributeValue::B(Blob::new(compressed))
}

#[cfg(test)]
pub(crate) fn legacy_gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(text.as_bytes());
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_legacy_bodies_read_back() {
        let html = "<p>Quarterly review</p>".repeat(200);
        let mut item = Item::from([(BODY.to_owned(), body_value(compress(&html)))]);
        assert_eq!(
            take_body(&mut item).unwrap().as_deref(),
            Some(html.as_str())
        );
        let mut old = Item::from([(LEGACY_BODY.to_owned(), body_value(legacy_gzip(&html)))]);
        assert_eq!(take_body(&mut old).unwrap().as_deref(), Some(html.as_str()));
        assert_eq!(take_body(&mut Item::new()).unwrap(), None);
    }
}
