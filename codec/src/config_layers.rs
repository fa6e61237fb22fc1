//! Layered configuration, sans-IO: built-in defaults, then a TOML document,
//! then `VEZA_<SECTION>_<KEY>` environment variables, each value checked
//! against its own key so that an error always names `section.key`.
//!
//! Callers read the file and the environment themselves and pass the text and
//! the pairs in; this module only parses and merges. Both Veza binaries use it,
//! each with its own configuration struct.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "VEZA_";

/// Why a configuration was refused. Always names the key or the document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayerError {
    /// The TOML document is malformed, has an unknown key or a wrong type.
    #[error("invalid config file {source_name}: {reason}")]
    Malformed {
        /// Where the document came from (a path).
        source_name: String,
        /// The parser's message, naming the key with line and column.
        reason: String,
    },
    /// A key has a value outside its allowed type or range.
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// `section.key`.
        key: String,
        /// Why the value was refused.
        reason: String,
    },
}

/// Merges `document` (TOML text, if any) and the `VEZA_*` pairs of `env` over
/// the defaults of `C`. Unknown `VEZA_*` variables are returned as warnings,
/// not errors: other tools share the prefix.
pub fn load<C>(
    document: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(C, Vec<String>), LayerError>
where
    C: Serialize + DeserializeOwned + Default,
{
    let mut table = match document {
        Some((source_name, text)) => parse_document::<C>(source_name, text)?,
        None => toml::Table::new(),
    };
    let warnings = apply_env::<C>(&mut table, env)?;
    let source_name = document.map_or("(environment)", |(name, _)| name);
    let config =
        toml::Value::Table(table)
            .try_into::<C>()
            .map_err(|error| LayerError::Malformed {
                source_name: source_name.to_string(),
                reason: error.message().to_string(),
            })?;
    Ok((config, warnings))
}

/// An error for `key` with `reason`, for range checks done by the caller.
pub fn invalid(key: &str, reason: &str) -> LayerError {
    LayerError::InvalidValue {
        key: key.into(),
        reason: reason.into(),
    }
}

fn parse_document<C: DeserializeOwned>(
    source_name: &str,
    text: &str,
) -> Result<toml::Table, LayerError> {
    let malformed = |reason: String| LayerError::Malformed {
        source_name: source_name.to_string(),
        reason,
    };
    // Deserialising the text reports unknown keys and wrong types with the
    // key, line and column.
    toml::from_str::<C>(text).map_err(|error| malformed(error.to_string()))?;
    text.parse::<toml::Table>()
        .map_err(|error| malformed(error.to_string()))
}

/// Every `section.key` of `C` with its default value, so that environment
/// variables are matched against known keys only (names with underscores
/// stay unambiguous).
pub fn known_keys<C: Serialize + Default>() -> BTreeMap<(String, String), toml::Value> {
    let defaults = toml::Value::try_from(C::default()).expect("defaults serialise");
    let mut keys = BTreeMap::new();
    if let toml::Value::Table(sections) = defaults {
        for (section, value) in sections {
            if let toml::Value::Table(fields) = value {
                for (key, default) in fields {
                    keys.insert((section.clone(), key), default);
                }
            }
        }
    }
    keys
}

fn apply_env<C>(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, LayerError>
where
    C: Serialize + DeserializeOwned + Default,
{
    let keys = known_keys::<C>();
    let by_env_name: BTreeMap<String, (&String, &String, &toml::Value)> = keys
        .iter()
        .map(|((section, key), default)| {
            let name = format!("{ENV_PREFIX}{section}_{key}").to_ascii_uppercase();
            (name, (section, key, default))
        })
        .collect();
    let mut warnings = Vec::new();
    for (name, raw) in env {
        let Some((section, key, default)) = by_env_name.get(&name) else {
            if name.starts_with(ENV_PREFIX) {
                warnings.push(format!("ignoring unknown environment variable {name}"));
            }
            continue;
        };
        let refuse = |reason: String| LayerError::InvalidValue {
            key: format!("{section}.{key}"),
            reason: format!("{name}={raw:?}: {reason}"),
        };
        let value = parse_env_value(default, &raw).map_err(refuse)?;
        check_value_type::<C>(section, key, &value).map_err(refuse)?;
        let section_table = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(fields) => {
                fields.insert(key.to_string(), value);
            }
            _ => return Err(invalid(section, "must be a table")),
        }
    }
    Ok(warnings)
}

/// Deserialises a configuration holding only `section.key = value`, so that
/// a value of the wrong type or range is reported against its own key.
fn check_value_type<C: DeserializeOwned>(
    section: &str,
    key: &str,
    value: &toml::Value,
) -> Result<(), String> {
    let mut fields = toml::Table::new();
    fields.insert(key.to_string(), value.clone());
    let mut root = toml::Table::new();
    root.insert(section.to_string(), toml::Value::Table(fields));
    toml::Value::Table(root)
        .try_into::<C>()
        .map(|_| ())
        .map_err(|error| error.message().to_string())
}

fn parse_env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match default {
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "expected an integer".to_string()),
        toml::Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "0" | "false" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("expected true or false".to_string()),
        },
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| "expected a number".to_string()),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}
