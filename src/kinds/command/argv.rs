//! Argv templates: one argv element with `{param}` placeholders, parsed
//! once at load time and filled from a job's checked params, each
//! placeholder inside its own argument (never through a shell). Which
//! placeholders a kind may use is `load`'s check.

use serde_json::{Map, Value};

/// One piece of an argv template.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// An argv element, parsed once at load time.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Template {
    segments: Vec<Segment>,
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            Some(c) => return Err(format!("{c:?} in a placeholder (write {{{{ for a literal brace)")),
                            None => return Err("a placeholder is not closed with }".to_owned()),
                        }
                    }
                    if name.is_empty() {
                        return Err("an empty placeholder {}".to_owned());
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Param(name));
                }
                '}' => return Err("a lone } (write }} for a literal brace)".to_owned()),
                '\0' => return Err("a NUL character cannot be passed on".to_owned()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    pub(super) fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The argument, or None when it names a param that is absent.
    pub(super) fn render(&self, params: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Param(name) => match params.get(name)? {
                    Value::Null => return None,
                    Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Some(out)
    }
}

/// The arguments after the program: an element naming an absent optional
/// param is left out.
pub(super) fn render_args(args: &[Template], params: &Map<String, Value>) -> Vec<String> {
    args.iter().filter_map(|template| template.render(params)).collect()
}
