//! Pseudo-attributes measured on pixels: the self-supervision targets of pretraining
//! (docs/design.md §2). Low level: exposure, contrast, saturation, colourfulness (Hasler &
//! Süsstrunk, 2003), sharpness (variance of the Laplacian; Pech-Pacheco et al., 2000), noise
//! (Immerkær, 1996), colour temperature, and JPEG blockiness. Middle level: where the visual
//! energy lies against the rule of thirds, left-right symmetry, horizon tilt, simplicity,
//! depth of field, and how much of the energy the frame's border cuts through. Every measure is computed on a copy scaled to at most `ANALYSIS_SIDE`
//! pixels a side, so the values do not depend on the file's resolution and cost little.

use image::RgbImage;
use image::imageops::FilterType;

/// The longer side the measures are computed at.
pub const ANALYSIS_SIDE: u32 = 256;

/// The low-level attributes, in the order of `LowAttributes::to_vec`.
pub const LOW_NAMES: [&str; 8] = [
    "exposure",
    "contrast",
    "saturation",
    "colourfulness",
    "sharpness",
    "noise",
    "colour_temperature",
    "blockiness",
];

/// The middle-level attributes, in the order of `MiddleAttributes::to_vec`.
pub const MIDDLE_NAMES: [&str; 6] = [
    "thirds_distance",
    "symmetry",
    "horizon_tilt",
    "simplicity",
    "depth_of_field",
    "border_energy",
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowAttributes {
    /// Mean luma, 0 (black) ..= 1 (white).
    pub exposure: f32,
    /// RMS contrast: the standard deviation of luma.
    pub contrast: f32,
    /// Mean HSV saturation, 0 ..= 1.
    pub saturation: f32,
    /// Hasler & Süsstrunk's M on 0..=1 channels.
    pub colourfulness: f32,
    /// Variance of the 4-neighbour Laplacian of luma.
    pub sharpness: f32,
    /// Immerkær's estimate of the noise standard deviation of luma.
    pub noise: f32,
    /// Mean red minus mean blue: positive is warm, negative cool.
    pub colour_temperature: f32,
    /// Mean luma step across the 8-pixel JPEG block borders over the mean step elsewhere,
    /// minus 1: 0 for an image without block structure. Measured at full resolution, where
    /// the blocks are.
    pub blockiness: f32,
}

impl LowAttributes {
    pub fn to_vec(&self) -> Vec<f32> {
        vec![
            self.exposure,
            self.contrast,
            self.saturation,
            self.colourfulness,
            self.sharpness,
            self.noise,
            self.colour_temperature,
            self.blockiness,
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiddleAttributes {
    /// Distance from the centroid of gradient energy to the nearest rule-of-thirds point, in
    /// units of the image diagonal: small is well placed.
    pub thirds_distance: f32,
    /// 1 minus the mean absolute luma difference between the image and its mirror image.
    pub symmetry: f32,
    /// Angle in degrees of the dominant near-horizontal edges (within 30 degrees of the
    /// horizontal), weighted by gradient energy; 0 for a level horizon.
    pub horizon_tilt: f32,
    /// The share of pixels with little gradient energy: high for simple, uncluttered images.
    pub simplicity: f32,
    /// Sharpness of the central third over that of the border, as log ratio: high when the
    /// subject is sharp against a soft background.
    pub depth_of_field: f32,
    /// The share of gradient energy in the outer tenth of the frame: high when the frame
    /// slices through the subject.
    pub border_energy: f32,
}

impl MiddleAttributes {
    pub fn to_vec(&self) -> Vec<f32> {
        vec![
            self.thirds_distance,
            self.symmetry,
            self.horizon_tilt,
            self.simplicity,
            self.depth_of_field,
            self.border_energy,
        ]
    }
}

/// Luma (Rec. 601) on 0..=1, row-major.
struct Gray {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Gray {
    fn of(image: &RgbImage) -> Self {
        let data = image
            .pixels()
            .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0)
            .collect();
        Self {
            width: image.width() as usize,
            height: image.height() as usize,
            data,
        }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// `f` over the interior pixels (one-pixel border left out).
    fn interior(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (1..self.height.saturating_sub(1))
            .flat_map(move |y| (1..self.width.saturating_sub(1)).map(move |x| (x, y)))
    }

    fn laplacian(&self, x: usize, y: usize) -> f32 {
        self.at(x - 1, y) + self.at(x + 1, y) + self.at(x, y - 1) + self.at(x, y + 1)
            - 4.0 * self.at(x, y)
    }

    /// Sobel gradient `(gx, gy)`.
    fn gradient(&self, x: usize, y: usize) -> (f32, f32) {
        let p =
            |dx: isize, dy: isize| self.at((x as isize + dx) as usize, (y as isize + dy) as usize);
        let gx = p(1, -1) + 2.0 * p(1, 0) + p(1, 1) - p(-1, -1) - 2.0 * p(-1, 0) - p(-1, 1);
        let gy = p(-1, 1) + 2.0 * p(0, 1) + p(1, 1) - p(-1, -1) - 2.0 * p(0, -1) - p(1, -1);
        (gx, gy)
    }
}

fn mean_var(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for v in values {
        n += 1.0;
        sum += v as f64;
        sq += (v as f64) * (v as f64);
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = sum / n;
    (mean as f32, (sq / n - mean * mean).max(0.0) as f32)
}

/// The analysis copy: the longer side scaled down to `ANALYSIS_SIDE` (never up).
fn analysis_copy(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let longer = w.max(h);
    if longer <= ANALYSIS_SIDE {
        return image.clone();
    }
    let scale = ANALYSIS_SIDE as f64 / longer as f64;
    let nw = ((w as f64 * scale).round() as u32).max(1);
    let nh = ((h as f64 * scale).round() as u32).max(1);
    image::imageops::resize(image, nw, nh, FilterType::Triangle)
}

pub fn low_attributes(image: &RgbImage) -> LowAttributes {
    let blockiness = blockiness(&Gray::of(image));
    let small = analysis_copy(image);
    let gray = Gray::of(&small);
    let (exposure, var) = mean_var(gray.data.iter().copied());
    let saturation = mean_var(small.pixels().map(|p| {
        let max = p.0.iter().copied().max().unwrap_or(0) as f32;
        let min = p.0.iter().copied().min().unwrap_or(0) as f32;
        if max > 0.0 { (max - min) / max } else { 0.0 }
    }))
    .0;
    let (rg_mean, rg_var) = mean_var(small.pixels().map(|p| (p[0] as f32 - p[1] as f32) / 255.0));
    let (yb_mean, yb_var) = mean_var(
        small
            .pixels()
            .map(|p| (0.5 * (p[0] as f32 + p[1] as f32) - p[2] as f32) / 255.0),
    );
    let colourfulness =
        (rg_var + yb_var).sqrt() + 0.3 * (rg_mean * rg_mean + yb_mean * yb_mean).sqrt();
    let sharpness = mean_var(gray.interior().map(|(x, y)| gray.laplacian(x, y))).1;
    let colour_temperature =
        mean_var(small.pixels().map(|p| (p[0] as f32 - p[2] as f32) / 255.0)).0;
    LowAttributes {
        exposure,
        contrast: var.sqrt(),
        saturation,
        colourfulness,
        sharpness,
        noise: immerkaer_noise(&gray),
        colour_temperature,
        blockiness,
    }
}

/// Immerkær (1996): the image convolved with the difference of two Laplacians keeps little
/// but noise; sigma = sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |I * N|.
fn immerkaer_noise(g: &Gray) -> f32 {
    if g.width < 3 || g.height < 3 {
        return 0.0;
    }
    let mut sum = 0f64;
    for (x, y) in g.interior() {
        let v = g.at(x - 1, y - 1) - 2.0 * g.at(x, y - 1) + g.at(x + 1, y - 1)
            - 2.0 * g.at(x - 1, y)
            + 4.0 * g.at(x, y)
            - 2.0 * g.at(x + 1, y)
            + g.at(x - 1, y + 1)
            - 2.0 * g.at(x, y + 1)
            + g.at(x + 1, y + 1);
        sum += v.abs() as f64;
    }
    let n = 6.0 * (g.width - 2) as f64 * (g.height - 2) as f64;
    ((std::f64::consts::FRAC_PI_2).sqrt() * sum / n) as f32
}

fn blockiness(g: &Gray) -> f32 {
    let (mut at_border, mut n_border, mut inside, mut n_inside) = (0f64, 0f64, 0f64, 0f64);
    for y in 0..g.height {
        for x in 1..g.width {
            let step = (g.at(x, y) - g.at(x - 1, y)).abs() as f64;
            if x % 8 == 0 {
                at_border += step;
                n_border += 1.0;
            } else {
                inside += step;
                n_inside += 1.0;
            }
        }
    }
    if n_border == 0.0 || inside == 0.0 {
        return 0.0;
    }
    ((at_border / n_border) / (inside / n_inside) - 1.0) as f32
}

pub fn middle_attributes(image: &RgbImage) -> MiddleAttributes {
    let small = analysis_copy(image);
    let g = Gray::of(&small);
    let (w, h) = (g.width as f32, g.height as f32);
    let energies: Vec<(usize, usize, f32, f32, f32)> = g
        .interior()
        .map(|(x, y)| {
            let (gx, gy) = g.gradient(x, y);
            (x, y, gx, gy, (gx * gx + gy * gy).sqrt())
        })
        .collect();
    let total: f32 = energies.iter().map(|e| e.4).sum();

    let thirds_distance = if total > 0.0 {
        let cx = energies.iter().map(|e| e.0 as f32 * e.4).sum::<f32>() / total / w;
        let cy = energies.iter().map(|e| e.1 as f32 * e.4).sum::<f32>() / total / h;
        let mut best = f32::MAX;
        for tx in [1.0 / 3.0, 2.0 / 3.0] {
            for ty in [1.0 / 3.0, 2.0 / 3.0] {
                let d = (((cx - tx) * w).powi(2) + ((cy - ty) * h).powi(2)).sqrt();
                best = best.min(d);
            }
        }
        best / (w * w + h * h).sqrt()
    } else {
        0.0
    };

    let mirror = mean_var((0..g.height).flat_map(|y| {
        let g = &g;
        (0..g.width).map(move |x| (g.at(x, y) - g.at(g.width - 1 - x, y)).abs())
    }))
    .0;

    // An edge's line runs perpendicular to its gradient: near-horizontal lines have gradients
    // near vertical. The angle is that of the line, in degrees, counter-clockwise positive.
    let (mut weighted, mut weight) = (0f64, 0f64);
    for &(_, _, gx, gy, e) in &energies {
        if e < 0.1 {
            continue;
        }
        let line = (gx / gy).atan().to_degrees();
        if gy != 0.0 && line.abs() < 30.0 {
            weighted += (line * e) as f64;
            weight += e as f64;
        }
    }
    let horizon_tilt = if weight > 0.0 {
        (weighted / weight) as f32
    } else {
        0.0
    };

    let flat = energies.iter().filter(|e| e.4 < 0.1).count();
    let simplicity = flat as f32 / energies.len().max(1) as f32;

    let third = |x: usize, y: usize| {
        let inside_x = x * 3 >= g.width && x * 3 < 2 * g.width;
        let inside_y = y * 3 >= g.height && y * 3 < 2 * g.height;
        inside_x && inside_y
    };
    let centre = mean_var(
        g.interior()
            .filter(|&(x, y)| third(x, y))
            .map(|(x, y)| g.laplacian(x, y)),
    )
    .1;
    let border = mean_var(
        g.interior()
            .filter(|&(x, y)| !third(x, y))
            .map(|(x, y)| g.laplacian(x, y)),
    )
    .1;
    let depth_of_field = ((centre + 1e-6) / (border + 1e-6)).ln();

    let band = |v: usize, n: usize| v * 10 < n || v * 10 >= 9 * n;
    let border_energy = if total > 0.0 {
        energies
            .iter()
            .filter(|e| band(e.0, g.width) || band(e.1, g.height))
            .map(|e| e.4)
            .sum::<f32>()
            / total
    } else {
        0.0
    };

    MiddleAttributes {
        border_energy,
        thirds_distance,
        symmetry: 1.0 - mirror,
        horizon_tilt,
        simplicity,
        depth_of_field,
    }
}
