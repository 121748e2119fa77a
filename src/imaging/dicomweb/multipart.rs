//! Incremental `multipart/related` parser (RFC 2046 §5.1.1, RFC 2387) for
//! WADO-RS responses (PS3.18 8.7.5, 10.4.3).
//!
//! Chunks are pushed as they arrive from the network; each part is handed out
//! as soon as its closing delimiter has been seen, as a [`Bytes`] split off
//! the buffer without copying. Only the part being received is buffered, so a
//! 300 MB series never sits in memory as one body.

use bytes::{Bytes, BytesMut};

/// One body part: its Content-Type header (if any) and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MultipartError {
    #[error("a body part exceeds {limit} bytes")]
    PartTooLarge { limit: usize },
    #[error("part headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    #[error("the multipart body ended before its closing boundary")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Before the first delimiter (the preamble is ignored).
    Preamble,
    /// Right after a delimiter: `--` (close) or padding + CRLF.
    AfterDelimiter,
    Headers,
    Body,
    /// After the close delimiter (the epilogue is ignored).
    Done,
}

const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Streaming parser. Call [`push`](Self::push), then [`next_part`](Self::next_part)
/// until it returns `None`; at the end of the stream call
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct MultipartParser {
    /// `CRLF -- boundary`: the delimiter as it appears before every part.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    /// Where the next delimiter search in the body starts: bytes before it
    /// have been scanned already and cannot start a delimiter.
    scan_from: usize,
    content_type: Option<String>,
    max_part_bytes: usize,
}

impl MultipartParser {
    pub fn new(boundary: &str, max_part_bytes: usize) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // A body may start with the delimiter without a leading CRLF
        // (RFC 2046: the CRLF belongs to the delimiter, and there is none
        // before the first one when the preamble is empty).
        buf.extend_from_slice(b"\r\n");
        Self {
            delimiter,
            buf,
            state: State::Preamble,
            scan_from: 0,
            content_type: None,
            max_part_bytes,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.state != State::Done {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete part, if one is complete in the buffer.
    pub fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        loop {
            match self.state {
                State::Preamble => {
                    let Some(i) = find(&self.buf[self.scan_from..], &self.delimiter) else {
                        // Keep only a possible delimiter prefix of the preamble.
                        let keep = self.delimiter.len() - 1;
                        if self.buf.len() > keep {
                            let _ = self.buf.split_to(self.buf.len() - keep);
                        }
                        self.scan_from = 0;
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::Malformed("no boundary found"));
                        }
                        return Ok(None);
                    };
                    let _ = self.buf.split_to(self.scan_from + i + self.delimiter.len());
                    self.scan_from = 0;
                    self.state = State::AfterDelimiter;
                }
                State::AfterDelimiter => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] == b"--" {
                        self.state = State::Done;
                        self.buf.clear();
                        return Ok(None);
                    }
                    let Some(eol) = find(&self.buf, b"\r\n") else {
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::Malformed("boundary line too long"));
                        }
                        return Ok(None);
                    };
                    // Only linear white space may follow the boundary.
                    if !self.buf[..eol].iter().all(|b| *b == b' ' || *b == b'\t') {
                        return Err(MultipartError::Malformed("text after a boundary"));
                    }
                    let _ = self.buf.split_to(eol + 2);
                    self.state = State::Headers;
                }
                State::Headers => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    let header_end = if &self.buf[..2] == b"\r\n" {
                        Some((0, 2))
                    } else {
                        find(&self.buf, b"\r\n\r\n").map(|i| (i, i + 4))
                    };
                    let Some((end, skip)) = header_end else {
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::HeadersTooLarge {
                                limit: MAX_HEADER_BYTES,
                            });
                        }
                        return Ok(None);
                    };
                    self.content_type = content_type_of(&self.buf[..end]);
                    let _ = self.buf.split_to(skip);
                    self.scan_from = 0;
                    self.state = State::Body;
                }
                State::Body => {
                    let Some(i) = find(&self.buf[self.scan_from..], &self.delimiter) else {
                        self.scan_from = self.buf.len().saturating_sub(self.delimiter.len() - 1);
                        if self.buf.len() > self.max_part_bytes + self.delimiter.len() {
                            return Err(MultipartError::PartTooLarge {
                                limit: self.max_part_bytes,
                            });
                        }
                        return Ok(None);
                    };
                    let end = self.scan_from + i;
                    if end > self.max_part_bytes {
                        return Err(MultipartError::PartTooLarge {
                            limit: self.max_part_bytes,
                        });
                    }
                    let body = self.buf.split_to(end).freeze();
                    let _ = self.buf.split_to(self.delimiter.len());
                    self.scan_from = 0;
                    self.state = State::AfterDelimiter;
                    return Ok(Some(Part {
                        content_type: self.content_type.take(),
                        body,
                    }));
                }
                State::Done => return Ok(None),
            }
        }
    }

    /// Bytes held for the part being received (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The stream has ended: it must have ended with the close delimiter.
    pub fn finish(&self) -> Result<(), MultipartError> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err(MultipartError::Truncated)
        }
    }
}

/// The Content-Type value among raw part headers, if any.
fn content_type_of(headers: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-type")
            .then(|| value.trim().to_owned())
    })
}

/// First occurrence of `needle` in `hay`. Scans for the first byte and then
/// compares, which is fast for delimiters that start with `\r`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = hay[from..=hay.len() - needle.len()]
            .iter()
            .position(|b| b == first)?;
        let at = from + i;
        if &hay[at + 1..at + needle.len()] == rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Parameters of a Content-Type value: `(mime type lowercased, [(name, value)])`,
/// names lowercased and quotes removed.
pub fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut it = value.split(';');
    let mime = it.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = it
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect();
    (mime, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(boundary: &str, parts: &[(&str, &[u8])], preamble: &str, epilogue: &str) -> Vec<u8> {
        let mut out = preamble.as_bytes().to_vec();
        for (ct, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            if !ct.is_empty() {
                out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--").as_bytes());
        out.extend_from_slice(epilogue.as_bytes());
        out
    }

    fn parse_in_chunks(
        data: &[u8],
        boundary: &str,
        chunk: usize,
    ) -> Result<Vec<Part>, MultipartError> {
        let mut p = MultipartParser::new(boundary, 1 << 20);
        let mut parts = Vec::new();
        for c in data.chunks(chunk) {
            p.push(c);
            while let Some(part) = p.next_part()? {
                parts.push(part);
            }
        }
        p.finish()?;
        Ok(parts)
    }

    #[test]
    fn parts_are_the_same_whatever_the_chunking() {
        // Bodies that contain CRLF, dashes and a near-miss of the delimiter.
        let a: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        // (RFC 2046 forbids the full delimiter inside a body, so only
        // prefixes of it appear.)
        let b = b"\r\n--boundar\r\n-- boundary \n--boundary \r\n--bound".to_vec();
        let c = b"".to_vec();
        let data = body(
            "boundary",
            &[
                ("application/dicom", &a),
                ("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", &b),
                ("", &c),
            ],
            "this is a preamble\r\n",
            "\r\nepilogue",
        );
        for chunk in [1, 2, 3, 5, 7, 13, 64, 1000, data.len()] {
            let parts = parse_in_chunks(&data, "boundary", chunk).unwrap();
            assert_eq!(parts.len(), 3, "chunk {chunk}");
            assert_eq!(parts[0].body, a);
            assert_eq!(parts[1].body, b);
            assert_eq!(parts[2].body, c);
            assert_eq!(parts[0].content_type.as_deref(), Some("application/dicom"));
            assert_eq!(parts[2].content_type, None);
        }
    }

    #[test]
    fn a_missing_close_delimiter_is_truncation() {
        let data = body("b0", &[("application/dicom", b"abc")], "", "");
        let cut = &data[..data.len() - 4];
        assert_eq!(
            parse_in_chunks(cut, "b0", 3).unwrap_err(),
            MultipartError::Truncated
        );
    }

    #[test]
    fn oversized_parts_are_refused_before_they_are_buffered_whole() {
        let big = vec![7u8; 10_000];
        let data = body("b1", &[("application/dicom", &big)], "", "");
        let mut p = MultipartParser::new("b1", 1000);
        let mut err = None;
        for c in data.chunks(100) {
            p.push(c);
            match p.next_part() {
                Ok(_) => assert!(p.buffered() <= 1000 + 200, "{}", p.buffered()),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(MultipartError::PartTooLarge { limit: 1000 }));
    }

    #[test]
    fn text_after_a_boundary_is_malformed() {
        let data = b"--b2garbage\r\n\r\nx\r\n--b2--";
        assert!(matches!(
            parse_in_chunks(data, "b2", 4),
            Err(MultipartError::Malformed(_))
        ));
    }

    #[test]
    fn content_type_parameters_are_parsed() {
        let (mime, params) =
            parse_content_type("Multipart/Related; type=\"application/dicom\"; boundary=\"ab:cd\"");
        assert_eq!(mime, "multipart/related");
        assert_eq!(
            params,
            vec![
                ("type".into(), "application/dicom".into()),
                ("boundary".into(), "ab:cd".into())
            ]
        );
    }

    #[test]
    fn find_locates_needles() {
        assert_eq!(find(b"abc\r\n--x", b"\r\n--x"), Some(3));
        assert_eq!(find(b"\r\r\n--", b"\r\n--"), Some(1));
        assert_eq!(find(b"\r\n-", b"\r\n--"), None);
        assert_eq!(find(b"", b"\r"), None);
    }
}
