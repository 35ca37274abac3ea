//! gRPC's length-prefixed message framing, for the one message of a unary call.

use std::io::Read as _;

use bytes::{BufMut as _, Bytes, BytesMut};
use tonic::codegen::http::{HeaderName, HeaderValue};

/// The largest answer read from an upstream: the limit Temporal's own clients receive up to,
/// since history pages can be large.
pub(crate) const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// gRPC's headers read on every call, named once rather than parsed from text each time.
pub(crate) const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The compressed flag and the message length.
pub(crate) const HEADER_BYTES: usize = 5;

/// Why a body is not one gRPC message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes than the frame header, or than the length it declares.
    #[error("the body ends inside its message ({0} bytes)")]
    Truncated(usize),
    /// Bytes after the message: a unary call carries exactly one.
    #[error("the body holds more than one message")]
    Trailing,
    /// Over the limit, before or after decompression.
    #[error("the message exceeds {0} bytes")]
    TooLarge(usize),
    /// The message is compressed with something other than gzip.
    #[error("the message is compressed with {0:?}; this proxy accepts gzip")]
    Encoding(String),
    /// The gzip stream is corrupt.
    #[error("the gzip-compressed message cannot be decompressed: {0}")]
    Gzip(String),
}

/// The message framed in `body`, decompressed if its `grpc-encoding` is gzip; `Ok(None)` for
/// an empty body (an error answer carries no message). The boolean says it was compressed.
/// A message over `max` bytes, before or after decompression, is refused.
pub(crate) fn unframe(
    body: &Bytes,
    encoding: Option<&HeaderValue>,
    max: usize,
) -> Result<Option<(Bytes, bool)>, FrameError> {
    if body.is_empty() {
        return Ok(None);
    }
    let header = body
        .get(..HEADER_BYTES)
        .ok_or(FrameError::Truncated(body.len()))?;
    let length = declared_length(header);
    if length > max {
        return Err(FrameError::TooLarge(max));
    }
    let end = HEADER_BYTES + length;
    match body.len().cmp(&end) {
        std::cmp::Ordering::Less => return Err(FrameError::Truncated(body.len())),
        std::cmp::Ordering::Greater => return Err(FrameError::Trailing),
        std::cmp::Ordering::Equal => {}
    }
    let message = body.slice(HEADER_BYTES..);
    if header[0] == 0 {
        return Ok(Some((message, false)));
    }
    match encoding.map(HeaderValue::as_bytes) {
        Some(b"gzip") => Ok(Some((gunzip(&message, max)?, true))),
        other => Err(FrameError::Encoding(
            other.map_or("nothing".into(), |name| {
                String::from_utf8_lossy(name).into_owned()
            }),
        )),
    }
}

/// The length a frame header declares.
pub(crate) fn declared_length(header: &[u8]) -> usize {
    u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize
}

/// Stops reading at one byte over `max`, so a small bomb never grows past the limit.
fn gunzip(compressed: &[u8], max: usize) -> Result<Bytes, FrameError> {
    let mut message = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(max as u64 + 1)
        .read_to_end(&mut message)
        .map_err(|e| FrameError::Gzip(e.to_string()))?;
    if message.len() > max {
        return Err(FrameError::TooLarge(max));
    }
    Ok(message.into())
}

/// `message`, uncompressed, as a gRPC body.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(HEADER_BYTES + message.len());
    body.put_u8(0);
    body.put_u32(u32::try_from(message.len()).expect("messages are under 4 GiB"));
    body.put_slice(message);
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_framed_message_unframes_to_itself() {
        let body = frame(b"hello");
        assert_eq!(&body[..HEADER_BYTES], &[0, 0, 0, 0, 5]);
        assert_eq!(
            unframe(&body, None, 1024).unwrap(),
            Some((Bytes::from_static(b"hello"), false))
        );
        assert_eq!(unframe(&Bytes::new(), None, 1024).unwrap(), None);
    }

    #[test]
    fn gzip_messages_are_decompressed_and_others_refused() {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(b"hello").unwrap();
        let compressed = gzip.finish().unwrap();
        let mut body = frame(&compressed).to_vec();
        body[0] = 1;
        let body = Bytes::from(body);
        let gzip_header = HeaderValue::from_static("gzip");
        assert_eq!(
            unframe(&body, Some(&gzip_header), 1024).unwrap(),
            Some((Bytes::from_static(b"hello"), true))
        );
        let error = unframe(&body, Some(&HeaderValue::from_static("zstd")), 1024).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the message is compressed with \"zstd\"; this proxy accepts gzip"
        );
    }

    /// A gzip bomb: 4 MiB of zeros compress to about 4 KiB.
    #[test]
    fn a_message_that_decompresses_past_the_limit_is_refused_at_the_limit() {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&vec![0; 4 << 20]).unwrap();
        let mut body = frame(&gzip.finish().unwrap()).to_vec();
        assert!(body.len() < 8 << 10, "{} bytes", body.len());
        body[0] = 1;
        let gzip_header = HeaderValue::from_static("gzip");
        assert_eq!(
            unframe(&Bytes::from(body), Some(&gzip_header), 1 << 20),
            Err(FrameError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn bodies_that_are_not_one_message_are_refused() {
        let body = frame(b"hello");
        assert_eq!(
            unframe(&body.slice(..7), None, 1024),
            Err(FrameError::Truncated(7))
        );
        assert_eq!(
            unframe(&body.slice(..3), None, 1024),
            Err(FrameError::Truncated(3))
        );
        let twice = Bytes::from([body.to_vec(), body.to_vec()].concat());
        assert_eq!(unframe(&twice, None, 1024), Err(FrameError::Trailing));
        let huge = Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(unframe(&huge, None, 1024), Err(FrameError::TooLarge(1024)));
    }
}
