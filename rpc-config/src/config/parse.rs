//! Reading configuration text into a flat map of dotted keys, and the values' own syntax.
//!
//! Hostile or careless files fail with an error naming the file or the key, never a panic or
//! unbounded memory: files above [`MAX_FILE_BYTES`] are refused, a YAML file whose aliases
//! would expand beyond [`MAX_YAML_NODES`] nodes is refused before it is expanded, and
//! durations are checked against their bounds before any arithmetic.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{ConfigError, Format};

/// Largest configuration file read: 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most YAML nodes a file may hold once its aliases are expanded.
pub const MAX_YAML_NODES: u64 = 100_000;

/// One raw value.
#[derive(Clone, Debug)]
pub(crate) enum Raw {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Raw {
    pub(crate) fn text(&self) -> String {
        match self {
            Raw::Text(s) => s.clone(),
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Bool(b) => b.to_string(),
        }
    }
}

/// Flat map: lowercased dotted key -> (key as written, value).
pub(crate) type Flat = BTreeMap<String, (String, Raw)>;

/// Parses `text` of `format` (read from `path`, for errors).
pub(crate) fn parse(text: &str, format: Format, path: &Path) -> Result<Flat, ConfigError> {
    let file_format = match format {
        Format::Properties => return parse_properties(text, path),
        Format::Toml => config::FileFormat::Toml,
        Format::Yaml => {
            check_yaml_expansion(text, path)?;
            config::FileFormat::Yaml
        }
        Format::Json => config::FileFormat::Json,
    };
    let parse_error = |e: config::ConfigError| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(e),
    };
    let table: config::Map<String, config::Value> = config::Config::builder()
        .add_source(config::File::from_str(text, file_format))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(parse_error)?;
    let mut flat = Flat::new();
    for (key, value) in table {
        flatten(&key, value, &mut flat);
    }
    Ok(flat)
}

fn flatten(prefix: &str, value: config::Value, out: &mut Flat) {
    use config::ValueKind;
    let raw = match value.kind {
        ValueKind::Table(table) => {
            for (key, value) in table {
                flatten(&format!("{prefix}.{key}"), value, out);
            }
            return;
        }
        ValueKind::String(s) => Raw::Text(s),
        ValueKind::I64(i) => Raw::Int(i),
        ValueKind::I128(i) => Raw::Text(i.to_string()),
        ValueKind::U64(u) => Raw::Text(u.to_string()),
        ValueKind::U128(u) => Raw::Text(u.to_string()),
        ValueKind::Float(f) => Raw::Float(f),
        ValueKind::Boolean(b) => Raw::Bool(b),
        ValueKind::Nil => return,
        ValueKind::Array(items) => Raw::Text(
            items
                .into_iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    out.insert(prefix.to_lowercase(), (prefix.to_owned(), raw));
}

/// Java `.properties`: `key=value`, `key: value` or `key value`; `#` and `!` comments.
fn parse_properties(text: &str, path: &Path) -> Result<Flat, ConfigError> {
    let mut flat = Flat::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split_at = line
            .find(['=', ':'])
            .or_else(|| line.find(char::is_whitespace));
        let (key, value) = match split_at {
            Some(at) => (line[..at].trim(), line[at + 1..].trim()),
            None => (line, ""),
        };
        if key.is_empty() || split_at.is_none() {
            return Err(ConfigError::PropertiesLine {
                path: path.to_owned(),
                line: index + 1,
                text: line.to_owned(),
            });
        }
        flat.insert(
            key.to_lowercase(),
            (key.to_owned(), Raw::Text(value.to_owned())),
        );
    }
    Ok(flat)
}

/// Refuses YAML whose aliases expand beyond [`MAX_YAML_NODES`] nodes (a "billion laughs"
/// file of a few hundred bytes would otherwise take gigabytes), from the event stream alone:
/// the size of each anchored node is counted as it closes, an alias adds its anchor's size.
fn check_yaml_expansion(text: &str, path: &Path) -> Result<(), ConfigError> {
    use yaml_rust2::parser::{Event, EventReceiver, Parser};

    #[derive(Default)]
    struct Counter {
        /// Open collections: (anchor id, nodes so far).
        open: Vec<(usize, u64)>,
        anchors: std::collections::HashMap<usize, u64>,
        total: u64,
    }
    impl Counter {
        fn add(&mut self, nodes: u64) {
            self.total = self.total.saturating_add(nodes);
            if let Some((_, inner)) = self.open.last_mut() {
                *inner = inner.saturating_add(nodes);
            }
        }
    }
    impl EventReceiver for Counter {
        fn on_event(&mut self, event: Event) {
            match event {
                Event::Scalar(_, _, anchor, _) => {
                    if anchor > 0 {
                        self.anchors.insert(anchor, 1);
                    }
                    self.add(1);
                }
                Event::Alias(anchor) => {
                    let nodes = self.anchors.get(&anchor).copied().unwrap_or(1);
                    self.add(nodes);
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    self.open.push((anchor, 1));
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some((anchor, nodes)) = self.open.pop() {
                        if anchor > 0 {
                            self.anchors.insert(anchor, nodes);
                        }
                        // The collection itself, once; its content was added as it came.
                        self.total = self.total.saturating_add(1);
                        if let Some((_, outer)) = self.open.last_mut() {
                            *outer = outer.saturating_add(nodes);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let mut counter = Counter::default();
    // A syntax error is left to the real parser, which reports it with its position.
    if Parser::new_from_str(text).load(&mut counter, true).is_err() {
        return Ok(());
    }
    if counter.total > MAX_YAML_NODES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            reason: format!(
                "its aliases expand to more than {MAX_YAML_NODES} nodes (about {} nodes)",
                counter.total
            ),
        });
    }
    Ok(())
}

/// The unit of a bare number for a duration key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Unit {
    Seconds,
    Millis,
}

/// Parses a duration for `key` (`30`, `1500ms`, `2s`, `1m`; a bare number in `unit`) and checks
/// it is within `min..=max`.
pub(crate) fn parse_duration(
    key: &str,
    raw: &Raw,
    unit: Unit,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let (unit_name, scale) = match unit {
        Unit::Seconds => ("seconds", 1.0),
        Unit::Millis => ("milliseconds", 0.001),
    };
    let invalid = |expected: String| ConfigError::InvalidValue {
        key: key.to_owned(),
        value: raw.text(),
        expected,
    };
    let syntax = || {
        invalid(format!(
            "a number of {unit_name}, or a duration with a unit such as `1500ms`, `2s`, `1m`"
        ))
    };
    let range = || invalid(format!("a duration from {min:?} to {max:?}"));
    let number = match raw {
        Raw::Int(i) => Some(*i as f64),
        Raw::Float(f) => Some(*f),
        Raw::Text(s) => s.trim().parse::<f64>().ok(),
        Raw::Bool(_) => return Err(syntax()),
    };
    let duration = match number {
        Some(n) if n.is_finite() && n >= 0.0 => {
            Duration::try_from_secs_f64(n * scale).map_err(|_| range())?
        }
        Some(_) => return Err(syntax()),
        None => humantime::parse_duration(raw.text().trim()).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => range(),
            _ => syntax(),
        })?,
    };
    if duration < min || duration > max {
        return Err(range());
    }
    Ok(duration)
}

/// Parses a count for `key`: an integer of at least 1 (text or number, not a float).
pub(crate) fn parse_count(key: &str, raw: &Raw) -> Result<usize, ConfigError> {
    let text = raw.text();
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 && !matches!(raw, Raw::Float(_) | Raw::Bool(_)) => Ok(n),
        _ => Err(ConfigError::InvalidValue {
            key: key.to_owned(),
            value: text,
            expected: "an integer of at least 1".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BIG: Duration = Duration::from_secs(3600);

    #[test]
    fn durations_take_the_key_unit_or_an_explicit_one() {
        let raw = |s: &str| Raw::Text(s.into());
        let d = |r: &Raw, unit| parse_duration("k", r, unit, Duration::from_millis(1), BIG);
        assert_eq!(
            d(&raw("30"), Unit::Seconds).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            d(&raw("1500"), Unit::Millis).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            d(&raw("1500ms"), Unit::Seconds).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(d(&raw("2s"), Unit::Millis).unwrap(), Duration::from_secs(2));
        assert_eq!(
            d(&Raw::Float(0.5), Unit::Seconds).unwrap(),
            Duration::from_millis(500)
        );
        assert!(d(&raw("-3"), Unit::Seconds).is_err());
        assert!(d(&raw("0"), Unit::Seconds).is_err());
        assert!(d(&Raw::Bool(true), Unit::Seconds).is_err());
    }

    #[test]
    fn huge_and_tiny_durations_are_errors_naming_the_bounds() {
        for huge in [
            Raw::Float(1e300),
            Raw::Text("1e20".into()),
            Raw::Float(1.8e19),
            Raw::Text("99999999999999999999999h".into()),
            Raw::Float(f64::INFINITY),
            Raw::Text("NaN".into()),
        ] {
            let err = parse_duration("k", &huge, Unit::Seconds, Duration::from_secs(1), BIG)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`k`"), "{err}");
        }
        let err = parse_duration(
            "k",
            &Raw::Float(0.001),
            Unit::Seconds,
            Duration::from_secs(1),
            BIG,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("from 1s to 3600s"), "{err}");
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_before_it_expands() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        assert!(bomb.len() < 400, "{}", bomb.len());
        let err = parse(&bomb, Format::Yaml, Path::new("bomb.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("bomb.yaml"), "{err}");
        // A few aliases are fine.
        let ok = "defaults: &d {ttl: 30}\nrpc:\n  registryConfig: *d\n";
        assert!(parse(ok, Format::Yaml, Path::new("ok.yaml")).is_ok());
    }

    #[test]
    fn properties_accept_java_separators_and_comments() {
        let flat = parse(
            "# comment\n! also comment\n\nrpc.name = users\nrpc.version: 2.0\nrpc.serverHost 10.0.0.1\n",
            Format::Properties,
            Path::new("a.properties"),
        )
        .unwrap();
        assert_eq!(flat["rpc.name"].1.text(), "users");
        assert_eq!(flat["rpc.version"].1.text(), "2.0");
        assert_eq!(flat["rpc.serverhost"].1.text(), "10.0.0.1");
    }
}
