//! Server-sent events framing (the WHATWG `text/event-stream` rules both
//! providers use): lines end in LF, CRLF or CR; `data:` lines of one event
//! join with LF; `:` lines are comments (keep-alives); a blank line ends an
//! event. Bytes arrive in arbitrary TCP-sized pieces, so the parser keeps
//! the unfinished line between pushes.
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::model::ModelError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous piece ended in CR: a LF starting the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds a piece of the stream; returns the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, ModelError> {
        let mut events = Vec::new();
        for &byte in bytes {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8(line)
                        .map_err(|_| ModelError::Protocol("event stream is not UTF-8".into()))?;
                    if let Some(event) = self.end_line(&line) {
                        events.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        Ok(events)
    }

    fn end_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let event = if event.is_empty() {
                "message".into()
            } else {
                event
            };
            return Some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None; // a comment, e.g. a keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // `id`, `retry` and unknown fields do not matter here
        }
        None
    }
}

/// Turns a response body into its events. A body that ends in the middle
/// of an event drops that event, as the standard says.
pub fn sse_events(
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
) -> BoxStream<'static, Result<SseEvent, ModelError>> {
    futures::stream::unfold(
        (
            body,
            SseParser::default(),
            std::collections::VecDeque::new(),
        ),
        |(mut body, mut parser, mut ready)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((Ok(event), (body, parser, ready)));
                }
                match body.next().await? {
                    Ok(bytes) => match parser.push(&bytes) {
                        Ok(events) => ready.extend(events),
                        Err(error) => return Some((Err(error), (body, parser, ready))),
                    },
                    Err(error) => {
                        let error = ModelError::Interrupted(error.to_string());
                        return Some((Err(error), (body, parser, ready)));
                    }
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &str, piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            events.extend(parser.push(chunk).unwrap());
        }
        events
    }

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_every_line_ending_and_piece_size_alike() {
        let lf = ": keep-alive\n\nevent: delta\ndata: one\ndata:  two\n\ndata:{\"x\":1}\nid: 7\nretry: 10\n\n";
        let expected = vec![event("delta", "one\n two"), event("message", "{\"x\":1}")];
        for text in [
            lf.to_owned(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            for piece in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    parse_in_pieces(&text, piece),
                    expected,
                    "{text:?} / {piece}"
                );
            }
        }
    }

    #[test]
    fn a_multibyte_character_split_across_pieces_survives() {
        let text = "data: héllo → ✓\n\n";
        assert_eq!(
            parse_in_pieces(text, 1),
            vec![event("message", "héllo → ✓")]
        );
    }

    #[test]
    fn events_without_data_and_unfinished_events_are_dropped() {
        assert!(parse_in_pieces("event: ping\n\n", 4).is_empty());
        assert!(parse_in_pieces("data: half", 4).is_empty());
        assert_eq!(parse_in_pieces("data\n\n", 4), vec![event("message", "")]);
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error() {
        let mut parser = SseParser::default();
        assert!(matches!(
            parser.push(b"data: \xff\xfe\n\n"),
            Err(ModelError::Protocol(_))
        ));
    }
}
