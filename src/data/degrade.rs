//! Controlled degradations with a known sign (DESIGN.md section 2): each makes a photo worse
//! in one respect, at a severity in (0, 1], and belongs to the MFAM level whose attributes it
//! changes. Pretraining ranks every original above its degraded copies.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::image::{ImageError, decode_rgb};

/// Which MFAM level a degradation speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Low,
    Middle,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    Blur,
    Noise,
    Jpeg,
    Overexposure,
    Underexposure,
    Desaturation,
    Tilt,
    BadCrop,
}

impl Degradation {
    pub const ALL: [Degradation; 8] = [
        Self::Blur,
        Self::Noise,
        Self::Jpeg,
        Self::Overexposure,
        Self::Underexposure,
        Self::Desaturation,
        Self::Tilt,
        Self::BadCrop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Blur => "blur",
            Self::Noise => "noise",
            Self::Jpeg => "jpeg",
            Self::Overexposure => "overexposure",
            Self::Underexposure => "underexposure",
            Self::Desaturation => "desaturation",
            Self::Tilt => "tilt",
            Self::BadCrop => "bad_crop",
        }
    }

    /// Pixel-level flaws are low level; geometry and framing are composition, middle level.
    pub fn level(self) -> Level {
        match self {
            Self::Tilt | Self::BadCrop => Level::Middle,
            _ => Level::Low,
        }
    }

    /// The degraded copy of `image` at `severity` in (0, 1] (clamped). `seed` fixes the
    /// random parts (noise, which corner a bad crop keeps), so a copy can be made again.
    pub fn apply(self, image: &RgbImage, severity: f32, seed: u64) -> Result<RgbImage, ImageError> {
        let s = severity.clamp(0.0, 1.0);
        let side = image.width().min(image.height()) as f32;
        Ok(match self {
            // Sigma up to 1.5% of the shorter side (3.4 px at 224 px).
            Self::Blur => image::imageops::blur(image, (0.3 + 0.015 * side * s).max(0.3)),
            Self::Noise => add_noise(image, 0.02 + 0.13 * s, seed),
            Self::Jpeg => jpeg(image, (40.0 - 35.0 * s).round() as u8)?,
            // Exposure in stops: up to +2 (clipping highlights) or -2.5.
            Self::Overexposure => map_linear(image, |v| v * 2f32.powf(0.5 + 1.5 * s)),
            Self::Underexposure => map_linear(image, |v| v * 2f32.powf(-(0.7 + 1.8 * s))),
            Self::Desaturation => desaturate(image, 0.4 + 0.6 * s),
            Self::Tilt => rotate_and_fill(image, tilt_degrees(s, seed)),
            Self::BadCrop => bad_crop(image, 0.35 + 0.3 * s, seed),
        })
    }
}

/// sRGB 8-bit to linear light and back, so that exposure is changed as a camera would.
fn to_linear(v: u8) -> f32 {
    let c = v as f32 / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn to_srgb(v: f32) -> u8 {
    let c = v.clamp(0.0, 1.0);
    let s = if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    };
    (s * 255.0).round() as u8
}

fn map_linear(image: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let table: Vec<u8> = (0..=255u8).map(|v| to_srgb(f(to_linear(v)))).collect();
    let mut out = image.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = table[*c as usize];
        }
    }
    out
}

/// A small deterministic generator (SplitMix64) so that a copy depends on its seed alone.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// Gaussian noise of standard deviation `sigma` (on 0..=1), independent per channel.
fn add_noise(image: &RgbImage, sigma: f32, seed: u64) -> RgbImage {
    let mut rng = SplitMix(seed);
    let mut out = image.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            let v = *c as f32 / 255.0 + sigma * rng.normal();
            *c = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

fn jpeg(image: &RgbImage, quality: u8) -> Result<RgbImage, ImageError> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut bytes), quality.max(1))
        .encode_image(image)
        .map_err(|e| ImageError::Decode(format!("JPEG encoding: {e}")))?;
    decode_rgb(&bytes)
}

/// Blends each pixel towards its luma by `amount` (1 = grey).
fn desaturate(image: &RgbImage, amount: f32) -> RgbImage {
    let mut out = image.clone();
    for p in out.pixels_mut() {
        let y = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
        for c in p.0.iter_mut() {
            *c = (*c as f32 + amount * (y - *c as f32))
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Rotates by `degrees` (bilinear), then crops the largest centred rectangle of the same
/// aspect ratio with no empty corners and scales it back to the original size, as a tilted
/// shot looks.
/// The rotation `Tilt` applies at `severity` with `seed`: 3 to 12 degrees, positive when the
/// horizon ends up sloping down to the right (content turned clockwise).
pub fn tilt_degrees(severity: f32, seed: u64) -> f32 {
    let s = severity.clamp(0.0, 1.0);
    (3.0 + 9.0 * s) * if seed % 2 == 0 { 1.0 } else { -1.0 }
}

fn rotate_and_fill(image: &RgbImage, degrees: f32) -> RgbImage {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let t = degrees.to_radians();
    let (sin, cos) = (t.sin().abs(), t.cos());
    // Scale so that the rotated image still covers the whole frame.
    let scale = (w * cos + h * sin) / w;
    let scale = scale.max((w * sin + h * cos) / h);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let (s, c) = (t.sin(), t.cos());
    let mut out = RgbImage::new(image.width(), image.height());
    for (x, y, p) in out.enumerate_pixels_mut() {
        let dx = (x as f32 + 0.5 - cx) / scale;
        let dy = (y as f32 + 0.5 - cy) / scale;
        let sx = c * dx + s * dy + cx - 0.5;
        let sy = -s * dx + c * dy + cy - 0.5;
        *p = bilinear(image, sx, sy);
    }
    out
}

fn bilinear(image: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at =
        |xi: i64, yi: i64| image.get_pixel(xi.clamp(0, w - 1) as u32, yi.clamp(0, h - 1) as u32);
    let mut out = [0u8; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let v = at(x0, y0)[k] as f32 * (1.0 - fx) * (1.0 - fy)
            + at(x0 + 1, y0)[k] as f32 * fx * (1.0 - fy)
            + at(x0, y0 + 1)[k] as f32 * (1.0 - fx) * fy
            + at(x0 + 1, y0 + 1)[k] as f32 * fx * fy;
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// Keeps a window of `1 - cut` of each side pushed into one corner (chosen by `seed`), so the
/// frame slices through the composition, and scales it back to the original size.
fn bad_crop(image: &RgbImage, cut: f32, seed: u64) -> RgbImage {
    let (w, h) = image.dimensions();
    let cw = ((w as f32 * (1.0 - cut)).round() as u32).clamp(1, w);
    let ch = ((h as f32 * (1.0 - cut)).round() as u32).clamp(1, h);
    let corner = SplitMix(seed).next() % 4;
    let x = if corner % 2 == 0 { 0 } else { w - cw };
    let y = if corner / 2 == 0 { 0 } else { h - ch };
    let window = image::imageops::crop_imm(image, x, y, cw, ch).to_image();
    image::imageops::resize(&window, w, h, FilterType::CatmullRom)
}
