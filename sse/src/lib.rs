//! One bounded `text/event-stream` decoder for every place Portcullis reads server-sent events
//! from a peer it does not control: the proxy's direct `tools/call` client and legacy HTTP+SSE
//! transport, and the operator's discovery probe.
//!
//! A crate of its own, below both the proxy and the operator (neither may depend on the other,
//! and an event-stream codec is no API meaning for `crds`). No I/O and no dependencies beyond
//! the error derive: callers feed it the body's chunks however they read them.
//!
//! The decoder follows the WHATWG rules (lines end with CRLF, LF or CR, also across chunks; a
//! leading byte order mark is skipped; `data` lines are joined with LF; a blank line dispatches
//! an event that has data; comments and `id`/`retry` fields are ignored) and refuses an event
//! larger than its limit *before* buffering it: the bytes it holds for one event (the line
//! still waiting for its end plus the data so far) never pass the limit by more than one
//! chunk, so a peer that streams an endless line or an endless event gets an error, not the
//! process's memory.
//!
//! Hand-written rather than taken from a crate: rmcp's `sse-stream` has no size limit at all
//! (its caller could only check an event after the whole of it was buffered), and the direct
//! `tools/call` path is tuned allocation for allocation; this is the decoder that path already
//! used, lifted unchanged.

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event` field, when the event named itself.
    pub event: Option<String>,
    /// The `data` lines, joined with LF.
    pub data: String,
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// One event (or one line) grew past the decoder's limit.
    #[error("server-sent event larger than {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: usize,
    },
    /// An event's data is not UTF-8.
    #[error("a server-sent event that is not UTF-8")]
    NotUtf8,
}

/// The UTF-8 byte order mark, skipped at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental decoder: [`Decoder::feed`] it the body's chunks in order, and it appends
/// every event they complete.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in CR: a leading LF belongs to it.
    skip_lf: bool,
    started: bool,
    limit: usize,
}

impl Decoder {
    /// A decoder at the start of a stream that refuses any event over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Decoder {
            partial: Vec::new(),
            event: None,
            data: Vec::new(),
            has_data: false,
            skip_lf: false,
            started: false,
            limit,
        }
    }

    /// The limit this decoder was made with.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many bytes the decoder holds for the event in progress (never more than the limit
    /// plus the last chunk).
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.data.len()
    }

    /// Decodes the next chunk of the stream, appending the events it completes to `out`. After
    /// an error the stream is not to be read further.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        let mut chunk = chunk;
        if !self.started && !chunk.is_empty() {
            // A UTF-8 byte order mark may open the stream, and may arrive split across chunks:
            // a start shorter than the mark that could still be one is held until it can be
            // told apart (the usual first chunk, longer than the mark, is not copied).
            if self.partial.is_empty() && chunk.len() >= BOM.len() {
                self.started = true;
                chunk = chunk.strip_prefix(BOM).unwrap_or(chunk);
            } else {
                let mut start = std::mem::take(&mut self.partial);
                start.extend_from_slice(chunk);
                if start.len() < BOM.len() && BOM.starts_with(&start) {
                    self.partial = start;
                    if self.partial.len() > self.limit {
                        return Err(Error::TooLarge { limit: self.limit });
                    }
                    return Ok(());
                }
                self.started = true;
                return self.feed(start.strip_prefix(BOM).unwrap_or(&start), out);
            }
        }
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line_end = &rest[..end];
            let mut next = end + 1;
            if rest[end] == b'\r' {
                if next < rest.len() {
                    if rest[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            if self.partial.is_empty() {
                self.line(line_end, out)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(line_end);
                self.line(&line, out)?;
            }
            rest = &rest[next..];
        }
        self.partial.extend_from_slice(rest);
        if self.data.len() + self.partial.len() > self.limit {
            return Err(Error::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            let event = self.event.take();
            if std::mem::take(&mut self.has_data) {
                let data = String::from_utf8(data).map_err(|_| Error::NotUtf8)?;
                out.push(Event { event, data });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.has_data = true;
                self.data.extend_from_slice(value);
                if self.data.len() > self.limit {
                    return Err(Error::TooLarge { limit: self.limit });
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: Option<&str>, data: &str) -> Event {
        Event {
            event: name.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn the_decoder_follows_the_line_rules() {
        let mut d = Decoder::new(1024);
        let mut out = Vec::new();
        // CR, LF and CRLF endings, a CR at a chunk's end whose LF starts the next chunk, a BOM,
        // multi-line data, a field without a colon, an event name, comments, id and retry.
        for chunk in [
            &b"\xEF\xBB\xBFdata: a\r"[..],
            b"\ndata:b\rdata\n\n",
            b": c\nid: 3\nretry: 10\nevent: note\ndata: x\r\n\r\n",
            b"event: lost\n\n",
            b"data:  two spaces\n\n",
        ] {
            d.feed(chunk, &mut out).unwrap();
        }
        assert_eq!(
            out,
            vec![
                event(None, "a\nb\n"),
                event(Some("note"), "x"),
                event(None, " two spaces"),
            ]
        );
    }

    #[test]
    fn an_event_split_at_every_byte_decodes_as_a_whole() {
        let stream =
            b"event: endpoint\r\ndata: /messages?id=1\r\n\r\ndata: {\"a\":\r\ndata: 1}\n\n";
        let mut whole = Vec::new();
        Decoder::new(1024).feed(stream, &mut whole).unwrap();
        let mut d = Decoder::new(1024);
        let mut bytewise = Vec::new();
        for b in stream {
            d.feed(std::slice::from_ref(b), &mut bytewise).unwrap();
        }
        assert_eq!(whole, bytewise);
        assert_eq!(
            whole,
            vec![
                event(Some("endpoint"), "/messages?id=1"),
                event(None, "{\"a\":\n1}")
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_split_across_chunks_is_skipped() {
        // Found by the `sse` fuzz target: the mark was only recognised whole in the first
        // chunk, so a stream whose first chunks split it lost its first line ("\u{feff}data"
        // is no field), here the whole event.
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        let mut whole = Vec::new();
        Decoder::new(64).feed(stream, &mut whole).unwrap();
        assert_eq!(whole, vec![event(None, "x")]);
        for split in [1, 2, 3] {
            let mut d = Decoder::new(64);
            let mut out = Vec::new();
            for chunk in [&b""[..], &stream[..split], &stream[split..]] {
                d.feed(chunk, &mut out).unwrap();
            }
            assert_eq!(out, whole, "split after {split} bytes");
        }
        let mut d = Decoder::new(64);
        let mut bytewise = Vec::new();
        for b in stream {
            d.feed(std::slice::from_ref(b), &mut bytewise).unwrap();
        }
        assert_eq!(bytewise, whole);
        // A start that only looks like the mark is kept: here it is an unknown field's line.
        let mut d = Decoder::new(64);
        let mut out = Vec::new();
        for chunk in [&b"\xEF"[..], b"x\ndata: y\n\n"] {
            d.feed(chunk, &mut out).unwrap();
        }
        assert_eq!(out, vec![event(None, "y")]);
    }

    #[test]
    fn an_event_over_the_limit_is_refused_before_it_ends() {
        let mut d = Decoder::new(16);
        let mut out = Vec::new();
        d.feed(b"data: 0123456789", &mut out).unwrap();
        assert_eq!(
            d.feed(b"abcdefgh", &mut out),
            Err(Error::TooLarge { limit: 16 })
        );
        // Data lines add up.
        let mut d = Decoder::new(16);
        d.feed(b"data: 0123456789\n", &mut out).unwrap();
        assert!(d.feed(b"data: 0123456789\n", &mut out).is_err());
        // The limit is per event.
        let mut d = Decoder::new(16);
        for _ in 0..10 {
            d.feed(b"data: 0123456789\n\n", &mut out).unwrap();
        }
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn an_endless_line_is_refused_and_what_is_held_stays_within_the_limit_and_one_chunk() {
        let mut d = Decoder::new(1000);
        let mut out = Vec::new();
        let chunk = [b'x'; 64];
        let mut fed = 0;
        let err = loop {
            match d.feed(&chunk, &mut out) {
                Ok(()) => fed += chunk.len(),
                Err(e) => break e,
            }
            assert!(d.buffered() <= d.limit() + chunk.len());
            assert!(fed < 10_000, "an endless line was never refused");
        };
        assert_eq!(err, Error::TooLarge { limit: 1000 });
        assert!(d.buffered() <= 1000 + chunk.len());
        // The same for endless empty data lines, which only grow the event.
        let mut d = Decoder::new(100);
        let refused = (0..1000).any(|_| d.feed(b"data:\n", &mut out).is_err());
        assert!(refused && out.is_empty());
    }

    #[test]
    fn data_that_is_not_utf8_is_refused_and_names_are_read_lossily() {
        let mut out = Vec::new();
        assert_eq!(
            Decoder::new(64).feed(b"data: \xff\n\n", &mut out),
            Err(Error::NotUtf8)
        );
        Decoder::new(64)
            .feed(b"event: \xffx\ndata: y\n\n", &mut out)
            .unwrap();
        assert_eq!(out, vec![event(Some("\u{fffd}x"), "y")]);
    }
}
