//! `--set key=value[,value...]`: overrides applied to the scenario's TOML before it is
//! validated, and the parameter grids `simnet sweep` runs.
//!
//! An override edits the TOML table itself, so it goes through exactly the checks a file
//! goes through: an unknown key or a bad value is refused the same way. Values are read as
//! TOML literals (`20`, `0.3`, `true`, `"x"`); anything else is taken as a bare string, so
//! `latency.model=regions` works without quotes. The grid is the cartesian product of the
//! `--set` lists, the first list varying slowest, so sweep rows come in a fixed order.

use super::ScenarioError;

/// One key set to one value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key, e.g. `dht.k` or `nodes`.
    pub key: String,
    /// The value, as TOML.
    pub value: toml::Value,
}

impl Override {
    /// The value as it would be written in a CSV cell.
    pub fn value_text(&self) -> String {
        match &self.value {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

fn parse_value(text: &str) -> toml::Value {
    let doc = format!("v = {text}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// Splits `key=v1,v2,...` into the key and its values.
pub fn parse_set_arg(arg: &str) -> Result<(String, Vec<toml::Value>), ScenarioError> {
    let bad = |reason: &str| ScenarioError::Set {
        arg: arg.to_string(),
        reason: reason.to_string(),
    };
    let Some((key, values)) = arg.split_once('=') else {
        return Err(bad("expected key=value or key=v1,v2,..."));
    };
    let key = key.trim();
    if key.is_empty()
        || key
            .split('.')
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(bad("the key must be dotted words, e.g. dht.k"));
    }
    let values: Vec<toml::Value> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(parse_value)
        .collect();
    if values.is_empty() {
        return Err(bad("no value given"));
    }
    Ok((key.to_string(), values))
}

/// Writes each override into `table`, creating sections as needed.
pub(crate) fn apply_overrides(
    table: &mut toml::Table,
    overrides: &[Override],
) -> Result<(), ScenarioError> {
    for o in overrides {
        let parts: Vec<&str> = o.key.split('.').collect();
        let Some((last, sections)) = parts.split_last() else {
            continue;
        };
        let mut t = &mut *table;
        for s in sections {
            let entry = t
                .entry(s.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(inner) = entry.as_table_mut() else {
                return Err(ScenarioError::Set {
                    arg: o.key.clone(),
                    reason: format!("\"{s}\" is a value, not a section"),
                });
            };
            t = inner;
        }
        t.insert(last.to_string(), o.value.clone());
    }
    Ok(())
}

/// Every combination of the given `(key, values)` lists, first list slowest.
pub fn expand_grid(sets: &[(String, Vec<toml::Value>)]) -> Vec<Vec<Override>> {
    let mut grid: Vec<Vec<Override>> = vec![Vec::new()];
    for (key, values) in sets {
        let mut next = Vec::with_capacity(grid.len() * values.len());
        for combo in &grid {
            for v in values {
                let mut c = combo.clone();
                c.push(Override {
                    key: key.clone(),
                    value: v.clone(),
                });
                next.push(c);
            }
        }
        grid = next;
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_literals_or_bare_strings() {
        let (k, v) = parse_set_arg("dht.k=10, 20").unwrap_or_default();
        assert_eq!(k, "dht.k");
        assert_eq!(v, vec![toml::Value::Integer(10), toml::Value::Integer(20)]);
        let (_, v) = parse_set_arg("latency.model=regions").unwrap_or_default();
        assert_eq!(v, vec![toml::Value::String("regions".into())]);
        let (_, v) = parse_set_arg("failure.fraction=0,0.3").unwrap_or_default();
        assert_eq!(v, vec![toml::Value::Integer(0), toml::Value::Float(0.3)]);
        assert!(parse_set_arg("novalue").is_err());
        assert!(parse_set_arg("a..b=1").is_err());
    }

    #[test]
    fn grid_is_the_product_first_list_slowest() {
        let g = expand_grid(&[
            (
                "a".into(),
                vec![toml::Value::Integer(1), toml::Value::Integer(2)],
            ),
            (
                "b".into(),
                vec![toml::Value::Integer(3), toml::Value::Integer(4)],
            ),
        ]);
        let flat: Vec<String> = g
            .iter()
            .map(|c| {
                c.iter()
                    .map(Override::value_text)
                    .collect::<Vec<_>>()
                    .join("")
            })
            .collect();
        assert_eq!(flat, ["13", "14", "23", "24"]);
    }
}
