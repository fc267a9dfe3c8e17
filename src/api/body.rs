//! Reading a JSON request body within a size limit, with our error format for every failure.
//!
//! A body may come compressed (`Content-Encoding: gzip` or `deflate`): the limit then applies to
//! the inflated bytes, which are inflated as they arrive and never past the limit, and a body that
//! inflates more than [`MAX_INFLATION`] times its compressed size is refused as a bomb.
//!
//! A body must arrive whole within its deadline and, after its first second, at no less than a
//! minimum rate ([`BodyPace`]): a client that trickles a byte at a time is answered 408 within
//! seconds, however often it sends.
//!
//! A body refused before its end (too large, or of a type we do not take) is read on and thrown
//! away, within bounds, before the answer goes out: a client that sends its whole body before it
//! reads (most do) would otherwise meet a connection reset instead of our JSON error
//! (RFC 9112, section 9.6).

use std::io::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Frame;

use super::ApiError;

/// Most bytes of a refused body read and thrown away; past it the connection is closed.
const DISCARD_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Longest time spent throwing a refused body away.
const DISCARD_MAX_TIME: Duration = Duration::from_secs(5);

/// Most a compressed body may inflate, as a multiple of its compressed size: JSON events compress
/// 3 to 10 times; a body past this is a compression bomb, refused as it inflates.
pub const MAX_INFLATION: usize = 100;

/// Inflated bytes are checked against [`MAX_INFLATION`] once past this many (a tiny body may
/// inflate more, harmlessly).
const INFLATION_CHECKED_FROM: usize = 16 * 1024;

/// How a body must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// The whole body, from when the handler starts reading it.
    pub timeout: Duration,
    /// The least average rate once [`PACE_GRACE`] has passed; 0 for none.
    pub min_bytes_per_sec: u64,
}

impl Default for BodyPace {
    /// Whole within 10 s; after its first second, 1 KiB a second or faster.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            min_bytes_per_sec: 1024,
        }
    }
}

/// Largest body of `POST /api/event` and `POST /api/identify` unless told otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest body of `POST /api/events` and `POST /api/rerank` unless told otherwise.
pub const DEFAULT_MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

/// How long a body may take before its rate is held to [`BodyPace::min_bytes_per_sec`].
pub const PACE_GRACE: Duration = Duration::from_secs(1);

/// The deadline of a body's next frame: the body's own, or sooner if the bytes so far have
/// arrived slower than the minimum rate.
struct Pace {
    started: Instant,
    pace: BodyPace,
    received: usize,
}

impl Pace {
    fn new(pace: BodyPace) -> Self {
        Self {
            started: Instant::now(),
            pace,
            received: 0,
        }
    }

    fn deadline(&self) -> Instant {
        let whole = self.started + self.pace.timeout;
        if self.pace.min_bytes_per_sec == 0 {
            return whole;
        }
        let earned =
            Duration::from_secs_f64(self.received as f64 / self.pace.min_bytes_per_sec as f64);
        whole.min(self.started + PACE_GRACE + earned)
    }

    /// The body's next frame, or 408 if it does not come by [`Pace::deadline`].
    async fn next(&mut self, body: &mut Body) -> Result<Option<Frame<Bytes>>, ApiError> {
        let frame = tokio::time::timeout_at(self.deadline(), body.frame())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        let frame = frame.transpose().map_err(read_error)?;
        if let Some(data) = frame.as_ref().and_then(Frame::data_ref) {
            self.received += data.len();
        }
        Ok(frame)
    }
}

/// Reads the body of a JSON request. `Content-Type` may be absent, `application/json`, or
/// `text/plain` (what `navigator.sendBeacon` sends without a CORS preflight); anything else is 415.
/// Takes the whole request, so that its headers are read where they are, not copied out.
pub async fn read_json(request: Request, limit: usize, pace: BodyPace) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/json")
            && !essence.eq_ignore_ascii_case("text/plain")
        {
            discard(body).await;
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let pace = Pace::new(pace);
    match Coding::of(headers)? {
        Coding::Identity => read_within(body, limit, pace).await,
        coding => inflate_within(body, limit, coding, pace).await,
    }
}

/// The content codings the API takes (RFC 9110, section 8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    /// HTTP's `deflate` is the zlib format (RFC 1950), as browsers' `CompressionStream` writes it.
    Deflate,
}

impl Coding {
    fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(Coding::Identity);
        };
        let name = value.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        match name.as_str() {
            "" | "identity" => Ok(Coding::Identity),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            _ => Err(ApiError::UnsupportedEncoding(clip(&name))),
        }
    }
}

fn clip(name: &str) -> String {
    name.chars().take(32).collect()
}

/// The inflated body, or 413 once it passes `limit` bytes or inflates more than
/// [`MAX_INFLATION`] times; 400 if the stream is corrupt or cut short.
async fn inflate_within(
    mut body: Body,
    limit: usize,
    coding: Coding,
    mut pace: Pace,
) -> Result<Bytes, ApiError> {
    let mut inflater = Inflater::new(coding, limit);
    while let Some(frame) = pace.next(&mut body).await? {
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if let Err(error) = inflater.feed(&data) {
            discard(body).await;
            return Err(error);
        }
    }
    inflater.finish()
}

/// A streaming decoder writing into a buffer that refuses to grow past the limit.
struct Inflater {
    decoder: Decoder,
    /// Compressed bytes fed so far.
    compressed: usize,
    limit: usize,
}

enum Decoder {
    Gzip(flate2::write::GzDecoder<Capped>),
    Deflate(flate2::write::ZlibDecoder<Capped>),
}

impl Inflater {
    fn new(coding: Coding, limit: usize) -> Self {
        let out = Capped {
            bytes: BytesMut::new(),
            limit,
        };
        let decoder = match coding {
            Coding::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(out)),
            _ => Decoder::Deflate(flate2::write::ZlibDecoder::new(out)),
        };
        Inflater {
            decoder,
            compressed: 0,
            limit,
        }
    }

    /// Inflates `data`, a kilobyte at a time so that the ratio is checked as it grows.
    fn feed(&mut self, data: &[u8]) -> Result<(), ApiError> {
        for piece in data.chunks(1024) {
            self.compressed += piece.len();
            let (written, inflated) = match &mut self.decoder {
                Decoder::Gzip(d) => (d.write_all(piece), d.get_ref().bytes.len()),
                Decoder::Deflate(d) => (d.write_all(piece), d.get_ref().bytes.len()),
            };
            written.map_err(|error| inflate_error(error, self.limit))?;
            // A stream of empty blocks inflates to nothing: the compressed size has the limit too.
            if self.compressed > self.limit {
                return Err(ApiError::BodyTooLarge(self.limit));
            }
            if inflated > INFLATION_CHECKED_FROM && inflated > self.compressed * MAX_INFLATION {
                return Err(ApiError::CompressionBomb(MAX_INFLATION));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Bytes, ApiError> {
        let finished = match self.decoder {
            Decoder::Gzip(d) => d.finish(),
            Decoder::Deflate(d) => d.finish(),
        };
        finished
            .map(|out| out.bytes.freeze())
            .map_err(|error| inflate_error(error, self.limit))
    }
}

fn inflate_error(error: std::io::Error, limit: usize) -> ApiError {
    if error.get_ref().is_some_and(|inner| inner.is::<PastLimit>()) {
        ApiError::BodyTooLarge(limit)
    } else {
        ApiError::Undecodable(error.to_string())
    }
}

/// The inflated bytes, refusing any write past `limit`.
struct Capped {
    bytes: BytesMut,
    limit: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("the inflated body passed its limit")]
struct PastLimit;

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(PastLimit));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The whole body, or 413 once it passes `limit` bytes (the rest thrown away). A body that
/// arrives as one frame is kept as it came, without a copy; the frames of a longer one are
/// gathered into a buffer that grows with what arrived (never with what the client declared:
/// a `Content-Length` costs nothing to lie in).
async fn read_within(mut body: Body, limit: usize, mut pace: Pace) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut received = 0;
    while let Some(frame) = pace.next(&mut body).await? {
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received += data.len();
        if received > limit {
            discard(body).await;
            return Err(ApiError::BodyTooLarge(limit));
        }
        if first.is_none() && gathered.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            gathered.extend_from_slice(&first);
        }
        gathered.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| gathered.freeze()))
}

/// Reads what is left of a refused body and drops it, for at most [`DISCARD_MAX_BYTES`] and
/// [`DISCARD_MAX_TIME`]; a body beyond either is left unread, and the server closes the
/// connection after the answer.
async fn discard(mut body: Body) {
    let mut left = DISCARD_MAX_BYTES;
    let _ = tokio::time::timeout(DISCARD_MAX_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let read = frame.data_ref().map_or(0, Bytes::len);
            match left.checked_sub(read) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    })
    .await;
}

/// The body's framing is broken (chunked encoding gone wrong, the connection cut short): 400,
/// as a corrupt compressed body is.
fn read_error(error: axum::Error) -> ApiError {
    ApiError::BrokenBody(error.into_inner().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn text_that_compresses_twice_inflates_whole() {
        let mut state: u64 = 42;
        let text: Vec<u8> = (0..40 * 1024)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b"0123456789abcdef"[(state >> 60) as usize]
            })
            .collect();
        let compressed = gzip(&text);
        let mut inflater = Inflater::new(Coding::Gzip, 64 * 1024);
        inflater.feed(&compressed).unwrap();
        assert_eq!(inflater.finish().unwrap(), text);
    }

    fn in_frames(frames: &[&'static str]) -> Body {
        let frames: Vec<_> = frames
            .iter()
            .map(|frame| Ok::<_, std::convert::Infallible>(Bytes::from_static(frame.as_bytes())))
            .collect();
        Body::from_stream(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_in_several_frames_is_read_whole_and_in_order() {
        let pace = || Pace::new(BodyPace::default());
        for frames in [
            &["{}"][..],
            &[],
            &["", "{\"a\"", ":1}"],
            &["{", "", "}", ""],
        ] {
            let body = read_within(in_frames(frames), 64, pace()).await.unwrap();
            assert_eq!(body, frames.concat().as_bytes());
        }
        let too_large = read_within(in_frames(&["0123", "45678"]), 8, pace()).await;
        assert!(matches!(too_large, Err(ApiError::BodyTooLarge(8))));
    }
}
