//! Image decoding that never panics and never allocates more than a stated amount: JPEG, PNG
//! and WebP, with EXIF orientation applied (as PIL's `ImageOps.exif_transpose`, which photo
//! datasets assume), truncated JPEGs caught, and the size a header declares checked before a
//! single pixel is decoded, as PIL's `DecompressionBombError` does.

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
    #[error("aspect ratio of {0}x{1} exceeds {MAX_ASPECT_RATIO}:1")]
    ExtremeAspect(u32, u32),
    #[error(
        "{0}x{1} pixels exceeds the {2}-pixel limit (a decompression bomb, or a photo to downscale first)"
    )]
    TooManyPixels(u32, u32, u64),
}

/// Longest side over shortest side accepted: wide panoramas pass, while a 1-pixel-high strip,
/// which would become hundreds of megabytes once its short side is resized, is skipped.
pub const MAX_ASPECT_RATIO: u32 = 20;

/// The most pixels an image may declare: PIL's limit (twice its `MAX_IMAGE_PIXELS`, where PIL
/// stops warning and refuses). A 179-megapixel RGB image is 537 MB once decoded.
pub const MAX_PIXELS: u64 = 178_956_970;

/// The most bytes a decoder may produce a pixel: 16 bits an RGBA channel.
const MAX_DECODED_BYTES_PER_PIXEL: u64 = 8;

/// Reads and decodes an image file into 8-bit RGB, upright. Only a regular file of at most
/// `files::MAX_IMAGE_BYTES` is read; what it decodes into is bounded by `MAX_PIXELS`.
///
/// This is the one place a photo enters: every reader (loaders, both training loops, the
/// held-out sets, `evaluate`, `infer`) calls it and applies `BadImagePolicy` to its error, so a
/// photo is usable everywhere or skipped everywhere.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    decode_rgb(&read_image_file(path)?)
}

/// The bytes of an image file that `load_rgb` would accept, to copy it as it is.
pub fn checked_bytes(path: &Path) -> Result<Vec<u8>, ImageError> {
    let bytes = read_image_file(path)?;
    decode_rgb(&bytes)?;
    Ok(bytes)
}

fn read_image_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    crate::files::read_bytes(path, crate::files::MAX_IMAGE_BYTES).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if e.get_ref().is_none() => ImageError::Missing,
        _ => ImageError::Io(e.to_string()),
    })
}

/// Decodes an in-memory image into 8-bit RGB, upright; refuses images no transform could use
/// (empty, over `MAX_ASPECT_RATIO`) and those over `MAX_PIXELS`, before decoding them.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_rgb_within(bytes, MAX_PIXELS)
}

/// As `decode_rgb`, with a lower pixel limit (a server's, where many requests decode at once);
/// `max_pixels` above `MAX_PIXELS` is taken as `MAX_PIXELS`.
pub fn decode_rgb_within(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let max_pixels = max_pixels.min(MAX_PIXELS);
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnknownFormat)?;
    match format {
        ImageFormat::Jpeg => {
            // The JPEG decoder fills a cut-off scan with grey instead of failing, so a
            // half-downloaded photo would train silently; the end-of-image marker tells.
            if jpeg_structure(bytes) == JpegEnd::Truncated {
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
    let (w, h) = decoder.dimensions();
    check_dimensions_within(w, h, max_pixels)?;
    // `from_decoder` allocates what the header declares without asking the limits, so the
    // declared size is checked above and the decoder's own allocations are bounded here.
    let max_bytes = max_pixels * MAX_DECODED_BYTES_PER_PIXEL;
    if decoder.total_bytes() > max_bytes {
        return Err(ImageError::TooManyPixels(w, h, max_pixels));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_bytes);
    decoder
        .set_limits(limits)
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Decode(e.to_string()))?;
    image.apply_orientation(orientation);
    check_dimensions_within(image.width(), image.height(), max_pixels)?;
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Whether an image of `w` x `h` may be decoded and transformed.
pub fn check_dimensions(w: u32, h: u32) -> Result<(), ImageError> {
    check_dimensions_within(w, h, MAX_PIXELS)
}

fn check_dimensions_within(w: u32, h: u32, max_pixels: u64) -> Result<(), ImageError> {
    if w == 0 || h == 0 {
        return Err(ImageError::Empty(w, h));
    }
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ImageError::TooManyPixels(w, h, max_pixels));
    }
    if u64::from(w.max(h)) > u64::from(MAX_ASPECT_RATIO) * u64::from(w.min(h)) {
        return Err(ImageError::ExtremeAspect(w, h));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum JpegEnd {
    /// The marker walk reached EOI (FF D9).
    Complete,
    /// The data ran out before EOI.
    Truncated,
    /// The marker structure is broken; the decoder will say how.
    Unparsed,
}

/// Walks the JPEG marker segments (ITU T.81 annex B) to its end-of-image marker. Searching for
/// FF D9 near the end of the file would not do: phones append trailers after EOI (Samsung
/// metadata, Motion Photo videos), and FF D9 can occur inside a cut-off file's thumbnail.
fn jpeg_structure(b: &[u8]) -> JpegEnd {
    let mut i = 2;
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            return JpegEnd::Unparsed;
        }
        let marker = b[i + 1];
        match marker {
            // Fill bytes before a marker.
            0xFF => {
                i += 1;
                continue;
            }
            0xD9 => return JpegEnd::Complete,
            // Markers without a length field: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        if i + 3 >= b.len() {
            return JpegEnd::Truncated;
        }
        i += 2 + usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if marker == 0xDA {
            // Entropy-coded data runs until a marker other than a stuffed 00 or a restart.
            loop {
                if i + 1 >= b.len() {
                    return JpegEnd::Truncated;
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                    break;
                }
                i += 1;
            }
        }
    }
    JpegEnd::Truncated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_walk_finds_the_end_or_its_absence() {
        // SOI, a 4-byte APP0, SOS with a 2-byte header, data with a stuffed FF 00 and a
        // restart marker, then EOI.
        let whole = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF,
            0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xD9,
        ];
        assert_eq!(jpeg_structure(&whole), JpegEnd::Complete);
        let mut trailer = whole.to_vec();
        trailer.extend_from_slice(b"\x00\x01 an appended video or maker trailer");
        assert_eq!(jpeg_structure(&trailer), JpegEnd::Complete);
        for cut in 3..whole.len() {
            assert_eq!(
                jpeg_structure(&whole[..cut]),
                JpegEnd::Truncated,
                "cut at {cut}"
            );
        }
        assert_eq!(jpeg_structure(&[0xFF, 0xD8, 0x12, 0x34]), JpegEnd::Unparsed);
    }
}
