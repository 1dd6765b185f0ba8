//! The final report: printed for people, or as one JSON line for scripts.

use std::fmt::Write;

/// One value of the report.
#[derive(Debug, Clone)]
pub enum Value {
    /// A count.
    Int(u64),
    /// A measurement.
    Float(f64),
    /// A label.
    Str(String),
    /// A yes/no.
    Bool(bool),
    /// Not measured (printed as `null` / `-`).
    None,
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        if v.is_finite() {
            Value::Float(v)
        } else {
            Value::None
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::None, Into::into)
    }
}

/// Named values in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Report {
    fields: Vec<(&'static str, Value)>,
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Thousands separators for counts.
pub fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// Adds a field.
    pub fn set(&mut self, name: &'static str, value: impl Into<Value>) {
        self.fields.push((name, value.into()));
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (name, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, name);
            out.push(':');
            match value {
                Value::Int(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::Float(v) => {
                    let _ = write!(out, "{v:.3}");
                }
                Value::Str(s) => json_str(&mut out, s),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::None => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }

    /// `name: value` lines for people.
    pub fn to_text(&self) -> String {
        let width = self.fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, value) in &self.fields {
            let v = match value {
                Value::Int(v) => group(*v),
                Value::Float(v) if v.abs() >= 1000.0 => group(v.round() as u64),
                Value::Float(v) => format!("{v:.3}"),
                Value::Str(s) => s.clone(),
                Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
                Value::None => "-".into(),
            };
            let _ = writeln!(out, "{name:<width$}  {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text() {
        let mut r = Report::default();
        r.set("scenario", "pairs \"q\"");
        r.set("sent", 1_234_567u64);
        r.set("p50_ms", 0.5f64);
        r.set("cpu", None::<f64>);
        r.set("ok", true);
        assert_eq!(
            r.to_json(),
            r#"{"scenario":"pairs \"q\"","sent":1234567,"p50_ms":0.500,"cpu":null,"ok":true}"#
        );
        assert!(r.to_text().contains("sent      1,234,567"));
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
    }
}
