//! LLaVA-style instruction data (`llava_instruct_150k.json`, `blip_laion_cc_sbu_558k.json`): a
//! JSON array of `{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]}`, where
//! `<image>` in a human turn marks where the visual tokens go.

use std::path::Path;

use serde::Deserialize;

use crate::data::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[serde(alias = "human")]
    User,
    #[serde(alias = "gpt")]
    Assistant,
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Turn {
    #[serde(rename = "from")]
    pub role: Role,
    #[serde(rename = "value")]
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Conversation {
    #[serde(default, deserialize_with = "id_as_string")]
    pub id: String,
    /// Image paths relative to the dataset's image folder, in the order of the `<image>`
    /// placeholders: the file's `image` key, a string or (multi-image conversations) a list;
    /// text-only samples have none.
    #[serde(default, rename = "image", deserialize_with = "one_or_many")]
    pub images: Vec<String>,
    #[serde(rename = "conversations")]
    pub turns: Vec<Turn>,
}

/// Reads the JSON array. Syntax and schema errors name the file, line and column; a sample
/// with no turns, or with `<image>` but no image, is an error naming its position.
pub fn read_llava(path: &Path) -> Result<Vec<Conversation>, DataError> {
    let samples: Vec<Conversation> = super::read_json(path)?;
    for (i, sample) in samples.iter().enumerate() {
        let bad = |message: &str| DataError::Invalid {
            path: path.to_path_buf(),
            message: format!("sample {i} (id `{}`): {message}", sample.id),
        };
        if sample.turns.is_empty() {
            return Err(bad("has no conversation turns"));
        }
        let placeholders: usize = sample
            .turns
            .iter()
            .map(|t| t.text.matches("<image>").count())
            .sum();
        // LLaVA's own files put one `<image>` per image; a single image without one is read
        // as LLaVA's preprocessing does, placed before the first question (`Conversation::turns_with_images`).
        let lenient = sample.images.len() == 1 && placeholders == 0;
        if placeholders != sample.images.len() && !lenient {
            return Err(bad(&format!(
                "has {placeholders} <image> placeholders for {} images",
                sample.images.len()
            )));
        }
    }
    Ok(samples)
}

impl Conversation {
    /// The turns with one `<image>` per image: a single image without a placeholder goes
    /// before the first user turn's text.
    pub fn turns_with_images(&self) -> Vec<Turn> {
        let mut turns = self.turns.clone();
        let placeholders: usize = turns
            .iter()
            .map(|t| t.text.matches("<image>").count())
            .sum();
        if self.images.len() == 1
            && placeholders == 0
            && let Some(first) = turns.iter_mut().find(|t| t.role == Role::User)
        {
            first.text = format!("<image>\n{}", first.text);
        }
        turns
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Images {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Images>::deserialize(d)? {
        None => Vec::new(),
        Some(Images::One(s)) => vec![s],
        Some(Images::Many(v)) => v,
    })
}

/// Ids are strings in LLaVA's files and integers in some derived sets.
fn id_as_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(i64),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
}
