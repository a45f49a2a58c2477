//! The data layer: datasets described in the config, decoded and transformed on worker threads,
//! delivered as typed batches. Bad images never stop a run unless the config says so.

pub mod attributes;
pub mod conversation;
pub mod cues;
pub mod degrade;
pub mod formats;
pub mod image;
pub mod instruct;
pub mod loader;
pub mod raters;
pub mod selfsup;
pub mod selfsup_instruct;
pub mod tasks;
pub mod transform;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::config::{Invalid, Validate, tagged};
use crate::model::VisionConfig;
use crate::model::vision::Normalization;
pub use formats::ava_captions::CaptionSplit;
pub use loader::{BadImagePolicy, Batch, Epoch, Loader, LoaderConfig, SampleSource, Skipped};
pub use transform::{Crop, Transform};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{what}: {reason}")]
    BadSample { what: String, reason: String },
    #[error("a data loading worker stopped unexpectedly")]
    WorkerLost,
}

/// Where the images (and their annotations) come from. `kind` selects the format.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Every JPEG, PNG and WebP file in a folder.
    Folder(FolderSource),
    /// A text file of image paths, one a line.
    List(ListSource),
    /// AVA: `AVA.txt`, the image folder, optionally an official split list of ids.
    Ava(AvaSource),
    /// AVA-Captions JSON, optionally restricted to one split.
    AvaCaptions(AvaCaptionsSource),
    /// FLICKR-AES per-worker ratings CSV.
    FlickrAes(FlickrAesSource),
    /// LLaVA-style conversation JSON.
    Llava(LlavaSource),
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const KINDS: &[&str] = &[
            "folder",
            "list",
            "ava",
            "ava_captions",
            "flickr_aes",
            "llava",
        ];
        let (kind, rest) = tagged::split(deserializer, KINDS)?;
        match kind {
            0 => tagged::fields(rest).map(Self::Folder),
            1 => tagged::fields(rest).map(Self::List),
            2 => tagged::fields(rest).map(Self::Ava),
            3 => tagged::fields(rest).map(Self::AvaCaptions),
            4 => tagged::fields(rest).map(Self::FlickrAes),
            _ => tagged::fields(rest).map(Self::Llava),
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self::Folder(FolderSource::default())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FolderSource {
    pub path: PathBuf,
    pub recursive: bool,
}

impl Default for FolderSource {
    /// The sample photos shipped in the repository (see data/samples/MANIFEST.csv).
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/samples"),
            recursive: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListSource {
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvaSource {
    pub ava_txt: PathBuf,
    pub images: PathBuf,
    pub split_list: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvaCaptionsSource {
    pub json: PathBuf,
    pub images: PathBuf,
    pub split: Option<CaptionSplit>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlickrAesSource {
    pub csv: PathBuf,
    pub images: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlavaSource {
    pub json: PathBuf,
    pub images: PathBuf,
}

impl SourceConfig {
    /// The distinct image files of the dataset, in annotation order.
    pub fn image_paths(&self) -> Result<Vec<PathBuf>, DataError> {
        let mut paths = match self {
            Self::Folder(s) => formats::scan_folder(&s.path, s.recursive)?,
            Self::List(s) => formats::read_list(&s.path)?,
            Self::Ava(s) => {
                let records = formats::ava::read_ava_txt(&s.ava_txt)?;
                let keep: Option<std::collections::HashSet<u64>> = match &s.split_list {
                    Some(list) => Some(formats::ava::read_id_list(list)?.into_iter().collect()),
                    None => None,
                };
                records
                    .iter()
                    .filter(|r| keep.as_ref().is_none_or(|k| k.contains(&r.image_id)))
                    .map(|r| r.image_path(&s.images))
                    .collect()
            }
            Self::AvaCaptions(s) => formats::ava_captions::read_ava_captions(&s.json)?
                .into_iter()
                .filter(|c| s.split.is_none_or(|split| split == c.split))
                .map(|c| s.images.join(c.filename))
                .collect(),
            Self::FlickrAes(s) => formats::flickr_aes::read_flickr_aes(&s.csv)?
                .into_iter()
                .map(|r| s.images.join(r.image))
                .collect(),
            Self::Llava(s) => formats::llava::read_llava(&s.json)?
                .into_iter()
                .flat_map(|c| c.images.into_iter().map(|i| s.images.join(i)))
                .collect(),
        };
        let mut seen = std::collections::HashSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        Ok(paths)
    }

    fn required_paths(&self) -> Vec<(&'static str, &Path)> {
        match self {
            Self::Folder(s) => vec![("path", &s.path)],
            Self::List(s) => vec![("path", &s.path)],
            Self::Ava(s) => vec![("ava_txt", &s.ava_txt), ("images", &s.images)],
            Self::AvaCaptions(s) => vec![("json", &s.json), ("images", &s.images)],
            Self::FlickrAes(s) => vec![("csv", &s.csv), ("images", &s.images)],
            Self::Llava(s) => vec![("json", &s.json), ("images", &s.images)],
        }
    }
}

/// How images become model input. Size and statistics default to the encoder's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Shorter side after resizing, before the crop; `None` = the encoder's input size.
    pub resize_shorter: Option<usize>,
    pub crop: Crop,
    /// `None` = the statistics the encoder was trained with.
    pub normalization: Option<Normalization>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            resize_shorter: None,
            crop: Crop::Center,
            normalization: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub source: SourceConfig,
    /// More datasets read after `source`, as one (CALM pretrains on eight unlabeled sources).
    pub extra_sources: Vec<SourceConfig>,
    pub image: ImageConfig,
    pub loader: LoaderConfig,
}

impl DataConfig {
    /// The distinct image files of `source` and then `extra_sources`.
    pub fn image_paths(&self) -> Result<Vec<PathBuf>, DataError> {
        let mut paths = self.source.image_paths()?;
        for source in &self.extra_sources {
            paths.extend(source.image_paths()?);
        }
        let mut seen = std::collections::HashSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        Ok(paths)
    }

    /// Every file and folder the data is read from (annotation files, image folders, lists).
    pub fn input_paths(&self) -> Vec<&Path> {
        std::iter::once(&self.source)
            .chain(&self.extra_sources)
            .flat_map(|s| s.required_paths().into_iter().map(|(_, p)| p))
            .collect()
    }

    /// The transform for an encoder.
    pub fn transform(&self, vision: &VisionConfig) -> Transform {
        let size = vision.image_size();
        Transform {
            size,
            resize_shorter: self.image.resize_shorter.unwrap_or(size),
            crop: self.image.crop,
            normalization: self.image.normalization.unwrap_or(vision.normalization()),
        }
    }
}

impl Validate for DataConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let sources = std::iter::once(("data.source".to_string(), &self.source)).chain(
            self.extra_sources
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("data.extra_sources.{i}"), s)),
        );
        for (key, source) in sources {
            for (name, path) in source.required_paths() {
                if path.as_os_str().is_empty() {
                    return Err(Invalid::new(format!("{key}.{name}"), "must be set"));
                }
            }
        }
        if !(1..=loader::MAX_BATCH_SIZE).contains(&self.loader.batch_size) {
            return Err(Invalid::new(
                "data.loader.batch_size",
                format!(
                    "{} is outside 1..={}",
                    self.loader.batch_size,
                    loader::MAX_BATCH_SIZE
                ),
            ));
        }
        if self.loader.num_workers > loader::MAX_WORKERS {
            return Err(Invalid::new(
                "data.loader.num_workers",
                format!("at most {}", loader::MAX_WORKERS),
            ));
        }
        if self.loader.prefetch_batches > loader::MAX_PREFETCH_BATCHES {
            return Err(Invalid::new(
                "data.loader.prefetch_batches",
                format!("at most {}", loader::MAX_PREFETCH_BATCHES),
            ));
        }
        Ok(())
    }
}

/// Image files decoded and transformed into `[3, H, W]` floats.
pub struct ImageFiles {
    pub paths: Vec<PathBuf>,
    pub transform: Transform,
}

impl SampleSource for ImageFiles {
    type Item = Vec<f32>;

    fn len(&self) -> usize {
        self.paths.len()
    }

    fn describe(&self, index: usize) -> String {
        self.paths[index].display().to_string()
    }

    fn load(&self, index: usize, rng: &mut StdRng) -> Result<Vec<f32>, Skipped> {
        let skipped = |reason: String| Skipped {
            index,
            what: self.describe(index),
            reason,
        };
        let path = &self.paths[index];
        let image = image::load_rgb(path).map_err(|e| skipped(e.to_string()))?;
        self.transform
            .apply(&image, rng)
            .map_err(|e| skipped(e.to_string()))
    }
}

/// The photos of `load_photos` that decoded, each with its index in the list given, and why
/// each other was left out.
pub type LoadedPhotos = (Vec<(usize, ::image::RgbImage)>, Vec<Skipped>);

/// Reads the photos of `paths` under `policy`: those that decode, with their index in
/// `paths`, and why each other was left out (`Skip`), or the first failure (`Fail`). The
/// readers of whole photo sets (held-out photos, evaluation folders) go through here, the
/// loaders through `ImageFiles`; both decode with `image::load_rgb`, so a photo is read or
/// skipped alike everywhere.
pub fn load_photos(paths: &[PathBuf], policy: BadImagePolicy) -> Result<LoadedPhotos, DataError> {
    let mut loaded = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        match image::load_rgb(path) {
            Ok(photo) => loaded.push((index, photo)),
            Err(e) => match policy {
                BadImagePolicy::Skip => skipped.push(Skipped {
                    index,
                    what: path.display().to_string(),
                    reason: e.to_string(),
                }),
                BadImagePolicy::Fail => {
                    return Err(DataError::BadSample {
                        what: path.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            },
        }
    }
    Ok((loaded, skipped))
}

/// A batch of images ready for an encoder.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// `[B, 3, size, size]`, row-major.
    pub pixels: Vec<f32>,
    pub size: usize,
}

impl ImageBatch {
    pub fn from_batch(batch: Batch<Vec<f32>>, size: usize) -> Self {
        Self {
            indices: batch.indices,
            pixels: batch.items.concat(),
            size,
        }
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// `pixel_values` as the encoders take them: `[B, 3, size, size]`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<4> {
        let shape = [self.len(), 3, self.size, self.size];
        Tensor::from_data(TensorData::new(self.pixels.clone(), shape), device)
    }
}

/// What one pass of the image pipeline over a dataset found.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Image files the dataset names.
    pub images: usize,
    /// Images decoded, transformed and batched.
    pub loaded: usize,
    pub batches: usize,
    /// Shape of the first batch's tensor, `[B, 3, H, W]`.
    pub first_batch_shape: Option<[usize; 4]>,
    pub skipped: Vec<Skipped>,
}

/// Runs the configured dataset once through decoding, transforms, batching and the transfer
/// to `device`: the check a researcher wants before a long run.
pub fn check_pipeline(
    data: &DataConfig,
    vision: &VisionConfig,
    seed: u64,
    device: &Device,
) -> Result<PipelineReport, DataError> {
    let paths = data.image_paths()?;
    let transform = data.transform(vision);
    let size = transform.size;
    let images = paths.len();
    let loader = Loader::new(ImageFiles { paths, transform }, data.loader.clone(), seed);
    let mut report = PipelineReport {
        images,
        loaded: 0,
        batches: 0,
        first_batch_shape: None,
        skipped: Vec::new(),
    };
    for batch in loader.epoch(0) {
        let batch = ImageBatch::from_batch(batch?, size);
        let tensor = batch.to_tensor(device);
        let dims = tensor.dims();
        report.first_batch_shape.get_or_insert(dims);
        report.loaded += dims[0];
        report.batches += 1;
    }
    report.skipped = loader.skipped();
    Ok(report)
}
