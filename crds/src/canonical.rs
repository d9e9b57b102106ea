//! Canonical JSON, the one form every Portcullis hash is taken over: object keys sorted by
//! their UTF-8 bytes, no whitespace, strings and numbers as `serde_json` writes them. Equal
//! values hash equally whatever their key order. Used for tool-definition hashes
//! (`tooldef::definition_hash`), the tool-list hash in `McpServer` status, and the
//! proxy's audit `argsHash`.

use std::io::Write;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Writes the canonical JSON of `v` to `out` (a `Vec<u8>`, a hasher, a file).
pub fn write<W: Write>(v: &Value, out: &mut W) -> std::io::Result<()> {
    match v {
        Value::Object(m) => write_object(m, out),
        Value::Array(a) => {
            out.write_all(b"[")?;
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write(x, out)?;
            }
            out.write_all(b"]")
        }
        other => serde_json::to_writer(out, other).map_err(std::io::Error::other),
    }
}

/// Writes the canonical JSON of an object (without building a `Value` around it).
pub fn write_object<W: Write>(m: &Map<String, Value>, out: &mut W) -> std::io::Result<()> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.write_all(b"{")?;
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
        out.write_all(b":")?;
        write(&m[k], out)?;
    }
    out.write_all(b"}")
}

/// The canonical JSON of `v`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, nor can serializing a JSON value.
    let _ = write(v, &mut out);
    out
}

/// `sha256:<64 lowercase hex>` of the canonical JSON of `v`.
pub fn sha256(v: &Value) -> String {
    let mut h = Sha256::new();
    let _ = write(v, &mut HashWriter(&mut h));
    prefixed_hex(&h.finalize())
}

/// `sha256:<64 lowercase hex>` of the canonical JSON of an object.
pub fn sha256_object(m: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    let _ = write_object(m, &mut HashWriter(&mut h));
    prefixed_hex(&h.finalize())
}

/// `sha256:` and the lowercase hex of a digest.
pub fn prefixed_hex(digest: &[u8]) -> String {
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256:");
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Feeds written bytes to a hasher.
pub struct HashWriter<'a>(pub &'a mut Sha256);

impl std::fmt::Debug for HashWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashWriter")
    }
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth_and_there_is_no_whitespace() {
        let v = json!({"b": 1, "a": {"d": [true, null, {"z": "é", "y": 1.5}], "c": "x"}});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"a":{"c":"x","d":[true,null,{"y":1.5,"z":"é"}]},"b":1}"#
        );
    }

    #[test]
    fn equal_values_in_another_key_order_hash_equally() {
        let a = json!({"x": 1, "y": [1, 2]});
        let b: Value = serde_json::from_str(r#"{"y":[1,2],"x":1}"#).unwrap();
        assert_eq!(sha256(&a), sha256(&b));
        assert_ne!(sha256(&a), sha256(&json!({"x": 1, "y": [2, 1]})));
        assert_eq!(sha256(&a), sha256_object(a.as_object().unwrap()));
    }

    #[test]
    fn the_hash_is_sha256_of_the_canonical_bytes() {
        let v = json!({"b": "2", "a": 1});
        let digest = Sha256::digest(br#"{"a":1,"b":"2"}"#);
        assert_eq!(sha256(&v), prefixed_hex(&digest));
        assert_eq!(sha256(&v).len(), 71);
    }
}
