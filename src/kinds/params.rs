//! Declared params of the kinds a kinds file adds: each param's type,
//! whether it is required, its default, its allowed values and limits.
//!
//! [`Params::check`] is what a create request goes through: unknown params,
//! missing required ones and values of the wrong type or out of bounds are
//! refused (422), before any job exists. [`Params::schema`] is the same
//! declaration as the JSON Schema `/v1/kinds` shows. How a checked value
//! becomes a command's argument is the command kind's business.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A param's JSON type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
}

impl ParamType {
    fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
        }
    }
}

/// Strings longer than this are refused unless a param says otherwise.
const DEFAULT_MAX_LENGTH: usize = 4096;

/// One `[kinds.NAME.params.PARAM]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    pub default: Option<toml::Value>,
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<toml::Value>>,
    /// A regular expression a string value must match somewhere (anchor it
    /// with `^…$` to match the whole value), as JSON Schema's `pattern`.
    pub pattern: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_length: Option<usize>,
}

/// A declaration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ParamDeclError {
    #[error("param {param:?}: pattern {pattern:?} is not a regular expression: {error}")]
    Pattern {
        param: String,
        pattern: String,
        error: regex::Error,
    },
    #[error("param {param:?}: {detail}")]
    Invalid { param: String, detail: String },
    #[error("param names are letters, digits and `_`, starting with a letter: {0:?}")]
    Name(String),
}

/// One param, ready to check values.
#[derive(Clone, Debug)]
struct Param {
    kind: ParamType,
    description: String,
    required: bool,
    default: Option<Value>,
    allowed: Option<Vec<Value>>,
    pattern: Option<Regex>,
    min: Option<f64>,
    max: Option<f64>,
    max_length: usize,
}

/// The declared params of a kind.
#[derive(Clone, Debug, Default)]
pub struct Params {
    params: BTreeMap<String, Param>,
}

impl Params {
    /// Compiles the declarations, refusing ones that cannot work (a bad
    /// pattern, a default that breaks its own rules).
    pub fn new(decls: BTreeMap<String, ParamDecl>) -> Result<Self, ParamDeclError> {
        let mut params = BTreeMap::new();
        for (name, decl) in decls {
            let valid_name = name.chars().next().is_some_and(|first| first.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(ParamDeclError::Name(name));
            }
            let invalid = |detail: String| ParamDeclError::Invalid {
                param: name.clone(),
                detail,
            };
            let pattern = match &decl.pattern {
                Some(pattern) if decl.kind != ParamType::String => {
                    return Err(invalid(format!("a pattern applies to strings, not to {pattern:?}")))
                }
                Some(pattern) => Some(Regex::new(pattern).map_err(|error| ParamDeclError::Pattern {
                    param: name.clone(),
                    pattern: pattern.clone(),
                    error,
                })?),
                None => None,
            };
            if (decl.min.is_some() || decl.max.is_some())
                && !matches!(decl.kind, ParamType::Integer | ParamType::Number)
            {
                return Err(invalid("min and max apply to numbers".to_owned()));
            }
            let mut param = Param {
                kind: decl.kind,
                description: decl.description,
                required: decl.required,
                default: None,
                allowed: None,
                pattern,
                min: decl.min,
                max: decl.max,
                max_length: decl.max_length.unwrap_or(DEFAULT_MAX_LENGTH),
            };
            if let Some(allowed) = decl.allowed {
                let allowed = allowed
                    .into_iter()
                    .map(|value| param.normalise(to_json(value)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|detail| invalid(format!("enum: {detail}")))?;
                if allowed.is_empty() {
                    return Err(invalid("enum lists no values".to_owned()));
                }
                param.allowed = Some(allowed);
            }
            if let Some(default) = decl.default {
                if param.required {
                    return Err(invalid("a required param has no default".to_owned()));
                }
                let default = param
                    .check(to_json(default))
                    .map_err(|detail| invalid(format!("default: {detail}")))?;
                param.default = Some(default);
            }
            params.insert(name, param);
        }
        Ok(Params { params })
    }

    /// Whether a param of this name is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// Checks a create request's params: every one declared, every required
    /// one present, every value valid. Answers the params with defaults
    /// filled in; an absent optional param without default stays absent, and
    /// `null` counts as absent.
    pub fn check(&self, params: Value) -> Result<Map<String, Value>, String> {
        let given = match params {
            Value::Null => Map::new(),
            Value::Object(given) => given,
            _ => return Err("params must be an object".to_owned()),
        };
        if let Some(unknown) = given.keys().find(|name| !self.params.contains_key(*name)) {
            return Err(format!("unknown param {unknown:?}"));
        }
        let mut checked = Map::new();
        for (name, param) in &self.params {
            match given.get(name) {
                Some(value) if !value.is_null() => {
                    let value = param
                        .check(value.clone())
                        .map_err(|detail| format!("param {name:?}: {detail}"))?;
                    checked.insert(name.clone(), value);
                }
                _ if param.required => return Err(format!("param {name:?} is required")),
                _ => {
                    if let Some(default) = &param.default {
                        checked.insert(name.clone(), default.clone());
                    }
                }
            }
        }
        Ok(checked)
    }

    /// The params as a JSON Schema object.
    pub fn schema(&self) -> Value {
        let properties: Map<String, Value> = self
            .params
            .iter()
            .map(|(name, param)| (name.clone(), param.schema()))
            .collect();
        let required: Vec<&String> = self
            .params
            .iter()
            .filter(|(_, param)| param.required)
            .map(|(name, _)| name)
            .collect();
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// Example params made from the declarations: every required param with
    /// its first allowed value, or a plain value of its type. `None` when
    /// such an example would not pass [`Params::check`] (a pattern refuses
    /// it): the kind must then give its own.
    pub fn example(&self) -> Option<Value> {
        let example: Map<String, Value> = self
            .params
            .iter()
            .filter(|(_, param)| param.required)
            .map(|(name, param)| (name.clone(), param.sample()))
            .collect();
        let example = Value::Object(example);
        self.check(example.clone()).ok().map(|_| example)
    }
}

impl Param {
    /// The value in its canonical form, if it has the param's type: a whole
    /// float such as `2.0` counts as an integer, as JSON Schema says.
    fn normalise(&self, value: Value) -> Result<Value, String> {
        let type_error = || format!("expected {}, got {value}", self.kind.as_str());
        match (self.kind, &value) {
            (ParamType::String, Value::String(_)) | (ParamType::Boolean, Value::Bool(_)) => Ok(value),
            (ParamType::Number, Value::Number(_)) => Ok(value),
            (ParamType::Integer, Value::Number(number)) => {
                if number.is_i64() || number.is_u64() {
                    return Ok(value);
                }
                match number.as_f64() {
                    Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => Ok(json!(float as i64)),
                    _ => Err(type_error()),
                }
            }
            _ => Err(type_error()),
        }
    }

    fn check(&self, value: Value) -> Result<Value, String> {
        let value = self.normalise(value)?;
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|choice| same_value(choice, &value)) {
                let choices: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(format!("{value} is not one of {}", choices.join(", ")));
            }
        }
        if let Value::String(text) = &value {
            if text.contains('\0') {
                return Err("a NUL character cannot be passed on".to_owned());
            }
            if text.chars().count() > self.max_length {
                return Err(format!("longer than {} characters", self.max_length));
            }
            if let Some(pattern) = &self.pattern {
                if !pattern.is_match(text) {
                    return Err(format!("{value} does not match {:?}", pattern.as_str()));
                }
            }
        }
        if let Some(number) = value.as_f64() {
            if self.min.is_some_and(|min| number < min) || self.max.is_some_and(|max| number > max) {
                return Err(format!("{number} is outside {}", self.bounds()));
            }
        }
        Ok(value)
    }

    fn bounds(&self) -> String {
        let end = |bound: Option<f64>| bound.map(|bound| bound.to_string()).unwrap_or_else(|| "…".to_owned());
        format!("[{}, {}]", end(self.min), end(self.max))
    }

    fn schema(&self) -> Value {
        let mut schema = Map::new();
        schema.insert("type".to_owned(), json!(self.kind.as_str()));
        if !self.description.is_empty() {
            schema.insert("description".to_owned(), json!(self.description));
        }
        if let Some(default) = &self.default {
            schema.insert("default".to_owned(), default.clone());
        }
        if let Some(allowed) = &self.allowed {
            schema.insert("enum".to_owned(), json!(allowed));
        }
        if let Some(pattern) = &self.pattern {
            schema.insert("pattern".to_owned(), json!(pattern.as_str()));
        }
        if let Some(min) = self.min {
            schema.insert("minimum".to_owned(), json!(min));
        }
        if let Some(max) = self.max {
            schema.insert("maximum".to_owned(), json!(max));
        }
        if self.kind == ParamType::String {
            schema.insert("maxLength".to_owned(), json!(self.max_length));
        }
        Value::Object(schema)
    }

    fn sample(&self) -> Value {
        if let Some(first) = self.allowed.as_ref().and_then(|allowed| allowed.first()) {
            return first.clone();
        }
        let least = self
            .min
            .unwrap_or(0.0)
            .max(self.max.map_or(f64::MIN, |max| max.min(0.0)));
        match self.kind {
            ParamType::String => json!("example"),
            ParamType::Integer => json!(least.ceil() as i64),
            ParamType::Number => json!(least),
            ParamType::Boolean => json!(false),
        }
    }
}

/// JSON equality where `2` and `2.0` are the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A TOML value as JSON (dates become their text).
pub(crate) fn to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text),
        toml::Value::Integer(number) => json!(number),
        toml::Value::Float(number) => json!(number),
        toml::Value::Boolean(flag) => Value::Bool(flag),
        toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        toml::Value::Table(table) => {
            Value::Object(table.into_iter().map(|(key, value)| (key, to_json(value))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Params {
        let decls: BTreeMap<String, ParamDecl> = toml::from_str(text).unwrap();
        Params::new(decls).unwrap()
    }

    #[test]
    fn checks_types_requirements_and_unknown_params() {
        let params = params(
            r#"
            source = { type = "string", required = true, pattern = "^/" }
            level = { type = "integer", min = 1, max = 9, default = 6 }
            mode = { type = "string", enum = ["fast", "safe"] }
            "#,
        );
        let checked = params.check(json!({"source": "/data"})).unwrap();
        assert_eq!(Value::Object(checked), json!({"source": "/data", "level": 6}));
        assert_eq!(
            params.check(json!({"source": "/d", "level": 3.0})).unwrap()["level"],
            json!(3)
        );
        for bad in [
            json!({}),
            json!({"source": "relative"}),
            json!({"source": "/d", "level": 10}),
            json!({"source": "/d", "level": "3"}),
            json!({"source": "/d", "level": 2.5}),
            json!({"source": "/d", "mode": "slow"}),
            json!({"source": "/d", "other": 1}),
            json!({"source": "/d\u{0}"}),
            json!([1]),
        ] {
            assert!(params.check(bad.clone()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_schema_says_what_check_enforces() {
        let params = params(r#"n = { type = "integer", required = true, min = 1, description = "how many" }"#);
        assert_eq!(
            params.schema(),
            json!({
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 1.0, "description": "how many"}},
                "required": ["n"],
                "additionalProperties": false,
            })
        );
        assert_eq!(params.example(), Some(json!({"n": 1})));
    }

    #[test]
    fn refuses_declarations_that_cannot_work() {
        for text in [
            r#"x = { type = "string", pattern = "(" }"#,
            r#"x = { type = "integer", default = "one" }"#,
            r#"x = { type = "string", required = true, default = "a" }"#,
            r#"x = { type = "boolean", min = 1 }"#,
            r#""not a name" = { type = "string" }"#,
        ] {
            let decls: BTreeMap<String, ParamDecl> = toml::from_str(text).unwrap();
            assert!(Params::new(decls).is_err(), "{text} was accepted");
        }
    }
}
