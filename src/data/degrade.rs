//! Controlled degradations with a known sign (docs/design.md §2): each makes a photo worse
//! in one respect, at a severity in (0, 1], and belongs to the MFAM level whose attributes it
//! changes. Pretraining ranks every original above its degraded copies.
//!
//! `Degradation::SHIFTED` are kinds kept for evaluation: other flaws, made with other formulas
//! than the training kinds (`Degradation::ALL`), so that a held-out check measures what a model
//! learnt about quality rather than the fingerprints of the training formulas. Their formulas
//! follow outside references, checked in tests/degradations.rs against fixtures made by
//! scripts/fixtures/make_shift_fixtures.py: brightness and contrast as Pillow's `ImageEnhance`
//! (in sRGB, where training changes exposure in linear light), a Gaussian blur as SciPy's
//! `gaussian_filter` (training uses the `image` crate's), a rotation as Pillow's `rotate`
//! with its empty corners left black (training crops them away).

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
    /// sRGB values scaled up, clipping the highlights (Pillow's `Brightness`).
    Brighter,
    /// sRGB values pulled towards the mean grey (Pillow's `Contrast`): a washed-out look.
    LowContrast,
    /// An exact Gaussian kernel, reflected at the edges (SciPy's `gaussian_filter`).
    GaussianBlur,
    /// A warm or cool colour cast (red and blue scaled in opposite directions).
    ColourCast,
    /// Corners darkened with the squared distance from the centre.
    Vignette,
    /// Rotated about the centre with the empty corners left black (Pillow's `rotate`).
    Rotation,
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

    /// Kinds kept for evaluation: see the module's documentation.
    pub const SHIFTED: [Degradation; 6] = [
        Self::Brighter,
        Self::LowContrast,
        Self::GaussianBlur,
        Self::ColourCast,
        Self::Vignette,
        Self::Rotation,
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
            Self::Brighter => "brighter",
            Self::LowContrast => "low_contrast",
            Self::GaussianBlur => "gaussian_blur",
            Self::ColourCast => "colour_cast",
            Self::Vignette => "vignette",
            Self::Rotation => "rotation",
        }
    }

    /// Pixel-level flaws are low level; geometry and framing are composition, middle level.
    pub fn level(self) -> Level {
        match self {
            Self::Tilt | Self::BadCrop | Self::Rotation => Level::Middle,
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
            Self::Brighter => enhance_brightness(image, 1.25 + 0.75 * s),
            Self::LowContrast => enhance_contrast(image, 0.6 - 0.35 * s),
            // Sigma 0.4% to 1.2% of the shorter side (0.9 to 2.7 px at 224 px).
            Self::GaussianBlur => gaussian_blur(image, side * (0.004 + 0.008 * s)),
            Self::ColourCast => colour_cast(image, (0.12 + 0.18 * s) * sign(seed)),
            Self::Vignette => vignette(image, 0.35 + 0.4 * s),
            Self::Rotation => rotate_black_corners(image, rotation_degrees(s, seed)),
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
    (3.0 + 9.0 * s) * sign(seed)
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
    let x = if corner.is_multiple_of(2) { 0 } else { w - cw };
    let y = if corner / 2 == 0 { 0 } else { h - ch };
    let window = image::imageops::crop_imm(image, x, y, cw, ch).to_image();
    image::imageops::resize(&window, w, h, FilterType::CatmullRom)
}

/// The rotation `Rotation` applies at `severity` with `seed`: 4 to 12 degrees, positive when
/// the content is turned counter-clockwise (Pillow's convention).
pub fn rotation_degrees(severity: f32, seed: u64) -> f32 {
    (4.0 + 8.0 * severity.clamp(0.0, 1.0)) * sign(seed)
}

/// +1 or -1 from the seed's parity: which way a cast or a rotation goes.
fn sign(seed: u64) -> f32 {
    if seed.is_multiple_of(2) { 1.0 } else { -1.0 }
}

/// Pillow's `Image.blend(degenerate, image, factor)`, per 8-bit value: the arithmetic in f32
/// and the result truncated towards zero after clipping, as its C loop does.
fn blend(degenerate: u8, value: u8, factor: f32) -> u8 {
    let v = degenerate as f32 + factor * (value as f32 - degenerate as f32);
    v.clamp(0.0, 255.0) as u8
}

/// `ImageEnhance.Brightness(image).enhance(factor)`: a blend with black.
fn enhance_brightness(image: &RgbImage, factor: f32) -> RgbImage {
    let mut out = image.clone();
    for c in out.iter_mut() {
        *c = blend(0, *c, factor);
    }
    out
}

/// `ImageEnhance.Contrast(image).enhance(factor)`: a blend with a grey image at the mean of
/// the photo's luma (Pillow's `L` conversion, rounded to an integer).
fn enhance_contrast(image: &RgbImage, factor: f32) -> RgbImage {
    let luma_sum: u64 = image
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u64::from);
            (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
        })
        .sum();
    let count = (u64::from(image.width()) * u64::from(image.height())).max(1);
    let mean = (luma_sum as f64 / count as f64 + 0.5) as u8;
    let mut out = image.clone();
    for c in out.iter_mut() {
        *c = blend(mean, *c, factor);
    }
    out
}

/// SciPy's `gaussian_filter(x, sigma=(s, s, 0), mode="reflect", truncate=4.0)` on the 8-bit
/// values, rounded: a separable kernel of radius `round(4 sigma)`, edges mirrored about the
/// outer pixel's edge (`d c b a | a b c d`).
fn gaussian_blur(image: &RgbImage, sigma: f32) -> RgbImage {
    let sigma = f64::from(sigma.max(0.1));
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut weights: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    for w in &mut weights {
        *w /= total;
    }
    let (w, h) = (image.width() as usize, image.height() as usize);
    let values: Vec<f64> = image.iter().map(|&v| f64::from(v)).collect();
    // Axis 0 (rows) first, then axis 1, as SciPy walks the axes.
    let rows = convolve_axis(&values, w, h, &weights, radius, true);
    let both = convolve_axis(&rows, w, h, &weights, radius, false);
    let mut out = image.clone();
    for (o, v) in out.iter_mut().zip(both) {
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// One pass of a separable kernel over interleaved RGB values `w` wide and `h` high, down the
/// columns (`vertical`) or along the rows, edges mirrored about the outer pixel's edge.
fn convolve_axis(
    values: &[f64],
    w: usize,
    h: usize,
    weights: &[f64],
    radius: i64,
    vertical: bool,
) -> Vec<f64> {
    let reflect = |i: i64, n: usize| -> usize {
        let (n, period) = (n as i64, 2 * n as i64);
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - 1 - m }) as usize
    };
    let mut out = vec![0.0; values.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, wt) in weights.iter().enumerate() {
                    let offset = k as i64 - radius;
                    let (xx, yy) = if vertical {
                        (x, reflect(y as i64 + offset, h))
                    } else {
                        (reflect(x as i64 + offset, w), y)
                    };
                    acc += wt * values[(yy * w + xx) * 3 + c];
                }
                out[(y * w + x) * 3 + c] = acc;
            }
        }
    }
    out
}

/// `value * gain`, rounded and clipped to 8 bits.
fn scaled(value: u8, gain: f32) -> u8 {
    (value as f32 * gain).round().clamp(0.0, 255.0) as u8
}

/// Red scaled by `1 + amount` and blue by `1 - amount` in sRGB (warm for `amount` > 0, cool
/// below).
fn colour_cast(image: &RgbImage, amount: f32) -> RgbImage {
    let mut out = image.clone();
    for p in out.pixels_mut() {
        for (c, gain) in p.0.iter_mut().zip([1.0 + amount, 1.0, 1.0 - amount]) {
            *c = scaled(*c, gain);
        }
    }
    out
}

/// Each value scaled by `1 - strength (r / r_max)^2`, `r` the distance of the pixel's centre
/// from the image's centre and `r_max` half the diagonal.
fn vignette(image: &RgbImage, strength: f32) -> RgbImage {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let r_max_sq = (w * w + h * h) / 4.0;
    let mut out = image.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let dx = x as f32 + 0.5 - w / 2.0;
        let dy = y as f32 + 0.5 - h / 2.0;
        let gain = 1.0 - strength * (dx * dx + dy * dy) / r_max_sq;
        for c in p.0.iter_mut() {
            *c = scaled(*c, gain);
        }
    }
    out
}

/// Pillow's `image.rotate(degrees, resample=BILINEAR)`: counter-clockwise about the centre,
/// same size, the corners the photo no longer covers left black.
fn rotate_black_corners(image: &RgbImage, degrees: f32) -> RgbImage {
    let (w, h) = (image.width() as f64, image.height() as f64);
    let t = -f64::from(degrees).to_radians();
    let (cos, sin) = (t.cos(), t.sin());
    let (cx, cy) = (w / 2.0, h / 2.0);
    let mut out = RgbImage::new(image.width(), image.height());
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
        let sx = cos * dx + sin * dy + cx;
        let sy = -sin * dx + cos * dy + cy;
        *p = bilinear_or_black(image, sx, sy);
    }
    out
}

/// Pillow's bilinear sample at `(x, y)` in pixel-edge coordinates: black when the point lies
/// outside the image, otherwise the four nearest pixel centres, clamped to the image, and the
/// result truncated as Pillow's filter does.
fn bilinear_or_black(image: &RgbImage, x: f64, y: f64) -> Rgb<u8> {
    let (w, h) = (image.width() as f64, image.height() as f64);
    if x < 0.0 || y < 0.0 || x >= w || y >= h {
        return Rgb([0, 0, 0]);
    }
    let (x, y) = (x - 0.5, y - 0.5);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f64, yi: f64, k: usize| -> f64 {
        let xi = xi.clamp(0.0, w - 1.0) as u32;
        let yi = yi.clamp(0.0, h - 1.0) as u32;
        f64::from(image.get_pixel(xi, yi)[k])
    };
    let mut out = [0u8; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let top = at(x0, y0, k) + (at(x0 + 1.0, y0, k) - at(x0, y0, k)) * fx;
        let bottom = at(x0, y0 + 1.0, k) + (at(x0 + 1.0, y0 + 1.0, k) - at(x0, y0 + 1.0, k)) * fx;
        *o = (top + (bottom - top) * fy).clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}
