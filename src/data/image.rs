//! Image decoding that never panics: JPEG, PNG and WebP, with EXIF orientation applied (as
//! PIL's `ImageOps.exif_transpose`, which photo datasets assume), and truncated JPEGs caught.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Why one image could not be used. Carried per image so that a loader can skip and count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("missing file")]
    Missing,
    #[error("cannot read: {0}")]
    Io(String),
    #[error("not a JPEG, PNG or WebP image")]
    UnknownFormat,
    #[error("unsupported format {0:?}")]
    Unsupported(ImageFormat),
    #[error("truncated JPEG (no end-of-image marker)")]
    Truncated,
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("empty image ({0}x{1})")]
    Empty(u32, u32),
}

/// Reads and decodes an image file into 8-bit RGB, upright.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::Missing,
        _ => ImageError::Io(e.to_string()),
    })?;
    decode_rgb(&bytes)
}

/// Decodes an in-memory image into 8-bit RGB, upright.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnknownFormat)?;
    match format {
        ImageFormat::Jpeg => {
            // The JPEG decoder fills a cut-off scan with grey instead of failing, so a
            // half-downloaded photo would train silently; the end-of-image marker tells.
            if !has_jpeg_end(bytes) {
                return Err(ImageError::Truncated);
            }
        }
        ImageFormat::Png | ImageFormat::WebP => {}
        other => return Err(ImageError::Unsupported(other)),
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Decode(e.to_string()))?;
    image.apply_orientation(orientation);
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::Empty(image.width(), image.height()));
    }
    Ok(image.to_rgb8())
}

/// A complete JPEG ends with EOI (FF D9); some cameras append a few padding bytes after it.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
