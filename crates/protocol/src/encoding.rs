//! `Content-Encoding` of a batch body, and decompression that stops at the size limit.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use crate::{BatchError, EncodeError, Limits, ReasonCode};

/// How a body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// Reads the `Content-Encoding` header: absent or `identity`, `gzip` (or `x-gzip`), `zstd`,
    /// case-insensitive. Stacked encodings (`gzip, zstd`) are not supported.
    pub fn from_header(header: Option<&str>) -> Result<Encoding, BatchError> {
        let Some(text) = header else {
            return Ok(Encoding::Identity);
        };
        let text = text.trim_matches([' ', '\t']);
        if text.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else if text.eq_ignore_ascii_case("gzip") || text.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else if text.eq_ignore_ascii_case("zstd") {
            Ok(Encoding::Zstd)
        } else {
            Err(BatchError::new(
                ReasonCode::UnsupportedEncoding,
                "Content-Encoding must be identity, gzip or zstd",
            ))
        }
    }

    /// The `Content-Encoding` value an agent sends, `None` for identity (no header).
    pub const fn header_value(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
        }
    }
}

/// Bounds of the zstd window (as a power of two) the decoder may allocate: just enough for
/// `max_decompressed_bytes`, so a frame that asks for a larger window is refused before the
/// decoder allocates it.
const MIN_ZSTD_WINDOW_LOG: u32 = 20;
const MAX_ZSTD_WINDOW_LOG: u32 = 27;

/// Checks the raw body against `max_body_bytes` and decompresses it, stopping (with
/// `decompressed_too_large`) as soon as the output would pass `max_decompressed_bytes`, so a
/// compression bomb costs at most that much memory and the time to inflate that much.
pub fn decompress<'a>(
    body: &'a [u8],
    encoding: Encoding,
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, BatchError> {
    if body.len() > limits.max_body_bytes {
        return Err(body_too_large(limits.max_body_bytes));
    }
    match encoding {
        Encoding::Identity => {
            if body.len() > limits.max_decompressed_bytes {
                return Err(body_too_large(limits.max_decompressed_bytes));
            }
            Ok(Cow::Borrowed(body))
        }
        Encoding::Gzip => {
            let decoder = flate2::read::MultiGzDecoder::new(body);
            read_bounded(decoder, limits.max_decompressed_bytes, encoding).map(Cow::Owned)
        }
        Encoding::Zstd => {
            // A frame that declares its size lets a bomb be refused before inflating anything.
            if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(body)
                && declared > limits.max_decompressed_bytes as u64
            {
                return Err(decompressed_too_large(limits.max_decompressed_bytes));
            }
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|_| invalid_compression(encoding))?;
            decoder
                .window_log_max(zstd_window_log(limits.max_decompressed_bytes))
                .map_err(|_| invalid_compression(encoding))?;
            read_bounded(decoder, limits.max_decompressed_bytes, encoding).map(Cow::Owned)
        }
    }
}

/// Compresses an encoded body (agent side).
/// `json` compressed with `encoding` (`Identity` returns it as is).
pub fn compress(json: Vec<u8>, encoding: Encoding) -> Result<Vec<u8>, EncodeError> {
    match encoding {
        Encoding::Identity => Ok(json),
        Encoding::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&json).map_err(EncodeError::Compress)?;
            encoder.finish().map_err(EncodeError::Compress)
        }
        Encoding::Zstd => {
            zstd::stream::encode_all(json.as_slice(), zstd::DEFAULT_COMPRESSION_LEVEL)
                .map_err(EncodeError::Compress)
        }
    }
}

/// The window log that covers `max_bytes`: a valid body never needs a window larger than
/// itself.
fn zstd_window_log(max_bytes: usize) -> u32 {
    let needed = usize::BITS - max_bytes.saturating_sub(1).leading_zeros();
    needed.clamp(MIN_ZSTD_WINDOW_LOG, MAX_ZSTD_WINDOW_LOG)
}

fn read_bounded(
    mut reader: impl Read,
    max_bytes: usize,
    encoding: Encoding,
) -> Result<Vec<u8>, BatchError> {
    let mut output = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(output),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(invalid_compression(encoding)),
        };
        let wanted = output.len().saturating_add(n);
        if wanted > max_bytes {
            return Err(decompressed_too_large(max_bytes));
        }
        // Grow by doubling but never past the limit, so the buffer stays within it.
        if wanted > output.capacity() {
            let target = output
                .capacity()
                .saturating_mul(2)
                .max(wanted)
                .min(max_bytes);
            output.reserve_exact(target - output.len());
        }
        output.extend_from_slice(&chunk[..n]);
    }
}

fn invalid_compression(encoding: Encoding) -> BatchError {
    let name = encoding.header_value().unwrap_or("identity");
    BatchError::new(
        ReasonCode::InvalidCompression,
        format!("body is not valid {name} data"),
    )
}

fn body_too_large(max_bytes: usize) -> BatchError {
    BatchError::new(
        ReasonCode::BodyTooLarge,
        format!("body is larger than {max_bytes} bytes"),
    )
}

fn decompressed_too_large(max_bytes: usize) -> BatchError {
    BatchError::new(
        ReasonCode::DecompressedTooLarge,
        format!("body decompresses to more than {max_bytes} bytes"),
    )
}
