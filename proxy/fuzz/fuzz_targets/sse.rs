//! The bounded `text/event-stream` decoder (`sse` crate) every upstream event stream goes
//! through. Input: a limit byte, a chunk-size byte, then the stream.
//!
//! Properties: what the decoder holds never passes its limit by more than the chunk just fed
//! (its documented bound); a stream fed in chunks that decodes without error decodes to the same
//! events when fed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, step, body @ ..] = data else {
        return;
    };
    let limit = 1 + usize::from(*limit) * 8;
    let step = 1 + usize::from(*step) % 97;

    let mut split = sse::Decoder::new(limit);
    let mut split_events = Vec::new();
    let mut split_ok = true;
    for chunk in body.chunks(step) {
        let fed = split.feed(chunk, &mut split_events);
        assert!(
            split.buffered() <= limit + chunk.len(),
            "holds {} bytes over a limit of {limit} and a chunk of {}",
            split.buffered(),
            chunk.len()
        );
        if fed.is_err() {
            split_ok = false;
            break;
        }
        assert!(split.buffered() <= limit);
    }

    let mut whole = sse::Decoder::new(limit);
    let mut whole_events = Vec::new();
    let whole_result = whole.feed(body, &mut whole_events);
    if split_ok {
        assert_eq!(
            whole_result,
            Ok(()),
            "refused whole, accepted in chunks of {step}"
        );
        assert_eq!(whole_events, split_events, "chunks of {step}");
    }
});
