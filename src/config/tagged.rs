//! Sections whose `kind:` key selects the variant of an enum (`model.vision`, `data.source`).
//! serde's `#[serde(tag = "kind")]` buffers such a map and reports any error inside it against
//! the section, losing the key; deserialising the variant's struct here keeps the inner path,
//! which `Layers::resolve` then joins to the section's (see `INNER_KEY`).

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error};
use serde_json::{Map, Value};

/// Opens an error message that names the key inside a tagged section: "at `key`: message".
pub(crate) const INNER_KEY: &str = "at `";

/// Reads a tagged section: the index of its `kind` in `kinds`, and the remaining fields.
pub fn split<'de, D: Deserializer<'de>>(
    deserializer: D,
    kinds: &'static [&'static str],
) -> Result<(usize, Value), D::Error> {
    let mut map = Map::<String, Value>::deserialize(deserializer)?;
    let kind = match map.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "{INNER_KEY}kind`: expected one of {kinds:?}, found {other}"
            )));
        }
        None => return Err(D::Error::missing_field("kind")),
    };
    let index = kinds.iter().position(|k| *k == kind).ok_or_else(|| {
        D::Error::custom(format!(
            "{INNER_KEY}kind`: {}",
            D::Error::unknown_variant(&kind, kinds)
        ))
    })?;
    Ok((index, Value::Object(map)))
}

/// Deserialises the fields of the chosen variant, naming the offending key on error.
pub fn fields<T: DeserializeOwned, E: Error>(rest: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(rest).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path.is_empty() || path == "." {
            E::custom(inner)
        } else {
            E::custom(format!("{INNER_KEY}{path}`: {inner}"))
        }
    })
}
