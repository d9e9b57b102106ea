//! The portal's own list cursors.
//!
//! Upstream cursors are never exposed: the portal holds each upstream's full list and pages its
//! merged, sorted view. A cursor is an opaque base64 token of the offset and the catalog hash it
//! was issued for; a cursor from a catalog that has since changed restarts nothing silently, it
//! is rejected as invalid params so the client lists again.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rmcp::ErrorData;

/// Items per page of every portal list.
pub const PAGE_SIZE: usize = 500;

/// Returns the page of `items` the cursor designates, and the next cursor.
pub fn page<T: Clone>(
    items: &[T],
    cursor: Option<&str>,
    hash: &[u8; 32],
) -> Result<(Vec<T>, Option<String>), ErrorData> {
    let start = match cursor {
        None => 0,
        Some(c) => decode(c, hash)?,
    };
    if start > items.len() {
        return Err(ErrorData::invalid_params("invalid cursor", None));
    }
    let end = (start + PAGE_SIZE).min(items.len());
    let next = (end < items.len()).then(|| encode(end, hash));
    Ok((items[start..end].to_vec(), next))
}

fn encode(offset: usize, hash: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(12);
    raw.extend_from_slice(&(offset as u64).to_be_bytes());
    raw.extend_from_slice(&hash[..4]);
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode(cursor: &str, hash: &[u8; 32]) -> Result<usize, ErrorData> {
    let invalid = || ErrorData::invalid_params("invalid cursor", None);
    if cursor.len() > 64 {
        return Err(invalid());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    if raw.len() != 12 {
        return Err(invalid());
    }
    if raw[8..] != hash[..4] {
        return Err(ErrorData::invalid_params(
            "cursor is stale: the list changed since it was issued; list again from the start",
            None,
        ));
    }
    let offset = u64::from_be_bytes(raw[..8].try_into().map_err(|_| invalid())?);
    usize::try_from(offset).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_item_once_in_order() {
        let items: Vec<usize> = (0..1234).collect();
        let hash = [7; 32];
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let (p, next) = page(&items, cursor.as_deref(), &hash).unwrap();
            seen.extend(p);
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn garbage_and_stale_cursors_are_invalid_params() {
        let items = vec![1; 600];
        assert!(page(&items, Some("!!"), &[0; 32]).is_err());
        assert!(page(&items, Some(&"A".repeat(100)), &[0; 32]).is_err());
        let (_, next) = page(&items, None, &[1; 32]).unwrap();
        let e = page(&items, next.as_deref(), &[2; 32]).unwrap_err();
        assert!(e.message.contains("stale"));
    }
}
