//! Builds a pretraining batch from photos: each photo is resized and cropped to the encoder's
//! size, paired with a seeded degraded copy there (so degradations act at the resolution the
//! encoder sees), both go through the frozen image encoder, and their cues through the frozen
//! text encoder. Rows `0..B` are the originals, `B..2B` their copies.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::SeedableRng;

use super::objective::PretrainBatch;
use crate::data::selfsup::{Example, PairConfig, PairError, make_pair};
use crate::data::transform::Transform;
use crate::model::text::{TextEncoder, TextError};
use crate::model::vision::frozen::FrozenEncoder;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("an empty batch")]
    Empty,
    #[error("photo {index}: {source}")]
    Photo { index: usize, source: PairError },
    #[error(transparent)]
    Text(#[from] TextError),
}

pub struct BatchBuilder<'a> {
    pub encoder: &'a FrozenEncoder,
    pub text: &'a TextEncoder,
    pub transform: &'a Transform,
    pub pairs: &'a PairConfig,
}

/// What a batch was made of, for logs and evaluation.
#[derive(Debug, Clone)]
pub struct BatchContents {
    pub batch: PretrainBatch,
    /// The 2B examples in row order.
    pub examples: Vec<Example>,
}

impl BatchBuilder<'_> {
    /// `photos` with optional captions; `seed` fixes crops, degradations and wording;
    /// `device` is where the batch lives (an autodiff device for training).
    pub fn build(
        &self,
        photos: &[(&RgbImage, Option<&str>)],
        seed: u64,
        device: &Device,
    ) -> Result<BatchContents, BatchError> {
        if photos.is_empty() {
            return Err(BatchError::Empty);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut originals = Vec::with_capacity(photos.len());
        let mut copies = Vec::with_capacity(photos.len());
        for (index, (photo, caption)) in photos.iter().enumerate() {
            let crop = self
                .transform
                .crop(photo, &mut rng)
                .map_err(|e| BatchError::Photo {
                    index,
                    source: PairError::Image(e),
                })?;
            let pair_seed = seed.wrapping_mul(0x9E37_79B9).wrapping_add(index as u64);
            let (o, d) = make_pair(&crop, *caption, self.pairs, pair_seed)
                .map_err(|source| BatchError::Photo { index, source })?;
            originals.push(o);
            copies.push(d);
        }
        let b = originals.len();
        let examples: Vec<Example> = originals.into_iter().chain(copies).collect();
        let n = examples.len();
        let size = self.transform.size;
        let pixels: Vec<f32> = examples
            .iter()
            .flat_map(|e| self.transform.normalize(&e.image))
            .collect();
        let pixels = Tensor::<4>::from_data(TensorData::new(pixels, [n, 3, size, size]), device);
        let autodiff = pixels.is_autodiff();
        let hidden_states = self.encoder.forward(pixels);
        let embed = |pick: fn(&Example) -> &str| -> Result<Tensor<2>, TextError> {
            let sentences: Vec<&str> = examples.iter().map(pick).collect();
            Ok(self.text.embed(&sentences, autodiff)?.to_device(device))
        };
        let cues = [
            embed(|e| e.cues.low.as_str())?,
            embed(|e| e.cues.middle.as_str())?,
            embed(|e| e.cues.high.as_str())?,
        ];
        let matrix = |pick: fn(&Example) -> &Vec<f32>| {
            let k = examples.first().map_or(0, |e| pick(e).len());
            let values: Vec<f32> = examples.iter().flat_map(|e| pick(e).clone()).collect();
            Tensor::<2>::from_data(TensorData::new(values, [n, k]), device)
        };
        Ok(BatchContents {
            batch: PretrainBatch {
                hidden_states,
                cues,
                low_attributes: matrix(|e| &e.low),
                middle_attributes: matrix(|e| &e.middle),
                pairs: (0..b).map(|i| (i, b + i)).collect(),
            },
            examples,
        })
    }
}
