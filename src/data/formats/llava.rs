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
    /// Image path relative to the dataset's image folder; text-only samples have none.
    #[serde(default)]
    pub image: Option<String>,
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
        if sample.image.is_none() && sample.turns.iter().any(|t| t.text.contains("<image>")) {
            return Err(bad("uses <image> but names no image"));
        }
    }
    Ok(samples)
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
