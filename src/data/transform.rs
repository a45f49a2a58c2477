//! Resize, crop and normalise to a CHW float array, as HF's `CLIPImageProcessor` does: resize
//! the shorter side with bicubic (Catmull-Rom, PIL's BICUBIC, antialiased like PIL), crop,
//! scale to [0, 1], subtract the mean and divide by the standard deviation per channel.

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::image::{ImageError, check_dimensions};
use crate::model::vision::Normalization;

/// Where the square is cut from the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    Center,
    /// Uniformly placed; for training-time augmentation.
    Random,
}

/// A fully specified transform; `data::ImageConfig` plus the encoder's own size and statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Side of the square output.
    pub size: usize,
    /// The shorter side after resizing, before cropping (>= size).
    pub resize_shorter: usize,
    pub crop: Crop,
    pub normalization: Normalization,
}

impl Transform {
    /// The same transform with a centre crop: how evaluation and inference see an image
    /// (deterministic, whatever training drew).
    pub fn centred(&self) -> Self {
        Self {
            crop: Crop::Center,
            ..self.clone()
        }
    }

    /// Resizes, crops and normalises one image into `[3, size, size]` floats (channel-major).
    pub fn apply(&self, image: &RgbImage, rng: &mut impl Rng) -> Result<Vec<f32>, ImageError> {
        Ok(self.normalize(&self.crop(image, rng)?))
    }

    /// The resize and crop alone: a `size` x `size` image, on which pretraining applies its
    /// degradations before `normalize`.
    pub fn crop(&self, image: &RgbImage, rng: &mut impl Rng) -> Result<RgbImage, ImageError> {
        let (w, h) = image.dimensions();
        check_dimensions(w, h)?;
        let resized = resize_shorter(image, self.resize_shorter)?;
        let (w, h) = (resized.width() as usize, resized.height() as usize);
        let size = self.size;
        if w < size || h < size {
            return Err(ImageError::Decode(format!(
                "resized to {w}x{h}, smaller than the {size}px crop"
            )));
        }
        let (left, top) = match self.crop {
            // HF's center_crop rounds the offset as int((dim - size) / 2).
            Crop::Center => ((w - size) / 2, (h - size) / 2),
            Crop::Random => (
                rng.random_range(0..=w - size),
                rng.random_range(0..=h - size),
            ),
        };
        Ok(
            image::imageops::crop_imm(&resized, left as u32, top as u32, size as u32, size as u32)
                .to_image(),
        )
    }

    /// An image's pixels as `[3, H, W]` floats (channel-major) with the encoder's statistics.
    pub fn normalize(&self, image: &RgbImage) -> Vec<f32> {
        let (mean, std) = self.normalization.mean_std();
        let (w, h) = (image.width() as usize, image.height() as usize);
        let plane = w * h;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                let v = f32::from(px[c]) / 255.0;
                out[c * plane + i] = (v - mean[c]) / std[c];
            }
        }
        out
    }
}

/// Output size of HF's shortest-edge resize: the shorter side becomes `target`, the longer
/// side `int(target * long / short)`.
pub fn shorter_side_size(width: u32, height: u32, target: u32) -> (u32, u32) {
    let scale = |long: u32, short: u32| {
        let size = u64::from(target) * u64::from(long) / u64::from(short.max(1));
        u32::try_from(size).unwrap_or(u32::MAX)
    };
    if width <= height {
        (target, scale(height, width))
    } else {
        (scale(width, height), target)
    }
}

fn resize_shorter(image: &RgbImage, target: usize) -> Result<RgbImage, ImageError> {
    let (w, h) = shorter_side_size(image.width(), image.height(), target as u32);
    if (w, h) == image.dimensions() {
        return Ok(image.clone());
    }
    let src = ImageRef::new(
        image.width(),
        image.height(),
        image.as_raw(),
        PixelType::U8x3,
    )
    .map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    RgbImage::from_raw(w, h, dst.into_vec())
        .ok_or_else(|| ImageError::Decode("resize produced a buffer of the wrong size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_matches_hf_rounding() {
        assert_eq!(shorter_side_size(451, 300, 224), (336, 224));
        assert_eq!(shorter_side_size(300, 451, 224), (224, 336));
        assert_eq!(shorter_side_size(512, 512, 224), (224, 224));
    }
}
