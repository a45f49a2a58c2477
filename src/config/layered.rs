//! Layered YAML configuration: built-in defaults, then `extends:` bases, then the file, then
//! `--set key.path=value` overrides, deep-merged in that order (the layering of Hydra and
//! OmegaConf, without their interpolation). Every leaf remembers which layer set it, so an error
//! names the file (or the `--set` argument) to fix.
//!
//! The Rust `Default` of the config type is the only place defaults live: YAML files hold
//! differences from it, never a second copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::tagged::INNER_KEY;

/// The most files one config may load through its `extends`.
pub const MAX_CONFIG_FILES: usize = 1_000;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Defaults,
    File(PathBuf),
    Set(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Defaults => write!(f, "the built-in defaults"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Set(arg) => write!(f, "--set {arg}"),
        }
    }
}

/// A problem found by a config type's own consistency check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key of the offending value, e.g. `model.mfam.qformer.num_attention_heads`.
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Cross-field checks that serde's types cannot express.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: the top level of a config file must be a mapping of keys")]
    NotAMapping { path: PathBuf },
    #[error("{path}: `extends` must be a file name or a list of file names")]
    BadExtends { path: PathBuf },
    #[error("{path}: `extends` forms a cycle through {again}")]
    ExtendsCycle { path: PathBuf, again: PathBuf },
    #[error(
        "{path}: its `extends` load more than {MAX_CONFIG_FILES} files (a base named by many paths counts each time)"
    )]
    TooManyFiles { path: PathBuf },
    #[error("--set {arg}: expected KEY=VALUE with a dotted key, e.g. --set data.batch_size=16")]
    BadSet { arg: String },
    #[error("unknown key `{key}` in {origin}; nearest valid key: {nearest}")]
    UnknownKey {
        key: String,
        origin: Source,
        nearest: String,
    },
    #[error("invalid value for `{key}` in {origin}: {message}")]
    InvalidValue {
        key: String,
        origin: Source,
        message: String,
    },
    #[error("invalid configuration: `{key}` (set in {origin}): {message}")]
    Inconsistent {
        key: String,
        origin: Source,
        message: String,
    },
    #[error("cannot write the resolved config: {0}")]
    Serialize(String),
}

/// A deep-merged configuration tree that remembers the source of every key.
#[derive(Debug, Clone)]
pub struct Layers {
    tree: Value,
    origin: BTreeMap<String, Source>,
}

impl Layers {
    /// Starts from the serialised `Default` of `T`.
    pub fn from_defaults<T: Serialize + Default>() -> Result<Self, ConfigError> {
        let tree = serde_json::to_value(T::default())
            .map_err(|e| ConfigError::Serialize(e.to_string()))?;
        let mut layers = Self {
            tree: Value::Object(Map::new()),
            origin: BTreeMap::new(),
        };
        layers.merge(tree, &Source::Defaults);
        Ok(layers)
    }

    /// Merges a YAML file on top, after the files named in its `extends:` (in order, each
    /// relative to the file that names it).
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        self.merge_file_chain(path, &mut Vec::new(), &mut 0)
    }

    /// `loaded` counts the files read so far: a diamond of `extends` (a file naming the same
    /// base twice, 30 levels deep) would otherwise read 2^30 files.
    fn merge_file_chain(
        &mut self,
        path: &Path,
        chain: &mut Vec<PathBuf>,
        loaded: &mut usize,
    ) -> Result<(), ConfigError> {
        *loaded += 1;
        if *loaded > MAX_CONFIG_FILES {
            return Err(ConfigError::TooManyFiles {
                path: chain.first().cloned().unwrap_or_else(|| path.to_path_buf()),
            });
        }
        let canonical = path.canonicalize().map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if chain.contains(&canonical) {
            return Err(ConfigError::ExtendsCycle {
                path: chain.last().cloned().unwrap_or_else(|| path.to_path_buf()),
                again: path.to_path_buf(),
            });
        }
        let text =
            crate::files::read_string(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let value = parse_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let mut map = match value {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => {
                return Err(ConfigError::NotAMapping {
                    path: path.to_path_buf(),
                });
            }
        };
        let bases = match map.remove("extends") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(many)) => many
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ConfigError::BadExtends {
                        path: path.to_path_buf(),
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::BadExtends {
                    path: path.to_path_buf(),
                });
            }
        };
        chain.push(canonical);
        let dir = path.parent().unwrap_or(Path::new("."));
        for base in bases {
            self.merge_file_chain(&dir.join(base), chain, loaded)?;
        }
        chain.pop();
        self.merge(Value::Object(map), &Source::File(path.to_path_buf()));
        Ok(())
    }

    /// Applies one `--set a.b.c=value`; the value is read as YAML (`16`, `1e-3`, `true`,
    /// `[1, 2]`, `clip`), so types follow the same rules as in files.
    pub fn merge_set(&mut self, arg: &str) -> Result<(), ConfigError> {
        let bad = || ConfigError::BadSet {
            arg: arg.to_string(),
        };
        let (key, raw) = arg.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(bad());
        }
        let leaf = parse_yaml(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let mut value = leaf;
        for part in key.rsplit('.') {
            let mut map = Map::new();
            map.insert(part.to_string(), value);
            value = Value::Object(map);
        }
        self.merge(value, &Source::Set(arg.to_string()));
        Ok(())
    }

    /// The merged tree, as plain JSON-like data.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The layer that last set `key` (a dotted path) or, failing that, its nearest ancestor.
    pub fn source_of(&self, key: &str) -> Source {
        let mut probe = key;
        loop {
            if let Some(source) = self.origin.get(probe) {
                return source.clone();
            }
            match probe.rfind(['.', '[']) {
                Some(cut) => probe = &probe[..cut],
                None => return Source::Defaults,
            }
        }
    }

    fn merge(&mut self, value: Value, source: &Source) {
        let mut path = String::new();
        merge_into(&mut self.tree, value, source, &mut path, &mut self.origin);
    }

    /// Deserialises the merged tree into `T` and runs its `validate()`.
    pub fn resolve<T: DeserializeOwned + Validate>(&self) -> Result<T, ConfigError> {
        let config: T = serde_path_to_error::deserialize(&self.tree).map_err(|err| {
            let mut key = dotted(err.path());
            let mut message = err.inner().to_string();
            // Errors inside a `kind:` section carry their inner key in the message.
            while let Some((inner, rest)) = message
                .strip_prefix(INNER_KEY)
                .and_then(|m| m.split_once("`: "))
                .map(|(i, r)| (i.to_string(), r.to_string()))
            {
                key = if key.is_empty() {
                    inner
                } else {
                    format!("{key}.{inner}")
                };
                message = rest;
            }
            match unknown_name(&message) {
                Some(Unknown::Field(name, candidates)) => {
                    let key = if key == name || key.ends_with(&format!(".{name}")) {
                        key
                    } else if key.is_empty() {
                        name.clone()
                    } else {
                        format!("{key}.{name}")
                    };
                    ConfigError::UnknownKey {
                        origin: self.source_of(&key),
                        nearest: nearest(&name, &candidates),
                        key,
                    }
                }
                Some(Unknown::Variant(value, candidates)) => ConfigError::InvalidValue {
                    origin: self.source_of(&key),
                    message: format!(
                        "unknown value `{value}`; nearest valid value: {}",
                        nearest(&value, &candidates)
                    ),
                    key,
                },
                None => ConfigError::InvalidValue {
                    origin: self.source_of(&key),
                    key,
                    message,
                },
            }
        })?;
        config
            .validate()
            .map_err(|invalid| ConfigError::Inconsistent {
                origin: self.source_of(&invalid.key),
                key: invalid.key,
                message: invalid.message,
            })?;
        Ok(config)
    }
}

/// Loads `T` from its defaults, an optional YAML file and `--set` overrides.
pub fn load<T>(file: Option<&Path>, sets: &[String]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let mut layers = Layers::from_defaults::<T>()?;
    if let Some(file) = file {
        layers.merge_file(file)?;
    }
    for arg in sets {
        layers.merge_set(arg)?;
    }
    layers.resolve()
}

/// Renders a resolved config as YAML, the form written to `config.resolved.yaml`.
pub fn to_yaml<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    serde_saphyr::to_string(config).map_err(|e| ConfigError::Serialize(e.to_string()))
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| yaml_error_line(&e.to_string()))
}

/// serde-saphyr's message is "error: line L column C: what", then a multi-line snippet of
/// the file; errors are one line, so only the first is kept.
pub fn yaml_error_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Maps merge key by key; anything else replaces. A mapping whose `kind` differs from the one
/// it lands on replaces it whole, so switching a tagged section (say, the encoder from
/// `efficientnet_lite0` to `clip`) does not inherit the old variant's fields.
fn merge_into(
    base: &mut Value,
    over: Value,
    source: &Source,
    path: &mut String,
    origin: &mut BTreeMap<String, Source>,
) {
    match (base, over) {
        (Value::Object(base_map), Value::Object(over_map))
            if base_map.get("kind").is_none()
                || over_map.get("kind").is_none()
                || base_map.get("kind") == over_map.get("kind") =>
        {
            if !path.is_empty() {
                origin.insert(path.clone(), source.clone());
            }
            for (key, value) in over_map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                let slot = base_map.entry(key).or_insert(Value::Null);
                merge_into(slot, value, source, path, origin);
                path.truncate(len);
            }
        }
        (slot, over) => {
            let prefix = format!("{path}.");
            origin.retain(|k, _| !k.starts_with(&prefix));
            record(&over, source, path, origin);
            *slot = over;
        }
    }
}

fn record(
    value: &Value,
    source: &Source,
    path: &mut String,
    origin: &mut BTreeMap<String, Source>,
) {
    origin.insert(path.clone(), source.clone());
    if let Value::Object(map) = value {
        for (key, child) in map {
            let len = path.len();
            path.push('.');
            path.push_str(key);
            record(child, source, path, origin);
            path.truncate(len);
        }
    }
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

enum Unknown {
    Field(String, Vec<String>),
    Variant(String, Vec<String>),
}

/// Reads serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant ...")
/// message: the offending name and the valid ones.
fn unknown_name(message: &str) -> Option<Unknown> {
    let mut quoted = message.split('`').skip(1).step_by(2).map(str::to_string);
    if message.starts_with("unknown field") {
        Some(Unknown::Field(quoted.next()?, quoted.collect()))
    } else if message.starts_with("unknown variant") {
        Some(Unknown::Variant(quoted.next()?, quoted.collect()))
    } else {
        None
    }
}

fn nearest(name: &str, candidates: &[String]) -> String {
    candidates
        .iter()
        .min_by_key(|c| strsim::damerau_levenshtein(name, c))
        .map(|c| format!("`{c}`"))
        .unwrap_or_else(|| "none (this section takes no keys)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_yield_name_and_candidates() {
        match unknown_name("unknown field `lr_rate`, expected one of `lr`, `steps`") {
            Some(Unknown::Field(name, candidates)) => {
                assert_eq!(name, "lr_rate");
                assert_eq!(candidates, vec!["lr", "steps"]);
            }
            _ => panic!("not read as an unknown field"),
        }
        assert!(matches!(
            unknown_name("unknown variant `clipp`, expected `clip`"),
            Some(Unknown::Variant(v, c)) if v == "clipp" && c == vec!["clip"]
        ));
        assert_eq!(
            nearest("batch_sise", &["seed".into(), "batch_size".into()]),
            "`batch_size`"
        );
        assert!(unknown_name("invalid type: string \"x\", expected f64").is_none());
    }
}
